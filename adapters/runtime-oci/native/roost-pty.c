/*
 * roost-pty: runs a command under a new pseudo-terminal inside a sandbox.
 *
 *   roost-pty [--size COLSxROWS] [--resize-fd N] [--] COMMAND [ARG...]
 *
 * Why it exists: `crun exec --tty` hands the terminal's master end to the caller over a unix
 * socket (--console-socket), and Node cannot receive file descriptors. So the terminal is made
 * here, inside the sandbox (its own devpts instance), and its master end is relayed over plain
 * stdio, which Node handles well:
 *
 *   stdin  -> master  (keystrokes; 0x03 becomes SIGINT through the line discipline)
 *   master -> stdout  (everything the command writes to the terminal)
 *   fd N   -> TIOCSWINSZ: records of 4 bytes, u16 big-endian cols then rows; the
 *             foreground process group gets SIGWINCH from the kernel.
 *
 * The command runs as a session leader with the terminal as its controlling tty. roost-pty ends
 * with the command's status: the same exit code, or the same signal (re-raised, core dumps
 * off), so `crun exec` reports 128+N as for any process killed by N. After the command exits,
 * output still in the terminal is relayed until the terminal has been quiet for QUIET_MS or
 * every holder of the terminal is gone (read() gives EIO), so the last lines are not lost; a
 * background job that keeps writing holds the session open DRAIN_MAX_MS at most.
 *
 * EOF on stdin is not forwarded (a terminal has no half-close); like sshd, the session ends
 * when the command exits. If stdout goes away (EPIPE), the terminal is hung up: the session
 * gets SIGHUP, as when a terminal window closes.
 *
 * Statically linked, so it runs in any image. Flow control: at most one buffer (BUF_SIZE) per
 * direction is held; a side is read only when the buffer towards the other side is empty.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536
#define QUIET_MS 50
#define DRAIN_MAX_MS 2000

struct buf {
  char data[BUF_SIZE];
  size_t off, len;
};

static int sigchld_pipe[2] = {-1, -1};
static volatile sig_atomic_t child_pid = 0;

static void die(const char *what) {
  fprintf(stderr, "roost-pty: %s: %s\n", what, strerror(errno));
  exit(125);
}

static void usage(void) {
  fprintf(stderr, "usage: roost-pty [--size COLSxROWS] [--resize-fd N] [--] COMMAND [ARG...]\n");
  exit(125);
}

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  char c = 0;
  if (write(sigchld_pipe[1], &c, 1) < 0) { /* pipe full: a wake-up is already pending */ }
  errno = saved;
}

/* Signals meant for the session (SIGTERM from the daemon, SIGHUP...) go to the command. */
static void forward_signal(int sig) {
  if (child_pid > 0) kill(child_pid, sig);
}

static void set_nonblock(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Writes what the buffer holds; returns -1 on a real error (errno set), 0 otherwise. */
static int flush_buf(int fd, struct buf *b) {
  while (b->len > 0) {
    ssize_t n = write(fd, b->data + b->off, b->len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      return -1;
    }
    b->off += (size_t)n;
    b->len -= (size_t)n;
  }
  b->off = 0;
  return 0;
}

/* Ends like the command did: same exit code, or death by the same signal. */
static void exit_like(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* the command already dumped core if it was going to */
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig); /* a signal whose default is to be ignored */
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 125);
}

static int parse_size(const char *s, unsigned short *cols, unsigned short *rows) {
  unsigned c, r;
  char x;
  /* 0 is allowed: "unknown", as sshd passes on what a client without a terminal sends. */
  if (sscanf(s, "%u%c%u", &c, &x, &r) != 3 || x != 'x' || c > 65535 || r > 65535) return -1;
  *cols = (unsigned short)c;
  *rows = (unsigned short)r;
  return 0;
}

