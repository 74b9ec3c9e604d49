/*
 * roost-relay: port forwarding from inside a sandbox's own network namespace.
 *
 *   roost-relay connect [--ready] HOST PORT
 *   roost-relay connect [--ready] --unix PATH
 *       Connects to HOST:PORT (or a unix socket) and relays stdin -> socket and socket -> stdout, each direction
 *       half-closed on its own (stdin EOF: shutdown(SHUT_WR) on the socket; socket EOF:
 *       shutdown of stdout). A failed connect exits 1 with one line on stderr. With --ready,
 *       "connected ADDR PORT" is written to stderr once connected, so the caller can confirm
 *       a channel before any data flows. Used for ssh -L, -W, -D and direct-tcpip.
 *
 *   roost-relay listen tcp ADDR PORT
 *   roost-relay listen unix PATH
 *       Listens (PORT 0: any free port; the socket file is made 0600 and removed on exit) and
 *       carries every accepted connection over stdin/stdout in frames. Used for ssh -R, agent
 *       forwarding and X11. A bind error exits 1 with one line on stderr, before any frame.
 *
 * Frames (both directions), all integers big-endian:
 *
 *   u8 type | u32 connection id | u32 payload length | payload
 *
 *   1 LISTENING  relay->daemon  id 0; payload: u16 port (0 for unix), then the address (UTF-8)
 *   2 OPEN       relay->daemon  a new connection; payload: u16 peer port, then peer address
 *   3 DATA       both           payload: bytes (at most MAX_PAYLOAD)
 *   4 EOF        both           the sender sends no more data on this connection (half-close)
 *   5 CLOSE      both           the connection is gone; payload: optional reason (UTF-8).
 *                               From the daemon: abort it. Ids are never reused; frames for
 *                               unknown ids are ignored (they cross a CLOSE in flight).
 *   6 WINDOW     both           payload: u32 n; the receiver of DATA grants n more bytes
 *
 * Flow control is per connection, as in SSH channels: each side may have at most
 * INITIAL_WINDOW bytes of DATA unacknowledged per connection; the receiver sends WINDOW as it
 * hands data on (relay: written to the socket; daemon: taken by its consumer). So one slow
 * connection never stalls the others and nothing is buffered without bound.
 *
 * Statically linked, so it runs in any image; name lookups use only /etc/hosts and DNS (see
 * resolve()).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nss.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum { T_LISTENING = 1, T_OPEN = 2, T_DATA = 3, T_EOF = 4, T_CLOSE = 5, T_WINDOW = 6 };

#define HEADER 9
#define INITIAL_WINDOW (256 * 1024)
#define MAX_PAYLOAD (64 * 1024)
#define READ_CHUNK (32 * 1024)
#define OUT_HIGH (256 * 1024)
#define ACK_BATCH (32 * 1024)
#define MAX_CONNS 1024
#define STREAM_BUF (64 * 1024)

static const char *unix_path = NULL; /* removed on exit */

/* One line on stderr, then exit 1. err: an errno to append, or 0. */
static void fail(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "roost-relay: ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (err) fprintf(stderr, ": %s", strerror(err));
  fputc('\n', stderr);
  if (unix_path) unlink(unix_path);
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: roost-relay connect [--ready] HOST PORT\n"
          "       roost-relay connect [--ready] --unix PATH\n"
          "       roost-relay listen tcp ADDR PORT\n"
          "       roost-relay listen unix PATH\n");
  exit(2);
}

