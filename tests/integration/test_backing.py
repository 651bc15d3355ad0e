"""regcache serve with a backing registry (a real docker-registry) as the shared second tier:
write-through in the <prefix>/<registry>/<repository> layout, fresh nodes and outages served from
it, restarts resuming the copy queue, a missing repository, and two nodes behind nginx hashing
the request path."""

import hashlib
import http.client
import json
import os
import signal
import subprocess
import time
import unittest

from fixtures import push
from regtest import Balancer, RegistryTestCase, run_regcache

MIB = 1 << 20
ACCEPT = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*"}


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get(host, path, method="GET", headers=None):
    conn = http.client.HTTPConnection(host, timeout=60)
    try:
        conn.request(method, path, headers=headers or ACCEPT)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def skopeo_copy(src, dest_dir, all_platforms=True, arch=None):
    cmd = ["skopeo", "copy", "-q", "--src-tls-verify=false"]
    if all_platforms:
        cmd.append("--all")
    if arch:
        cmd += ["--override-arch", arch]
    cmd += ["docker://" + src, "oci:" + dest_dir + ":v1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


class BackingTest(RegistryTestCase):
    def setUp(self):
        super().setUp()
        self.hub = self.registry("hub")
        self.backing = self.registry("backing")
        layout, self.digest = self.image("app", layers=2, layer_size=MIB)
        push(layout, "v1", self.hub.host + "/library/app:v1")
        # Where the backing registry keeps it: <prefix>/<upstream registry>/<repository>.
        self.mirror = "cache/127.0.0.1-%d/library/app" % self.hub.port

    def node(self, name, upstream=None, extra=""):
        return self.regcache([{"name": "hub", "url": "http://" + (upstream or self.hub.host),
                               "tag_ttl": "1h"}], name=name,
                             extra="backing: 'http://%s/cache'\n" % self.backing.host + extra)

    def drained(self, rc, timeout=60):
        """Waits until the copy queue is empty *and* the backing registry has the tag. The queue
        alone can read 0 just after a pull, before the last fill or the tag reaches it (the pull
        answers the client first; a slow, sanitized build widened that window in CI)."""
        deadline = time.time() + timeout
        tag = "/v2/%s/manifests/v1" % self.mirror
        while time.time() < deadline:
            if (rc.metrics().get("regcache_backing_queue", 0) == 0 and
                    get(self.backing.host, tag, "HEAD")[0] == 200):
                return
            time.sleep(0.2)
        self.fail("backing queue never drained with the tag pushed: %s" % rc.metrics())

    def pull(self, host, name, **kw):
        r = skopeo_copy(host + "/library/app:v1", os.path.join(self.work, name), **kw)
        self.assertEqual(r.returncode, 0, r.stderr)

    def hub_gets(self, kind):
        return [p for m, p, _ in self.hub.requests() if m == "GET" and "/%s/" % kind in p]

    def backing_holds_image(self):
        """The backing registry serves the image under the mirror layout, byte-exact: skopeo pulls
        it directly (verifying every digest) and the index digest is the upstream's."""
        st, h, body = get(self.backing.host, "/v2/%s/manifests/v1" % self.mirror)
        self.assertEqual((st, sha(body)), (200, self.digest))
        r = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                            "docker://%s/%s:v1" % (self.backing.host, self.mirror),
                            "oci:" + os.path.join(self.work, "direct-%d" % time.time_ns()) + ":v1"],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_write_through_is_byte_exact_in_the_mirror_layout(self):
        rc = self.node("rc")
        self.pull(rc.host, "a")
        self.drained(rc)
        self.backing_holds_image()
        m = rc.metrics()
        self.assertEqual(m.get("regcache_backing_uploaded_blobs_total"), 6)  # 2 x (config + 2 layers)
        self.assertGreaterEqual(m.get('regcache_backing_pushed_manifests_total{ref="tag"}', 0), 1)
        # A repeat pull queues nothing new and uploads nothing again.
        self.pull(rc.host, "b")
        self.drained(rc)
        self.assertEqual(rc.metrics().get("regcache_backing_uploaded_blobs_total"), 6)

    def test_fresh_node_fills_from_backing_and_survives_an_upstream_outage(self):
        rc = self.node("rc")
        self.pull(rc.host, "a")
        self.drained(rc)
        blob_gets, manifest_gets = len(self.hub_gets("blobs")), len(self.hub_gets("manifests"))

        # A new node on an empty disk: the upstream is asked HEADs only, every byte comes from
        # the backing registry.
        fresh = self.node("fresh")
        self.pull(fresh.host, "b")
        self.assertEqual(len(self.hub_gets("blobs")), blob_gets)
        self.assertEqual(len(self.hub_gets("manifests")), manifest_gets)
        self.assertGreater(fresh.metrics().get('regcache_backing_requests_total{kind="blob",result="hit"}', 0), 0)

        # Upstream down, another empty node: the backing registry's tag is the stale fallback.
        self.hub.stop()
        down = self.node("down")
        st, h, body = get(down.host, "/v2/library/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, self.digest))
        self.assertIn("backing registry", h.get("warning", ""))
        self.pull(down.host, "c")

    def test_partly_pulled_index_is_tagged_once_every_platform_is_there(self):
        rc = self.node("rc")
        self.pull(rc.host, "amd64", all_platforms=False, arch="amd64")
        deadline = time.time() + 30
        child = None
        while time.time() < deadline and child is None:
            idx = json.loads(get(self.hub.host, "/v2/library/app/manifests/v1")[2])
            amd64 = [d for d in idx["manifests"] if d["platform"]["architecture"] == "amd64"][0]
            if get(self.backing.host, "/v2/%s/manifests/%s" % (self.mirror, amd64["digest"]), "HEAD")[0] == 200:
                child = amd64["digest"]
            time.sleep(0.2)
        self.assertIsNotNone(child, "the pulled platform's manifest reaches the backing registry by digest")
        # The index cannot go before its other platform: the backing registry would refuse it.
        self.assertEqual(get(self.backing.host, "/v2/%s/manifests/v1" % self.mirror, "HEAD")[0], 404)
        # Pulling the other platform completes it; the index and its tag follow without waiting
        # for a back-off.
        self.pull(rc.host, "arm64", all_platforms=False, arch="arm64")
        deadline = time.time() + 20
        while time.time() < deadline:
            if get(self.backing.host, "/v2/%s/manifests/v1" % self.mirror, "HEAD")[0] == 200:
                break
            time.sleep(0.2)
        self.backing_holds_image()

    def test_restart_resumes_copies_the_backing_registry_missed(self):
        self.backing.stop()
        rc = self.node("rc", extra="upstream_timeout: 1s\n")
        self.pull(rc.host, "a")  # served from the upstream while the backing registry is down
        time.sleep(1)
        self.assertGreater(rc.metrics().get("regcache_backing_queue", 0), 0)
        rc.stop()
        self.backing.start()
        rc.start()
        self.drained(rc)
        self.backing_holds_image()
        self.assertIn("resuming", rc.log_text())

    def test_missing_repository_is_logged_once_with_the_fix_and_serving_goes_on(self):
        proxy = self.proxy(self.backing.port)
        answer = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository does not exist"}]}'
        proxy.fail_next.append(["POST", "/v2/cache/", 404, {"Content-Type": "application/json"},
                                10000, answer])
        rc = self.regcache([{"name": "hub", "url": "http://" + self.hub.host, "tag_ttl": "1h"}],
                           extra="backing: 'http://%s/cache'\n" % proxy.host)
        self.pull(rc.host, "a")
        deadline = time.time() + 20
        while time.time() < deadline and "has no repository" not in rc.log_text():
            time.sleep(0.2)
        log = rc.log_text()
        self.assertEqual(log.count("has no repository '%s'" % self.mirror), 1, log[-3000:])
        self.assertIn("aws ecr create-repository --repository-name %s" % self.mirror, log)
        self.assertGreater(rc.metrics().get('regcache_backing_failures_total{reason="name_unknown"}', 0), 0)
        self.pull(rc.host, "b")  # the local tier keeps serving

    def layer_of(self, arch="amd64"):
        """(digest, size) of the first layer of one platform's manifest in the upstream."""
        idx = json.loads(get(self.hub.host, "/v2/library/app/manifests/v1")[2])
        child = [d for d in idx["manifests"] if d["platform"]["architecture"] == arch][0]
        manifest = json.loads(get(self.hub.host, "/v2/library/app/manifests/" + child["digest"])[2])
        return manifest["layers"][0]["digest"], manifest["layers"][0]["size"]

    def test_corrupt_backing_copy_sends_the_next_fill_upstream_and_is_reported(self):
        """One bad object in the backing registry's storage must not make a layer unpullable:
        after it fails verification, the next fill goes to the upstream; the failure is counted
        against the backing registry, and the write-back tries to replace the copy (distribution
        keeps content-addressed data on a new upload, which the log explains)."""
        rc = self.node("rc")
        self.pull(rc.host, "a")
        self.drained(rc)
        layer, size = self.layer_of()
        data = os.path.join(self.backing.dir, "data", "docker", "registry", "v2", "blobs", "sha256",
                            layer[7:9], layer[7:], "data")
        with open(data, "r+b") as f:  # one byte flipped, full length kept
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
        st, _, body = get(self.backing.host, "/v2/%s/blobs/%s" % (self.mirror, layer))
        self.assertEqual((st, len(body)), (200, size))
        self.assertNotEqual(sha(body), layer, "the backing registry now serves a corrupt copy")

        fresh = self.node("fresh")
        before = len([p for p in self.hub_gets("blobs") if layer in p])
        ok = 0
        for i in range(16):
            try:
                st, _, body = get(fresh.host, "/v2/library/app/blobs/" + layer)
            except http.client.HTTPException:
                continue  # the first reader of the bad copy is cut off mid-body, and retries
            if st == 200 and sha(body) == layer:
                ok += 1
        self.assertGreaterEqual(ok, 15, "at most the first request meets the corrupt copy")
        upstream_gets = len([p for p in self.hub_gets("blobs") if layer in p]) - before
        self.assertEqual(upstream_gets, 1, "the next fill went to the upstream, once")
        m = fresh.metrics()
        self.assertGreaterEqual(m.get('regcache_backing_requests_total{kind="blob",result="corrupt"}', 0), 1)
        deadline = time.time() + 30
        while time.time() < deadline and "kept its corrupt copy" not in fresh.log_text():
            time.sleep(0.2)
        log = fresh.log_text()
        self.assertIn("backing registry %s: blob %s@%s failed verification" % (self.backing.host, self.mirror, layer), log)
        # distribution answers the DELETE and the upload, and keeps its old data: said plainly.
        self.assertIn("kept its corrupt copy of %s" % layer, log)
        self.assertIn("docker/registry/v2/blobs/sha256/%s/%s/data" % (layer[7:9], layer[7:]), log)
        self.assertEqual(fresh.metrics().get('regcache_backing_repairs_total{result="kept"}'), 1)
        # Whole pulls through the node work, byte-exact, with the upstream asked nothing more.
        self.pull(fresh.host, "after")
        self.assertEqual(len([p for p in self.hub_gets("blobs") if layer in p]) - before, 1)

    def test_garbage_manifest_from_the_upstream_is_a_bad_gateway(self):
        proxy = self.proxy(self.hub.port)
        proxy.fail_next.append(["GET", "/manifests/v1", 200,
                                {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                                10, b"this is not json"])
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}], name="garbage")
        st, _, body = get(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual(st, 502, body)
        err = json.loads(body)["errors"][0]
        self.assertIn("upstream hub sent a manifest that does not match its digest or is not valid",
                      err["message"])


class BackingLayoutTest(RegistryTestCase):
    """The backing layout names the registry the client asked for (the upstream's name when that
    is a registry host), so `regcache ensure --mirror` finds what serve wrote, whatever host
    serves that registry and however many upstreams share one host."""

    def test_upstreams_named_for_registries_write_where_ensure_reads(self):
        hub = self.registry("hub")  # stands in for Docker Hub, ghcr.io and quay.io at once
        backing = self.registry("backing")
        layout, digest = self.image("app", layers=1, layer_size=MIB)
        push(layout, "v1", hub.host + "/library/app:v1")
        rc = self.regcache([{"name": n, "url": "http://" + hub.host, "tag_ttl": "1h"}
                            for n in ("docker.io", "ghcr.io", "quay.io")],
                           extra="backing: 'http://%s/cache'\ndefault_upstream: docker.io\n" % backing.host)
        # dockerd's path, podman's prefixed paths for the two upstreams on one host.
        for prefix in ("", "ghcr.io/", "quay.io/"):
            r = skopeo_copy("%s/%slibrary/app:v1" % (rc.host, prefix),
                            os.path.join(self.work, "p" + prefix.rstrip("/")))
            self.assertEqual(r.returncode, 0, r.stderr)
        for registry in ("docker.io", "ghcr.io", "quay.io"):
            tag = "/v2/cache/%s/library/app/manifests/v1" % registry
            deadline = time.time() + 60
            while time.time() < deadline and get(backing.host, tag, "HEAD")[0] != 200:
                time.sleep(0.2)
            st, _, body = get(backing.host, tag)
            self.assertEqual((st, sha(body)), (200, digest), registry)
            # ensure --mirror finds it there: present, without a request to the source (the real
            # registry, which this machine cannot reach).
            r = run_regcache("ensure", "--mirror", backing.host + "/cache",
                             "%s/library/app:v1" % registry, "--json", timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertFalse(json.loads(r.stdout)["copied"], r.stdout)
        self.assertEqual([p for m, p, _ in backing.requests() if "127.0.0.1-" in p], [],
                         "nothing keyed by the upstream's URL host")


class TwoNodesTest(RegistryTestCase):
    """Two nodes behind nginx hashing the request path (consistent), sharing one backing
    registry: each blob is fetched once from the upstream for the whole fleet, and when a node
    dies its keys move to the other, which fills from the backing registry."""

    def balancer(self, ports):
        lb = Balancer(self.work, ports)
        self._stops.append(lb.stop)
        return lb.host

    def test_fleet_fetches_each_blob_once_and_survives_a_node(self):
        hub = self.registry("hub")
        backing = self.registry("backing")
        layout, digest = self.image("app", layers=4, layer_size=MIB)
        push(layout, "v1", hub.host + "/library/app:v1")
        nodes = [self.regcache([{"name": "hub", "url": "http://" + hub.host, "tag_ttl": "1h"}],
                               name="n%d" % i, extra="backing: 'http://%s/cache'\n" % backing.host)
                 for i in range(2)]
        lb = self.balancer([n.port for n in nodes])

        def pull(name):
            r = skopeo_copy(lb + "/library/app:v1", os.path.join(self.work, name))
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(self.work, name, "index.json")) as f:
                self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)

        def blob_gets():
            return [p for m, p, _ in hub.requests() if m == "GET" and "/blobs/" in p]

        for i in range(3):
            pull("p%d" % i)
        gets = blob_gets()
        self.assertEqual(len(gets), len(set(gets)), "each blob once from the upstream, fleet-wide")
        self.assertEqual(len(gets), 10)  # 2 platforms x (config + 4 layers)
        served = [n.metrics().get('regcache_requests_total{kind="blob",result="miss"}', 0) for n in nodes]
        self.assertTrue(all(s > 0 for s in served), "the hash spreads blobs over both nodes: %s" % served)
        for n in nodes:
            deadline = time.time() + 60
            while n.metrics().get("regcache_backing_queue", 0) and time.time() < deadline:
                time.sleep(0.2)

        nodes[0].stop(signal.SIGKILL)
        pull("after")
        self.assertEqual(blob_gets(), gets, "the survivor filled the dead node's blobs from the backing registry")
        hits = nodes[1].metrics().get('regcache_requests_total{kind="blob",result="miss"}', 0)
        self.assertGreater(hits, served[1])
        self.assertGreater(nodes[1].metrics().get('regcache_backing_requests_total{kind="blob",result="hit"}', 0), 0)


if __name__ == "__main__":
    unittest.main()
