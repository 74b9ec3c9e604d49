// roost-idmap: mounts a sandbox's root filesystem as an overlay whose read-only image layer is
// seen through an idmapped mount, so every sandbox gets its own host uid/gid range while all of
// them share one image on disk. Runs on the host as root (roostd's helper), never in a sandbox.
//
//   roost-idmap overlay --lower DIR --staging DIR --upper DIR --work DIR --from ID --to ID --count N TARGET
//   roost-idmap overlay --lower DIR --staging DIR --ws DIR --ws-staging DIR
//                       [--ws-lower DIR --ws-lower-staging DIR]... --from ID --to ID --count N TARGET
//
// 1. a short-lived child enters a new user namespace; we write its uid_map and gid_map
//    ("FROM TO COUNT": on-disk id FROM+k is seen as host id TO+k) and keep a fd of that userns;
// 2. open_tree(OPEN_TREE_CLONE) makes a detached copy of the image's mount, mount_setattr
//    (MOUNT_ATTR_IDMAP) gives it that userns's mapping, move_mount attaches it at --staging;
// 3. overlay at TARGET with lowerdir=--staging (the idmapped view), upperdir and workdir;
// 4. --staging is unmounted again: overlayfs keeps its own private clone of each layer, so the
//    sandbox has one mount on the host, as before.
//
// With --ws (a workspace: a dir holding upper/ and work/, files owned by the canonical ids
// FROM+k like the image's), that dir is seen through an idmapped mount as well, at --ws-staging,
// writable, and the overlay's upperdir and workdir are its upper/ and work/. Its mapping also
// maps host id 0 to itself ("0 0 1"): overlayfs does its own work (work/work, copy-up temp
// files) as the mounter, host root, and without that mapping the overlay comes up read-only
// (dmesg: "failed to create directory .../work/work (errno: 75)"). Each --ws-lower (a fork's
// read-only base, topmost first) is idmapped like the image and stacked above it.
//
// Util-linux 2.38's mount ignores X-mount.idmap, hence the syscalls here. Errors: one line on
// stderr naming the step and errno's text, exit 1 (2 for usage). Nothing is left mounted on
// failure.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("roost-idmap: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int usage(void) {
  fputs("usage: roost-idmap overlay --lower DIR --staging DIR --upper DIR --work DIR --from ID --to ID --count N TARGET\n"
        "       roost-idmap overlay --lower DIR --staging DIR --ws DIR --ws-staging DIR\n"
        "                           [--ws-lower DIR --ws-lower-staging DIR]... --from ID --to ID --count N TARGET\n", stderr);
  return 2;
}

static int parse_id(const char *text, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno || end == text || *end || v > UINT_MAX - 1 || text[0] == '-') return -1;
  *out = v;
  return 0;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/*
 * A fd of a new user namespace whose uid and gid maps are `map` (lines of "inside outside
 * count"). The namespace lives as long as the fd: the child that made it is gone by the time
 * this returns.
 */
