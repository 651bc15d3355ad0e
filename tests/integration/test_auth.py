"""regcache serve with downstream authentication (--htpasswd, auth: in the config) and
per-upstream repository allow/deny lists, against a real docker-registry upstream, pulled with
skopeo and raw HTTP."""

import base64
import json
import os
import subprocess

from fixtures import push, skopeo_copy
from regtest import REGCACHE, RegistryTestCase, free_port, run_regcache, write_htpasswd

PASSWORD = "Tr0ub4dor-and-3-horses"
WRONG = "wr0ng-guess-42"
INDEX = "application/vnd.oci.image.index.v1+json"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def error_code(body):
    return json.loads(body)["errors"][0]["code"]


class AuthTest(RegistryTestCase):
    def seeded_hub(self, repos=("library/app",)):
        hub = self.registry("hub")
        for i, repo in enumerate(repos):
            layout, _ = self.image("img%d" % i, platforms=[("linux", "amd64", "")], layers=2,
                                   layer_size=64 * 1024, seed=i + 1)
            push(layout, "v1", "%s/%s:v1" % (hub.host, repo))
        return hub

    def htpasswd(self, users=None):
        return write_htpasswd(os.path.join(self.work, "htpasswd"), users or {"alice": PASSWORD})

    def test_skopeo_pulls_with_credentials_and_everything_else_is_challenged(self):
        hub = self.seeded_hub()
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           args=["--htpasswd", self.htpasswd()])
        # The ping every client starts with: 401 and the Basic challenge, as distribution does.
        st, h, body = rc.request("GET", "/v2/")
        self.assertEqual(st, 401)
        self.assertEqual(h["www-authenticate"], 'Basic realm="regcache"')
        self.assertEqual(h["docker-distribution-api-version"], "registry/2.0")
        self.assertEqual(error_code(body), "UNAUTHORIZED")
        st, h, body = rc.request("GET", "/v2/", basic("alice", WRONG))
        self.assertEqual((st, error_code(body)), (401, "UNAUTHORIZED"))
        self.assertIn("www-authenticate", h)
        self.assertEqual(rc.request("GET", "/v2/", basic("mallory", PASSWORD))[0], 401)
        self.assertEqual(rc.request("GET", "/v2/", {"Authorization": "Bearer xyz"})[0], 401)
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 200)
        # Liveness, readiness and metrics stay anonymous by default; nothing else does.
        for path in ("/healthz", "/readyz", "/metrics"):
            self.assertEqual(rc.request("GET", path)[0], 200, path)
        self.assertEqual(rc.request("GET", "/")[0], 401)
        self.assertEqual(rc.request("PUT", "/v2/library/app/manifests/v1", body=b"{}")[0], 401)

        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "anon"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("authentication required", r.stderr.lower())
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "cold"), "alice:" + PASSWORD)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Warm: answered from memory, through the hit path, which must check credentials too.
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "warm"), "alice:" + PASSWORD)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(rc.metrics()['regcache_requests_total{kind="manifest",result="hit"}'], 0)
        # (Four failed logins in all: the fifth within a minute would lock 127.0.0.1 out.)
        for method, headers in (("GET", {}), ("HEAD", {}), ("GET", basic("alice", WRONG)),
                                ("HEAD", basic("alice", WRONG)), ("GET", {"Authorization": "Basic"})):
            st, _, _ = rc.request(method, "/v2/library/app/manifests/v1", dict(headers, Accept=INDEX))
            self.assertEqual(st, 401, (method, headers))
        st, _, _ = rc.request("GET", "/v2/library/app/manifests/v1",
                              dict(basic("alice", PASSWORD), Accept=INDEX))
        self.assertEqual(st, 200)

        log = rc.log_text()
        # Two pulls of an image (a dozen requests each) cost about one bcrypt run, not one each.
        self.assertLessEqual(log.count("auth: user 'alice' logged in"), 3, log)
        self.assertIn("failed login from 127.0.0.1 as user 'alice'", log)
        self.assertIn("failed login from 127.0.0.1 as user 'mallory'", log)
        # The password never reaches the log, in clear or as the Basic token.
        token = base64.b64encode(("alice:" + PASSWORD).encode()).decode()
        for secret in (PASSWORD, token, WRONG):
            self.assertNotIn(secret, log)
        m = rc.metrics()
        self.assertEqual(m["regcache_auth_failures_total"], 4)

    def test_repeated_failures_from_one_address_get_429(self):
        hub = self.registry("hub")
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           extra="auth:\n  htpasswd: %s\n  realm: team cache\n"
                                 "  anonymous: [/healthz]\n  max_failures: 3\n  lockout: 30s\n"
                                 % self.htpasswd())
        st, h, _ = rc.request("GET", "/v2/")
        self.assertEqual((st, h["www-authenticate"]), (401, 'Basic realm="team cache"'))
        self.assertEqual(rc.request("GET", "/metrics")[0], 401)  # not in auth.anonymous here
        for i in range(3):
            st, _, body = rc.request("GET", "/v2/", basic("alice", "guess%d" % i))
            self.assertEqual((st, error_code(body)), (401, "UNAUTHORIZED"), i)
        for headers in (basic("alice", "guess9"), basic("alice", PASSWORD), {}):
            st, h, body = rc.request("GET", "/v2/library/app/manifests/v1", headers)
            self.assertEqual((st, error_code(body)), (429, "TOOMANYREQUESTS"), headers)
            self.assertTrue(1 <= int(h["retry-after"]) <= 30, h)
        self.assertEqual(rc.request("GET", "/healthz")[0], 200)
        log = rc.log_text()
        self.assertIn("3 failed logins from 127.0.0.1", log)
        for i in range(3):
            self.assertNotIn("guess%d" % i, log)
        self.assertEqual(hub.requests(), [])

    def test_denied_repositories_get_403_without_asking_upstream_even_when_cached(self):
        hub = self.seeded_hub(("library/app", "other/app"))
        before = len(hub.requests())
        upstream = {"name": "hub", "url": "http://" + hub.host, "allow": ["library/*"],
                    "deny": ["library/evil*"]}
        rc = self.regcache([upstream])
        r = skopeo_copy(rc.host + "/library/app:v1", os.path.join(self.work, "ok"))
        self.assertEqual(r.returncode, 0, r.stderr)
        _, _, idx = rc.request("GET", "/v2/library/app/manifests/v1", {"Accept": INDEX})
        child = json.loads(idx)["manifests"][0]["digest"]
        _, _, manifest = rc.request("GET", "/v2/library/app/manifests/" + child, {"Accept": "*/*"})
        layer = json.loads(manifest)["layers"][0]["digest"]
        for path in ("/v2/library/evil/manifests/v1", "/v2/library/evilcorp/blobs/" + layer,
                     "/v2/other/app/manifests/v1", "/v2/other/app/tags/list",
                     "/v2/hub/other/app/manifests/v1", "/v2/other/app/manifests/v1?ns=hub"):
            for method in ("GET", "HEAD"):
                st, _, body = rc.request(method, path)
                self.assertEqual(st, 403, (method, path))
                if method == "GET":
                    self.assertEqual(error_code(body), "DENIED")
        msg = json.loads(rc.request("GET", "/v2/other/app/manifests/v1")[2])["errors"][0]["message"]
        self.assertIn("other/app", msg)
        self.assertIn("hub", msg)
        asked = [p for _, p, _ in hub.requests()[before:]]
        self.assertFalse([p for p in asked if "evil" in p or "/other/" in p], asked)
        self.assertGreaterEqual(
            rc.metrics()['regcache_repository_denied_total{upstream="hub"}'], 12)

        # Cached before the lists changed (a live reload here): still refused through a name now
        # denied, hit or not.
        upstream["deny"] = ["library/app"]
        with open(rc.config, "w") as f:
            f.write("listen: 127.0.0.1:%d\ndata_dir: %s\nupstreams:\n  - %s\n"
                    % (rc.port, rc.data, json.dumps(upstream)))
        self.assertTrue(rc.reload())
        asked = len(hub.requests())
        for method in ("GET", "HEAD"):
            for path in ("/v2/library/app/manifests/v1", "/v2/library/app/manifests/" + child,
                         "/v2/library/app/blobs/" + layer):
                st, _, _ = rc.request(method, path, {"Accept": "*/*"})
                self.assertEqual(st, 403, (method, path))
        self.assertEqual(len(hub.requests()), asked)

    def test_sighup_reloads_the_users(self):
        hub = self.registry("hub")
        path = self.htpasswd({"alice": PASSWORD})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], args=["--htpasswd", path])
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 200)  # remembered
        write_htpasswd(path, {"bob": "bob-" + PASSWORD})
        self.assertTrue(rc.reload())
        self.assertEqual(rc.request("GET", "/v2/", basic("bob", "bob-" + PASSWORD))[0], 200)
        # Removed: refused at once, although its credentials were verified a moment ago.
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 401)
        # A file that does not parse changes nothing.
        with open(path, "a") as f:
            f.write("carol:plain\n")
        self.assertFalse(rc.reload())
        self.assertIn(path + ":2: user 'carol'", rc.log_text())
        self.assertEqual(rc.request("GET", "/v2/", basic("bob", "bob-" + PASSWORD))[0], 200)

    def test_an_htpasswd_entry_that_is_not_bcrypt_stops_start_up(self):
        path = os.path.join(self.work, "htpasswd")
        with open(path, "w") as f:
            f.write(subprocess.run(["htpasswd", "-nbm", "carol", "pw"], check=True,
                                   capture_output=True, text=True).stdout)
        r = subprocess.run([REGCACHE, "serve", "--listen", "127.0.0.1:%d" % free_port(),
                            "--data-dir", os.path.join(self.work, "d"), "--htpasswd", path],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(path + ":1: user 'carol' has an MD5 (apr1) hash", r.stderr)
        self.assertIn("htpasswd -B", r.stderr)
        # --check-config reads the file as start-up would.
        config = os.path.join(self.work, "serve.yaml")
        with open(config, "w") as f:
            f.write("auth: {htpasswd: %s}\n" % path)
        r = run_regcache("serve", "--check-config", config, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(path + ":1: user 'carol'", r.stderr)
        write_htpasswd(path, {"carol": "pw"})
        r = run_regcache("serve", "--check-config", config, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    import unittest
    unittest.main()