static void on_term(int sig) {
  if (unix_path) unlink(unix_path);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void set_nonblock(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/*
 * Name lookup without NSS modules from the image: a static binary that dlopen()s the image's
 * libnss_*.so (a different glibc) can crash. Only the lookups built into static glibc are used
 * ("files" = /etc/hosts, and "dns"), whatever the image's nsswitch.conf says.
 */
static struct addrinfo *resolve(const char *host, const char *port, int passive) {
  __nss_configure_lookup("hosts", "files dns");
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  if (host && (!*host || strcmp(host, "*") == 0)) host = NULL;
  int r = getaddrinfo(host, port, &hints, &res);
  if (r != 0) {
    fprintf(stderr, "roost-relay: cannot resolve %s: %s\n", host ? host : "*", r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
    exit(1);
  }
  return res;
}

static void format_addr(const struct sockaddr *sa, socklen_t len, char *host, size_t hostlen, unsigned *port) {
  char serv[16] = "0";
  host[0] = 0;
  if (sa->sa_family == AF_UNIX || getnameinfo(sa, len, host, (socklen_t)hostlen, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    host[0] = 0;
    strcpy(serv, "0");
  }
  *port = (unsigned)atoi(serv);
}

static void tcp_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ------------------------------------------------------------------ connect */

struct pipebuf {
  char data[STREAM_BUF];
  size_t off, len;
};

/* Half-closes our stdout: a socket from the daemon gets shutdown(), so its reader sees EOF
 * even though the engine that spawned us holds another descriptor of it. */
static void shut_stdout(void) {
  if (shutdown(1, SHUT_WR) < 0) close(1);
}

static int do_connect(int argc, char **argv) {
  int ready = 0;
  int i = 0;
  if (i < argc && strcmp(argv[i], "--ready") == 0) {
    ready = 1;
    i++;
  }
  if (argc - i != 2) usage();
  const char *host = argv[i], *port = argv[i + 1];
  char what[160];
  if (strcmp(host, "--unix") == 0) snprintf(what, sizeof what, "%s", port);
  else snprintf(what, sizeof what, "%s port %s", host, port);
  int fd = -1;
  char addr[INET6_ADDRSTRLEN + 8];
  unsigned aport = 0;
  if (strcmp(host, "--unix") == 0) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(port) >= sizeof sun.sun_path) fail(0, "connect %s: path longer than %zu bytes", port, sizeof sun.sun_path - 1);
    strcpy(sun.sun_path, port);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) fail(errno, "connect %s", port);
    snprintf(addr, sizeof addr, "unix");
  } else {
    struct addrinfo *res = resolve(host, port, 0);
    int err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
      fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        err = errno;
        continue;
      }
      if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        format_addr(a->ai_addr, a->ai_addrlen, addr, sizeof addr, &aport);
        break;
      }
      err = errno;
      close(fd);
      fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) fail(err, "connect %s port %s", host, port);
  }
  tcp_nodelay(fd); /* fails harmlessly on a unix socket */
  if (ready) fprintf(stderr, "connected %s %u\n", addr, aport);

  set_nonblock(0);
  set_nonblock(1);
  set_nonblock(fd);
  static struct pipebuf up, down; /* up: stdin -> socket; down: socket -> stdout */
  int in_open = 1, sock_rd_open = 1, sock_wr_open = 1, out_open = 1;
  while (sock_wr_open || out_open) {
    struct pollfd p[4];
    int n = 0, i_in = -1, i_sock = -1, i_out = -1;
    if (in_open && up.len == 0) p[i_in = n++] = (struct pollfd){0, POLLIN, 0};
    short sev = 0;
    if (sock_rd_open && down.len == 0) sev |= POLLIN;
    if (up.len > 0) sev |= POLLOUT;
    if (sev) p[i_sock = n++] = (struct pollfd){fd, sev, 0};
    if (down.len > 0) p[i_out = n++] = (struct pollfd){1, POLLOUT, 0};
    if (n == 0) break;
    if (poll(p, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      fail(errno, "poll");
    }
    if (i_in >= 0 && p[i_in].revents) {
      ssize_t r = read(0, up.data, sizeof up.data);
      if (r > 0) {
        up.off = 0;
        up.len = (size_t)r;
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        in_open = 0;
      }
    }
    if (i_sock >= 0 && (p[i_sock].revents & (POLLIN | POLLHUP | POLLERR)) && sock_rd_open && down.len == 0) {
      ssize_t r = read(fd, down.data, sizeof down.data);
      if (r > 0) {
        down.off = 0;
        down.len = (size_t)r;
      } else if (r == 0) {
        sock_rd_open = 0;
      } else if (errno != EAGAIN && errno != EINTR) {
        fail(errno, "read from %s", what);
      }
    }
    while (up.len > 0) {
      ssize_t w = write(fd, up.data + up.off, up.len);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        fail(errno, "write to %s", what);
      }
      up.off += (size_t)w;
      up.len -= (size_t)w;
    }
    while (down.len > 0) {
      ssize_t w = write(1, down.data + down.off, down.len);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        return 0; /* the daemon stopped reading: the channel is gone */
      }
      down.off += (size_t)w;
      down.len -= (size_t)w;
    }
    if (!in_open && up.len == 0 && sock_wr_open) {
      shutdown(fd, SHUT_WR);
      sock_wr_open = 0;
    }
    if (!sock_rd_open && down.len == 0 && out_open) {
      shut_stdout();
      out_open = 0;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------- listen */

struct conn {
  uint32_t id;
  int fd;
  uint32_t send_window; /* DATA bytes we may still send to the daemon */
  int rd_eof;           /* socket EOF seen and EOF frame queued */
  char *in;             /* daemon -> socket, at most INITIAL_WINDOW bytes */
  size_t in_off, in_len;
  size_t written_unacked;
  int wr_eof; /* the daemon sent EOF */
  int wr_shut;
  struct conn *next;
};

static struct conn *conns = NULL;
static int nconns = 0;
static uint32_t next_id = 1;

/* Frames to the daemon. Socket reads stop while it is above OUT_HIGH; control frames always fit. */
static char *out = NULL;
static size_t out_off = 0, out_len = 0, out_cap = 0;

static void put_frame(uint8_t type, uint32_t id, const void *payload, uint32_t len) {
  if (out_off > 0 && out_off + out_len + HEADER + len > out_cap) {
    memmove(out, out + out_off, out_len);
    out_off = 0;
  }
  if (out_off + out_len + HEADER + len > out_cap) {
    size_t cap = out_cap ? out_cap : 65536;
    while (cap < out_off + out_len + HEADER + len) cap *= 2;
    out = realloc(out, cap);
    if (!out) fail(0, "out of memory");
    out_cap = cap;
  }
  unsigned char *h = (unsigned char *)out + out_off + out_len;
  h[0] = type;
  h[1] = (unsigned char)(id >> 24), h[2] = (unsigned char)(id >> 16), h[3] = (unsigned char)(id >> 8), h[4] = (unsigned char)id;
  h[5] = (unsigned char)(len >> 24), h[6] = (unsigned char)(len >> 16), h[7] = (unsigned char)(len >> 8), h[8] = (unsigned char)len;
  if (len) memcpy(h + HEADER, payload, len);
  out_len += HEADER + len;
}

static void put_addr_frame(uint8_t type, uint32_t id, unsigned port, const char *addr) {
  size_t alen = strlen(addr);
  char payload[2 + 512];
  if (alen > 510) alen = 510;
  payload[0] = (char)(port >> 8);
  payload[1] = (char)port;
  memcpy(payload + 2, addr, alen);
  put_frame(type, id, payload, (uint32_t)(2 + alen));
}

static void put_u32_frame(uint8_t type, uint32_t id, uint32_t v) {
  unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
  put_frame(type, id, p, 4);
}

static struct conn *find_conn(uint32_t id) {
  for (struct conn *c = conns; c; c = c->next)
    if (c->id == id) return c;
  return NULL;
}

static void drop_conn(struct conn *c, int tell, const char *reason) {
  if (tell) put_frame(T_CLOSE, c->id, reason, reason ? (uint32_t)strlen(reason) : 0);
  close(c->fd);
  free(c->in);
  for (struct conn **pp = &conns; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  free(c);
  nconns--;
}

static void conn_error(struct conn *c, const char *what, int err) {
  char reason[160];
  snprintf(reason, sizeof reason, "%s: %s", what, strerror(err));
  drop_conn(c, 1, reason);
}

/* Ends a connection once both directions are done. Returns 1 if it was dropped. */
static int maybe_finish(struct conn *c) {
  if (c->wr_eof && c->in_len == 0 && !c->wr_shut) {
    shutdown(c->fd, SHUT_WR);
    c->wr_shut = 1;
  }
  if (c->rd_eof && c->wr_shut) {
    drop_conn(c, 1, NULL);
    return 1;
  }
  return 0;
}

static void protocol_error(const char *what) {
  fprintf(stderr, "roost-relay: protocol error from the daemon: %s\n", what);
  if (unix_path) unlink(unix_path);
  exit(2);
}

/* One frame from the daemon. */
static void handle_frame(uint8_t type, uint32_t id, const unsigned char *p, uint32_t len) {
  struct conn *c = find_conn(id);
  switch (type) {
    case T_DATA:
      if (!c) return;
      if (c->wr_eof) protocol_error("DATA after EOF");
      if (c->in_off + c->in_len + len > INITIAL_WINDOW) {
        if (c->in_len + len > INITIAL_WINDOW) protocol_error("DATA beyond the window");
        memmove(c->in, c->in + c->in_off, c->in_len);
        c->in_off = 0;
      }
      memcpy(c->in + c->in_off + c->in_len, p, len);
      c->in_len += len;
      break;
    case T_EOF:
      if (!c) return;
      c->wr_eof = 1;
      maybe_finish(c);
      break;
    case T_CLOSE:
      if (c) drop_conn(c, 0, NULL);
      break;
    case T_WINDOW:
      if (len != 4) protocol_error("WINDOW payload is not 4 bytes");
      if (!c) return;
      c->send_window += (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
      break;
    default:
      protocol_error("unknown frame type");
  }
}

static int do_listen(int argc, char **argv) {
  int lfd;
  char addr[512];
  unsigned port = 0;
  if (argc == 3 && strcmp(argv[0], "tcp") == 0) {
    struct addrinfo *res = resolve(argv[1], argv[2], 1), *a;
    /* Prefer IPv4 when a name has both (localhost): X11 and most -R users expect 127.0.0.1. */
    for (a = res; a && a->ai_family != AF_INET; a = a->ai_next) {}
    if (!a) a = res;
    lfd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (lfd < 0) fail(errno, "listen tcp %s port %s", argv[1], argv[2]);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, a->ai_addr, a->ai_addrlen) < 0 || listen(lfd, 128) < 0) fail(errno, "listen tcp %s port %s", argv[1], argv[2]);
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    format_addr((struct sockaddr *)&ss, sl, addr, sizeof addr, &port);
  } else if (argc == 2 && strcmp(argv[0], "unix") == 0) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof sun.sun_path) {
      fprintf(stderr, "roost-relay: listen unix %s: path longer than %zu bytes\n", argv[1], sizeof sun.sun_path - 1);
      return 1;
    }
    strcpy(sun.sun_path, argv[1]);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) fail(errno, "listen unix %s", argv[1]);
    mode_t old = umask(0177); /* 0600, like sshd's StreamLocalBindMask */
    int r = bind(lfd, (struct sockaddr *)&sun, sizeof sun);
    int err = errno;
    umask(old);
    if (r < 0) fail(err, "listen unix %s", argv[1]);
    unix_path = argv[1];
    if (listen(lfd, 128) < 0) fail(errno, "listen unix %s", argv[1]);
    snprintf(addr, sizeof addr, "%s", argv[1]);
  } else {
    usage();
  }
  set_nonblock(lfd);
  set_nonblock(0);
  set_nonblock(1);
  put_addr_frame(T_LISTENING, 0, port, addr);

  static unsigned char inbuf[HEADER + MAX_PAYLOAD + READ_CHUNK];
  size_t in_len = 0;
  int stdin_open = 1;
  struct pollfd *p = NULL;
  struct conn **pc = NULL;
  size_t pcap = 0;

  while (stdin_open || out_len > 0) {
    size_t need = 3 + (size_t)nconns;
    if (need > pcap) {
      pcap = need * 2;
      p = realloc(p, pcap * sizeof *p);
      pc = realloc(pc, pcap * sizeof *pc);
      if (!p || !pc) fail(0, "out of memory");
    }
    nfds_t n = 0;
    int i_in = -1, i_out = -1, i_lfd = -1;
    if (stdin_open) p[i_in = (int)n++] = (struct pollfd){0, POLLIN, 0};
    if (out_len > 0) p[i_out = (int)n++] = (struct pollfd){1, POLLOUT, 0};
    if (stdin_open && nconns < MAX_CONNS) p[i_lfd = (int)n++] = (struct pollfd){lfd, POLLIN, 0};
    nfds_t first_conn = n;
    for (struct conn *c = conns; c; c = c->next) {
      short ev = 0;
      if (!c->rd_eof && c->send_window > 0 && out_len < OUT_HIGH) ev |= POLLIN;
      if (c->in_len > 0) ev |= POLLOUT;
      pc[n - first_conn] = c;
      /* Nothing wanted: leave it out (fd -1), or a hung-up socket would wake poll forever. */
      p[n++] = (struct pollfd){ev ? c->fd : -1, ev, 0};
    }
    if (poll(p, n, -1) < 0) {
      if (errno == EINTR) continue;
      fail(errno, "poll");
    }

    if (i_lfd >= 0 && (p[i_lfd].revents & POLLIN)) {
      struct sockaddr_storage ss;
      socklen_t sl = sizeof ss;
      int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        if (!c || !(c->in = malloc(INITIAL_WINDOW))) fail(0, "out of memory");
        c->id = next_id++;
        c->fd = fd;
        c->send_window = INITIAL_WINDOW;
        c->next = conns;
        conns = c;
        nconns++;
        if (ss.ss_family != AF_UNIX) tcp_nodelay(fd);
        char peer[INET6_ADDRSTRLEN + 8];
        unsigned peer_port;
        format_addr((struct sockaddr *)&ss, sl, peer, sizeof peer, &peer_port);
        put_addr_frame(T_OPEN, c->id, peer_port, peer);
      }
    }

    /* Sockets, before new frames can change the list. */
    for (nfds_t k = first_conn; k < n; k++) {
      struct conn *c = pc[k - first_conn];
      short re = p[k].revents;
      if (!re) continue;
      if ((re & (POLLIN | POLLHUP | POLLERR)) && !c->rd_eof && c->send_window > 0) {
        char buf[READ_CHUNK];
        size_t want = c->send_window < sizeof buf ? c->send_window : sizeof buf;
        ssize_t r = read(c->fd, buf, want);
        if (r > 0) {
          put_frame(T_DATA, c->id, buf, (uint32_t)r);
          c->send_window -= (uint32_t)r;
        } else if (r == 0) {
          c->rd_eof = 1;
          put_frame(T_EOF, c->id, NULL, 0);
          if (maybe_finish(c)) continue;
        } else if (errno != EAGAIN && errno != EINTR) {
          conn_error(c, "read", errno);
          continue;
        }
      }
      if (c->in_len > 0) {
        ssize_t w = write(c->fd, c->in + c->in_off, c->in_len);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          conn_error(c, "write", errno);
          continue;
        }
        if (w > 0) {
          c->in_off += (size_t)w;
          c->in_len -= (size_t)w;
          if (c->in_len == 0) c->in_off = 0;
          c->written_unacked += (size_t)w;
          if (c->written_unacked >= ACK_BATCH || c->in_len == 0) {
            put_u32_frame(T_WINDOW, c->id, (uint32_t)c->written_unacked);
            c->written_unacked = 0;
          }
        }
        if (maybe_finish(c)) continue;
      }
    }

    if (i_in >= 0 && p[i_in].revents) {
      ssize_t r = read(0, inbuf + in_len, sizeof inbuf - in_len);
      if (r > 0) {
        in_len += (size_t)r;
        size_t off = 0;
        while (in_len - off >= HEADER) {
          const unsigned char *h = inbuf + off;
          uint32_t id = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
          uint32_t len = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
          if (len > MAX_PAYLOAD) protocol_error("frame longer than 65536 bytes");
          if (in_len - off < HEADER + len) break;
          handle_frame(h[0], id, h + HEADER, len);
          off += HEADER + len;
        }
        memmove(inbuf, inbuf + off, in_len - off);
        in_len -= off;
        /* Bytes a frame just queued may be writable at once; the next poll finds out. */
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        /* The daemon is gone or done: stop listening, drop every connection. */
        stdin_open = 0;
        close(lfd);
        if (unix_path) {
          unlink(unix_path);
          unix_path = NULL;
        }
        while (conns) drop_conn(conns, 0, NULL);
        out_len = 0;
      }
    }

    if (out_len > 0) {
      ssize_t w = write(1, out + out_off, out_len);
      if (w < 0 && errno != EAGAIN && errno != EINTR) {
        out_len = 0;
        stdin_open = 0; /* nobody reads our frames: end */
      } else if (w > 0) {
        out_off += (size_t)w;
        out_len -= (size_t)w;
        if (out_len == 0) out_off = 0;
      }
    }
  }
  if (unix_path) unlink(unix_path);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_term);
  signal(SIGHUP, on_term);
  signal(SIGINT, on_term);
  if (argc < 2) usage();
  if (strcmp(argv[1], "connect") == 0) return do_connect(argc - 2, argv + 2);
  if (strcmp(argv[1], "listen") == 0) return do_listen(argc - 2, argv + 2);
  usage();
}
