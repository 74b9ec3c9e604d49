// The default seccomp profile: an allow-list, modelled on the default profiles of Docker 25+
// (moby profiles/seccomp/default.json) and Podman (containers-common seccomp.json), in their
// branch for a container without CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME,
// CAP_SYS_BOOT, CAP_SYS_NICE, CAP_SYS_RAWIO, CAP_SYSLOG, CAP_BPF or CAP_PERFMON (a sandbox has
// none of them, see DEFAULT_CAPS). Whatever is not named here fails with EPERM, so a syscall a
// future kernel adds is refused until someone looks at it. Where Roost differs from Docker, and
// why, is written in docs/runtime-oci.md ("Seccomp"); the probe native/roost-seccomp-probe.c
// calls every refused syscall inside a real sandbox (seccomp.test.ts).

export const EPERM = 1;
export const ENOSYS = 38;

/** Docker's unconditional allow-list (x86-64 and its 32-bit ABIs), less io_uring (see REFUSED). */
const ALLOWED = [
  'accept', 'accept4', 'access', 'adjtimex', 'alarm', 'arch_prctl', 'bind', 'brk', 'capget', 'capset',
  'chdir', 'chmod', 'chown', 'chown32', 'chroot', 'clock_adjtime', 'clock_adjtime64', 'clock_getres',
  'clock_getres_time64', 'clock_gettime', 'clock_gettime64', 'clock_nanosleep', 'clock_nanosleep_time64',
  'close', 'close_range', 'connect', 'copy_file_range', 'creat', 'dup', 'dup2', 'dup3', 'epoll_create',
  'epoll_create1', 'epoll_ctl', 'epoll_ctl_old', 'epoll_pwait', 'epoll_pwait2', 'epoll_wait', 'epoll_wait_old',
  'eventfd', 'eventfd2', 'execve', 'execveat', 'exit', 'exit_group', 'faccessat', 'faccessat2', 'fadvise64',
  'fadvise64_64', 'fallocate', 'fanotify_mark', 'fchdir', 'fchmod', 'fchmodat', 'fchown', 'fchown32',
  'fchownat', 'fcntl', 'fcntl64', 'fdatasync', 'fgetxattr', 'flistxattr', 'flock', 'fork', 'fremovexattr',
  'fsetxattr', 'fstat', 'fstat64', 'fstatat64', 'fstatfs', 'fstatfs64', 'fsync', 'ftruncate', 'ftruncate64',
  'futex', 'futex_time64', 'futex_waitv', 'futimesat', 'getcpu', 'getcwd', 'getdents', 'getdents64',
  'getegid', 'getegid32', 'geteuid', 'geteuid32', 'getgid', 'getgid32', 'getgroups', 'getgroups32',
  'getitimer', 'getpeername', 'getpgid', 'getpgrp', 'getpid', 'getppid', 'getpriority', 'getrandom',
  'getresgid', 'getresgid32', 'getresuid', 'getresuid32', 'getrlimit', 'get_robust_list', 'getrusage',
  'getsid', 'getsockname', 'getsockopt', 'get_thread_area', 'gettid', 'gettimeofday', 'getuid', 'getuid32',
  'getxattr', 'inotify_add_watch', 'inotify_init', 'inotify_init1', 'inotify_rm_watch', 'io_cancel', 'ioctl',
  'io_destroy', 'io_getevents', 'io_pgetevents', 'io_pgetevents_time64', 'ioprio_get', 'ioprio_set',
  'io_setup', 'io_submit', 'ipc', 'kill', 'landlock_add_rule', 'landlock_create_ruleset',
  'landlock_restrict_self', 'lchown', 'lchown32', 'lgetxattr', 'link', 'linkat', 'listen', 'listxattr',
  'llistxattr', '_llseek', 'lremovexattr', 'lseek', 'lsetxattr', 'lstat', 'lstat64', 'madvise', 'membarrier',
  'memfd_create', 'memfd_secret', 'mincore', 'mkdir', 'mkdirat', 'mknod', 'mknodat', 'mlock', 'mlock2',
  'mlockall', 'mmap', 'mmap2', 'modify_ldt', 'mprotect', 'mq_getsetattr', 'mq_notify', 'mq_open',
  'mq_timedreceive', 'mq_timedreceive_time64', 'mq_timedsend', 'mq_timedsend_time64', 'mq_unlink', 'mremap',
  'msgctl', 'msgget', 'msgrcv', 'msgsnd', 'msync', 'munlock', 'munlockall', 'munmap', 'name_to_handle_at',
  'nanosleep', 'newfstatat', '_newselect', 'open', 'openat', 'openat2', 'pause', 'pidfd_open',
  'pidfd_send_signal', 'pipe', 'pipe2', 'pkey_alloc', 'pkey_free', 'pkey_mprotect', 'poll', 'ppoll',
  'ppoll_time64', 'prctl', 'pread64', 'preadv', 'preadv2', 'prlimit64', 'process_mrelease', 'pselect6',
  'pselect6_time64', 'pwrite64', 'pwritev', 'pwritev2', 'read', 'readahead', 'readlink', 'readlinkat', 'readv',
  'recv', 'recvfrom', 'recvmmsg', 'recvmmsg_time64', 'recvmsg', 'remap_file_pages', 'removexattr', 'rename',
  'renameat', 'renameat2', 'restart_syscall', 'rmdir', 'rseq', 'rt_sigaction', 'rt_sigpending',
  'rt_sigprocmask', 'rt_sigqueueinfo', 'rt_sigreturn', 'rt_sigsuspend', 'rt_sigtimedwait',
  'rt_sigtimedwait_time64', 'rt_tgsigqueueinfo', 'sched_getaffinity', 'sched_getattr', 'sched_getparam',
  'sched_get_priority_max', 'sched_get_priority_min', 'sched_getscheduler', 'sched_rr_get_interval',
  'sched_rr_get_interval_time64', 'sched_setaffinity', 'sched_setattr', 'sched_setparam', 'sched_setscheduler',
  'sched_yield', 'seccomp', 'select', 'semctl', 'semget', 'semop', 'semtimedop', 'semtimedop_time64', 'send',
  'sendfile', 'sendfile64', 'sendmmsg', 'sendmsg', 'sendto', 'setfsgid', 'setfsgid32', 'setfsuid',
  'setfsuid32', 'setgid', 'setgid32', 'setgroups', 'setgroups32', 'setitimer', 'setpgid', 'setpriority',
  'setregid', 'setregid32', 'setresgid', 'setresgid32', 'setresuid', 'setresuid32', 'setreuid', 'setreuid32',
  'setrlimit', 'set_robust_list', 'setsid', 'setsockopt', 'set_thread_area', 'set_tid_address', 'setuid',
  'setuid32', 'setxattr', 'shmat', 'shmctl', 'shmdt', 'shmget', 'shutdown', 'sigaltstack', 'signalfd',
  'signalfd4', 'sigprocmask', 'sigreturn', 'socketcall', 'socketpair', 'splice', 'stat', 'stat64', 'statfs',
  'statfs64', 'statx', 'symlink', 'symlinkat', 'sync', 'sync_file_range', 'syncfs', 'sysinfo', 'tee', 'tgkill',
  'time', 'timer_create', 'timer_delete', 'timer_getoverrun', 'timer_gettime', 'timer_gettime64',
  'timer_settime', 'timer_settime64', 'timerfd_create', 'timerfd_gettime', 'timerfd_gettime64',
  'timerfd_settime', 'timerfd_settime64', 'times', 'tkill', 'truncate', 'truncate64', 'ugetrlimit', 'umask',
  'uname', 'unlink', 'unlinkat', 'utime', 'utimensat', 'utimensat_time64', 'utimes', 'vfork', 'vmsplice',
  'wait4', 'waitid', 'waitpid', 'write', 'writev',
  // Docker 25+ added these (glibc 2.39 calls fchmodat2 for fchmodat(AT_SYMLINK_NOFOLLOW) and falls
  // back only on ENOSYS; the futex2 calls and shadow stacks are the same powers as futex and mmap).
  'fchmodat2', 'map_shadow_stack', 'futex_wait', 'futex_wake', 'futex_requeue',
];