static int userns_fd(const char *map) {
  int ready[2], release[2];
  if (pipe2(ready, O_CLOEXEC) || pipe2(release, O_CLOEXEC)) {
    fail("pipe: %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    fail("fork: %s", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    // Only the parent's copies may hold the other ends, or the read below never sees EOF.
    close(ready[0]);
    close(release[1]);
    char c = unshare(CLONE_NEWUSER) ? 'E' : 'R';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    // Wait until the parent has what it needs (its end closes).
    while (read(release[0], &c, 1) < 0 && errno == EINTR) {}
    _exit(0);
  }
  close(ready[1]);
  close(release[0]);
  int fd = -1;
  char c = 0;
  ssize_t n;
  while ((n = read(ready[0], &c, 1)) < 0 && errno == EINTR) {}
  if (n != 1 || c != 'R') {
    fail("unshare(CLONE_NEWUSER) in a child failed");
    goto out;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  if (write_file(path, map)) {
    fail("write %s: %s", path, strerror(errno));
    goto out;
  }
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
  if (write_file(path, map)) {
    fail("write %s: %s", path, strerror(errno));
    goto out;
  }
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open %s: %s", path, strerror(errno));
out:
  close(release[1]);
  close(ready[0]);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  return fd;
}

/* Overlay options are comma-separated and ':' separates lower layers: such paths would be misread. */
static int plain_path(const char *name, const char *p) {
  if (p[0] != '/' || strpbrk(p, ",:\\")) {
    fail("%s must be an absolute path without ',', ':' or '\\': %s", name, p);
    return -1;
  }
  return 0;
}

/*
 * Attaches an idmapped clone of `dir`'s mount at `staging` (read-only unless `writable`).
 * Returns 0, or -1 after one line on stderr.
 */
static int attach_idmapped(const char *dir, const char *staging, int ns, int writable) {
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) {
    fail("open_tree %s: %s", dir, strerror(errno));
    return -1;
  }
  struct mount_attr attr = { .attr_set = MOUNT_ATTR_IDMAP | (writable ? 0 : MOUNT_ATTR_RDONLY), .userns_fd = (unsigned long long)ns };
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr)) {
    fail("mount_setattr MOUNT_ATTR_IDMAP %s: %s", dir, strerror(errno));
    close(tree);
    return -1;
  }
  if (syscall(SYS_move_mount, tree, "", AT_FDCWD, staging, MOVE_MOUNT_F_EMPTY_PATH)) {
    fail("move_mount to %s: %s", staging, strerror(errno));
    close(tree);
    return -1;
  }
  close(tree);
  return 0;
}

#define MAX_WS_LOWERS 8

