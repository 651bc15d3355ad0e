#!/usr/bin/env python3
"""regcache ensure vs skopeo copy --all, side by side in one run, between the same two local
docker-registry instances, on the same generated image (2 platforms x 4 layers x 16 MiB).

Scenarios (medians over --runs):
  missing  the image is absent at the destination (a fresh destination registry per run)
  present  the image is already there: wall time and requests that reach the source registry
  rss      peak RSS copying a one-layer image of 256 MiB (and of 16 MiB, to show it does not grow)

Usage: bench/ensure_vs_skopeo.py [--runs 5] [--regcache build/regcache]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from fixtures import make_layout, push  # noqa: E402
from regtest import Registry  # noqa: E402

MIB = 1 << 20


def timed(cmd, env=None):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.monotonic() - t
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[0], r.stderr.strip()))
    return dt


def peak_rss_kib(cmd, env=None):
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[0], r.stderr.strip()))
    return int(r.stderr.strip().splitlines()[-1])


def skopeo_cmd(src, dst):
    return ["skopeo", "copy", "--all", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
            "docker://" + src, "docker://" + dst]


def regcache_cmd(binary, src, dst):
    return [binary, "ensure", src, dst]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--regcache", default=os.path.join(HERE, "..", "build", "regcache"))
    args = ap.parse_args()
    binary = os.path.abspath(args.regcache)
    work = tempfile.mkdtemp(prefix="regcache-bench-")
    # Fresh HOME: skopeo's blob-info cache must not remember earlier runs' blob locations.
    env = dict(os.environ, HOME=os.path.join(work, "home"), DOCKER_CONFIG=os.path.join(work, "dc"))
    os.makedirs(env["HOME"])
    registries = []

    def registry(name):
        r = Registry(work, name)
        registries.append(r)
        return r

    try:
        src = registry("src")
        print("generating 2 platforms x 4 layers x 16 MiB ...", file=sys.stderr)
        make_layout(os.path.join(work, "img"), tag="v1", layers=4, layer_size=16 * MIB, seed=11)
        push(os.path.join(work, "img"), "v1", src.host + "/bench/app:v1")
        make_layout(os.path.join(work, "big"), tag="v1", platforms=[("linux", "amd64", "")],
                    layers=1, layer_size=256 * MIB, seed=12)
        push(os.path.join(work, "big"), "v1", src.host + "/bench/big:v1")
        make_layout(os.path.join(work, "small"), tag="v1", platforms=[("linux", "amd64", "")],
                    layers=1, layer_size=16 * MIB, seed=13)
        push(os.path.join(work, "small"), "v1", src.host + "/bench/small:v1")
        src_ref = src.host + "/bench/app:v1"

        missing = {"skopeo": [], "regcache": []}
        present = {"skopeo": [], "regcache": []}
        present_reqs = {"skopeo": [], "regcache": []}
        for i in range(args.runs):
            order = ["skopeo", "regcache"] if i % 2 == 0 else ["regcache", "skopeo"]
            for tool in order:
                dst = registry("dst-%s-%d" % (tool, i))
                dst_ref = dst.host + "/mirror/app:v1"
                cmd = skopeo_cmd(src_ref, dst_ref) if tool == "skopeo" else regcache_cmd(binary, src_ref, dst_ref)
                missing[tool].append(timed(cmd, env))
                for _ in range(2):
                    before = len(src.requests())
                    present[tool].append(timed(cmd, env))
                    time.sleep(0.2)  # let the access log flush
                    present_reqs[tool].append(len(src.requests()) - before)
                dst.stop()
                registries.remove(dst)

        rss = {}
        for tool in ("skopeo", "regcache"):
            for image in ("big", "small"):
                vals = []
                for i in range(max(1, args.runs // 2)):
                    dst = registry("rss-%s-%s-%d" % (tool, image, i))
                    s, d = src.host + "/bench/%s:v1" % image, dst.host + "/m/%s:v1" % image
                    cmd = skopeo_cmd(s, d) if tool == "skopeo" else regcache_cmd(binary, s, d)
                    vals.append(peak_rss_kib(cmd, env))
                    dst.stop()
                    registries.remove(dst)
                rss[(tool, image)] = statistics.median(vals) / 1024

        med = lambda xs: statistics.median(xs)  # noqa: E731
        rows = [
            ("image missing: wall time (s)", med(missing["skopeo"]), med(missing["regcache"]), "<= 0.8x"),
            ("image present: wall time (s)", med(present["skopeo"]), med(present["regcache"]), "<= 0.5x"),
            ("image present: requests to source", med(present_reqs["skopeo"]), med(present_reqs["regcache"]), "0"),
            ("peak RSS, 256 MiB layer (MiB)", rss[("skopeo", "big")], rss[("regcache", "big")], "<= 16 MiB"),
            ("peak RSS, 16 MiB layer (MiB)", rss[("skopeo", "small")], rss[("regcache", "small")], "flat"),
        ]
        print("| scenario (median of %d) | skopeo copy --all | regcache ensure | ratio | target |" % args.runs)
        print("|---|---:|---:|---:|---|")
        for name, s, r, target in rows:
            ratio = "%.2fx" % (r / s) if s else "-"
            fmt = "%.0f" if "requests" in name else "%.3f" if "time" in name else "%.1f"
            print("| %s | %s | %s | %s | %s |" % (name, fmt % s, fmt % r, ratio, target))
    finally:
        for r in registries:
            r.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
