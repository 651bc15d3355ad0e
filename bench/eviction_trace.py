#!/usr/bin/env python3
"""Bounded storage: eviction policies on one replayed pull trace.

1. Trace (deterministic from --seed): --images single-platform images built from a pool of 8
   shared base layers (8-32 MiB, each image takes 1-3 of them, byte-identical across images) plus
   1-3 own layers each (1-32 MiB, log-uniform), gzip level 0 of random content. Popularity is
   Zipf (alpha 0.9) over a random ranking of the images; --pulls pulls drawn from it.
2. Offline simulation on the trace's exact blob accesses (each pull: config, then its layers in
   order) with capacity = 25% of the trace's unique blob bytes: LRU, LFU-DA (GDSF with
   cost = size, as regcache implements it), S3-FIFO (byte-sized queues) and Belady's MIN.
3. Replay against `regcache serve` with `max_size:` = that capacity, in front of an upstream
   docker-registry holding every image: a raw-HTTP client (manifest by tag, then config and
   layers by digest; sha256 and Content-Length of every blob verified), the disk under the data
   dir's blobs/ and tmp/ sampled every 100 ms, upstream requests and bytes from the upstream's
   access log.
4. The same replay against CNCF distribution's proxy mode (docker-registry, proxy.remoteurl).
5. One table: simulated policies and measured systems.

Usage: bench/eviction_trace.py [--sim-only] [--seed 1] [--pulls 400] [--images 60]
                               [--regcache build/regcache]
"""

import argparse
import hashlib
import heapq
import http.client
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import regtest  # noqa: E402
from fixtures import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, _layer, _put_blob, push  # noqa: E402
from regtest import Regcache, Registry  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10
BASE_LAYERS = 8
ZIPF_ALPHA = 0.9
CAPACITY_FRACTION = 0.25
SAMPLE_INTERVAL = 0.1
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
                             "application/vnd.docker.distribution.manifest.v2+json",
                             "application/vnd.docker.distribution.manifest.list.v2+json"])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def mib(n):
    return "%.1f MiB" % (n / MIB)


# ---------------------------------------------------------------------------------------------
# 1. Trace generation

