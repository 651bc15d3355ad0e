/* pullload: the "pull cached content" load of bench/serve_upstream_failure.py in C, so that the
 * client's own latency stays out of the p99 the bench reports (the Python client added tens of
 * milliseconds at 64 connections on two cores).
 *
 *   pullload PORT SECONDS CONNECTIONS TIMEOUT_S REQUEST_FILE [RATE]
 *
 * Without RATE (or 0) every connection sends its next request as soon as an answer is complete
 * (a closed loop: it finds the machine's limit, and latency there is mostly queueing). With RATE,
 * the connections together send RATE requests per second on a fixed schedule, and latency counts
 * from when a request was due.
 *
 * REQUEST_FILE has one request per line, tab-separated:
 *   IMAGE KIND METHOD PATH ACCEPT DIGEST_HEX SIZE
 * (ACCEPT, DIGEST_HEX and SIZE are "-" when not used). Connection i pulls image i, i+1, ... in
 * turn, each image's requests in file order, on one keep-alive HTTP/1.1 connection; one thread,
 * epoll. A response is checked as the Python client checks it: 2xx, a manifest body against its
 * sha256, a blob's Content-Length (and body length) against its size. Latency runs from sending
 * the request to the last body byte. A reset, an early close or TIMEOUT_S without the answer is a
 * failure; the connection is then opened again.
 *
 * Prints one line per request: "R KIND OK MICROSECONDS HEAD_MICROSECONDS WARNED WHY" (the whole
 * request; to the end of its header block, or the failure; WHY, to the end of the line:
 * the status, or "wrong body", "wrong length", "reset", "closed", "timeout", "connect"), then
 * "DONE". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int image;
  char kind[16], method[8], path[512], accept[512], digest[72];
  long long size; /* -1: not checked */
} request_t;

typedef struct {
  int fd, image, step; /* image and position in its requests */
  int waiting, done;   /* paced: idle until `due`; finished for good */
  double due;          /* paced: when the next request is due */
  double start, first; /* request sent (or due, if later); header block complete */
  char head[16384];
  size_t head_used;
  int in_body, status, warned, closing;
  long long length, got;
  EVP_MD_CTX *sha;
} conn_t;

typedef struct {
  const char *kind;
  int ok;
  const char *why;
  int status;
  unsigned micros, head_micros; /* to the last body byte; to the end of the header block */
  int warned;
} record_t;

static request_t reqs[256];
static int nreqs, nimages, first_of[64], count_of[64];
static struct sockaddr_in addr;
static int ep;
static record_t *recs;
static size_t nrecs, caprecs;
static char scratch[1 << 18];
static double interval; /* paced: seconds between one connection's requests; 0: closed loop */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const request_t *current(conn_t *c) { return &reqs[first_of[c->image] + c->step]; }

static void record(conn_t *c, int ok, const char *why, int status) {
  if (nrecs == caprecs) {
    caprecs = caprecs ? 2 * caprecs : 1 << 16;
    recs = realloc(recs, caprecs * sizeof *recs);
    if (!recs) exit(3);
  }
  double t = now();
  recs[nrecs++] = (record_t){current(c)->kind, ok, why, status, (unsigned)((t - c->start) * 1e6),
                             (unsigned)(((c->in_body ? c->first : t) - c->start) * 1e6), c->warned};
}

static void drop(conn_t *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
}

static void advance(conn_t *c) {
  if (++c->step == count_of[c->image]) {
    c->step = 0;
    c->image = (c->image + 1) % nimages;
  }
}

