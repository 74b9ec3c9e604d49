/*
 * roost-seccomp-probe: calls each syscall the default seccomp profile refuses, with arguments
 * that would do no harm even if it were allowed, and a few allowed ones as positive controls.
 * Prints one line per call, "NAME RESULT", where RESULT is "ok" (the call succeeded) or the
 * errno's name (EPERM, ENOSYS, EBADF...), then "done N". The caller (seccomp.test.ts) decides
 * what each should be; a missing "done" line means the probe died on the way.
 *
 * Raw syscall() throughout: libc wrappers may emulate, retry or fall back. Where the arguments
 * are chosen so that an allowed call would fail in a telling way (EBADF, EFAULT, EINVAL) or
 * succeed harmlessly, the comment says what the kernel itself would answer.
 *
 * Statically linked, so it runs in any image: make puts it in $(OUT)/bin like the other tools.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* x86-64 numbers newer than this libc's headers. */
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_statmount
#define SYS_statmount 457
#endif
#ifndef SYS_listmount
#define SYS_listmount 458
#endif
#ifndef SYS_lsm_get_self_attr
#define SYS_lsm_get_self_attr 459
#endif
#ifndef SYS_lsm_set_self_attr
#define SYS_lsm_set_self_attr 460
#endif
#ifndef SYS_lsm_list_modules
#define SYS_lsm_list_modules 461
#endif
#ifndef SYS_mseal
#define SYS_mseal 462
#endif
#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#endif
#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif
#ifndef SYS_removexattrat
#define SYS_removexattrat 466
#endif
#ifndef SYS__sysctl
#define SYS__sysctl 156
#endif
#ifndef SYS_nfsservctl
#define SYS_nfsservctl 180
#endif
#ifndef SYS_uselib
#define SYS_uselib 134
#endif
#ifndef SYS_lookup_dcookie
#define SYS_lookup_dcookie 212
#endif

#define AF_VSOCK_ 40
#define FAN_REPORT_FID_ 0x00000200
#define UFFD_USER_MODE_ONLY_ 1
#define KCMP_FILE_ 0
#define ADDR_NO_RANDOMIZE_ 0x0040000
#define PTRACE_PEEKUSER_ 3
#define SYSLOG_ACTION_SIZE_BUFFER 10
#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_SESSION_KEYRING (-3)

static int calls;

/* Reports one call. A success that returned a descriptor closes it. */
static void report(const char *name, long ret, int is_fd)
{
    int err = errno;
    calls++;
    if (ret >= 0) {
        if (is_fd) close((int)ret);
        printf("%s ok\n", name);
    } else {
        const char *e = strerrorname_np(err);
        if (e) printf("%s %s\n", name, e);
        else printf("%s E%d\n", name, err);
    }
    fflush(stdout);
}

#define CALL(name, ...) do { errno = 0; report(name, syscall(__VA_ARGS__), 0); } while (0)
#define CALL_FD(name, ...) do { errno = 0; report(name, syscall(__VA_ARGS__), 1); } while (0)

/* A clone() that, if it creates a child, lets it exit at once and reaps it. */
static long clone_and_reap(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid;
}

/* Outside a sandbox, as root, some of these would act (acct(NULL) stops process accounting,
 * vhangup() hangs up the terminal): the probe runs only in a user namespace other than the host's. */
static int in_host_user_namespace(void)
{
    unsigned long inside, outside, count;
    FILE *f = fopen("/proc/self/uid_map", "r");
    int host = !f || (fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3 && outside == 0 && count == 4294967295UL);
    if (f) fclose(f);
    return host;
}