int main(int argc, char **argv) {
  struct winsize ws = {.ws_row = 24, .ws_col = 80};
  int resize_fd = -1;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
      if (parse_size(argv[++i], &ws.ws_col, &ws.ws_row) < 0) usage();
    } else if (strcmp(argv[i], "--resize-fd") == 0 && i + 1 < argc) {
      resize_fd = atoi(argv[++i]);
    } else if (argv[i][0] == '-') {
      usage();
    } else {
      break;
    }
  }
  if (i >= argc) usage();
  char **cmd = argv + i;

  int master, slave;
  if (openpty(&master, &slave, NULL, NULL, &ws) < 0) die("openpty");

  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* Closed by the child's exec (O_CLOEXEC): input is relayed only once the command owns the
   * terminal, or a Ctrl-C typed at once would reach no process group and be lost. */
  int execed[2];
  if (pipe2(execed, O_CLOEXEC) < 0) die("pipe");

  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(execed[0]);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0) _exit(125);
    if (ioctl(slave, TIOCSCTTY, 0) < 0) _exit(125);
    dup2(slave, 0);
    dup2(slave, 1);
    dup2(slave, 2);
    if (slave > 2) close(slave);
    close(master);
    if (resize_fd > 2) close(resize_fd);
    execvp(cmd[0], cmd);
    int err = errno;
    /* Where a shell would say it: on the terminal the user sees. */
    dprintf(2, "roost-pty: %s: %s\n", cmd[0], strerror(err)); /* the terminal adds the \r */
    _exit(err == ENOENT ? 127 : 126);
  }
  child_pid = pid;
  close(slave);
  close(execed[1]);
  char ignored;
  while (read(execed[0], &ignored, 1) < 0 && errno == EINTR) {}
  close(execed[0]);

  struct sigaction fwd = {0};
  fwd.sa_handler = forward_signal;
  fwd.sa_flags = SA_RESTART;
  int forwarded[] = {SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++) sigaction(forwarded[k], &fwd, NULL);

  set_nonblock(master);
  set_nonblock(0);
  set_nonblock(1);
  if (resize_fd >= 0) {
    fcntl(resize_fd, F_SETFD, FD_CLOEXEC);
    set_nonblock(resize_fd);
  }

  static struct buf to_master, to_stdout;
  unsigned char rec[4];
  size_t rec_len = 0;
  int stdin_open = 1, master_open = 1, stdout_open = 1;
  int exited = 0, status = 0;
  long last_output = now_ms(), exited_at = 0;

  for (;;) {
    struct pollfd p[4];
    int np = 0;
    int i_stdin = -1, i_master = -1, i_stdout = -1, i_resize = -1;

    if (stdin_open && to_master.len == 0 && master_open) p[i_stdin = np++] = (struct pollfd){0, POLLIN, 0};
    if (master_open) {
      /* Polled only when we would act on it: a hung-up master reports POLLHUP regardless. */
      short ev = 0;
      if (to_stdout.len == 0) ev |= POLLIN;
      if (to_master.len > 0) ev |= POLLOUT;
      if (ev) p[i_master = np++] = (struct pollfd){master, ev, 0};
    }
    if (to_stdout.len > 0 && stdout_open) p[i_stdout = np++] = (struct pollfd){1, POLLOUT, 0};
    if (resize_fd >= 0) p[i_resize = np++] = (struct pollfd){resize_fd, POLLIN, 0};
    struct pollfd all[5];
    memcpy(all, p, sizeof(struct pollfd) * (size_t)np);
    all[np] = (struct pollfd){sigchld_pipe[0], POLLIN, 0};

    int timeout = -1;
    if (exited) {
      long quiet = now_ms() - last_output;
      if (!master_open || (to_stdout.len == 0 && quiet >= QUIET_MS) || !stdout_open) break;
      /* A background job that keeps writing to the terminal does not keep the session open. */
      if (now_ms() - exited_at >= DRAIN_MAX_MS) break;
      timeout = (int)(QUIET_MS - quiet);
      if (timeout < 0 || to_stdout.len > 0) timeout = QUIET_MS;
    }
    int n = poll(all, (nfds_t)np + 1, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }

    if (all[np].revents) {
      char drain[64];
      while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {}
      int st;
      pid_t w;
      while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
        if (w == pid) {
          exited = 1;
          exited_at = now_ms();
          status = st;
          child_pid = 0;
        }
      }
    }

    if (i_resize >= 0 && all[i_resize].revents) {
      ssize_t r = read(resize_fd, rec + rec_len, sizeof rec - rec_len);
      if (r > 0) {
        rec_len += (size_t)r;
        if (rec_len == sizeof rec) {
          struct winsize nws = {.ws_col = (unsigned short)(rec[0] << 8 | rec[1]), .ws_row = (unsigned short)(rec[2] << 8 | rec[3])};
          if (master_open) ioctl(master, TIOCSWINSZ, &nws);
          rec_len = 0;
        }
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(resize_fd); /* the daemon is done resizing; keep going without it */
        resize_fd = -1;
      }
    }

    if (i_stdin >= 0 && all[i_stdin].revents) {
      ssize_t r = read(0, to_master.data, BUF_SIZE);
      if (r > 0) {
        to_master.off = 0;
        to_master.len = (size_t)r;
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        stdin_open = 0;
      }
    }

    if (i_master >= 0 && all[i_master].revents) {
      if ((all[i_master].revents & POLLIN) || (all[i_master].revents & (POLLHUP | POLLERR))) {
        if (to_stdout.len == 0) {
          ssize_t r = read(master, to_stdout.data, BUF_SIZE);
          if (r > 0) {
            to_stdout.off = 0;
            to_stdout.len = (size_t)r;
            last_output = now_ms();
          } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            /* EIO: no process holds the terminal any more; everything has been read. */
            master_open = 0;
          }
        }
      }
    }
    if (master_open && to_master.len > 0) {
      if (flush_buf(master, &to_master) < 0) to_master.len = 0;
    }
    if (to_stdout.len > 0 && stdout_open) {
      if (flush_buf(1, &to_stdout) < 0) {
        /* Nobody reads the terminal any more: hang it up, as a closed terminal window does. */
        stdout_open = 0;
        to_stdout.len = 0;
        if (master_open) {
          close(master);
          master_open = 0;
        }
      }
    }
    if (!master_open && !exited) {
      /* Terminal gone before the command ended: wait for it, its status is ours. */
      int st;
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
      exited = 1;
      status = st;
      child_pid = 0;
    }
  }
  /* What is still buffered for stdout goes out before we exit. */
  if (stdout_open && to_stdout.len > 0) {
    int flags = fcntl(1, F_GETFL);
    fcntl(1, F_SETFL, flags & ~O_NONBLOCK);
    flush_buf(1, &to_stdout);
  }
  exit_like(status);
}
