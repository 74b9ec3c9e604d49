/*
 * libroost-passwd.so: linked into the tools dir's sftp-server (patchelf --add-needed), so it
 * starts in images without /etc/passwd (scratch, distroless, a bare busybox): OpenSSH's
 * sftp-server exits with "No user found for uid N" when getpwuid() of its own uid fails.
 *
 * getpwuid() asks the image first (glibc's built-in "files" lookup, or whatever it finds);
 * only for the caller's own uid, when the image has no entry, it answers with one made up
 * from the environment: name "root" (uid 0) or "uid<N>", HOME (or /) and /bin/sh.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct passwd *getpwuid(uid_t uid) {
  static struct passwd *(*real)(uid_t) = NULL;
  if (!real) real = (struct passwd * (*)(uid_t)) dlsym(RTLD_NEXT, "getpwuid");
  struct passwd *pw = real ? real(uid) : NULL;
  if (pw || uid != getuid()) return pw;
  static char name[32];
  static struct passwd made;
  if (uid == 0) snprintf(name, sizeof name, "root");
  else snprintf(name, sizeof name, "uid%u", (unsigned)uid);
  const char *home = getenv("HOME");
  made.pw_name = name;
  made.pw_passwd = (char *)"*";
  made.pw_uid = uid;
  made.pw_gid = getgid();
  made.pw_gecos = (char *)"";
  made.pw_dir = (char *)(home && *home ? home : "/");
  made.pw_shell = (char *)"/bin/sh";
  return &made;
}