int main(void)
{
    if (in_host_user_namespace()) {
        fprintf(stderr, "roost-seccomp-probe: refusing to run in the host's user namespace (run it inside a sandbox)\n");
        return 2;
    }
    char buf[64] = "roost", copy[64];
    struct utsname names;
    struct iovec local = { copy, sizeof copy }, remote = { buf, sizeof buf };

    /* Positive controls: these must succeed, or the filter (or the probe) is broken. */
    CALL("getpid", SYS_getpid);
    CALL_FD("openat", SYS_openat, AT_FDCWD, "/", O_RDONLY | O_DIRECTORY);
    errno = 0;
    report("clone", clone_and_reap(0), 0);
    CALL_FD("socket", SYS_socket, AF_UNIX, SOCK_STREAM, 0);
    CALL("personality_query", SYS_personality, 0xffffffffUL);
    CALL("personality_linux", SYS_personality, 0UL);
    CALL("uname", SYS_uname, &names);
    {
        char path[] = "/tmp/roost-seccomp-probe-XXXXXX";
        int fd = mkstemp(path);
        errno = 0;
        report("fchmodat2", fd < 0 ? -1 : syscall(SYS_fchmodat2, AT_FDCWD, path, 0600, AT_SYMLINK_NOFOLLOW), 0);
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
    }

    /* Mounts (the kernel: EPERM without CAP_SYS_ADMIN; open_tree without flags would succeed). */
    CALL("mount", SYS_mount, "none", "/nonexistent-roost-probe", "tmpfs", 0UL, NULL);
    CALL("umount2", SYS_umount2, "/nonexistent-roost-probe", 0);
    CALL("pivot_root", SYS_pivot_root, "/nonexistent-a", "/nonexistent-b");
    CALL_FD("fsopen", SYS_fsopen, "tmpfs", 0);
    CALL("fsconfig", SYS_fsconfig, -1, 0, NULL, NULL, 0);
    CALL_FD("fsmount", SYS_fsmount, -1, 0, 0);
    CALL_FD("fspick", SYS_fspick, -1, "", 0);
    CALL("move_mount", SYS_move_mount, -1, "", -1, "", 0);
    CALL_FD("open_tree", SYS_open_tree, AT_FDCWD, "/", 0);
    CALL("mount_setattr", SYS_mount_setattr, -1, "", 0, NULL, 0);

    /* Namespaces (unshare(0) and clone() would succeed; setns(-1) would be EBADF). */
    CALL("unshare", SYS_unshare, 0);
    errno = 0;
    report("clone_newuser", clone_and_reap(CLONE_NEWUSER), 0);
    CALL("setns", SYS_setns, -1, 0);
    CALL("clone3", SYS_clone3, NULL, 0); /* EINVAL: size 0 */

    /* The host's names and logs (length 1000 > 64: EINVAL once past the capability check). */
    CALL("sethostname", SYS_sethostname, "x", 1000);
    CALL("setdomainname", SYS_setdomainname, "x", 1000);
    CALL("syslog", SYS_syslog, SYSLOG_ACTION_SIZE_BUFFER, NULL, 0);

    CALL("quotactl", SYS_quotactl, 0xffffffffU, NULL, 0, NULL);
    CALL("quotactl_fd", SYS_quotactl_fd, -1, 0, 0, NULL); /* EBADF */
    CALL("lookup_dcookie", SYS_lookup_dcookie, 0, NULL, 0);
    CALL_FD("fanotify_init", SYS_fanotify_init, FAN_REPORT_FID_, O_RDONLY); /* unprivileged fanotify works since 5.13 */
    CALL("bpf", SYS_bpf, -1, NULL, 0);
    CALL("perf_event_open", SYS_perf_event_open, NULL, 0, -1, -1, 0); /* EFAULT */
    CALL("open_by_handle_at", SYS_open_by_handle_at, -1, NULL, 0);

    /* Other processes (on itself these would all succeed, ptrace would say ESRCH). */
    CALL("ptrace", SYS_ptrace, PTRACE_PEEKUSER_, getpid(), 0, 0);
    CALL("process_vm_readv", SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0);
    CALL("process_vm_writev", SYS_process_vm_writev, getpid(), &remote, 1, &local, 1, 0);
    CALL("kcmp", SYS_kcmp, getpid(), getpid(), KCMP_FILE_, 1, 1);
    {
        int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
        CALL_FD("pidfd_getfd", SYS_pidfd_getfd, pidfd, 1, 0);
        if (pidfd >= 0) close(pidfd);
    }
    CALL("process_madvise", SYS_process_madvise, -1, &local, 1, 0, 0); /* EBADF */

    /* Kernel, clock, hardware (the kernel: EPERM without the capability; settimeofday(NULL,
     * NULL), iopl(0) and ioperm(..., off) would succeed and change nothing). */
    CALL("init_module", SYS_init_module, NULL, 0UL, "");
    CALL("finit_module", SYS_finit_module, -1, "", 0);
    CALL("delete_module", SYS_delete_module, "roost-probe-none", O_NONBLOCK);
    CALL("kexec_load", SYS_kexec_load, 0UL, 0UL, NULL, 0UL);
    CALL("kexec_file_load", SYS_kexec_file_load, -1, -1, 0UL, NULL, 0UL);
    CALL("reboot", SYS_reboot, 0, 0, 0, NULL); /* bad magic: EINVAL past the capability check */
    CALL("settimeofday", SYS_settimeofday, NULL, NULL);
    CALL("clock_settime", SYS_clock_settime, 0, NULL); /* EFAULT */
    CALL("iopl", SYS_iopl, 0);
    CALL("ioperm", SYS_ioperm, 0UL, 1UL, 0);
    CALL("acct", SYS_acct, NULL);
    CALL("vhangup", SYS_vhangup);
    CALL("swapon", SYS_swapon, "/nonexistent-roost-probe", 0);
    CALL("swapoff", SYS_swapoff, "/nonexistent-roost-probe");

    /* NUMA (queries and resets to the default: would succeed). */
    CALL("get_mempolicy", SYS_get_mempolicy, NULL, NULL, 0UL, NULL, 0UL);
    CALL("set_mempolicy", SYS_set_mempolicy, 0, NULL, 0UL);
    CALL("mbind", SYS_mbind, NULL, 0UL, 0, NULL, 0UL, 0U);
    CALL("migrate_pages", SYS_migrate_pages, getpid(), 0UL, NULL, NULL);
    CALL("move_pages", SYS_move_pages, 0, 0UL, NULL, NULL, NULL, 0);
    CALL("set_mempolicy_home_node", SYS_set_mempolicy_home_node, 0UL, 0UL, 0UL, 0UL);

    /* Keyrings (EFAULT; the query would succeed or say ENOKEY). */
    CALL("keyctl", SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    CALL("add_key", SYS_add_key, NULL, NULL, NULL, 0UL, 0);
    CALL("request_key", SYS_request_key, NULL, NULL, NULL, 0);

    /* io_uring (EINVAL for 0 entries, EBADF). */
    CALL_FD("io_uring_setup", SYS_io_uring_setup, 0U, NULL);
    CALL("io_uring_enter", SYS_io_uring_enter, -1, 0U, 0U, 0U, NULL, 0UL);
    CALL("io_uring_register", SYS_io_uring_register, -1, 0U, NULL, 0U);

    CALL_FD("userfaultfd", SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY_);
    CALL("personality", SYS_personality, (unsigned long)ADDR_NO_RANDOMIZE_);
    CALL_FD("socket_vsock", SYS_socket, AF_VSOCK_, SOCK_STREAM, 0);
    CALL("ustat", SYS_ustat, 0, NULL);
    CALL("sysfs", SYS_sysfs, 3);
    CALL("uselib", SYS_uselib, NULL);
    CALL("_sysctl", SYS__sysctl, NULL);
    CALL("nfsservctl", SYS_nfsservctl, 0, NULL, NULL);

    /* Newer than Docker's list: ENOSYS, as on an older kernel. */
    CALL("cachestat", SYS_cachestat, -1, NULL, NULL, 0U);
    CALL("statmount", SYS_statmount, NULL, NULL, 0UL, 0U);
    CALL("listmount", SYS_listmount, NULL, NULL, 0UL, 0U);
    CALL("lsm_get_self_attr", SYS_lsm_get_self_attr, 0U, NULL, NULL, 0U);
    CALL("lsm_set_self_attr", SYS_lsm_set_self_attr, 0U, NULL, 0UL, 0U);
    CALL("lsm_list_modules", SYS_lsm_list_modules, NULL, NULL, 0U);
    CALL("mseal", SYS_mseal, 0UL, 0UL, 0UL);
    CALL("setxattrat", SYS_setxattrat, -1, NULL, 0U, NULL, NULL, 0UL);
    CALL("getxattrat", SYS_getxattrat, -1, NULL, 0U, NULL, NULL, 0UL);
    CALL("listxattrat", SYS_listxattrat, -1, NULL, 0U, NULL, 0UL);
    CALL("removexattrat", SYS_removexattrat, -1, NULL, 0U, NULL);

    /* A number no kernel has assigned: what a syscall from the future gets. */
    CALL("unassigned_1000", 1000);

    printf("done %d\n", calls);
    return 0;
}
