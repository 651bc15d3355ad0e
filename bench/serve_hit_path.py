#!/usr/bin/env python3
"""The cache-hit path at the machine's limit: `regcache serve`, CNCF distribution's proxy mode
(docker-registry with proxy.remoteurl) and nginx serving the same manifest bytes as a static file,
side by side in one run.

Setup: one upstream docker-registry with a generated one-platform image; regcache (tag TTL 1h,
access_log: false, io_threads: 1 on its one core, as nginx runs one worker) and distribution (proxy mode, access log off, log level warn) in front of it,
both warmed by one skopeo pull; nginx (access_log off) serving the image index's bytes from disk
with the same Content-Type. Every server is pinned to core 0, the load generator to core 1 (the
upstream, which only distribution's tag lookups reach, to core 1 too).

Load: 64 keep-alive connections for --duration seconds, one client thread: `wrk -t1 -c64` for GET
(a Lua script tallies every status code wrk saw); HEAD rows use `headload`, a small epoll client
embedded below and built with cc at start, because wrk 4.1 and h2load cannot do HEAD (they wait for
the Content-Length bytes of body a HEAD answer never has) and ab's HTTP/1.0 keep-alive is not
acknowledged by regcache (checked and reported separately). Manifest requests carry the
Accept header a containerd client sends. Each row runs --runs times, rows interleaved; the table
prints medians with min-max, and a row with any non-2xx response or socket error is flagged
(its rate counts 2xx answers only). CPU columns (from /proc) split each row's CPU between the
server, the load generator and the rest of the machine, so a row measured while other jobs ran
shows as such.

Usage: bench/serve_hit_path.py [--runs 3] [--duration 7] [--regcache build/regcache]
"""

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import regtest  # noqa: E402
from fixtures import OCI_INDEX, make_layout, push  # noqa: E402
from regtest import Regcache, Registry, stop_process, wait_port, free_port  # noqa: E402
from serve_vs_distribution import cpu_seconds  # noqa: E402