def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def generate(layout, seed, n_images, n_pulls):
    """Writes every image into one OCI layout (one ref name per image; blobs shared by content)
    and returns (images, trace). An image is {"name", "manifest": digest, "blobs": [(digest,
    size), ...] config first, then layers}; the trace is a list of image indexes."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def layer(size, name):
        gz, diff_id = _layer(random.Random(rng.getrandbits(64)), size, name)
        return {"mediaType": OCI_LAYER_GZIP, **_put_blob(layout, gz)}, diff_id

    bases = [layer(rng.randint(8 * MIB, 32 * MIB), "base-%d" % k) for k in range(BASE_LAYERS)]
    images, refs = [], []
    for i in range(n_images):
        chosen = [bases[k] for k in sorted(rng.sample(range(BASE_LAYERS), rng.randint(1, 3)))]
        own = [layer(log_uniform(rng, MIB, 32 * MIB), "app-%d-%d" % (i, j))
               for j in range(rng.randint(1, 3))]
        layers = chosen + own
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": ["PATH=/usr/bin"], "Labels": {"image": str(i)}},
                  "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}
        cdesc = _put_blob(layout, json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **cdesc}, "layers": [l for l, _ in layers]}
        mdesc = _put_blob(layout, json.dumps(manifest, indent=1).encode())
        name = "app-%02d" % i
        refs.append({"mediaType": OCI_MANIFEST, **mdesc,
                     "annotations": {"org.opencontainers.image.ref.name": name}})
        images.append({"name": name, "manifest": mdesc["digest"],
                       "blobs": [(cdesc["digest"], cdesc["size"])] +
                                [(l["digest"], l["size"]) for l, _ in layers]})
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": refs}, f)

    trace_rng = random.Random(seed * 7919 + 1)
    ranking = list(range(n_images))
    trace_rng.shuffle(ranking)  # popularity independent of size
    weights = [0.0] * n_images
    for rank, image in enumerate(ranking):
        weights[image] = 1.0 / (rank + 1) ** ZIPF_ALPHA
    trace = trace_rng.choices(range(n_images), weights=weights, k=n_pulls)
    return images, trace


def blob_accesses(images, trace):
    return [blob for i in trace for blob in images[i]["blobs"]]


# ---------------------------------------------------------------------------------------------
# 2. Offline simulation. Each policy answers access(t, key, size) -> hit; a blob larger than the
# capacity is never cached; `used` is the bytes cached after each access.

class Policy:
    def __init__(self, capacity):
        self.capacity = capacity
        self.used = 0


class Lru(Policy):
    name = "LRU"

    def __init__(self, capacity):
        super().__init__(capacity)
        self.entries = OrderedDict()

    def access(self, t, key, size):
        if key in self.entries:
            self.entries.move_to_end(key)
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                self.used -= self.entries.popitem(last=False)[1]
            self.entries[key] = size
            self.used += size
        return False


class LfuDa(Policy):
    """GDSF with cost = size: H = L + f; evict the lowest H (ties: least recently used), L = the
    evicted H. f counts hits since the blob entered (1 on entry); a hit recomputes H with the
    current L."""
    name = "LFU-DA (GDSF)"

    def __init__(self, capacity):
        super().__init__(capacity)
        self.inflation = 0
        self.entries = {}  # key -> [size, f, H, last access]
        self.heap = []  # (H, last access, key); stale entries skipped

    def touch(self, t, key, entry):
        entry[2], entry[3] = self.inflation + entry[1], t
        heapq.heappush(self.heap, (entry[2], t, key))

    def access(self, t, key, size):
        entry = self.entries.get(key)
        if entry:
            entry[1] += 1
            self.touch(t, key, entry)
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                h, last, victim = heapq.heappop(self.heap)
                e = self.entries.get(victim)
                if e and e[3] == last:
                    self.inflation = h
                    self.used -= e[0]
                    del self.entries[victim]
            entry = self.entries[key] = [size, 1, 0, t]
            self.used += size
            self.touch(t, key, entry)
        return False


class S3Fifo(Policy):
    """S3-FIFO with byte-sized queues: a small FIFO (10% of the capacity) takes new blobs; at its
    tail a blob hit since entry moves to the main FIFO (its count reset), others leave to a ghost
    FIFO (keys only, up to the main queue's bytes). A miss found in the ghost enters main. Main
    evicts at its tail, re-inserting a blob with a count > 0 once per count (count capped at 3)."""
    name = "S3-FIFO"

    def __init__(self, capacity):
        super().__init__(capacity)
        self.small_cap = capacity // 10
        self.small, self.main = deque(), deque()
        self.small_bytes = 0
        self.freq, self.size = {}, {}
        self.ghost, self.ghost_bytes = OrderedDict(), 0

    def remember_ghost(self, key, size):
        self.ghost[key] = size
        self.ghost_bytes += size
        while self.ghost_bytes > self.capacity - self.small_cap:
            self.ghost_bytes -= self.ghost.popitem(last=False)[1]

    def evict_one(self):
        if self.small_bytes > self.small_cap or not self.main:
            key = self.small.popleft()
            self.small_bytes -= self.size[key]
            if self.freq[key] >= 1:
                self.freq[key] = 0
                self.main.append(key)
                return
            self.remember_ghost(key, self.size[key])
        else:
            key = self.main.popleft()
            if self.freq[key] > 0:
                self.freq[key] -= 1
                self.main.append(key)
                return
        self.used -= self.size.pop(key)
        del self.freq[key]

    def access(self, t, key, size):
        if key in self.freq:
            self.freq[key] = min(self.freq[key] + 1, 3)
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity:
                self.evict_one()
            self.freq[key], self.size[key] = 0, size
            self.used += size
            if key in self.ghost:
                self.ghost_bytes -= self.ghost.pop(key)
                self.main.append(key)
            else:
                self.small.append(key)
                self.small_bytes += size
        return False


class Belady(Policy):
    """Belady's MIN on bytes: evict the cached blob whose next use is farthest in the future (never
    again first), the blob being fetched included (then it is not kept). Not exactly optimal
    for variable sizes, but the usual reference bound."""
    name = "Belady (MIN)"

    def __init__(self, capacity, accesses):
        super().__init__(capacity)
        self.next_use = [math.inf] * len(accesses)
        seen = {}
        for t in range(len(accesses) - 1, -1, -1):
            key = accesses[t][0]
            self.next_use[t] = seen.get(key, math.inf)
            seen[key] = t
        self.entries = {}  # key -> [size, next use]
        self.heap = []  # (-next use, key)

    def access(self, t, key, size):
        nxt = self.next_use[t]
        entry = self.entries.get(key)
        hit = entry is not None
        if hit:
            entry[1] = nxt
        elif size <= self.capacity:
            self.entries[key] = [size, nxt]
            self.used += size
        else:
            return False
        heapq.heappush(self.heap, (-nxt, key))
        while self.used > self.capacity:
            neg, victim = heapq.heappop(self.heap)
            e = self.entries.get(victim)
            if e and e[1] == -neg:
                self.used -= e[0]
                del self.entries[victim]
        return hit


def simulate(policy, accesses):
    hits = hit_bytes = total_bytes = peak = 0
    for t, (key, size) in enumerate(accesses):
        if policy.access(t, key, size):
            hits += 1
            hit_bytes += size
        total_bytes += size
        peak = max(peak, policy.used)
    return {"byte_hit": hit_bytes / total_bytes, "object_hit": hits / len(accesses),
            "upstream_blob_bytes": total_bytes - hit_bytes, "disk_max": peak}


# ---------------------------------------------------------------------------------------------
# 3./4. Replays

class DiskSampler:
    """Samples the bytes of the files under each named directory every SAMPLE_INTERVAL seconds in a
    thread; keeps the maximum per name and of their sum."""

    def __init__(self, dirs):
        self.dirs = dirs
        self.max = {name: 0 for name in dirs}
        self.max_total = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def du(path):
        total, stack = 0, [path]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for e in it:
                        try:
                            if e.is_dir(follow_symlinks=False):
                                stack.append(e.path)
                            elif e.is_file(follow_symlinks=False):
                                total += e.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            pass
            except (FileNotFoundError, NotADirectoryError):
                pass
        return total

    def sample(self):
        sizes = {name: self.du(path) for name, path in self.dirs.items()}
        for name, n in sizes.items():
            self.max[name] = max(self.max[name], n)
        self.max_total = max(self.max_total, sum(sizes.values()))
        return sizes

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(SAMPLE_INTERVAL)

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        return self.sample()


class Client:
    """A keep-alive raw-HTTP registry client that pulls one image: manifest by tag, then config
    and layers by digest, each body streamed through sha256 and checked against its descriptor
    and Content-Length."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, path, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.conn.request("GET", path, headers=headers or {})
        return self.conn.getresponse()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def fetch(self, path, digest, size, headers=None):
        r = self.get(path, headers)
        h, n = hashlib.sha256(), 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        if r.status != 200:
            raise RuntimeError("GET %s: %d" % (path, r.status))
        length = r.getheader("Content-Length")
        if length is None or int(length) != n or (size is not None and n != size):
            raise RuntimeError("GET %s: Content-Length %s, %d bytes read, %s expected"
                               % (path, length, n, size))
        if "sha256:" + h.hexdigest() != digest:
            raise RuntimeError("GET %s: content does not match its digest" % path)
        return n

    def pull(self, image):
        """Returns the blob bytes received; raises on any failure (the connection is dropped)."""
        repo = "library/" + image["name"]
        try:
            self.fetch("/v2/%s/manifests/v1" % repo, image["manifest"], None, {"Accept": MANIFEST_ACCEPT})
            return sum(self.fetch("/v2/%s/blobs/%s" % (repo, d), d, s) for d, s in image["blobs"])
        except Exception:
            self.close()
            raise


