"""regcache serve with bounded storage: a size cap kept by background eviction, pulls that stay
byte-exact across evictions, a store that stays consistent when the process is killed while it
evicts, a metadata database that a flood of tag-list queries cannot grow, and one that heals
when it is corrupt, at start or while serving."""

import glob
import hashlib
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

from fixtures import OCI_INDEX, push
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


def query(path, sql, *args):
    """The first row of `sql` on a connection of its own, closed again (a connection left open
    would keep the server's from being the last, which folds the WAL in at exit)."""
    c = sqlite3.connect(path, timeout=10)
    try:
        return c.execute(sql, args).fetchone()
    finally:
        c.close()


def overwrite_page(path, page, seed=1):
    """Writes random bytes over `page` (1-based) of a SQLite file, as a torn write or a bad
    block would leave it; page 1 holds the header (then it is "not a database")."""
    size = query(path, "PRAGMA page_size")[0]
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(bytes(rng.getrandbits(8) for _ in range(size)))
        f.flush()
        os.fsync(f.fileno())


def root_page(path, table):
    return query(path, "SELECT rootpage FROM sqlite_master WHERE name=?", table)[0]


def corrupt_live_page(path, page):
    """Damages `page` of a database the server has open, so that it reads the damage: everything
    in the WAL goes into the file first (no good copy of the page stays there), then the page
    is overwritten, then a write to an unrelated table makes the server's connection drop its
    page cache at its next read."""
    c = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        for _ in range(100):
            if c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("the WAL could not be checkpointed")
        overwrite_page(path, page)
        c.execute("INSERT INTO backing_work VALUES (2, 'unused', 'sha256:00', '', 0)")
    finally:
        c.close()


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


