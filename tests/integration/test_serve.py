"""regcache serve: a pull-through cache in front of real docker-registry upstreams, pulled from
with skopeo and raw HTTP."""

import hashlib
import http.client
import json
import os
import signal
import socket
import threading
import time
import unittest
from collections import Counter

from fixtures import push, skopeo_copy
from regtest import RegistryTestCase, run_parallel, run_regcache

MIB = 1 << 20
INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def raw_manifest(host, path, headers=None):
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {"Accept": "*/*"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def first_layer(rc, repo="library/app", tag="v1"):
    """Reads an image's index and first platform manifest through regcache: (child digest, layer)."""
    _, _, idx = raw_manifest(rc.host, "/v2/%s/manifests/%s" % (repo, tag))
    child = json.loads(idx)["manifests"][0]["digest"]
    manifest = json.loads(raw_manifest(rc.host, "/v2/%s/manifests/%s" % (repo, child))[2])
    return child, manifest["layers"][0]


class ServeTest(RegistryTestCase):
    def seed(self, registry, repo="library/app", tag="v1", creds=None, **kw):
        kw.setdefault("layer_size", MIB)
        layout, digest = self.image("%s-%s-%s" % (repo.replace("/", "_"), tag, kw.get("seed", 1)), tag=tag, **kw)
        push(layout, tag, "%s/%s:%s" % (registry.host, repo, tag), creds=creds)
        return digest

    def one_layer_behind_proxy(self, layer_size):
        """An upstream holding library/app:v1 (one platform, one layer) and a fault proxy before it."""
        hub = self.registry("hub")
        self.seed(hub, platforms=[("linux", "amd64", "")], layers=1, layer_size=layer_size)
        return hub, self.proxy(hub.port)

    def upstream_gets(self, registry, kind):
        return [p for m, p, _ in registry.requests() if m == "GET" and "/%s/" % kind in p]

    def test_pulls_through_all_three_routing_forms_byte_exact(self):
        hub = self.registry("hub")
        private = self.registry("private", auth=("htpasswd", {"cache": "pw"}))
        d_hub = self.seed(hub)
        d_priv = self.seed(private, repo="team/app", creds="cache:pw", seed=2)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host},
                            {"name": "private", "url": "http://" + private.host,
                             "username": "cache", "password": "pw"}])
        # dockerd registry-mirrors form: default upstream, plain repository path.
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "out1"))
        self.assertEqual(r.returncode, 0, r.stderr)
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual(st, 200)
        self.assertEqual(sha(body), d_hub)
        self.assertEqual(h["docker-content-digest"], d_hub)
        self.assertEqual(h["content-type"], INDEX)
        self.assertEqual(raw_manifest(hub.host, "/v2/library/app/manifests/v1", {"Accept": INDEX})[2], body)
        with open(os.path.join(self.work, "out1", "index.json")) as f:
            self.assertEqual(json.load(f)["manifests"][0]["digest"], d_hub)

        # podman registries.conf form: path prefix naming the upstream (authenticated upstream).
        r = skopeo_copy(rc.host + "/private/team/app:v1", os.path.join(self.work, "out2"))
        self.assertEqual(r.returncode, 0, r.stderr)
        st, h, body = raw_manifest(rc.host, "/v2/private/team/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, d_priv))

        # containerd hosts.toml form: ?ns=<registry>, answered with OCI-Namespace naming the
        # configured upstream (never the raw value).
        for ns in ("private", private.host):
            st, h, body = raw_manifest(rc.host, "/v2/team/app/manifests/v1?ns=" + ns)
            self.assertEqual((st, sha(body)), (200, d_priv), ns)
            self.assertEqual(h.get("oci-namespace"), "private")
        index = json.loads(body)
        child = index["manifests"][0]["digest"]
        st, h, body = raw_manifest(rc.host, "/v2/team/app/manifests/%s?ns=private" % child)
        self.assertEqual((st, sha(body)), (200, child))
        layer = json.loads(body)["layers"][0]
        st, h, body = raw_manifest(rc.host, "/v2/team/app/blobs/%s?ns=private" % layer["digest"])
        self.assertEqual((st, sha(body), int(h["content-length"])), (200, layer["digest"], layer["size"]))

        # HEAD carries digest and exact length; GET /v2/ answers like a registry.
        st, h, _ = rc.request("HEAD", "/v2/library/app/manifests/v1", {"Accept": INDEX})
        self.assertEqual((st, h["docker-content-digest"]), (200, d_hub))
        self.assertEqual(int(h["content-length"]),
                         len(raw_manifest(hub.host, "/v2/library/app/manifests/v1", {"Accept": INDEX})[2]))
        st, h, _ = rc.request("GET", "/v2/")
        self.assertEqual((st, h["docker-distribution-api-version"]), (200, "registry/2.0"))
        self.assertEqual(rc.request("GET", "/healthz")[0], 200)

    def test_sixteen_concurrent_cold_pulls_fetch_each_blob_once(self):
        hub = self.registry("hub")
        digest = self.seed(hub, layer_size=4 * MIB)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}])
        results = [None] * 16

        def pull(i):
            results[i] = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "c%d" % i))

        run_parallel(pull, 16)
        for i, r in enumerate(results):
            self.assertEqual(r.returncode, 0, r.stderr)  # skopeo verifies every blob digest
            with open(os.path.join(self.work, "c%d" % i, "index.json")) as f:
                self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)
        blob_gets = Counter(self.upstream_gets(hub, "blobs"))
        self.assertEqual(len(blob_gets), 10)
        self.assertEqual(set(blob_gets.values()), {1}, blob_gets)
        manifest_gets = Counter(self.upstream_gets(hub, "manifests"))
        self.assertEqual(set(manifest_gets.values()), {1}, manifest_gets)
        m = rc.metrics()
        self.assertGreater(m.get('regcache_requests_total{kind="blob",result="coalesced"}', 0) +
                           m.get('regcache_requests_total{kind="blob",result="hit"}', 0), 0)

    def test_sixteen_concurrent_gets_of_one_cold_blob(self):
        hub, proxy = self.one_layer_behind_proxy(24 * MIB)
        proxy.throttle_bps = 48 * MIB  # half a second of download: every client joins mid-fill
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        _, layer = first_layer(rc)
        got = [None] * 16

        def get(i):
            st, h, body = rc.request("GET", "/v2/library/app/blobs/" + layer["digest"])
            got[i] = (st, sha(body), len(body))

        run_parallel(get, 16)
        for g in got:
            self.assertEqual(g, (200, layer["digest"], layer["size"]))
        self.assertEqual(len(proxy.requests("GET", "/blobs/" + layer["digest"])), 1)
        m = rc.metrics()
        # One fill; the others joined it while it downloaded (a client that started late finds it
        # committed and counts as a hit, which is fine).
        self.assertEqual(m['regcache_requests_total{kind="blob",result="miss"}'], 1)
        coalesced = m.get('regcache_requests_total{kind="blob",result="coalesced"}', 0)
        self.assertGreaterEqual(coalesced, 8)
        self.assertEqual(coalesced + m.get('regcache_requests_total{kind="blob",result="hit"}', 0), 15)
        self.assertLess(m["regcache_bytes_fetched_total"], layer["size"] + 64 * 1024)

    def test_tag_freshness_ttl_and_moved_tags(self):
        hub = self.registry("hub")
        old = self.seed(hub, layers=1, seed=1)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host, "tag_ttl": "3s"}])
        self.assertEqual(skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "a")).returncode, 0)
        before = len(hub.requests())
        self.assertEqual(skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "b")).returncode, 0)
        time.sleep(0.3)
        self.assertEqual(hub.requests()[before:], [], "a warm pull within the TTL asks upstream nothing")

        time.sleep(3.2)
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, old))
        time.sleep(0.3)
        after = [(m, p) for m, p, _ in hub.requests()[before:]]
        self.assertEqual(after, [("HEAD", "/v2/library/app/manifests/v1")], "revalidation is one HEAD")

        new = self.seed(hub, layers=1, seed=2)
        time.sleep(3.2)
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, new))
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "c"))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_upstream_down_serves_cached_content_marked_stale(self):
        hub = self.registry("hub")
        digest = self.seed(hub, layers=1)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host, "tag_ttl": "1s"}])
        self.assertEqual(skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "a")).returncode, 0)
        hub.stop()
        time.sleep(1.2)
        t0 = time.time()
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, digest))
        self.assertIn("stale", h.get("warning", ""))
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "b"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(rc.metrics()['regcache_requests_total{kind="manifest",result="stale"}'], 1)
        # A cold miss with upstream down: an OCI error, quickly, not a hang.
        st, h, body = raw_manifest(rc.host, "/v2/library/other/manifests/v1")
        self.assertEqual(st, 503)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "UNAVAILABLE")
        self.assertLess(time.time() - t0, 30)

    def test_rate_limited_upstream_via_nginx(self):
        hub = self.registry("hub")
        digest = self.seed(hub, layers=1)
        self.seed(hub, repo="library/other", layers=1, seed=3)
        front = self.nginx(hub.port)
        rc = self.regcache([{"name": "hub", "url": "http://" + front.host, "tag_ttl": "1s"}])
        self.assertEqual(skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "a")).returncode, 0)
        front.set_limit(True)
        raw_manifest(front.host, "/v2/")  # spend the one request a minute nginx allows
        time.sleep(1.2)
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        self.assertEqual((st, sha(body)), (200, digest))
        self.assertIn("stale", h.get("warning", ""))
        st, h, body = raw_manifest(rc.host, "/v2/library/other/manifests/v1")
        self.assertEqual(st, 429, body)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "TOOMANYREQUESTS")
        self.assertEqual(h.get("retry-after"), "120")

    def test_upstream_killed_mid_blob_caches_nothing_then_recovers(self):
        hub, proxy = self.one_layer_behind_proxy(4 * MIB)
        port = proxy.port
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        child, layer = first_layer(rc)
        proxy.cut_after, proxy.cut_count, proxy.die_on_cut = MIB, 1, True
        path = "/v2/library/app/blobs/" + layer["digest"]
        try:
            st, h, body = rc.request("GET", path)
            self.assertLess(len(body), layer["size"])  # cut short: the client's length check fails
        except (http.client.IncompleteRead, ConnectionError) as e:
            self.assertNotIsInstance(e, ConnectionRefusedError)
        time.sleep(0.5)
        self.assertNotIn(layer["digest"].split(":")[1], rc.stored_blobs())
        self.assertEqual(rc.temp_files(), [])
        proxy.stop()
        self.proxy(hub.port, port=port)
        st, h, body = rc.request("GET", path)
        self.assertEqual((st, sha(body)), (200, layer["digest"]))

    def test_corrupted_upstream_bytes_are_never_served_complete(self):
        hub, proxy = self.one_layer_behind_proxy(2 * MIB)
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        child, layer = first_layer(rc)
        proxy.corrupt = True
        path = "/v2/library/app/blobs/" + layer["digest"]
        received = b""
        try:
            _, _, received = rc.request("GET", path)
        except http.client.IncompleteRead as e:
            received = e.partial
        self.assertLess(len(received), layer["size"], "a corrupted blob must not arrive complete")
        self.assertNotIn(layer["digest"].split(":")[1], rc.stored_blobs())
        proxy.corrupt = False
        st, h, body = rc.request("GET", path)
        self.assertEqual((st, sha(body)), (200, layer["digest"]))

    def test_sigkill_mid_fill_restarts_clean(self):
        hub, proxy = self.one_layer_behind_proxy(8 * MIB)
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        child, layer = first_layer(rc)
        proxy.throttle_bps = 2 * MIB
        path = "/v2/library/app/blobs/" + layer["digest"]
        t = threading.Thread(target=lambda: self._swallow(rc.request, "GET", path), daemon=True)
        t.start()
        deadline = time.time() + 10
        while not rc.temp_files() and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(rc.temp_files(), "a fill should be in progress")
        rc.stop(signal.SIGKILL)
        proxy.throttle_bps = None
        rc.start()
        self.assertEqual(rc.temp_files(), [])
        self.assertNotIn(layer["digest"].split(":")[1], rc.stored_blobs())
        st, h, body = rc.request("GET", path)
        self.assertEqual((st, sha(body)), (200, layer["digest"]))
        # Cached content from before the crash is still served.
        st, h, body = raw_manifest(rc.host, "/v2/library/app/manifests/" + child)
        self.assertEqual((st, sha(body)), (200, child))

    def test_sigterm_lets_a_running_transfer_finish(self):
        hub, proxy = self.one_layer_behind_proxy(6 * MIB)
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        _, _, idx = raw_manifest(rc.host, "/v2/library/app/manifests/v1")
        # Only what the client asked for: the index, not its children.
        self.assertEqual(len(proxy.requests("GET", "/manifests/")), 1)
        child = json.loads(idx)["manifests"][0]["digest"]
        layer = json.loads(raw_manifest(rc.host, "/v2/library/app/manifests/" + child)[2])["layers"][0]
        proxy.throttle_bps = 4 * MIB  # about 1.5 s
        result = {}

        def get():
            st, h, body = rc.request("GET", "/v2/library/app/blobs/" + layer["digest"])
            result["r"] = (st, sha(body))

        t = threading.Thread(target=get)
        t.start()
        time.sleep(0.4)
        rc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with self.assertRaises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", rc.port), timeout=2).close()
        t.join(30)
        self.assertEqual(result.get("r"), (200, layer["digest"]))
        self.assertEqual(rc.proc.wait(timeout=20), 0)

    @staticmethod
    def _swallow(fn, *args):
        try:
            fn(*args)
        except Exception:
            pass

    def test_ranges_negotiation_tags_referrers_and_metrics(self):
        hub = self.registry("hub")
        digest = self.seed(hub, platforms=[("linux", "amd64", "")], layers=1, layer_size=MIB)
        for tag, seed in (("v2", 2), ("v3", 3)):
            self.seed(hub, tag=tag, platforms=[("linux", "amd64", "")], layers=1, layer_size=1024, seed=seed)
        proxy = self.proxy(hub.port)
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        child, layer = first_layer(rc)
        path = "/v2/library/app/blobs/" + layer["digest"]
        st, h, full = rc.request("GET", path)
        self.assertEqual((st, h["etag"], h["docker-content-digest"]), (200, '"%s"' % layer["digest"], layer["digest"]))
        st, h, part = rc.request("GET", path, {"Range": "bytes=10-19"})
        self.assertEqual((st, part, h["content-range"]), (206, full[10:20], "bytes 10-19/%d" % len(full)))
        st, h, part = rc.request("GET", path, {"Range": "bytes=-5"})
        self.assertEqual((st, part), (206, full[-5:]))
        st, h, _ = rc.request("GET", path, {"Range": "bytes=%d-" % len(full)})
        self.assertEqual((st, h["content-range"]), (416, "bytes */%d" % len(full)))
        st, h, _ = rc.request("HEAD", path)
        self.assertEqual((st, int(h["content-length"])), (200, len(full)))

        # An index offered to a client that only takes docker v2 manifests: MANIFEST_UNKNOWN.
        st, h, body = rc.request("GET", "/v2/library/app/manifests/v1",
                                 {"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        self.assertEqual((st, json.loads(body)["errors"][0]["code"]), (404, "MANIFEST_UNKNOWN"))

        # Tag lists pass through with n/last; an upstream's Link is rewritten to this server's path.
        # (distribution 2.8 does not page, so the proxy adds the Link a paging upstream would send.)
        proxy.extra_headers = {"Link": '</v2/library/app/tags/list?last=v2&n=2>; rel="next"'}
        st, h, body = rc.request("GET", "/v2/hub/library/app/tags/list?n=2")
        proxy.extra_headers = {}
        self.assertEqual((st, json.loads(body)["tags"]), (200, ["v1", "v2", "v3"]))
        self.assertEqual(h["link"], '</v2/hub/library/app/tags/list?last=v2&n=2>; rel="next"')
        self.assertEqual(len(proxy.requests("GET", "/v2/library/app/tags/list?n=2")), 1)

        # distribution 2.8 has no referrers API: its 404 passes through, so clients fall back to
        # the tag schema instead of believing there are no referrers.
        st, h, body = rc.request("GET", "/v2/library/app/referrers/" + digest)
        self.assertEqual(st, 404)

        m = rc.metrics()
        self.assertEqual(m['regcache_requests_total{kind="blob",result="miss"}'], 1)
        self.assertEqual(m['regcache_requests_total{kind="blob",result="hit"}'], 4)
        # index, child manifest, one blob, one tag list; referrers answered 404 upstream.
        self.assertEqual(m['regcache_upstream_requests_total{upstream="hub",method="GET",status="200"}'], 4)
        self.assertEqual(m['regcache_upstream_requests_total{upstream="hub",method="GET",status="404"}'], 1)
        self.assertGreaterEqual(m["regcache_bytes_served_total"], len(full) + 15)

    def test_check_config_names_the_bad_key_and_starts_nothing(self):
        def check(text):
            path = os.path.join(self.work, "c%d.yaml" % time.time_ns())
            with open(path, "w") as f:
                f.write(text)
            return run_regcache("serve", "--check-config", path, timeout=30)

        good = check("listen: 127.0.0.1:1\nupstreams:\n  - {name: hub, url: 'http://127.0.0.1:1'}\n"
                     "backing: 'http://127.0.0.1:2/cache'\n")
        self.assertEqual((good.returncode, good.stdout.strip().endswith(": ok")), (0, True), good.stderr)
        for text, words in (("colour: red\n", "unknown key 'colour'"),
                            ("upstreams:\n  - {name: hub, url: 'ftp://x'}\n", "upstream 'hub'"),
                            ("negative_ttl: soon\n", "negative_ttl"),
                            ("backing: 'registry.example.com/cache'\n", "backing URL"),
                            ("default_upstream: nowhere\n", "default upstream 'nowhere'")):
            r = check(text)
            self.assertEqual(r.returncode, 2, text)
            self.assertIn(words, r.stderr, text)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        packaged = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "serve.yaml")
        r = run_regcache("serve", "--check-config", packaged, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_input_gets_oci_errors_and_writes_nothing(self):
        hub = self.registry("hub")
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}])
        d = "sha256:" + "a" * 64
        cases = [
            ("GET", "/v2/UPPER/app/manifests/v1", 400, "NAME_INVALID"),
            ("GET", "/v2/library/app/blobs/sha256:zz", 400, "DIGEST_INVALID"),
            ("GET", "/v2/library/app/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
            # No manifest can have these names: unknown, as the OCI conformance suite expects.
            ("GET", "/v2/library/app/manifests/-tag", 404, "MANIFEST_UNKNOWN"),
            ("GET", "/v2/library/app/manifests/.INVALID_MANIFEST_NAME", 404, "MANIFEST_UNKNOWN"),
            ("HEAD", "/v2/library/app/manifests/.INVALID_MANIFEST_NAME", 404, None),
            ("GET", "/v2/library/app/manifests/sha256:totallywrong", 400, "MANIFEST_INVALID"),
            ("GET", "/v2/../etc/passwd/manifests/v1", 400, None),
            ("GET", "/v2/library/%2e%2e/app/manifests/v1", 400, None),
            ("GET", "/v2/library%2Fapp/manifests/v1", 400, None),
            ("GET", "/v2/library/app/manifests/v1?ns=evil.example.com", 404, "NAME_UNKNOWN"),
            ("PUT", "/v2/library/app/manifests/v1", 405, "UNSUPPORTED"),
            ("DELETE", "/v2/library/app/blobs/" + d, 405, "UNSUPPORTED"),
            ("POST", "/v2/library/app/blobs/uploads/", 405, "UNSUPPORTED"),
            ("GET", "/v2/library/app/nothing", 404, None),
        ]
        for method, path, status, code in cases:
            st, h, body = rc.request(method, path)
            self.assertEqual(st, status, (method, path, body))
            if method == "HEAD":
                continue
            err = json.loads(body)["errors"][0]
            self.assertIn("message", err)
            if code:
                self.assertEqual(err["code"], code, path)
        st, h, body = rc.request("GET", "/v2/", {"X-Big": "x" * 20000})
        self.assertEqual(st, 431)
        self.assertEqual(rc.stored_blobs(), [])
        self.assertEqual([r for r in hub.requests() if r[0] != "GET" or r[1] != "/v2/"], [])

        # A TLS ClientHello (podman tries HTTPS first) must not hurt the server.
        with socket.create_connection(("127.0.0.1", rc.port)) as s:
            s.sendall(bytes.fromhex("160301020001000200030300") + os.urandom(200))
            s.settimeout(5)
            try:
                s.recv(100)
            except (socket.timeout, ConnectionError):
                pass
        self.assertEqual(rc.request("GET", "/v2/")[0], 200)

        # A few hundred connections held open at once, each answered.
        socks = []
        try:
            for _ in range(300):
                socks.append(socket.create_connection(("127.0.0.1", rc.port), timeout=10))
            for s in socks:
                s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks:
                self.assertTrue(s.recv(64).startswith(b"HTTP/1.1 200"))
        finally:
            for s in socks:
                s.close()
        self.assertEqual(rc.request("GET", "/healthz")[0], 200)


if __name__ == "__main__":
    unittest.main()