def upstream_counts(upstream, since):
    reqs = upstream.requests_with_size()[since:]
    blob_gets = [(p, st, n) for m, p, st, n in reqs if m == "GET" and "/blobs/" in p]
    return {"manifest_gets": sum(1 for m, p, _, _ in reqs if m == "GET" and "/manifests/" in p),
            "manifest_heads": sum(1 for m, p, _, _ in reqs if m == "HEAD" and "/manifests/" in p),
            "blob_heads": sum(1 for m, p, _, _ in reqs if m == "HEAD" and "/blobs/" in p),
            "blob_gets": len(blob_gets),
            "blob_bytes": sum(n for _, st, n in blob_gets),
            "requests": len(reqs)}


def settle(sampler_dirs, upstream, seconds=20):
    """Waits until the upstream log and the directories stop changing (background fills)."""
    last, deadline = None, time.time() + seconds
    while time.time() < deadline:
        now = (len(upstream.requests_with_size()),
               tuple(DiskSampler.du(p) for p in sampler_dirs.values()))
        if now == last:
            return
        last = now
        time.sleep(1.0)


def replay(server_port, images, trace, upstream, sample_dirs):
    """Pulls the trace in order through the server. Returns the measurements."""
    since = len(upstream.requests_with_size())
    sampler = DiskSampler(sample_dirs)
    client = Client(server_port)
    served = blob_requests = 0
    failed = []
    t0 = time.monotonic()
    try:
        for k, i in enumerate(trace):
            try:
                served += client.pull(images[i])
            except Exception as e:  # noqa: BLE001 -- a failed pull is a result
                failed.append("pull %d (%s): %s" % (k, images[i]["name"], e))
            blob_requests += len(images[i]["blobs"])
            if (k + 1) % 50 == 0:
                log("  %d/%d pulls, %.0f s" % (k + 1, len(trace), time.monotonic() - t0))
        wall = time.monotonic() - t0
        settle(sample_dirs, upstream)
    finally:
        client.close()
        final = sampler.stop()
    up = upstream_counts(upstream, since)
    for f in failed[:3]:
        log("  failed " + f)
    return {"wall_s": wall, "served": served, "blob_requests": blob_requests,
            "failed": len(failed), "upstream": up, "disk_max": dict(sampler.max),
            "disk_max_total": sampler.max_total, "disk_final": final,
            "byte_hit": 1 - up["blob_bytes"] / served if served else float("nan"),
            "object_hit": 1 - up["blob_gets"] / blob_requests}