/**
 * Refused with EPERM ("not permitted", what Docker answers). Everything
 * else not allowed gets ENOSYS, as from a kernel without that syscall: libc and language
 * runtimes fall back from ENOSYS (and only from it) when they try a call newer than the kernel,
 * so a syscall added after this list is refused without breaking programs. That is how Docker
 * behaves under runc (which answers ENOSYS for syscalls its libseccomp does not know) and what
 * Podman's profile says; crun 1.8 with libseccomp 2.5.4 answered EPERM for those with Docker's
 * profile (measured: statmount, mseal, syscall 1000), hence the explicit default here.
 */
export const EPERM_SYSCALLS = [
  // CAP_SYS_ADMIN's in Docker: mounts; namespaces (root of a new user namespace would hold every
  // capability there); the UTS names (roostd sets the hostname from outside); the kernel log;
  // quotas; whole-filesystem watches; eBPF and perf (side channels); file handles, which escape
  // a chroot (the "shocker" exploit).
  'mount', 'umount2', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount', 'open_tree',
  'mount_setattr', 'unshare', 'setns', 'sethostname', 'setdomainname', 'syslog', 'quotactl', 'quotactl_fd',
  'lookup_dcookie', 'fanotify_init', 'bpf', 'perf_event_open', 'open_by_handle_at',
  // CAP_SYS_PTRACE's: other processes' memory and descriptors (Docker allows ptrace and
  // process_vm_* on kernels >= 4.8; Roost does not, see docs/runtime-oci.md).
  'ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise',
  // CAP_SYS_MODULE, _BOOT, _TIME, _RAWIO, _PACCT, _TTY_CONFIG, _NICE (NUMA placement).
  'init_module', 'finit_module', 'delete_module', 'kexec_load', 'kexec_file_load', 'reboot', 'settimeofday',
  'clock_settime', 'iopl', 'ioperm', 'acct', 'vhangup', 'swapon', 'swapoff', 'get_mempolicy', 'set_mempolicy',
  'mbind', 'migrate_pages', 'move_pages', 'set_mempolicy_home_node',
  // Never allowed by Docker: kernel keyrings (not namespaced), io_uring (a large attack surface,
  // refused since Docker 25), userfaultfd (stalls the kernel at will, an exploit helper), obsolete calls.
  'keyctl', 'add_key', 'request_key', 'io_uring_setup', 'io_uring_enter', 'io_uring_register', 'userfaultfd',
  'ustat', 'sysfs', 'uselib', '_sysctl', 'nfsservctl',
];

/** clone() flags that make new namespaces. */
const CLONE_NAMESPACE_FLAG = {
  CLONE_NEWNS: 0x00020000,
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
};
const CLONE_NAMESPACE_FLAGS = Object.values(CLONE_NAMESPACE_FLAG).reduce((all, flag) => all | flag, 0);
const AF_VSOCK = 40;
/** PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query): Docker's list. */
const SAFE_PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

export function defaultSeccompProfile(): object {
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: ENOSYS,
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: ALLOWED, action: 'SCMP_ACT_ALLOW' },
      { names: EPERM_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      // clone only without namespace flags (all of them clear); otherwise EPERM.
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      },
      ...Object.values(CLONE_NAMESPACE_FLAG).map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
      { names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_NE' }] },
      { names: ['socket'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_EQ' }] },
      // One rule per value: a rule's conditions must all hold, so "any of" takes several rules.
      ...SAFE_PERSONAS.map((persona) => ({
        names: ['personality'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: persona, op: 'SCMP_CMP_EQ' }],
      })),
      // Other personas (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC...) get the default, ENOSYS: a rule
      // "EPERM unless one of these" would overlap the ALLOW rules, and libseccomp lets the
      // stricter action win (personality(0) was refused when tried).
    ],
  };
}