static int overlay(int argc, char **argv) {
  const char *lower = NULL, *staging = NULL, *upper = NULL, *work = NULL, *target = NULL;
  const char *ws = NULL, *ws_staging = NULL;
  const char *ws_lowers[MAX_WS_LOWERS], *ws_lower_stagings[MAX_WS_LOWERS];
  int n_ws_lowers = 0, n_ws_lower_stagings = 0;
  unsigned long from = 0, to = 0, count = 0;
  int have_from = 0, have_to = 0, have_count = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (a[0] != '-') {
      if (target || i != argc - 1) return usage();
      target = a;
      continue;
    }
    if (!v) return usage();
    i++;
    if (!strcmp(a, "--lower")) lower = v;
    else if (!strcmp(a, "--staging")) staging = v;
    else if (!strcmp(a, "--upper")) upper = v;
    else if (!strcmp(a, "--work")) work = v;
    else if (!strcmp(a, "--ws")) ws = v;
    else if (!strcmp(a, "--ws-staging")) ws_staging = v;
    else if (!strcmp(a, "--ws-lower")) {
      if (n_ws_lowers == MAX_WS_LOWERS) return usage();
      ws_lowers[n_ws_lowers++] = v;
    } else if (!strcmp(a, "--ws-lower-staging")) {
      if (n_ws_lower_stagings == MAX_WS_LOWERS) return usage();
      ws_lower_stagings[n_ws_lower_stagings++] = v;
    }
    else if (!strcmp(a, "--from")) have_from = !parse_id(v, &from);
    else if (!strcmp(a, "--to")) have_to = !parse_id(v, &to);
    else if (!strcmp(a, "--count")) have_count = !parse_id(v, &count);
    else return usage();
  }
  if (!lower || !staging || !target || !have_from || !have_to || !have_count || !count) return usage();
  // Either a plain upper and work, or a workspace (whose upper/ and work/ are used).
  if (ws ? (upper || work || !ws_staging) : (!upper || !work || ws_staging || n_ws_lowers)) return usage();
  if (n_ws_lowers != n_ws_lower_stagings) return usage();
  if (from + count > UINT_MAX || to + count > UINT_MAX) return usage();
  // Host id 0 must stay 0 in the workspace's mapping, so on-disk 0 must be outside FROM's range
  // and host 0 outside TO's.
  if (ws && (from == 0 || to == 0)) return usage();
  if (plain_path("--staging", staging)) return 1;
  if (ws) {
    if (plain_path("--ws", ws) || plain_path("--ws-staging", ws_staging)) return 1;
    for (int i = 0; i < n_ws_lowers; i++) {
      if (plain_path("--ws-lower", ws_lowers[i]) || plain_path("--ws-lower-staging", ws_lower_stagings[i])) return 1;
    }
  } else if (plain_path("--upper", upper) || plain_path("--work", work)) {
    return 1;
  }

  char map[128];
  snprintf(map, sizeof map, "%lu %lu %lu\n", from, to, count);
  int ns = userns_fd(map);
  if (ns < 0) return 1;
  int ws_ns = -1;
  if (ws) {
    snprintf(map, sizeof map, "0 0 1\n%lu %lu %lu\n", from, to, count);
    ws_ns = userns_fd(map);
    if (ws_ns < 0) return 1;
  }

  // Everything attached so far, unmounted again at the end (or on failure).
  const char *attached[MAX_WS_LOWERS + 2];
  int n_attached = 0;
  int status = 0;
  static char upper_buf[PATH_MAX], work_buf[PATH_MAX];
  if (attach_idmapped(lower, staging, ns, 0)) {
    status = 1;
    goto out;
  }
  attached[n_attached++] = staging;
  for (int i = 0; i < n_ws_lowers; i++) {
    if (attach_idmapped(ws_lowers[i], ws_lower_stagings[i], ns, 0)) {
      status = 1;
      goto out;
    }
    attached[n_attached++] = ws_lower_stagings[i];
  }
  if (ws) {
    if (attach_idmapped(ws, ws_staging, ws_ns, 1)) {
      status = 1;
      goto out;
    }
    attached[n_attached++] = ws_staging;
    if ((size_t)snprintf(upper_buf, sizeof upper_buf, "%s/upper", ws_staging) >= sizeof upper_buf ||
        (size_t)snprintf(work_buf, sizeof work_buf, "%s/work", ws_staging) >= sizeof work_buf) {
      fail("paths too long");
      status = 1;
      goto out;
    }
    upper = upper_buf;
    work = work_buf;
  }

  char lowers[(MAX_WS_LOWERS + 1) * PATH_MAX];
  size_t used = 0;
  lowers[0] = 0;
  for (int i = 0; i < n_ws_lowers; i++) {
    int len = snprintf(lowers + used, sizeof lowers - used, "%s:", ws_lower_stagings[i]);
    if (len < 0 || (size_t)len >= sizeof lowers - used) {
      fail("paths too long");
      status = 1;
      goto out;
    }
    used += (size_t)len;
  }
  char opts[(MAX_WS_LOWERS + 4) * PATH_MAX];
  int len = snprintf(opts, sizeof opts, "lowerdir=%s%s,upperdir=%s,workdir=%s", lowers, staging, upper, work);
  if (len < 0 || (size_t)len >= sizeof opts) {
    fail("paths too long");
    status = 1;
  } else if (mount("overlay", target, "overlay", 0, opts)) {
    fail("mount overlay at %s: %s", target, strerror(errno));
    status = 1;
  }
out:
  close(ns);
  if (ws_ns >= 0) close(ws_ns);
  // The overlay holds its own clone of each layer: the staging mounts are no longer needed.
  for (int i = n_attached - 1; i >= 0; i--) {
    if (umount2(attached[i], MNT_DETACH)) {
      fail("umount %s: %s", attached[i], strerror(errno));
      if (!status) umount2(target, MNT_DETACH);
      status = 1;
    }
  }
  return status;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "overlay")) return overlay(argc, argv);
  return usage();
}