class MetadataTest(RegistryTestCase):
    def test_a_tag_list_query_flood_reaches_the_upstream_once_per_page_and_stays_bounded(self):
        hub = self.registry("hub")
        layout, _ = self.image("big", platforms=[("linux", "amd64", "")], layers=1, layer_size=1024)
        push(layout, "v1", hub.host + "/team/big:v1")
        _, h, manifest = hub.api("GET", "/v2/team/big/manifests/v1", headers={"Accept": OCI_INDEX})
        # About 87 KB of tag list, as in the report: 680 tags of 128 characters.
        tags = ["v%03d-%s" % (i, "x" * 123) for i in range(680)]
        for t in tags:
            hub.put_manifest("team/big", t, manifest, h["content-type"])
        st, _, full = hub.api("GET", "/v2/team/big/tags/list")
        self.assertEqual(st, 200)
        self.assertGreater(len(full), 85000)
        # A small cap: the tag lists get a twentieth of it (1 MiB), and metadata.db counts in it.
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], extra="max_size: 20MiB\n")
        db = os.path.join(rc.data, "metadata.db")

        def flood(paths, threads=4):
            bodies, failures = [], []

            def run(k):
                conn = http.client.HTTPConnection("127.0.0.1", rc.port, timeout=60)
                try:
                    for path in paths[k::threads]:
                        conn.request("GET", path)
                        r = conn.getresponse()
                        body = r.read()
                        if r.status != 200:
                            failures.append((path, r.status, body[:200]))
                        bodies.append(body)
                finally:
                    conn.close()

            workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            self.assertEqual(failures, [])
            return bodies

        def upstream_tag_lists():
            return [p for m, p, _ in hub.requests() if m == "GET" and "/tags/list" in p
                    and p.startswith("/v2/team/big/")]

        seen_before = len(upstream_tag_lists())
        # Junk parameters: one page, one upstream request, one stored copy; the junk is sent
        # nowhere.
        bodies = flood(["/v2/team/big/tags/list?n=5000&junk=%d" % i for i in range(2000)])
        self.assertEqual(len(bodies), 2000)
        self.assertTrue(all(b == full for b in bodies))  # byte-exact, as the upstream sent it
        self.assertEqual(set(json.loads(full)["tags"]), set(tags + ["v1"]))
        sent = upstream_tag_lists()[seen_before:]
        self.assertEqual(sent, ["/v2/team/big/tags/list?n=5000"])
        self.assertLess(os.path.getsize(db), 2 << 20)
        # Distinct pages (every n a real page size): one upstream request each, and the table
        # keeps within its budget however many there are.
        flood(["/v2/team/big/tags/list?n=%d&ns=hub" % n for n in range(1, 401)])
        sent = upstream_tag_lists()[seen_before:]
        self.assertEqual(len(sent), 401)
        self.assertEqual(len(set(sent)), 401)
        self.assertTrue(all("ns=" not in p for p in sent), sent[:5])
        # Asked again: all cached that fit the budget; the file stays near it.
        size = os.path.getsize(db)
        self.assertLess(size, 3 << 20, "metadata.db grew to %d bytes" % size)
        self.assertLess(os.path.getsize(db + "-wal"), 8 << 20)
        rows, stored = query(db, "SELECT count(*), total(size) FROM tag_lists")
        self.assertLessEqual(stored, 1 << 20)
        self.assertGreater(rows, 5)
        # The database counts in what /metrics reports against the cap.
        self.assertTrue(wait_until(lambda: rc.metrics()["regcache_metadata_bytes"] > 0, 5))
        m = rc.metrics()
        self.assertGreaterEqual(m["regcache_store_bytes"], m["regcache_metadata_bytes"])
        self.assertLessEqual(m["regcache_store_bytes"], m["regcache_store_cap_bytes"])

        # n=0 is an empty list by the spec, answered without asking anyone; a bad n or last is
        # a clear 400 that asks no one either.
        before = len(upstream_tag_lists())
        st, _, body = rc.request("GET", "/v2/team/big/tags/list?n=0&junk=1")
        self.assertEqual((st, json.loads(body)), (200, {"name": "team/big", "tags": []}))
        for bad in ("n=-1", "n=abc", "n=5&last=..", "last=%2e%2e%2fx"):
            st, _, body = rc.request("GET", "/v2/team/big/tags/list?" + bad)
            self.assertEqual((st, json.loads(body)["errors"][0]["code"]),
                             (400, "PAGINATION_NUMBER_INVALID"), bad)
        st, _, body = rc.request("GET", "/v2/team/big/tags/list?n=99999999999999999999")
        self.assertEqual(st, 200)
        self.assertEqual(upstream_tag_lists()[before:], ["/v2/team/big/tags/list?n=10000"])

    def pull(self, rc, ref, digest, name):
        out = os.path.join(self.work, name)
        r = skopeo_copy(rc.host + "/" + ref, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "index.json")) as f:
            self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)
        return out

    def corrupt_copies(self, rc):
        return sorted(p for p in glob.glob(os.path.join(rc.data, "metadata.db.corrupt-*"))
                      if not p.endswith("-wal"))

    def wait_degraded(self, rc):
        """/readyz's JSON once it reports the metadata (the integrity check runs just after
        start, in the background)."""
        found = {}

        def reported():
            st, _, body = rc.request("GET", "/readyz")
            if st == 503:
                found.update(json.loads(body))
            return "metadata" in found

        self.assertTrue(wait_until(reported, 15), "/readyz never reported the metadata")
        return found

    def blob_gets(self, hub):
        return len([p for m, p, _ in hub.requests() if m == "GET" and "/blobs/" in p])

    def test_a_corrupt_metadata_database_is_replaced_at_start_and_pulls_work_again(self):
        hub = self.registry("hub")
        layout, digest = self.image("app", platforms=[("linux", "amd64", ""), ("linux", "arm64", "v8")],
                                    layers=2, layer_size=256 * 1024)
        push(layout, "v1", hub.host + "/library/app:v1")
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}])
        first = self.pull(rc, "library/app:v1", digest, "first")
        db = os.path.join(rc.data, "metadata.db")
        # Garbage over a page in the middle (the tags table's root: every cold tag lookup reads
        # it), then, separately, over the header.
        for case, page in (("tags page", lambda: root_page(db, "tags")), ("header", lambda: 1)):
            with self.subTest(case):
                rc.stop()
                self.assertFalse(os.path.exists(db + "-wal"), "the WAL is folded in at exit")
                overwrite_page(db, page(), seed=len(case))
                errors_before = rc.log_text().count(" error metadata database")
                copies_before = len(self.corrupt_copies(rc))
                blob_gets = self.blob_gets(hub)
                rc.start()
                why = self.wait_degraded(rc)
                self.assertEqual(why["status"], "degraded")
                self.assertIn("corrupt", why["metadata"])
                self.assertEqual(rc.request("GET", "/healthz")[0], 200)
                # The damaged file is kept aside; a new database took its place.
                self.assertEqual(len(self.corrupt_copies(rc)), copies_before + 1)
                self.assertIn(os.path.basename(self.corrupt_copies(rc)[-1]), why["metadata"])
                # The same pull works again, byte-exact, with the upstream up; the layers come
                # from the blob store (nothing re-downloaded), the tag from the upstream.
                again = self.pull(rc, "library/app:v1", digest, "again-" + case.replace(" ", "-"))
                for d in os.listdir(os.path.join(first, "blobs", "sha256")):
                    with open(os.path.join(first, "blobs", "sha256", d), "rb") as a, \
                            open(os.path.join(again, "blobs", "sha256", d), "rb") as b:
                        self.assertEqual(a.read(), b.read(), d)
                self.assertEqual(self.blob_gets(hub), blob_gets)
                # Logged once, at error level, saying what was lost.
                log = rc.log_text()
                self.assertEqual(log.count(" error metadata database"), errors_before + 1, log[-3000:])
                self.assertIn("fetched again from the upstreams on use", log)
                self.assertTrue(wait_until(lambda: rc.metrics().get("regcache_metadata_rebuilds_total") == 1, 5))
                self.assertEqual(query(db, "PRAGMA quick_check")[0], "ok")

    def test_a_database_corrupted_while_serving_is_replaced_without_a_restart(self):
        hub = self.registry("hub")
        images = {}
        for tag, seed in (("v1", 1), ("v2", 2)):
            layout, images[tag] = self.image("app" + tag, tag=tag, platforms=[("linux", "amd64", "")],
                                             layers=1, layer_size=256 * 1024, seed=seed)
            push(layout, tag, hub.host + "/library/app:" + tag)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}])
        self.pull(rc, "library/app:v1", images["v1"], "v1")
        self.assertEqual(rc.request("GET", "/readyz")[0], 200)
        db = os.path.join(rc.data, "metadata.db")
        corrupt_live_page(db, root_page(db, "tags"))
        # v2 was never pulled: its lookup reads the damaged page. The database is replaced under
        # the running server, and the lookup goes on against the new one.
        st, _, body = rc.request("GET", "/v2/library/app/manifests/v2", {"Accept": "*/*"})
        self.assertEqual(st, 200, body)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), images["v2"])
        why = self.wait_degraded(rc)
        self.assertIn("corrupt", why["metadata"])
        self.assertEqual(len(self.corrupt_copies(rc)), 1)
        self.assertEqual(rc.log_text().count(" error metadata database"), 1)
        # Both images pull, byte-exact; the process never restarted.
        pid = rc.proc.pid
        self.pull(rc, "library/app:v2", images["v2"], "v2")
        self.pull(rc, "library/app:v1", images["v1"], "v1-again")
        self.assertEqual(rc.proc.pid, pid)
        self.assertIsNone(rc.proc.poll())
        self.assertEqual(query(db, "PRAGMA quick_check")[0], "ok")
        self.assertGreater(query(db, "SELECT count(*) FROM tags")[0], 0)
