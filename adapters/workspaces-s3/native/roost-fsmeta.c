/*
 * roost-fsmeta: what Node's fs module cannot do, for the S3 workspace sync (src/fsmeta.ts).
 * Node has no xattr API, no mknod and only microsecond utimes; one long-lived helper answering
 * requests on a pipe costs one process per push or restore instead of one per file (getfattr /
 * setfattr / mknod / touch per entry would be thousands of processes for a tree).
 *
 * Protocol: one request per line on stdin, one answer line per request on stdout, in order.
 * Every path, xattr name and value is hex-encoded, so any byte (newline included) survives.
 *   L <path>                      -> "ok [<name> <value>]..." every xattr (lgetxattr: no symlink follow)
 *   X <path> <name> <value>       -> "ok"  lsetxattr
 *   M <path> <mode-oct> <rdev>    -> "ok"  mknod (whiteouts are char 0:0, also fifos/sockets/devices)
 *   T <path> <sec> <nsec>         -> "ok"  utimensat atime=mtime, AT_SYMLINK_NOFOLLOW
 * A failure answers "err <errno-name> <message>" and the helper carries on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static char *line;
static size_t line_cap;

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes the hex field starting at *p (up to a space or the end) in place; returns its length
 * or -1. The result is NUL-terminated (paths and names need it). */
static ssize_t unhex(char **p, char **out) {
  char *start = *p, *src = *p, *dst = *p;
  while (*src && *src != ' ' && *src != '\n') {
    int hi = hexval(src[0]), lo = src[1] ? hexval(src[1]) : -1;
    if (hi < 0 || lo < 0) return -1;
    *dst++ = (char)(hi << 4 | lo);
    src += 2;
  }
  char *next = *src ? src + 1 : src;
  *dst = '\0';
  *out = start;
  *p = next;
  return dst - start;
}

static void puthex(const char *data, size_t len) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    putchar(digits[(unsigned char)data[i] >> 4]);
    putchar(digits[(unsigned char)data[i] & 15]);
  }
}

static void fail(void) {
  printf("err %d %s\n", errno, strerror(errno));
}

static void list_xattrs(const char *path) {
  static char *names, *value;
  static size_t names_cap, value_cap;
  ssize_t len;
  /* Sized by asking first; retried when it grew in between (never on a read-only snapshot). */
  while ((len = llistxattr(path, names, names_cap)) < 0 || names_cap == 0) {
    if (len < 0 && errno != ERANGE) return fail();
    ssize_t need = llistxattr(path, NULL, 0);
    if (need < 0) return fail();
    names_cap = (size_t)need + 256;
    names = realloc(names, names_cap);
    if (!names) abort();
  }
  fputs("ok", stdout);
  for (char *name = names; name < names + len; name += strlen(name) + 1) {
    ssize_t vlen;
    while ((vlen = lgetxattr(path, name, value, value_cap)) < 0 || value_cap == 0) {
      if (vlen < 0 && errno != ERANGE) break;
      ssize_t need = lgetxattr(path, name, NULL, 0);
      if (need < 0) { vlen = -1; break; }
      value_cap = (size_t)need + 256;
      value = realloc(value, value_cap);
      if (!value) abort();
    }
    if (vlen < 0) continue; /* removed between list and get */
    putchar(' ');
    puthex(name, strlen(name));
    putchar(' ');
    if (vlen == 0) putchar('-'); /* an empty value; "-" keeps the field non-empty */
    else puthex(value, (size_t)vlen);
  }
  putchar('\n');
}

int main(void) {
  for (;;) {
    ssize_t n = getline(&line, &line_cap, stdin);
    if (n <= 0) return 0;
    char *p = line + 2, *path, *name, *val;
    if (n < 3 || line[1] != ' ' || unhex(&p, &path) < 0) {
      printf("err %d bad request\n", EINVAL);
    } else if (line[0] == 'L') {
      list_xattrs(path);
    } else if (line[0] == 'X') {
      ssize_t vlen;
      if (unhex(&p, &name) < 0) { printf("err %d bad request\n", EINVAL); goto next; }
      if (p[0] == '-') vlen = 0, val = p;
      else if ((vlen = unhex(&p, &val)) < 0) { printf("err %d bad request\n", EINVAL); goto next; }
      if (lsetxattr(path, name, val, (size_t)vlen, 0) < 0) fail(); else puts("ok");
    } else if (line[0] == 'M') {
      unsigned long mode = strtoul(p, &p, 8);
      unsigned long long rdev = strtoull(p, &p, 10);
      if (mknod(path, (mode_t)mode, (dev_t)rdev) < 0) fail(); else puts("ok");
    } else if (line[0] == 'T') {
      long long sec = strtoll(p, &p, 10);
      long nsec = strtol(p, &p, 10);
      struct timespec times[2] = { { sec, nsec }, { sec, nsec } };
      if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) < 0) fail(); else puts("ok");
    } else {
      printf("err %d bad request\n", EINVAL);
    }
  next:
    fflush(stdout);
  }
}