/* Sends the connection's current request, connecting first if needed. 0 on success. */
static int send_request(conn_t *c) {
  if (c->fd < 0) {
    int one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
      drop(c);
      return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }
  const request_t *r = current(c);
  char buf[2048];
  int n = snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s\r\n", r->method,
                   r->path, r->accept[0] ? "Accept: " : "", r->accept, r->accept[0] ? "\r\n" : "");
  c->head_used = 0;
  c->in_body = c->warned = c->closing = 0;
  c->status = 0;
  c->length = c->got = 0;
  /* Paced: latency counts from when the request was due, so a slow answer that delays the
   * next request is not hidden (no coordinated omission). */
  double t = now();
  c->start = interval > 0 && c->due < t ? c->due : t;
  if (r->digest[0]) EVP_DigestInit_ex(c->sha, EVP_sha256(), NULL);
  /* A small request into an empty socket buffer: all of it or the connection failed. */
  return write(c->fd, buf, (size_t)n) == n ? 0 : -1;
}

static void finish(conn_t *c) {
  const request_t *r = current(c);
  int ok = c->status >= 200 && c->status < 300;
  const char *why = NULL;
  if (ok && r->digest[0]) {
    unsigned char md[32];
    char hex[65];
    EVP_DigestFinal_ex(c->sha, md, NULL);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    if (strcmp(hex, r->digest) != 0) ok = 0, why = "wrong body";
  } else if (ok && r->size >= 0 && c->length != r->size) {
    ok = 0, why = "wrong length";
  }
  record(c, ok, why, c->status);
  if (c->closing) drop(c);
  advance(c);
}

static void fail(conn_t *c, const char *why) {
  record(c, 0, why, 0);
  drop(c);
  advance(c);
}

/* Parses a complete header block in c->head; returns bytes of body already in it. */
static size_t parse_head(conn_t *c, char *eoh) {
  *eoh = 0;
  c->status = strncmp(c->head, "HTTP/1.", 7) == 0 ? atoi(c->head + 9) : 0;
  c->length = 0;
  for (char *line = strstr(c->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
    char *h = line + 2;
    if (strncasecmp(h, "content-length:", 15) == 0) c->length = atoll(h + 15);
    if (strncasecmp(h, "warning:", 8) == 0) c->warned = 1;
    if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h, "close")) c->closing = 1;
  }
  c->in_body = 1;
  c->first = now();
  if (strcmp(current(c)->method, "HEAD") == 0) return 0;
  return c->head_used - (size_t)(eoh + 4 - c->head);
}

static void body_bytes(conn_t *c, const char *p, size_t n) {
  if (current(c)->digest[0]) EVP_DigestUpdate(c->sha, p, n);
  c->got += (long long)n;
}

/* Reads what the socket has; finishes the response when complete. */
static void on_readable(conn_t *c) {
  for (;;) {
    if (!c->in_body) {
      ssize_t r = read(c->fd, c->head + c->head_used, sizeof c->head - 1 - c->head_used);
      if (r < 0 && errno == EAGAIN) return;
      if (r <= 0) return fail(c, r == 0 ? "closed" : "reset");
      c->head_used += (size_t)r;
      c->head[c->head_used] = 0;
      char *eoh = strstr(c->head, "\r\n\r\n");
      if (!eoh) {
        if (c->head_used >= sizeof c->head - 1) return fail(c, "header too large");
        continue;
      }
      size_t extra = parse_head(c, eoh);
      long long want = strcmp(current(c)->method, "HEAD") == 0 ? 0 : c->length;
      if ((long long)extra > want) extra = (size_t)want; /* HEAD: nothing follows */
      body_bytes(c, eoh + 4, extra);
      if (c->got >= want) return finish(c);
      continue;
    }
    long long left = c->length - c->got;
    ssize_t r = read(c->fd, scratch, left < (long long)sizeof scratch ? (size_t)left : sizeof scratch);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) return fail(c, r == 0 ? "closed" : "reset");
    body_bytes(c, scratch, (size_t)r);
    if (c->got >= c->length) return finish(c);
  }
}

static void finish_connection(conn_t *c, int *open) {
  drop(c);
  c->done = 1;
  (*open)--;
}

/* After an answer or a failure: the connection's next request now, at its due time, or none. */
static void next_request(conn_t *c, double end, int *open) {
  if (now() >= end) return finish_connection(c, open);
  if (interval > 0) {
    c->due += interval;
    c->waiting = 1; /* the main loop sends it when due (at once if already late) */
    return;
  }
  if (send_request(c) == 0) return;
  fail(c, "connect");
  if (send_request(c) != 0) finish_connection(c, open);
}

