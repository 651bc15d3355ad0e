"""regcache serve with bounded storage: a size cap kept by background eviction, pulls that stay
byte-exact across evictions, and a store that stays consistent when the process is killed while
it evicts."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time

from fixtures import push
from regtest import RegistryTestCase

MIB = 1 << 20


def skopeo_copy(src, dest_dir):
    cmd = ["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
           "docker://" + src, "oci:" + dest_dir + ":v1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def blob_files(rc):
    """{digest: size} of every committed blob file."""
    out = {}
    root = os.path.join(rc.data, "blobs")
    for algo in ("sha256", "sha512"):
        for dirpath, _, files in os.walk(os.path.join(root, algo)):
            for f in files:
                out["%s:%s" % (algo, f)] = os.path.getsize(os.path.join(dirpath, f))
    return out


def wait_until(fn, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


class StorageTest(RegistryTestCase):
    def seed_images(self, hub, count, layer_size):
        """`count` single-platform images of three `layer_size` layers each: library/img<i>:v1."""
        digests = []
        for i in range(count):
            layout, digest = self.image("img%d" % i, platforms=[("linux", "amd64", "")], layers=3,
                                        layer_size=layer_size, seed=100 + i)
            push(layout, "v1", "%s/library/img%d:v1" % (hub.host, i))
            digests.append(digest)
        return digests

    def pull(self, rc, i, digest, name):
        out = os.path.join(self.work, name)
        r = skopeo_copy("%s/library/img%d:v1" % (rc.host, i), out)  # skopeo checks every digest
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "index.json")) as f:
            self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)

    def test_cap_holds_across_pulls_and_evicted_images_pull_again(self):
        hub = self.registry("hub")
        digests = self.seed_images(hub, 4, 16 * MIB)  # about 48 MiB each
        cap = 96 * MIB
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], extra="max_size: 96MiB\n")
        self.assertEqual(rc.request("GET", "/readyz")[0], 200)
        for i, d in enumerate(digests):
            self.pull(rc, i, d, "pull%d" % i)
            # Eviction runs in the background: once a pull has finished it catches up quickly.
            self.assertTrue(wait_until(lambda: sum(blob_files(rc).values()) <= cap, 10),
                            "%d bytes stored after pull %d, cap %d"
                            % (sum(blob_files(rc).values()), i, cap))
        m = rc.metrics()
        self.assertGreater(m['regcache_evictions_total{reason="size"}'], 0)
        self.assertEqual(m["regcache_store_cap_bytes"], cap)
        self.assertLessEqual(m["regcache_store_bytes"], cap)
        fetched_before = m["regcache_bytes_fetched_total"]
        # The first image was evicted (at least in part): it pulls again, byte-exact.
        self.pull(rc, 0, digests[0], "again")
        self.assertGreater(rc.metrics()["regcache_bytes_fetched_total"], fetched_before)
        self.assertTrue(wait_until(lambda: sum(blob_files(rc).values()) <= cap, 10))
        self.assertEqual(rc.temp_files(), [])

    def test_sigkill_while_evicting_leaves_a_consistent_store(self):
        hub = self.registry("hub")
        digests = self.seed_images(hub, 3, 4 * MIB)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], extra="max_size: 1GiB\n")
        for i, d in enumerate(digests):
            self.pull(rc, i, d, "warm%d" % i)
        rc.stop()
        # Restarted with a cap far below what is stored: it evicts right after start. Kill it at
        # different moments of that, several times.
        with open(rc.config) as f:
            config = f.read().replace("max_size: 1GiB", "max_size: 6MiB")
        with open(rc.config, "w") as f:
            f.write(config)
        for delay in (0.05, 0.3, 1.0, 2.2, 2.6):
            rc.start()
            time.sleep(delay)
            rc.stop(signal.SIGKILL)
        rc.start()
        # Every file is whole and named by its digest; nothing half-written is left.
        self.assertEqual(rc.temp_files(), [])
        for digest, _ in blob_files(rc).items():
            algo, hexd = digest.split(":")
            with open(os.path.join(rc.data, "blobs", algo, hexd[:2], hexd), "rb") as f:
                self.assertEqual(hashlib.new(algo, f.read()).hexdigest(), hexd)
        # The saved usage agrees with the files once the restarted process has reconciled.
        db = os.path.join(rc.data, "metadata.db")

        def ledger_matches():
            with sqlite3.connect(db, timeout=5) as c:
                rows = dict(c.execute("SELECT digest, size FROM blob_usage").fetchall())
            return rows == blob_files(rc)

        self.assertTrue(wait_until(ledger_matches, 15), "blob_usage disagrees with blobs/")
        self.assertTrue(wait_until(lambda: sum(blob_files(rc).values()) <= 6 * MIB, 10))
        for i, d in enumerate(digests):
            self.pull(rc, i, d, "after%d" % i)

    def test_a_store_too_small_for_the_image_passes_it_through(self):
        data = os.path.join(self.work, "tiny", "data")  # where Regcache(name="tiny") keeps its data
        os.makedirs(data)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", data],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: " + mounted.stderr.strip())
        self._stops.append(lambda: subprocess.run(["umount", "-l", data], capture_output=True))
        hub = self.registry("hub")
        layout, digest = self.image("big", platforms=[("linux", "amd64", "")], layers=1,
                                    layer_size=24 * MIB)
        push(layout, "v1", hub.host + "/library/big:v1")
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], name="tiny")
        self.assertEqual(rc.data, data)
        # The 24 MiB layer cannot be stored on a 12 MiB file system: it is relayed, byte-exact.
        for attempt in ("first", "second"):
            r = skopeo_copy(rc.host + "/library/big:v1", os.path.join(self.work, attempt))
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(self.work, attempt, "index.json")) as f:
                self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)
        self.assertEqual(rc.temp_files(), [])
        self.assertTrue(all(size < MIB for size in blob_files(rc).values()), blob_files(rc))
        self.assertGreaterEqual(rc.metrics()["regcache_passthrough_total"], 2)
        st, _, body = rc.request("GET", "/readyz")
        self.assertEqual(st, 503, body)
        self.assertEqual(json.loads(body)["status"], "degraded")
        self.assertEqual(rc.request("GET", "/healthz")[0], 200)

        # The file system completely full (SQLite and manifest writes fail too): a new image still
        # pulls, from memory, and what is cached is still served.
        small_layout, small_digest = self.image("small", platforms=[("linux", "amd64", "")],
                                                layers=1, layer_size=MIB, seed=7)
        push(small_layout, "v1", hub.host + "/library/small:v1")
        filler = os.path.join(data, "filler")
        subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=64"],
                       capture_output=True)
        r = skopeo_copy(rc.host + "/library/small:v1", os.path.join(self.work, "full"))
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.work, "full", "index.json")) as f:
            self.assertEqual(json.load(f)["manifests"][0]["digest"], small_digest)
        r = skopeo_copy(rc.host + "/library/big:v1", os.path.join(self.work, "full-big"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(rc.temp_files(), [])
        os.unlink(filler)
        # Space freed (the file system grows): the next pull is stored, and storage is ready.
        subprocess.run(["mount", "-o", "remount,size=96m", data], check=True)
        time.sleep(2.5)  # the cap follows the file system's size at the next check
        r = skopeo_copy(rc.host + "/library/big:v1", os.path.join(self.work, "third"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(any(size > 20 * MIB for size in blob_files(rc).values()), blob_files(rc))
        self.assertEqual(rc.request("GET", "/readyz")[0], 200)
