#!/usr/bin/env python3
"""regcache serve vs CNCF distribution's proxy mode (docker-registry with proxy.remoteurl), side by
side in one run: same upstream docker-registry, same generated image (2 platforms x 4 layers x
16 MiB), same client (skopeo copy --all into an OCI layout), fresh caches per run.

Scenarios (medians over --runs):
  cold      one pull into an empty cache: wall time, upstream requests, upstream bytes / image size
  warm      the same pull again (within regcache's tag TTL): wall time, upstream requests
  fan-in    16 concurrent pulls into an empty cache: wall time, upstream GETs per blob (max),
            upstream bytes / image size, server CPU seconds
  throughput  a cached 64 MiB blob fetched 8 times on each of 4 keep-alive connections, two ways:
            curl clients sharing the 2 cores with the server (client-bound on this machine), and
            server-bound: the server pinned to core 0, zero-copy splice(2) clients on core 1
  rss       peak RSS of the server process (VmHWM) over all its scenarios

Usage: bench/serve_vs_distribution.py [--runs 3] [--regcache build/regcache]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import regtest  # noqa: E402
from fixtures import make_layout, push  # noqa: E402
from regtest import Regcache, Registry, run_parallel  # noqa: E402

MIB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def splice_fetch(port, path, reps):
    """A minimal HTTP/1.1 keep-alive client that moves bodies to /dev/null with splice(2), so the
    client costs almost no CPU and the server's own cost decides the throughput."""
    import fcntl
    import socket
    s = socket.create_connection(("127.0.0.1", port))
    devnull = os.open("/dev/null", os.O_WRONLY)
    r, w = os.pipe()
    fcntl.fcntl(r, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB pipe
    try:
        for _ in range(reps):
            s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            status = head.split(b" ", 2)[1]
            if status != b"200":
                raise RuntimeError("GET %s: %s" % (path, status))
            length = int([l for l in head.decode().split("\r\n")
                          if l.lower().startswith("content-length")][0].split(":")[1])
            while length:
                n = os.splice(s.fileno(), w, min(length, 1 << 20))
                if n == 0:
                    raise RuntimeError("connection closed early")
                m = 0
                while m < n:
                    m += os.splice(r, devnull, n - m)
                length -= n
    finally:
        s.close()
        os.close(r)
        os.close(w)
        os.close(devnull)


class Server:
    """One cache under test: regcache or distribution in proxy mode, fresh storage."""

    def __init__(self, kind, work, upstream, binary, n):
        self.kind = kind
        if kind == "regcache":
            regtest.REGCACHE = binary
            self.proc_obj = Regcache(work, [{"name": "hub", "url": "http://" + upstream.host}],
                                     name="rc-%d" % n, extra="access_log: false\n")
            self.pid = self.proc_obj.proc.pid
        else:
            self.proc_obj = Registry(work, "dist-%d" % n, proxy_remote="http://" + upstream.host)
            self.pid = self.proc_obj.proc.pid
        self.host = self.proc_obj.host

    def stop(self):
        self.proc_obj.stop()


def pull(host, dest):
    r = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                        "docker://%s/library/app:v1" % host, "oci:%s:v1" % dest],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("pull from %s failed: %s" % (host, r.stderr.strip()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--regcache", default=os.path.join(HERE, "..", "build", "regcache"))
    args = ap.parse_args()
    binary = os.path.abspath(args.regcache)
    work = tempfile.mkdtemp(prefix="regcache-bench-serve-")
    os.environ["HOME"] = os.path.join(work, "home")  # no skopeo blob-info cache between runs
    os.makedirs(os.environ["HOME"])
    upstream = Registry(work, "upstream")
    try:
        print("generating and pushing images ...", file=sys.stderr)
        make_layout(os.path.join(work, "img"), tag="v1", layers=4, layer_size=16 * MIB, seed=21)
        push(os.path.join(work, "img"), "v1", upstream.host + "/library/app:v1")
        make_layout(os.path.join(work, "big"), tag="v1", platforms=[("linux", "amd64", "")],
                    layers=1, layer_size=64 * MIB, seed=22)
        push(os.path.join(work, "big"), "v1", upstream.host + "/library/big:v1")
        image_bytes = sum(os.path.getsize(os.path.join(work, "img", "blobs", "sha256", f))
                          for f in os.listdir(os.path.join(work, "img", "blobs", "sha256")))
        def blob_json(layout, digest):
            with open(os.path.join(work, layout, "blobs", "sha256", digest.split(":")[1])) as f:
                return json.load(f)

        with open(os.path.join(work, "big", "index.json")) as f:
            big_index = json.load(f)["manifests"][0]["digest"]
        big_child = blob_json("big", big_index)["manifests"][0]["digest"]
        big_layer = blob_json("big", big_child)["layers"][0]

        results = {k: {} for k in ("regcache", "distribution")}

        def record(kind, key, value):
            results[kind].setdefault(key, []).append(value)

        def upstream_delta(before):
            reqs = upstream.requests_with_size()[before:]
            blob_gets = Counter(p for m, p, s, n in reqs if m == "GET" and "/blobs/" in p)
            data = sum(n for m, p, s, n in reqs if m == "GET" and ("/blobs/" in p or "/manifests/" in p))
            return reqs, blob_gets, data

        n = 0
        for run in range(args.runs):
            for kind in (("regcache", "distribution") if run % 2 == 0 else ("distribution", "regcache")):
                # cold + warm + throughput on one fresh server
                n += 1
                srv = Server(kind, work, upstream, binary, n)
                before = len(upstream.requests_with_size())
                t = time.monotonic()
                pull(srv.host, os.path.join(work, "out-%d" % n))
                record(kind, "cold_s", time.monotonic() - t)
                time.sleep(0.3)
                reqs, _, data = upstream_delta(before)
                record(kind, "cold_reqs", len(reqs))
                record(kind, "cold_bytes_x", data / image_bytes)
                shutil.rmtree(os.path.join(work, "out-%d" % n))

                before = len(upstream.requests_with_size())
                t = time.monotonic()
                pull(srv.host, os.path.join(work, "warm-%d" % n))
                record(kind, "warm_s", time.monotonic() - t)
                time.sleep(0.3)
                record(kind, "warm_reqs", len(upstream.requests_with_size()) - before)
                shutil.rmtree(os.path.join(work, "warm-%d" % n))

                url = "http://%s/v2/library/big/blobs/%s" % (srv.host, big_layer["digest"])
                # A client reads the manifests first (that is how both caches learn the blob).
                for ref in ("library/big:v1", "library/big@" + big_child):
                    subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                    "docker://%s/%s" % (srv.host, ref)], capture_output=True, check=True)
                subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)  # warm it
                time.sleep(1.0)  # distribution caches the blob in the background
                reps = 8
                total_mib = 4 * reps * big_layer["size"] / MIB
                # (a) curl clients sharing both cores with the server
                cpu0 = cpu_seconds(srv.pid)
                t = time.monotonic()
                procs = [subprocess.Popen(["curl", "-sf"] + sum([["-o", "/dev/null", url] for _ in range(reps)], []))
                         for _ in range(4)]
                for p in procs:
                    if p.wait() != 0:
                        raise RuntimeError("curl failed against " + kind)
                record(kind, "throughput_mibs", total_mib / (time.monotonic() - t))
                record(kind, "cpu_per_gib", (cpu_seconds(srv.pid) - cpu0) / (total_mib / 1024))
                # (b) server-bound: server on core 0, zero-copy clients on core 1
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(srv.pid)], capture_output=True, check=True)
                path = url.split(srv.host, 1)[1]
                port = int(srv.host.rsplit(":", 1)[1])
                own = os.sched_getaffinity(0)
                os.sched_setaffinity(0, {1})
                try:
                    for _ in range(3):  # this number is noisy on a shared VM: sample it more
                        cpu0 = cpu_seconds(srv.pid)
                        t = time.monotonic()
                        run_parallel(lambda _: splice_fetch(port, path, reps), 4)
                        record(kind, "pinned_mibs", total_mib / (time.monotonic() - t))
                        record(kind, "pinned_cpu_per_gib", (cpu_seconds(srv.pid) - cpu0) / (total_mib / 1024))
                finally:
                    os.sched_setaffinity(0, own)
                    subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, sorted(own))), str(srv.pid)],
                                   capture_output=True)
                record(kind, "rss_mib", peak_rss_mib(srv.pid))
                srv.stop()

                # fan-in on another fresh server
                n += 1
                srv = Server(kind, work, upstream, binary, n)
                before = len(upstream.requests_with_size())
                cpu0 = cpu_seconds(srv.pid)
                errors = []

                def one(i, host=srv.host, tag=n):
                    try:
                        pull(host, os.path.join(work, "fan-%d-%d" % (tag, i)))
                    except Exception as e:  # noqa: BLE001
                        errors.append(str(e))

                t = time.monotonic()
                run_parallel(one, 16)
                record(kind, "fan_s", time.monotonic() - t)
                # A failed pull is a result too (distribution's proxy answers 500s under fan-in).
                record(kind, "fan_failed", len(errors))
                for e in errors[:1]:
                    print("%s fan-in: %s" % (kind, e), file=sys.stderr)
                time.sleep(1.0)
                record(kind, "fan_cpu_s", cpu_seconds(srv.pid) - cpu0)
                reqs, blob_gets, data = upstream_delta(before)
                record(kind, "fan_gets_per_blob_max", max(blob_gets.values()))
                record(kind, "fan_gets_per_blob_median", statistics.median(blob_gets.values()))
                record(kind, "fan_bytes_x", data / image_bytes)
                record(kind, "rss_mib", peak_rss_mib(srv.pid))
                srv.stop()
                for i in range(16):
                    shutil.rmtree(os.path.join(work, "fan-%d-%d" % (n, i)), ignore_errors=True)

        med = lambda k, key: statistics.median(results[k][key])  # noqa: E731
        rows = [
            ("cold pull: wall time (s)", "cold_s", "%.2f", ""),
            ("cold pull: upstream requests", "cold_reqs", "%.0f", ""),
            ("cold pull: upstream bytes / image size", "cold_bytes_x", "%.2f", "1.00x"),
            ("warm pull: wall time (s)", "warm_s", "%.2f", ""),
            ("warm pull: upstream requests", "warm_reqs", "%.0f", "0"),
            ("fan-in 16 cold pulls: wall time (s)", "fan_s", "%.2f", ""),
            ("fan-in: client pulls that failed (total over runs)", "fan_failed", "%.0f", "0"),
            ("fan-in: upstream GETs per blob (max)", "fan_gets_per_blob_max", "%.0f", "1"),
            ("fan-in: upstream GETs per blob (median)", "fan_gets_per_blob_median", "%.1f", "1"),
            ("fan-in: upstream bytes / image size", "fan_bytes_x", "%.2f", "1.00x"),
            ("fan-in: server CPU (s)", "fan_cpu_s", "%.2f", "<= 0.25x"),
            ("warm 64 MiB blob x 4 conns, curl, shared cores (MiB/s)", "throughput_mibs", "%.0f", ">= 1.5x"),
            ("warm 64 MiB blob x 4 conns, server-bound (MiB/s)", "pinned_mibs", "%.0f", ">= 1.5x"),
            ("warm blob serving, curl: server CPU s per GiB", "cpu_per_gib", "%.2f", ""),
            ("warm blob serving, server-bound: server CPU s per GiB", "pinned_cpu_per_gib", "%.2f", ""),
            ("peak RSS (MiB, max over runs)", "rss_mib", "%.1f", "<= 30 MiB"),
        ]
        print("| scenario (median of %d runs; server-bound rows: of %d samples) | distribution proxy | regcache serve | ratio | target |" % (args.runs, 3 * args.runs))
        print("|---|---:|---:|---:|---|")
        for name, key, fmt, target in rows:
            if key == "rss_mib":
                d, r = max(results["distribution"][key]), max(results["regcache"][key])
            elif key == "fan_failed":
                d, r = sum(results["distribution"][key]), sum(results["regcache"][key])
            else:
                d, r = med("distribution", key), med("regcache", key)
            ratio = "%.2fx" % (r / d) if d else "-"
            print("| %s | %s | %s | %s | %s |" % (name, fmt % d, fmt % r, ratio, target))
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