static void field(char **p, char *out, size_t cap) {
  char *tab = strchr(*p, '\t');
  size_t n = tab ? (size_t)(tab - *p) : strlen(*p);
  if (n >= cap) n = cap - 1;
  memcpy(out, *p, n);
  out[n] = 0;
  if (strcmp(out, "-") == 0) out[0] = 0;
  *p = tab ? tab + 1 : *p + strlen(*p);
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: pullload PORT SECONDS CONNECTIONS TIMEOUT_S REQUEST_FILE [RATE]\n");
    return 2;
  }
  double duration = atof(argv[2]), timeout = atof(argv[4]);
  int n = atoi(argv[3]);
  FILE *f = fopen(argv[5], "r");
  if (!f) return 2;
  char line[2048];
  while (fgets(line, sizeof line, f) && nreqs < 256) {
    line[strcspn(line, "\n")] = 0;
    char *p = line, num[32];
    request_t *r = &reqs[nreqs];
    field(&p, num, sizeof num);
    r->image = atoi(num);
    field(&p, r->kind, sizeof r->kind);
    field(&p, r->method, sizeof r->method);
    field(&p, r->path, sizeof r->path);
    field(&p, r->accept, sizeof r->accept);
    field(&p, r->digest, sizeof r->digest);
    field(&p, num, sizeof num);
    r->size = num[0] ? atoll(num) : -1;
    if (r->image < 0 || r->image >= 64) return 2;
    if (count_of[r->image]++ == 0) first_of[r->image] = nreqs;
    if (r->image + 1 > nimages) nimages = r->image + 1;
    nreqs++;
  }
  fclose(f);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(0x7f000001);
  ep = epoll_create1(0);
  conn_t *cs = calloc((size_t)n, sizeof *cs);
  double rate = argc == 7 ? atof(argv[6]) : 0;
  if (rate > 0) interval = n / rate;
  double t0 = now(), end = t0 + duration;
  int open = 0;
  for (int i = 0; i < n; i++) {
    conn_t *c = &cs[i];
    c->fd = -1;
    c->image = i % nimages;
    c->sha = EVP_MD_CTX_new();
    c->due = t0 + interval * i / n; /* paced: spread over one interval */
    open++;
    if (interval > 0) {
      c->waiting = 1;
    } else if (send_request(c) != 0) {
      fail(c, "connect");
      c->done = 1;
      open--;
    }
  }
  struct epoll_event evs[256];
  /* A connection is "open" while it has a request out; it stops taking new ones at the end. */
  while (open > 0) {
    int k = epoll_wait(ep, evs, 256, interval > 0 ? 1 : 50);
    for (int i = 0; i < k; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->fd < 0 || c->waiting) continue;
      size_t before = nrecs;
      on_readable(c);
      if (nrecs == before) continue; /* the response is not complete yet */
      next_request(c, end, &open);
    }
    double t = now();
    for (int i = 0; i < n; i++) {
      conn_t *c = &cs[i];
      if (c->done) continue;
      if (c->waiting) {
        if (t < c->due) continue;
        c->waiting = 0;
        if (t >= end) {
          finish_connection(c, &open);
        } else if (send_request(c) != 0) {
          fail(c, "connect");
          next_request(c, end, &open);
        }
      } else if (c->fd >= 0 && t - c->start >= timeout) {
        fail(c, "timeout");
        next_request(c, end, &open);
      }
    }
  }
  for (size_t i = 0; i < nrecs; i++) {
    const record_t *r = &recs[i];
    if (r->why) {
      printf("R %s %d %u %u %d %s\n", r->kind, r->ok, r->micros, r->head_micros, r->warned, r->why);
    } else {
      printf("R %s %d %u %u %d %d\n", r->kind, r->ok, r->micros, r->head_micros, r->warned,
             r->status);
    }
  }
  printf("DONE\n");
  return 0;
}
