#!/usr/bin/env python3
"""Cached content while the upstream is sick: `regcache serve` vs CNCF distribution's proxy mode
(docker-registry with proxy.remoteurl), side by side in one run.

Setup: one upstream docker-registry with 3 generated one-platform images (1-2 layers of --layer-mib
MiB each); each cache reaches it through its own fault front (a TCP front in this script); regcache
with tag_ttl 1s, so every tag is stale during the test. Both caches are warmed by one skopeo pull of
each image; then both fronts are switched to each mode in turn:

  healthy    the front relays to the upstream (baseline: what the client itself costs)
  blackhole  accepts TCP connections, reads the requests, never answers (sockets stay open)
  drop       accepts, then resets the connection at once
  429        answers every request 429 + Retry-After: 120 + a TOOMANYREQUESTS OCI error

In each mode, for each cache: 64 keep-alive connections for --duration seconds (--client c, the
default: bench/pullload.c, one epoll thread built with cc at start; --client python: 64 threads in
--procs processes, each on one http.client connection, which adds tens of ms of its own to the p99
on two cores), each looping over "pull cached content": GET the manifest by tag (stale past the TTL), GET the
child manifest by digest, HEAD then GET the config and each layer (blob bodies go to /dev/null with
splice(2)). Latency is the whole request (headers and body). A failure is a non-2xx answer, a wrong body, a timeout (--timeout, default
30 s) or any other exception. Then "cold miss": 10 sequential GETs of a tag that exists upstream
but was never pulled: time to the answer, status, Retry-After, OCI error code (stopped at the first
timeout). The front counts the connections it accepts, and the requests where its mode reads them.

regcache config keys that are new (upstream_timeout, revalidate_wait, negative_ttl,
breaker_failures, breaker_open) are passed with --new-keys (default); a binary that rejects one as
an unknown key is probed first at the top level, then under the upstream, then the key is dropped
and the output says so.

Usage: bench/serve_upstream_failure.py [--duration 15] [--timeout 30] [--no-new-keys] [--procs 4]
                                       [--modes healthy,blackhole,drop,429] [--regcache build/regcache]
"""

import argparse
import fcntl
import hashlib
import http.client
import json
import multiprocessing
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fixtures import make_layout, push  # noqa: E402
from regtest import Regcache, Registry, free_port, stop_process, wait_port  # noqa: E402
from serve_hit_path import (MANIFEST_ACCEPT, NginxProcess, bench_session, image_digests, log,  # noqa: E402
                            machine_busy_seconds, skopeo_pull, use_regcache)
from serve_vs_distribution import cpu_seconds  # noqa: E402

MIB = 1 << 20
CLIENTS = 64
COLD_GETS = 10
NEW_KEYS = {"upstream_timeout": "2s", "revalidate_wait": "100ms", "negative_ttl": "30s",
            "breaker_failures": 3, "breaker_open": "5s"}
TOO_MANY = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your "
                                   "pull rate limit.", "detail": None}]}).encode()
MODES = {
    "healthy": "upstream healthy (front relays; baseline)",
    "blackhole": "upstream black-holed (accepts, reads, never answers)",
    "drop": "upstream drops connections (accept, then RST)",
    "429": "upstream answers 429 + Retry-After: 120 + TOOMANYREQUESTS",
}