def snapshot_binary(path, work, wait_s=300):
    """A private copy of the regcache binary (another engineer may relink build/regcache during
    the run); waits while it is missing or mid-link."""
    dest = os.path.join(work, "regcache-bin")
    deadline = time.time() + wait_s
    while True:
        try:
            shutil.copy2(path, dest)
            r = subprocess.run([dest, "serve", "--help"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return dest
            err = r.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            err = str(e)
        if time.time() > deadline:
            raise RuntimeError("no usable regcache binary at %s: %s" % (path, err))
        log("regcache binary not usable yet (%s); retrying" % err[:120])
        time.sleep(10)


def run_regcache(binary, work, upstream, images, trace, capacity):
    regtest.REGCACHE = binary
    upstreams = [{"name": "hub", "url": "http://" + upstream.host, "tag_ttl": "1h"}]
    extra = "access_log: false\nmax_size: %dKiB\n" % (capacity // KIB)
    try:
        rc = Regcache(work, upstreams, name="rc", extra=extra)
    except RuntimeError as e:
        return {"unsupported": str(e)}
    try:
        dirs = {"blobs": os.path.join(rc.data, "blobs"), "tmp": os.path.join(rc.data, "tmp")}
        result = replay(rc.port, images, trace, upstream, dirs)
        result["metrics"] = {k: v for k, v in rc.metrics().items()
                             if k.startswith(("regcache_store_", "regcache_evict", "regcache_bytes_"))}
        return result
    finally:
        rc.stop()


def run_distribution(work, upstream, images, trace):
    dist = Registry(work, "dist", proxy_remote="http://" + upstream.host)
    try:
        return replay(dist.port, images, trace, upstream, {"storage": os.path.join(dist.dir, "data")})
    finally:
        dist.stop()


def push_all(layout, images, upstream, work):
    env_home = os.environ.get("HOME")
    os.environ["HOME"] = os.path.join(work, "home")  # skopeo's blob-info cache stays in the run
    os.makedirs(os.environ["HOME"], exist_ok=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda im: push(layout, im["name"], "%s/library/%s:v1" % (upstream.host, im["name"])),
                          images))
    finally:
        if env_home is not None:
            os.environ["HOME"] = env_home


# ---------------------------------------------------------------------------------------------
# Tables

def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def pct(x):
    return "%.1f%%" % (100 * x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regcache", default=os.path.join(HERE, "..", "build", "regcache"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pulls", type=int, default=400)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--sim-only", action="store_true", help="trace and simulation only, no processes")
    args = ap.parse_args()
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="regcache-bench-evict-")
    upstream = None
    try:
        layout = os.path.join(work, "layout")
        log("generating %d images ..." % args.images)
        images, trace = generate(layout, args.seed, args.images, args.pulls)
        accesses = blob_accesses(images, trace)
        unique = dict(accesses)
        unique_bytes = sum(unique.values())
        capacity = int(unique_bytes * CAPACITY_FRACTION) // KIB * KIB
        requested = sum(s for _, s in accesses)
        print("trace: seed %d, %d images (%d pulled), %d pulls, %d blob requests (%s), "
              "%d unique blobs (%s), capacity %s (%.0f%% of unique), largest blob %s"
              % (args.seed, len(images), len(set(trace)), len(trace), len(accesses), mib(requested),
                 len(unique), mib(unique_bytes), mib(capacity), 100 * CAPACITY_FRACTION,
                 mib(max(unique.values()))))
        sims = [(p.name, simulate(p, accesses)) for p in
                (Lru(capacity), LfuDa(capacity), S3Fifo(capacity), Belady(capacity, accesses))]
        print()
        table(["policy (simulated)", "byte hit ratio", "object hit ratio", "upstream blob bytes",
               "max cached"],
              [(name, pct(r["byte_hit"]), pct(r["object_hit"]), mib(r["upstream_blob_bytes"]),
                mib(r["disk_max"])) for name, r in sims])
        print()
        if args.sim_only:
            return

        upstream = Registry(work, "upstream")
        log("pushing %d images to the upstream ..." % len(images))
        push_all(layout, images, upstream, work)
        binary = snapshot_binary(os.path.abspath(args.regcache), work)
        log("replaying %d pulls through regcache serve (max_size %s) ..." % (len(trace), mib(capacity)))
        rc = run_regcache(binary, work, upstream, images, trace, capacity)
        if "unsupported" in rc:
            log("regcache replay skipped: this build does not take max_size (%s)" % rc["unsupported"])
        log("replaying %d pulls through distribution's proxy mode ..." % len(trace))
        dist = run_distribution(work, upstream, images, trace)

        rows = [("simulated " + name, pct(r["byte_hit"]), pct(r["object_hit"]), "-",
                 mib(r["upstream_blob_bytes"]), mib(r["disk_max"]), "-") for name, r in sims]
        measured = [("distribution proxy", dist, dist["disk_max"]["storage"])]
        if "unsupported" in rc:
            rows.append(("regcache serve", "n/a: build lacks max_size", "", "", "", "", ""))
        else:
            measured.insert(0, ("regcache serve", rc, rc["disk_max"]["blobs"]))
        for name, r, disk in measured:
            rows.append((name, pct(r["byte_hit"]), pct(r["object_hit"]), str(r["upstream"]["manifest_gets"]),
                         mib(r["upstream"]["blob_bytes"]), mib(disk), str(r["failed"])))
        table(["policy / system", "byte hit ratio", "object hit ratio", "upstream manifest GETs",
               "upstream blob bytes", "disk high-water", "failed pulls"], rows)
        print()
        print("capacity / regcache max_size: %s; blob bytes served per replay: %s"
              % (mib(capacity), mib(requested)))
        for name, r, _ in measured:
            u = r["upstream"]
            print("%s: %.0f s for %d pulls; upstream: %d requests, %d blob GETs, %d blob HEADs, "
                  "%d manifest HEADs; disk max %s, at the end %s"
                  % (name, r["wall_s"], len(trace), u["requests"], u["blob_gets"], u["blob_heads"],
                     u["manifest_heads"], ", ".join("%s %s" % (k, mib(v)) for k, v in r["disk_max"].items()),
                     ", ".join("%s %s" % (k, mib(v)) for k, v in r["disk_final"].items())))
        if "unsupported" not in rc:
            sim = dict(sims)
            m = rc["metrics"]
            print("regcache /metrics at the end: " + ", ".join("%s %.0f" % kv for kv in sorted(m.items())))
            print("regcache blobs/ high-water %s vs cap %s: %s (blobs/+tmp/ high-water %s)"
                  % (mib(rc["disk_max"]["blobs"]), mib(capacity),
                     "within the cap" if rc["disk_max"]["blobs"] <= capacity
                     else "over by %s" % mib(rc["disk_max"]["blobs"] - capacity), mib(rc["disk_max_total"])))
            best, lru = sim["Belady (MIN)"], sim["LRU"]
            print("gap to Belady: byte hit ratio %s vs %s (%.1f points); upstream blob bytes %.2fx Belady's"
                  % (pct(rc["byte_hit"]), pct(best["byte_hit"]), 100 * (best["byte_hit"] - rc["byte_hit"]),
                     rc["upstream"]["blob_bytes"] / best["upstream_blob_bytes"]))
            print("targets: disk <= cap (+ in-flight): %s; byte hit ratio >= LRU's %s: %s; 0 failed pulls: %s"
                  % ("yes" if rc["disk_max"]["blobs"] <= capacity else "no (see above)", pct(lru["byte_hit"]),
                     "yes" if rc["byte_hit"] >= lru["byte_hit"] else "no", "yes" if rc["failed"] == 0 else "no"))
    finally:
        if upstream is not None:
            upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
        log("total %.0f s" % (time.monotonic() - started))


if __name__ == "__main__":
    main()