MIB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, CLIENT_CORE = "0", "1"
# What containerd sends when it resolves a reference.
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json", "*/*"])

# wrk: count every status code, report exact latency percentiles (microseconds) and errors.
WRK_LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do io.write(string.format("STATUS %d %d\n", k, v)) end
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""

# wrk 4.1 cannot measure HEAD (its parser waits for Content-Length bytes of body that a HEAD
# answer never has), nor can h2load; ab speaks HTTP/1.0 keep-alive, which regcache does not
# acknowledge (see http10_keepalive). So HEAD rows use this client, built with cc at start: one
# thread, epoll, N keep-alive HTTP/1.1 connections, a request sent again as soon as the previous
# answer's headers are complete. It prints the same STATUS/RESULT lines as the wrk script.
HEADLOAD_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { int fd; size_t used; double start; char buf[16384]; } conn_t;
static struct sockaddr_in addr;
static int ep;
static char req[8192];
static size_t reqlen;
static unsigned *lat;
static size_t nlat, caplat;
static long codes[600], errors;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int cmp(const void *a, const void *b) {
  unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
  return x < y ? -1 : x > y;
}
static int start(conn_t *c) { /* connect if needed, send one request */
  if (c->fd < 0) {
    int one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }
  c->used = 0;
  c->start = now();
  return write(c->fd, req, reqlen) == (ssize_t)reqlen ? 0 : -1;
}
static void drop(conn_t *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
}
int main(int argc, char **argv) {
  if (argc != 5) return 2;
  double dur = atof(argv[2]);
  int n = atoi(argv[3]), open = 0;
  FILE *f = fopen(argv[4], "rb");
  if (!f) return 2;
  reqlen = fread(req, 1, sizeof req, f);
  fclose(f);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(0x7f000001);
  ep = epoll_create1(0);
  conn_t *cs = calloc(n, sizeof *cs);
  double t0 = now(), end = t0 + dur;
  for (int i = 0; i < n; i++) {
    cs[i].fd = -1;
    if (start(&cs[i]) != 0) { perror("connect"); return 1; }
    open++;
  }
  struct epoll_event evs[256];
  while (open > 0) {
    int k = epoll_wait(ep, evs, 256, 1000);
    if (now() > end + 10) { errors += open; break; } /* answers that never came */
    for (int i = 0; i < k; i++) {
      conn_t *c = evs[i].data.ptr;
      ssize_t r = read(c->fd, c->buf + c->used, sizeof c->buf - 1 - c->used);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) { /* the server closed or reset: count it, reconnect while time is left */
        errors++;
        drop(c);
        if (now() >= end || start(c) != 0) { drop(c); open--; }
        continue;
      }
      c->used += r;
      c->buf[c->used] = 0;
      char *eoh = strstr(c->buf, "\r\n\r\n");
      if (!eoh) {
        if (c->used >= sizeof c->buf - 1) { errors++; drop(c); open--; }
        continue;
      }
      double t = now();
      int code = strncmp(c->buf, "HTTP/1.", 7) == 0 ? atoi(c->buf + 9) : 0;
      if (code > 0 && code < 600) codes[code]++; else errors++;
      if (eoh + 4 != c->buf + c->used) errors++; /* bytes after a HEAD answer's headers */
      if (nlat == caplat) {
        caplat = caplat ? 2 * caplat : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
      }
      lat[nlat++] = (unsigned)((t - c->start) * 1e6);
      if (strcasestr(c->buf, "\r\nconnection: close")) drop(c);
      if (t >= end || start(c) != 0) { drop(c); open--; }
    }
  }
  double took = now() - t0;
  qsort(lat, nlat, sizeof *lat, cmp);
  for (int i = 0; i < 600; i++)
    if (codes[i]) printf("STATUS %d %ld\n", i, codes[i]);
  printf("RESULT %zu %.0f %ld %u %u %u\n", nlat, (took < dur ? took : dur) * 1e6, errors,
         nlat ? lat[nlat / 2] : 0, nlat ? lat[(size_t)(nlat * 0.99)] : 0, nlat ? lat[nlat - 1] : 0);
  return 0;
}
"""


def build_headload(workdir):
    src = os.path.join(workdir, "headload.c")
    with open(src, "w") as f:
        f.write(HEADLOAD_C)
    binary = os.path.join(workdir, "headload")
    subprocess.run(["cc", "-O2", "-o", binary, src], check=True, capture_output=True)
    return binary


def http10_keepalive(host, path, headers):
    """How a server answers an HTTP/1.0 keep-alive HEAD (what ab -k sends): 'ok' when it says
    Connection: keep-alive or closes; otherwise it keeps the connection open without saying so,
    and an HTTP/1.0 client waits for a close that never comes."""
    h, port = host.rsplit(":", 1)
    with socket.create_connection((h, int(port)), timeout=2) as s:
        extra = "".join("%s: %s\r\n" % kv for kv in headers.items())
        s.sendall(("HEAD %s HTTP/1.0\r\nHost: %s\r\nConnection: keep-alive\r\n%s\r\n"
                   % (path, host, extra)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"connection: keep-alive" in data.lower():
            return "ok"
        s.settimeout(1.0)
        try:
            return "ok" if s.recv(1) == b"" else "sent bytes after the headers"
        except socket.timeout:
            return ("answers HTTP/1.0 keep-alive without 'Connection: keep-alive' and keeps the "
                    "connection open (ab -k waits for a close that never comes)")


NGINX_CONF = """
user root;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  open_file_cache max=64;
  client_body_temp_path %(dir)s/body; proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fcgi; uwsgi_temp_path %(dir)s/uwsgi; scgi_temp_path %(dir)s/scgi;
  server {
    listen 127.0.0.1:%(port)d;
    root %(dir)s/www;
    location / {
      types { }
      default_type %(type)s;
      add_header Docker-Content-Digest %(digest)s;
    }
  }
}
"""


def machine_busy_seconds():
    """CPU seconds all cores spent on anything but idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]
    return (sum(t) - t[3] - t[4]) / CLK