class FaultFront:
    """A TCP front of the upstream. Each connection gets the mode in force when it was accepted;
    set_mode() also cuts every open connection, so keep-alive connections cannot outlive a mode."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.mode = "healthy"
        self.lock = threading.Lock()
        self.socks = set()
        self.connections = 0
        self.requests = 0  # requests read in the modes that parse them (blackhole, 429)
        self.stopped = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.host = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            victims = list(self.socks)
            self.connections = self.requests = 0
        for s in victims:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def counts(self):
        with self.lock:
            return self.connections, self.requests

    def stop(self):
        self.stopped = True
        self.set_mode("stopped")
        self.thread.join(timeout=5)
        self.listener.close()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            with self.lock:
                mode = self.mode
                self.connections += 1
                self.socks.add(c)
            threading.Thread(target=self._serve, args=(c, mode), daemon=True).start()

    def _count(self, data):
        with self.lock:
            self.requests += data.count(b" HTTP/1.")

    def _serve(self, c, mode):
        up = None
        try:
            if mode == "drop":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == "blackhole":
                while True:
                    data = c.recv(65536)
                    if not data:
                        break
                    self._count(data)
            elif mode == "429":
                self._answer_429(c)
            elif mode == "healthy":
                up = socket.create_connection(("127.0.0.1", self.upstream_port))
                with self.lock:
                    self.socks.add(up)
                t = threading.Thread(target=self._pipe, args=(up, c), daemon=True)
                t.start()
                self._pipe(c, up)
                t.join()
        except OSError:
            pass
        finally:
            with self.lock:
                self.socks.discard(c)
                self.socks.discard(up)
            for s in (c, up):
                if s is not None:
                    s.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _answer_429(self, c):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            self._count(head)
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            skip = int(m.group(1)) if m else 0
            while len(buf) < skip:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[skip:]
            is_head = head.startswith(b"HEAD ")
            c.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                      b"Retry-After: 120\r\nDocker-Distribution-Api-Version: registry/2.0\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(TOO_MANY), b"" if is_head else TOO_MANY))


def probe_config(binary, workdir, yaml_text):
    """Starts `regcache serve` on the config: None once it listens, else what it printed on exit."""
    d = tempfile.mkdtemp(prefix="probe-", dir=workdir)
    port = free_port()
    cfg = os.path.join(d, "serve.yaml")
    with open(cfg, "w") as f:
        f.write("listen: 127.0.0.1:%d\ndata_dir: %s\n%s" % (port, os.path.join(d, "data"), yaml_text))
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return proc.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return None
            except OSError:
                time.sleep(0.05)
        return "regcache did not listen within 10 s"
    finally:
        stop_process(proc, signal.SIGTERM, 10)
        shutil.rmtree(d, ignore_errors=True)


def new_key_placement(binary, workdir, upstream_url, wanted):
    """Where this binary accepts each new key: (top-level keys, per-upstream keys, dropped keys)."""
    top, per, dropped = dict(wanted), {}, []
    for _ in range(2 * len(wanted) + 1):
        upstream = dict({"name": "hub", "url": upstream_url, "tag_ttl": "1s"}, **per)
        err = probe_config(binary, workdir, "upstreams:\n  - %s\n%s" % (
            json.dumps(upstream), "".join("%s: %s\n" % kv for kv in top.items())))
        if err is None:
            return top, per, dropped
        m = re.search(r"unknown key '([^']+)'", err)
        if not m or m.group(1) not in wanted:
            raise RuntimeError("regcache rejected the config: " + err.strip())
        key = m.group(1)
        if key in top:
            per[key] = top.pop(key)
        else:
            per.pop(key)
            dropped.append(key)
    raise RuntimeError("could not place the new keys")


class Image:
    """One pushed image and the requests that pull it from cache."""

    def __init__(self, layout, repo):
        self.repo = repo
        self.index_digest, _, self.child_digest, child = image_digests(layout)
        blobs = [child["config"]] + child["layers"]
        base = "/v2/%s/" % repo
        mh = {"Accept": MANIFEST_ACCEPT}
        # (kind, method, path, headers, expected digest of the body or None, expected size or None)
        self.requests = [("tag", "GET", base + "manifests/v1", mh, self.index_digest, None),
                         ("digest", "GET", base + "manifests/" + self.child_digest, mh,
                          self.child_digest, None)]
        self.requests += [("digest", "HEAD", base + "blobs/" + b["digest"], {}, None, b["size"])
                          for b in blobs]
        self.requests += [("digest", "GET", base + "blobs/" + b["digest"], {}, None, b["size"])
                          for b in blobs]


class Sink:
    """Where a client thread throws blob bodies: /dev/null through a pipe with splice(2), so the
    client spends no CPU copying blob bytes (reading 2 MiB into Python costs ~1 ms of CPU, which
    made 64 Python clients, not the server, the bottleneck)."""

    def __init__(self):
        self.devnull = os.open(os.devnull, os.O_WRONLY)
        self.r, self.w = os.pipe()
        fcntl.fcntl(self.w, 1031, 1 << 20)  # F_SETPIPE_SZ: up to 1 MiB per splice

    def close(self):
        for fd in (self.devnull, self.r, self.w):
            os.close(fd)

    def drain(self, conn, r, timeout):
        """Consumes the body of `r` (what http.client buffered, then straight from the socket);
        returns its length. The connection stays usable for the next request."""
        left = r.length or 0
        n = 0
        if left:
            n = len(r.fp.read(min(left, len(r.fp.peek(1)))))  # what the reader has buffered
            left -= n
        fd = conn.sock.fileno()
        while left > 0:
            try:
                moved = os.splice(fd, self.w, min(left, 1 << 20))
            except BlockingIOError:  # a socket with a timeout is non-blocking underneath
                if not select.select([fd], [], [], timeout)[0]:
                    raise socket.timeout("body stalled")
                continue
            if moved == 0:
                raise http.client.IncompleteRead(b"", left)
            n += moved
            left -= moved
            while moved:
                moved -= os.splice(self.r, self.devnull, moved)
        r.close()  # http.client may now send the next request on this connection
        return n


def one_request(conn, sink, timeout, method, path, headers, want_digest, want_size):
    """(ok, status or error text, seconds, response headers). Manifests are checked against their
    digest, blobs against their size."""
    t = time.monotonic()
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = n = None
        if method == "HEAD" or want_digest is not None or not 200 <= r.status < 300:
            body = r.read()
        else:
            n = sink.drain(conn, r, timeout)
        elapsed = time.monotonic() - t
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        ok = 200 <= r.status < 300
        why = r.status
        if ok and want_digest and "sha256:" + hashlib.sha256(body).hexdigest() != want_digest:
            ok, why = False, "wrong body"
        elif ok and want_size is not None and (int(hdrs.get("content-length", -1)) != want_size
                                               or (n is not None and n != want_size)):
            ok, why = False, "wrong length"
        if hdrs.get("connection", "").lower() == "close":
            conn.close()
        return ok, why, elapsed, hdrs
    except (OSError, http.client.HTTPException) as e:
        conn.close()  # http.client reconnects on the next request
        return False, type(e).__name__, time.monotonic() - t, {}


def client_process(job):
    """One client process: `threads` threads, each on one keep-alive connection, pulling cached
    content from `start_at` (wall clock) for `duration` s. Returns (kind, ok, why, s, warned)s."""
    host, images, first, threads, start_at, duration, timeout = job
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    deadline = time.monotonic() + duration
    h, port = host.rsplit(":", 1)
    records = []

    def client(i):
        conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
        sink = Sink()
        k = i
        while time.monotonic() < deadline:
            image = images[k % len(images)]
            k += 1
            for kind, method, path, headers, digest, size in image.requests:
                if time.monotonic() >= deadline:
                    break
                ok, why, s, hdrs = one_request(conn, sink, timeout, method, path, headers, digest, size)
                records.append((kind, ok, why, s, "warning" in hdrs))
        conn.close()
        sink.close()

    pool = [threading.Thread(target=client, args=(first + i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:  # every request ends by the client timeout; the parent bounds this too
        t.join()
    return records, time.process_time() - cpu0


class StaticFiles(NginxProcess):
    """nginx serving the images' manifests and blobs as plain files at their registry paths
    (two workers, sendfile, like regcache's two I/O threads): what this machine, this client and
    these bodies cost without any cache logic — the floor for the latency columns."""

    def __init__(self, workdir, layouts, images):
        self.dir = os.path.join(workdir, "nginx-files")
        www = os.path.join(self.dir, "www")
        for layout, image in zip(layouts, images):
            for _, _, path, _, _, _ in image.requests:
                name = path.rsplit("/", 1)[1]
                digest = image.index_digest if name == "v1" else name
                target = os.path.join(www, path.lstrip("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]),
                                target)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        conf = os.path.join(self.dir, "nginx.conf")
        temp = " ".join("%s_temp_path %s/%s;" % (k, self.dir, k)
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write("user root; worker_processes 2; pid %s/nginx.pid; error_log %s/error.log;\n"
                    "events { worker_connections 1024; }\n"
                    "http { access_log off; sendfile on; keepalive_requests 1000000; "
                    "open_file_cache max=64; %s\n"
                    "  server { listen 127.0.0.1:%d; root %s; location / { types { } "
                    "default_type application/octet-stream; } } }\n"
                    % (self.dir, self.dir, temp, self.port, www))
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)


def build_pullload(workdir):
    """bench/pullload.c built with cc (and libcrypto for the manifest digests)."""
    binary = os.path.join(workdir, "pullload")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "pullload.c"), "-lcrypto"],
                   check=True)
    return binary


def load_c(binary, host, images, duration, timeout, workdir, rate):
    """The same load from bench/pullload.c: CLIENTS connections in one epoll thread, the same
    requests and checks; with `rate` > 0, that many requests per second on a fixed schedule
    instead of a closed loop. (records, client CPU seconds)."""
    spec = os.path.join(workdir, "pullload-requests.tsv")
    with open(spec, "w") as f:
        for i, image in enumerate(images):
            for kind, method, path, headers, digest, size in image.requests:
                f.write("\t".join([str(i), kind, method, path, headers.get("Accept", "-"),
                                   digest.split(":", 1)[1] if digest else "-",
                                   "-" if size is None else str(size)]) + "\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([binary, host.rsplit(":", 1)[1], str(duration), str(CLIENTS), str(timeout),
                        spec, str(rate)], capture_output=True, text=True, timeout=duration + timeout + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0 or not r.stdout.endswith("DONE\n"):
        raise RuntimeError("pullload failed (%d): %s" % (r.returncode, r.stderr))
    records = []
    for line in r.stdout.splitlines():
        if not line.startswith("R "):
            continue
        _, kind, ok, micros, head_micros, warned, why = line.split(" ", 6)
        records.append((kind, ok == "1", int(why) if why.isdigit() else why, int(micros) / 1e6,
                        warned == "1", int(head_micros) / 1e6))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return records, cpu


def load(procs, nprocs, host, images, duration, timeout):
    """CLIENTS client threads spread over `nprocs` processes (the GIL would otherwise make the
    client the bottleneck): (the records of all, client CPU seconds)."""
    per = CLIENTS // nprocs
    start_at = time.time() + 1.0
    jobs = [(host, images, i * per, per, start_at, duration, timeout) for i in range(nprocs)]
    pending = procs.map_async(client_process, jobs)
    try:
        parts = pending.get(timeout=1.0 + duration + timeout + 15)
        return [r for records, _ in parts for r in records], sum(cpu for _, cpu in parts)
    except multiprocessing.TimeoutError:
        raise RuntimeError("client processes did not end within the client timeout")


def cold_miss(host, repo, tag, timeout):
    """COLD_GETS sequential GETs of a never-pulled tag: a list of (seconds, status or error,
    Retry-After, OCI error code)."""
    h, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
    out = []
    for _ in range(COLD_GETS):
        t = time.monotonic()
        try:
            conn.request("GET", "/v2/%s/manifests/%s" % (repo, tag), headers={"Accept": MANIFEST_ACCEPT})
            r = conn.getresponse()
            body = r.read()
            code = ""
            if r.status >= 400:
                try:
                    code = json.loads(body)["errors"][0]["code"]
                except (ValueError, KeyError, IndexError, TypeError):
                    code = "not OCI JSON"
            out.append((time.monotonic() - t, r.status, r.getheader("Retry-After"), code))
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            out.append((time.monotonic() - t, type(e).__name__, None, ""))
            if isinstance(e, socket.timeout):
                break  # the next ones would wait as long: one is the answer
    conn.close()
    return out


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def summarize(records, cold, front):
    lat = [r[3] * 1000 for r in records]
    tag = [r for r in records if r[0] == "tag"]
    dig = [r for r in records if r[0] == "digest"]
    fails = Counter(str(r[2]) for r in records if not r[1])
    cold_status = Counter(str(c[1]) for c in cold)
    retry_after = sorted({c[2] for c in cold if c[2]})
    codes = sorted({c[3] for c in cold if c[3]})
    return {
        "requests": len(records), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": max(lat or [0]),
        # Time to the end of the header block (the C client measures it): how soon the cache
        # answers, apart from how long a body takes to stream at the machine's limit.
        "p99_head": pct([r[5] * 1000 for r in records if len(r) > 5], 0.99),
        "p99_tag": pct([r[3] * 1000 for r in tag], 0.99), "p99_digest": pct([r[3] * 1000 for r in dig], 0.99),
        "fail_tag": sum(not r[1] for r in tag), "fail_digest": sum(not r[1] for r in dig),
        "fail_kinds": dict(fails.most_common(4)),
        "warned": "%d/%d" % (sum(r[4] for r in tag if r[1]), sum(r[1] for r in tag)),
        "cold_med": statistics.median(c[0] for c in cold) if cold else float("nan"),
        "cold_max": max((c[0] for c in cold), default=float("nan")),
        "cold_status": ", ".join("%s×%d" % kv for kv in cold_status.items()) +
        ("" if len(cold) == COLD_GETS else " (stopped at the first timeout)"),
        "cold_detail": "Retry-After %s; %s" % ("/".join(retry_after) or "none", "/".join(codes) or "-"),
        "front": "%d / %s" % (front[0], front[1] if front[1] or front[0] == 0 else "-"),
    }


def ms(value):
    return "–" if value != value else "%.1f" % value  # NaN: no such request completed


def print_tables(results, modes, client, duration, timeout):
    ref = results.get(("reference", "nginx"))
    if ref:
        print()
        print("### reference: nginx serving the same manifests and blobs as files (no cache logic)")
        print()
        print("| server | req/s | p50 ms | p99 ms | max ms | p99 to headers ms | failures "
              "| CPU % server / client / front+upstream / rest |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        print("| nginx | %.0f | %s | %s | %s | %s | %d | %s |" % (
            ref["rps"], ms(ref["p50"]), ms(ref["p99"]), ms(ref["max"]), ms(ref["p99_head"]),
            ref["fail_tag"] + ref["fail_digest"], ref["cpu"]))
    for mode in modes:
        print()
        print("### %s" % MODES[mode])
        print()
        print("| cache | req/s | p50 ms | p99 ms | max ms | p99 to headers ms | p99 tag GET ms | p99 by digest ms "
              "| failures tag / by digest | 2xx tag answers with Warning | cold miss: s median (max) "
              "| cold miss: status | cold miss: Retry-After; OCI code | front conns / requests "
              "| CPU % server / client / front+upstream / rest |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---|---|")
        for kind in ("regcache", "distribution"):
            s = results[(mode, kind)]
            print("| %s | %.0f | %s | %s | %s | %s | %s | %s | %d / %d | %s | %.3f (%.3f) | %s | %s | %s | %s |" % (
                kind, s["rps"], ms(s["p50"]), ms(s["p99"]), ms(s["max"]), ms(s["p99_head"]),
                ms(s["p99_tag"]),
                ms(s["p99_digest"]),
                s["fail_tag"], s["fail_digest"], s["warned"], s["cold_med"], s["cold_max"],
                s["cold_status"], s["cold_detail"], s["front"], s["cpu"]))
        for kind in ("regcache", "distribution"):
            s = results[(mode, kind)]
            if s["fail_kinds"]:
                print("\n%s failures by cause: %s" % (kind, ", ".join("%s×%d" % kv for kv in s["fail_kinds"].items())))
        if mode != "healthy":
            s = results[(mode, "regcache")]
            met = s["p99"] <= 50 and s["fail_tag"] + s["fail_digest"] == 0
            cold_ok = s["cold_max"] <= 1.0
            base = results.get(("healthy", "regcache"))
            print("\nregcache vs target: cached content p99 ≤ 50 ms and 0 failures: %s (p99 %.1f ms, "
                  "to headers %s ms, %d failures%s); cold miss ≤ 1 s: %s" % (
                      "met" if met else "**not met**", s["p99"], ms(s["p99_head"]),
                      s["fail_tag"] + s["fail_digest"],
                      ("; healthy-upstream p99 in this run: %.1f ms (to headers %s ms)" % (
                          base["p99"], ms(base["p99_head"])) if base else "") +
                      ("; nginx serving the same files: %.1f ms" % ref["p99"] if ref else ""),
                      "met" if cold_ok else "**not met**"))
    print("\n%d client connections (%s) x %d s per cache and mode; client timeout %d s; "
          "latency = whole request (headers and body), and to the end of the header block. CPU %% of one core (2 cores: 200 in all), "
          "during the load phase; rest = everything else on the machine (kernel threads, other "
          "users' jobs)." % (CLIENTS, client, duration, timeout))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15, help="seconds of load per cache and mode")
    ap.add_argument("--timeout", type=int, default=30, help="client socket timeout (s)")
    ap.add_argument("--layer-mib", type=int, default=2)
    ap.add_argument("--client", choices=("c", "python"), default="c",
                    help="c: bench/pullload.c, one epoll thread (default); python: 64 threads in "
                    "--procs processes (adds tens of ms of its own to the p99 on two cores)")
    ap.add_argument("--rate", type=float, default=0,
                    help="c client: requests per second from all connections together, on a "
                    "fixed schedule, latency from when each was due (default 0: closed loop, "
                    "as fast as answers come)")
    ap.add_argument("--procs", type=int, default=4, help="python client: processes sharing the 64 threads")
    ap.add_argument("--modes", default="healthy,blackhole,drop,429")
    ap.add_argument("--new-keys", action=argparse.BooleanOptionalAction, default=True,
                    help="pass upstream_timeout, revalidate_wait, negative_ttl, breaker_* to regcache")
    ap.add_argument("--regcache", default=os.path.join(HERE, "..", "build", "regcache"))
    args = ap.parse_args()
    modes = args.modes.split(",")
    for m in modes:
        if m not in MODES:
            sys.exit("unknown mode %s (one of %s)" % (m, ", ".join(MODES)))
    binary = use_regcache(args.regcache)
    t_start = time.monotonic()
    load_before = os.getloadavg()[0]
    with bench_session("regcache-bench-fail-") as (work, stops):
        procs = pullload = None
        if args.client == "python":
            procs = multiprocessing.get_context("spawn").Pool(args.procs)
            stops.append(procs.terminate)
        else:
            pullload = build_pullload(work)
        log("generating and pushing 3 images")
        upstream = Registry(work, "upstream")
        stops.append(upstream.stop)
        images, layouts = [], []
        for i in range(3):
            layout = os.path.join(work, "img%d" % i)
            make_layout(layout, tag="v1", platforms=[("linux", "amd64", "")], layers=1 + i % 2,
                        layer_size=args.layer_mib * MIB, seed=51 + i)
            repo = "library/app%d" % i
            for tag in ["v1"] + ["cold-" + m for m in modes]:
                push(layout, "v1", "%s/%s:%s" % (upstream.host, repo, tag))
            images.append(Image(layout, repo))
            layouts.append(layout)

        fronts = {"regcache": FaultFront(upstream.port), "distribution": FaultFront(upstream.port)}
        for f in fronts.values():
            stops.append(f.stop)
        note = "new config keys not passed (--no-new-keys)"
        top, per = {}, {}
        if args.new_keys:
            top, per, dropped = new_key_placement(binary, work, "http://" + fronts["regcache"].host, NEW_KEYS)
            placed = ["%s: %s (top level)" % kv for kv in top.items()] + \
                ["%s: %s (per upstream)" % kv for kv in per.items()]
            note = "new config keys: %s" % (", ".join(placed) or "none accepted")
            if dropped:
                note += "; rejected as unknown keys by this binary, so dropped: %s" % ", ".join(dropped)
        log(note)
        rc = Regcache(work, [dict({"name": "hub", "url": "http://" + fronts["regcache"].host,
                                   "tag_ttl": "1s"}, **per)],
                      name="rc", extra="access_log: false\n" + "".join("%s: %s\n" % kv for kv in top.items()))
        stops.append(rc.stop)
        dist = Registry(work, "dist", proxy_remote="http://" + fronts["distribution"].host)
        stops.append(dist.stop)
        # Stop the fronts (again) before the caches: what the caches still have in flight upstream
        # then fails at once, and their graceful shutdown does not wait for it.
        stops.append(lambda: [f.stop() for f in fronts.values()])
        caches = {"regcache": rc.host, "distribution": dist.host}
        pids = {"regcache": rc.proc.pid, "distribution": dist.proc.pid}
        log("warming both caches (one skopeo pull of each image)")
        for kind, host in caches.items():
            for im in images:
                skopeo_pull(host, im.repo + ":v1", os.path.join(work, "pull", kind, im.repo))
        time.sleep(2.0)  # distribution stores proxied blobs in the background

        def measure(host, server_pids):
            """The load against `host`: (records, requests/s, the CPU column)."""
            cpu0, up0 = sum(cpu_seconds(p) for p in server_pids), cpu_seconds(upstream.proc.pid)
            own0, busy0 = time.process_time(), machine_busy_seconds()
            t = time.monotonic()
            if pullload:
                records, client_cpu = load_c(pullload, host, images, args.duration, args.timeout,
                                             work, args.rate)
            else:
                records, client_cpu = load(procs, args.procs, host, images, args.duration,
                                           args.timeout)
            elapsed = time.monotonic() - t
            server_cpu = sum(cpu_seconds(p) for p in server_pids) - cpu0
            harness_cpu = (time.process_time() - own0) + (cpu_seconds(upstream.proc.pid) - up0)
            other_cpu = machine_busy_seconds() - busy0 - server_cpu - client_cpu - harness_cpu
            cpu = " / ".join("%.0f" % (100 * c / elapsed) for c in (
                server_cpu, client_cpu, harness_cpu, other_cpu))
            return records, len(records) / elapsed, cpu

        results = {}
        if shutil.which("nginx"):
            files = StaticFiles(work, layouts, images)
            stops.append(files.stop)
            log("reference: nginx serving the same files, %d clients for %d s" % (CLIENTS, args.duration))
            records, rps, cpu = measure(files.host, files.pids())
            files.stop()
            results[("reference", "nginx")] = dict(summarize(records, [], (0, "")), rps=rps, cpu=cpu)
        for mode in modes:
            for f in fronts.values():
                f.set_mode(mode)
            for kind, host in caches.items():
                fronts[kind].set_mode(mode)  # zero the counters; cut what the other cache left
                time.sleep(1.2)  # past regcache's 1 s tag TTL
                log("%s: %s, %d clients for %d s" % (mode, kind, CLIENTS, args.duration))
                records, rps, cpu = measure(host, [pids[kind]])
                log("%s: %s, cold miss" % (mode, kind))
                cold = cold_miss(host, images[0].repo, "cold-" + mode, args.timeout)
                results[(mode, kind)] = summarize(records, cold, fronts[kind].counts())
                results[(mode, kind)]["cpu"] = cpu
                results[(mode, kind)]["rps"] = rps

        print("regcache: %s (%s); distribution: docker-registry %s proxy mode" % (
            binary, note, subprocess.run(["docker-registry", "--version"], capture_output=True,
                                         text=True).stdout.split()[-1]))
        print("images: 3 x one platform, 1-2 layers of %d MiB; regcache tag_ttl 1s; "
              "load average before %.2f, after %.2f" % (args.layer_mib, load_before, os.getloadavg()[0]))
        client = ("bench/pullload.c, one epoll thread, %s" % (
            "%.0f requests/s in all on a fixed schedule, latency from when each was due" % args.rate
            if args.rate > 0 else "closed loop") if args.client == "c" else
            "Python threads in %d processes" % args.procs)
        print_tables(results, modes, client, args.duration, args.timeout)
        print("total run time %.0f s" % (time.monotonic() - t_start))


if __name__ == "__main__":
    main()