def children_cpu_seconds():
    """CPU seconds of this process's waited-for children (the load generators)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":")[1])


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return f.read()


def image_digests(layout):
    """(index digest, index bytes, first child manifest's digest, that manifest as JSON) of a layout."""
    with open(os.path.join(layout, "index.json")) as f:
        index_digest = json.load(f)["manifests"][0]["digest"]
    index_bytes = read_blob(layout, index_digest)
    child = json.loads(index_bytes)["manifests"][0]["digest"]
    return index_digest, index_bytes, child, json.loads(read_blob(layout, child))


def pin(pid, core):
    """Pins every thread of a running process (and the threads it starts later) to `core`."""
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def quiet_registry(reg):
    """Restarts a harness Registry with its access log off and log level warn (as for the others)."""
    reg.stop()
    with open(reg.config_path) as f:
        config = json.load(f)
    config["log"] = {"level": "warn", "accesslog": {"disabled": True}, "formatter": "text"}
    with open(reg.config_path, "w") as f:
        json.dump(config, f)
    reg.start()


def skopeo_pull(host, repo_tag, dest):
    os.makedirs(dest, exist_ok=True)
    r = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                        "docker://%s/%s" % (host, repo_tag), "oci:%s:pulled" % dest],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("pull of %s from %s failed: %s" % (repo_tag, host, r.stderr.strip()))


class NginxProcess:
    """An nginx master started by a subclass as self.proc (daemon off), with its workers."""

    def pids(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return [self.proc.pid] + [int(p) for p in f.read().split()]

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, 10)


class StaticNginx(NginxProcess):
    """nginx serving one file at `url_path` with a fixed Content-Type, pinned to `core`."""

    def __init__(self, workdir, url_path, data, content_type, digest, core):
        self.dir = os.path.join(workdir, "nginx-static")
        target = os.path.join(self.dir, "www", url_path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"dir": self.dir, "port": self.port, "type": content_type,
                                  "digest": digest})
        self.proc = subprocess.Popen(["taskset", "-c", core, "nginx", "-p", self.dir, "-c", conf,
                                      "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)


def check_target(host, method, path, headers, want_body=None):
    """One request as the load generator sends it: a problem string, or None when it is a 200."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return "%s %s answered %d: %s" % (method, path, r.status, body[:200])
        if want_body is not None and method == "GET" and body != want_body:
            return "%s %s: body differs from the stored manifest" % (method, path)
        return None
    finally:
        conn.close()


def run_wrk(url, headers, duration, workdir):
    script = os.path.join(workdir, "tally.lua")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_LUA)
    cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", "-c64", "-d%ds" % duration, "--latency",
           "-s", script]
    for k, v in headers.items():
        cmd += ["-H", "%s: %s" % (k, v)]
    return parse_result(subprocess.run(cmd + [url], capture_output=True, text=True,
                                       timeout=duration + 60).stdout)


def parse_result(out):
    """The STATUS/RESULT lines that the wrk script and headload print."""
    codes = {int(c): int(n) for c, n in re.findall(r"^STATUS (\d+) (\d+)$", out, re.M)}
    m = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out, re.M)
    if not m:
        raise RuntimeError("load generator printed no result:\n" + out)
    requests, duration_us, sock_errors, p50, p99, pmax = map(int, m.groups())
    ok = sum(n for c, n in codes.items() if 200 <= c < 300)
    return {"rps": ok / (duration_us / 1e6), "p50": p50 / 1000, "p99": p99 / 1000,
            "max": pmax / 1000, "ok": ok, "bad": requests - ok + sock_errors,
            "codes": dict(codes, **({"socket errors": sock_errors} if sock_errors else {}))}


def run_headload(binary, port, request, duration, workdir):
    req_file = os.path.join(workdir, "head-request")
    with open(req_file, "w") as f:
        f.write(request)
    cmd = ["taskset", "-c", CLIENT_CORE, binary, str(port), str(duration), "64", req_file]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise RuntimeError("headload failed: " + r.stderr)
    return parse_result(r.stdout)


def fmt_spread(values, fmt):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return (fmt + " (" + fmt + "–" + fmt + ")") % (med, min(values), max(values))


def ratio(a, b):
    return "%.2fx" % (a / b) if b else "-"


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr)


def use_regcache(path):
    """Points the harness at the regcache binary to test; exits when there is none."""
    regtest.REGCACHE = os.path.abspath(path)
    if not os.access(regtest.REGCACHE, os.X_OK):
        sys.exit("no regcache binary at %s (build it, or pass --regcache)" % regtest.REGCACHE)
    return regtest.REGCACHE


@contextlib.contextmanager
def bench_session(prefix):
    """A temp work dir (also HOME, so skopeo keeps no state between runs) and a list of stop
    functions. On the way out (normally, on an exception, Ctrl-C or SIGTERM) the stops run in
    reverse order and the dir is removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix=prefix)
    os.environ["HOME"] = os.path.join(work, "home")
    os.makedirs(os.environ["HOME"])
    stops = []
    try:
        yield work, stops
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as e:  # noqa: BLE001
                print("cleanup: %s" % e, file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=7,
                    help="seconds per measurement (wrk -d; 10 is the issue's method, ~6.5 min in all)")
    ap.add_argument("--regcache", default=os.path.join(HERE, "..", "build", "regcache"))
    args = ap.parse_args()
    use_regcache(args.regcache)
    for tool in ("wrk", "cc", "nginx", "docker-registry", "skopeo", "taskset"):
        if not shutil.which(tool):
            sys.exit("%s is missing (apt-get install wrk gcc nginx docker-registry skopeo)" % tool)
    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    with bench_session("regcache-bench-hit-") as (work, stops):
        headload = build_headload(work)
        upstream = Registry(work, "upstream")
        stops.append(upstream.stop)
        pin(upstream.proc.pid, CLIENT_CORE)
        log("generating and pushing the image; starting regcache, distribution, nginx")
        layout = os.path.join(work, "img")
        make_layout(layout, tag="v1", platforms=[("linux", "amd64", "")], layers=1,
                    layer_size=4 * MIB, seed=41)
        push(layout, "v1", upstream.host + "/library/app:v1")
        index_digest, index_bytes, _, child = image_digests(layout)
        layer_digest = child["layers"][0]["digest"]

        rc = Regcache(work, [{"name": "hub", "url": "http://" + upstream.host, "tag_ttl": "1h"}],
                      name="rc", extra="access_log: false\nio_threads: 1\n")
        stops.append(rc.stop)
        dist = Registry(work, "dist", proxy_remote="http://" + upstream.host)
        stops.append(dist.stop)
        quiet_registry(dist)
        for i, srv in enumerate((rc, dist)):
            skopeo_pull(srv.host, "library/app:v1", os.path.join(work, "pull-%d" % i))
        time.sleep(2.0)  # distribution stores proxied blobs in the background
        nginx = StaticNginx(work, "/v2/library/app/manifests/v1", index_bytes, OCI_INDEX,
                            index_digest, SERVER_CORE)
        stops.append(nginx.stop)
        pin(rc.proc.pid, SERVER_CORE)
        pin(dist.proc.pid, SERVER_CORE)

        manifest = "/v2/library/app/manifests/"
        mh = {"Accept": MANIFEST_ACCEPT}
        bh = {"Accept": "*/*"}
        servers = {"nginx": (nginx.host, nginx.pids), "regcache": (rc.host, lambda: [rc.proc.pid]),
                   "distribution": (dist.host, lambda: [dist.proc.pid])}
        cache_rows = [("GET manifest by tag", "GET", manifest + "v1", mh),
                      ("HEAD manifest by tag", "HEAD", manifest + "v1", mh),
                      ("GET manifest by digest", "GET", manifest + index_digest, mh),
                      ("HEAD manifest by digest", "HEAD", manifest + index_digest, mh),
                      ("HEAD blob (4 MiB layer)", "HEAD", "/v2/library/app/blobs/" + layer_digest, bh)]
        rows = [("nginx", "GET static file", "GET", manifest + "v1", mh),
                ("nginx", "HEAD static file", "HEAD", manifest + "v1", mh)]
        rows += [(s,) + r for s in ("regcache", "distribution") for r in cache_rows]

        log("setup done")
        problems = []
        for server, label, method, path, headers in rows:
            p = check_target(servers[server][0], method, path, headers,
                             index_bytes if "manifest" in path else None)
            if p:
                problems.append("%s %s: %s" % (server, label, p))
        for p in problems:
            print("PRE-CHECK FAILED: " + p, file=sys.stderr)
        http10 = {s: http10_keepalive(servers[s][0], manifest + "v1", mh) for s in servers}

        results = {}
        for run in range(args.runs):
            order = rows if run % 2 == 0 else list(reversed(rows))
            for server, label, method, path, headers in order:
                host, pids = servers[server]
                url = "http://%s%s" % (host, path)
                log("run %d/%d: %s %s" % (run + 1, args.runs, server, label))
                cpu0 = sum(cpu_seconds(p) for p in pids())
                client0, busy0 = children_cpu_seconds(), machine_busy_seconds()
                up0 = len(upstream.requests())
                t = time.monotonic()
                if method == "GET":
                    r = run_wrk(url, headers, args.duration, work)
                else:
                    request = "HEAD %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
                        path, host, "".join("%s: %s\r\n" % kv for kv in headers.items()))
                    r = run_headload(headload, int(host.rsplit(":", 1)[1]), request, args.duration, work)
                elapsed = time.monotonic() - t
                server_cpu = sum(cpu_seconds(p) for p in pids()) - cpu0
                client_cpu = children_cpu_seconds() - client0
                r["cpu"] = 100 * server_cpu / elapsed
                r["client_cpu"] = 100 * client_cpu / elapsed
                r["other_cpu"] = 100 * (machine_busy_seconds() - busy0 - server_cpu - client_cpu) / elapsed
                r["upstream"] = (len(upstream.requests()) - up0) / elapsed
                results.setdefault((server, label), []).append(r)
                time.sleep(0.2)

        def med(key, field="rps"):
            return statistics.median(r[field] for r in results[key])

        print()
        print("Hit path, %d connections, 1 client thread on core %s, server on core %s; "
              "median (min–max) of %d runs x %d s" % (64, CLIENT_CORE, SERVER_CORE, args.runs, args.duration))
        print("access logs off: nginx (access_log off), regcache (access_log: false), "
              "distribution (log.accesslog.disabled, level warn); GET rows: wrk 4.1 -t1 -c64, "
              "HEAD rows: headload (epoll, 1 thread, 64 HTTP/1.1 keep-alive connections)")
        print()
        print("| server | request | tool | 2xx req/s | p50 ms | p99 ms | non-2xx + errors "
              "| CPU % server / client / rest | upstream req/s | × nginx | × distribution "
              "| target (≥ 0.7× nginx, p99 ≤ 5 ms) |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        flagged = []
        for server, label, method, path, headers in rows:
            rs = results[(server, label)]
            bad = sum(r["bad"] for r in rs)
            total = bad + sum(r["ok"] for r in rs)
            rps = fmt_spread([r["rps"] for r in rs], "%.0f")
            if bad:
                codes = {}
                for r in rs:
                    for k, v in r["codes"].items():
                        codes[k] = codes.get(k, 0) + v
                flagged.append("%s %s: %d of %d responses not 2xx or failed: %s"
                               % (server, label, bad, total, codes))
                rps = ("FAILED (%s)" if bad * 2 > total else "%s ⚠") % rps
            nginx_key = ("nginx", "GET static file" if method == "GET" else "HEAD static file")
            x_nginx = ratio(med((server, label)), med(nginx_key)) if server != "nginx" else ""
            x_dist = ratio(med((server, label)), med(("distribution", label))) if server == "regcache" else ""
            target = ""
            if server == "regcache":
                ok = (not bad and med((server, label)) >= 0.7 * med(nginx_key)
                      and med((server, label), "p99") <= 5.0)
                target = "met" if ok else "**not met**"
            print("| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |" % (
                server, label, "wrk" if method == "GET" else "headload", rps,
                fmt_spread([r["p50"] for r in rs], "%.2f"), fmt_spread([r["p99"] for r in rs], "%.2f"),
                bad, " / ".join("%.0f" % statistics.median(r[k] for r in rs)
                                for k in ("cpu", "client_cpu", "other_cpu")),
                "%.0f" % statistics.median(r["upstream"] for r in rs), x_nginx, x_dist, target))
        print()
        for f in problems + flagged:
            print("FLAGGED: " + f)
        for server, verdict in http10.items():
            print("HTTP/1.0 keep-alive HEAD (as ab -k sends it): %s: %s" % (server, verdict))
        print("CPU %% of one core (the machine has 2, so 200 in all): server = the server's processes, "
              "client = the load generator, rest = everything else on the machine (the upstream, "
              "kernel threads, other users' jobs). Load average before: %.2f, after: %.2f"
              % (load_before, os.getloadavg()[0]))
        print("total run time %.0f s" % (time.monotonic() - t_start))


if __name__ == "__main__":
    main()
