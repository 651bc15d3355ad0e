"""regcache serve with downstream authentication (--htpasswd, auth: in the config) and
per-upstream repository allow/deny lists, against a real docker-registry upstream, pulled with
skopeo and raw HTTP."""

import base64
import http.client
import json
import os
import subprocess
import threading
import time

from fixtures import push, skopeo_copy
from regtest import REGCACHE, RegistryTestCase, free_port, run_regcache, write_htpasswd

PASSWORD = "Tr0ub4dor-and-3-horses"
WRONG = "wr0ng-guess-42"
INDEX = "application/vnd.oci.image.index.v1+json"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def request_from(source, port, headers, path="/v2/", timeout=60):
    """GET `path` over a connection from the address `source` (any of 127.0.0.0/8): (status,
    headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


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
        # (Three failed logins as alice in all: a fourth in a row would make her wait.)
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

    def test_a_guesser_behind_a_shared_address_slows_only_its_own_user_name(self):
        """Issue 13, item 6: five wrong passwords from one address locked out everyone behind it
        (a NAT, a CI runner's proxy) for a minute, users whose credentials verified included."""
        hub = self.registry("hub")
        users = self.htpasswd({"alice": PASSWORD, "bob": "bob-" + PASSWORD})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           extra="auth:\n  htpasswd: %s\n  realm: team cache\n"
                                 "  anonymous: [/healthz]\n  user_failures: 2\n"
                                 "  failure_delay: 2s\n" % users)
        st, h, _ = rc.request("GET", "/v2/")
        self.assertEqual((st, h["www-authenticate"]), (401, 'Basic realm="team cache"'))
        self.assertEqual(rc.request("GET", "/metrics")[0], 401)  # not in auth.anonymous here
        nat, elsewhere = "127.0.0.1", "127.0.0.2"
        self.assertEqual(request_from(nat, rc.port, basic("alice", PASSWORD))[0], 200)
        for i in range(3):
            st, _, body = request_from(nat, rc.port, basic("alice", "guess%d" % i))
            self.assertEqual((st, error_code(body)), (401, "UNAUTHORIZED"), i)
        # The third failure in a row makes alice wait 2 s from this address, right password or
        # not (the guesser learns nothing meanwhile)...
        for headers in (basic("alice", "guess9"), basic("alice", PASSWORD)):
            st, h, body = request_from(nat, rc.port, headers, "/v2/library/app/manifests/v1")
            self.assertEqual((st, error_code(body)), (429, "TOOMANYREQUESTS"), headers)
            self.assertTrue(1 <= int(h["retry-after"]) <= 2, h)
        # ...but nobody else: bob behind the same address logs in for the first time, alice
        # from elsewhere too.
        self.assertEqual(request_from(nat, rc.port, basic("bob", "bob-" + PASSWORD))[0], 200)
        self.assertEqual(request_from(elsewhere, rc.port, basic("alice", PASSWORD))[0], 200)
        self.assertEqual(rc.request("GET", "/healthz")[0], 200)
        # A back-off, not a wall: after it, alice gets in from the shared address again.
        time.sleep(2.1)
        self.assertEqual(request_from(nat, rc.port, basic("alice", PASSWORD))[0], 200)
        log = rc.log_text()
        self.assertIn("3 failed logins in a row as user 'alice' from 127.0.0.1", log)
        for i in range(3):
            self.assertNotIn("guess%d" % i, log)
        self.assertEqual(hub.requests(), [])
        m = rc.request("GET", "/metrics", basic("bob", "bob-" + PASSWORD))[2].decode()
        self.assertIn("regcache_auth_failures_total 3", m)
        self.assertIn("regcache_auth_throttled_total 2", m)

    def test_an_address_spraying_user_names_is_slowed_too(self):
        hub = self.registry("hub")
        users = self.htpasswd({"alice": PASSWORD})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           extra="auth:\n  htpasswd: %s\n  address_failures: 5\n"
                                 "  failure_window: 50s\n" % users)
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 200)
        statuses = [request_from("127.0.0.1", rc.port, basic("user%d" % i, "x"))[0]
                    for i in range(8)]
        self.assertEqual(statuses, [401] * 5 + [429] * 3)
        # Alice's credentials, verified a moment ago, still pass; from elsewhere anyone may try.
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 200)
        self.assertEqual(request_from("127.0.0.2", rc.port, basic("user9", "x"))[0], 401)
        self.assertIn("5 failed logins from 127.0.0.1 within 50 s", rc.log_text())

    def test_unknown_users_take_as_long_as_the_dearest_known_one(self):
        """Issue 13, item 13: with entries of different bcrypt costs the answer's time told which
        user names exist (0.26 s against 0.003 s)."""
        hub = self.registry("hub")
        users = write_htpasswd(os.path.join(self.work, "htpasswd"),
                               {"cheap": PASSWORD, "dear": PASSWORD}, costs={"cheap": 4, "dear": 12})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], args=["--htpasswd", users])

        def seconds(user, source):
            start = time.monotonic()
            st, _, _ = request_from(source, rc.port, basic(user, WRONG))
            self.assertEqual(st, 401)
            return time.monotonic() - start

        # Two tries per name (back-off begins after three), from addresses of their own.
        dear = min(seconds("dear", "127.0.0.3") for _ in range(2))
        unknown = min(seconds("nobody", "127.0.0.4") for _ in range(2))
        self.assertGreater(dear, 0.05)
        self.assertGreater(unknown, dear * 0.5, "unknown %.3f s, dear %.3f s" % (unknown, dear))

    def test_a_password_longer_than_bcrypt_reads_is_refused(self):
        """bcrypt ignores password bytes past 72: a longer one must not log in as its prefix."""
        hub = self.registry("hub")
        p72 = ("0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:72]
        users = self.htpasswd({"dora": p72})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}], args=["--htpasswd", users])
        self.assertEqual(rc.request("GET", "/v2/", basic("dora", p72))[0], 200)
        st, h, body = rc.request("GET", "/v2/", basic("dora", p72 + "-and-more"))
        self.assertEqual((st, error_code(body)), (401, "UNAUTHORIZED"))
        self.assertIn("www-authenticate", h)
        self.assertIn("failed login from 127.0.0.1 as user 'dora': the password is longer than 72 "
                      "bytes", rc.log_text())

    def test_credentials_that_verified_before_go_ahead_of_a_flood_of_guesses(self):
        """Issue 13, item 13: 200 addresses guessing once each made a legitimate login wait 8 s
        behind their bcrypt runs."""
        hub = self.registry("hub")
        users = write_htpasswd(os.path.join(self.work, "htpasswd"), {"alice": PASSWORD},
                               costs={"alice": 11})
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           extra="auth:\n  htpasswd: %s\n  verified_ttl: 1s\n" % users)
        self.assertEqual(rc.request("GET", "/v2/", basic("alice", PASSWORD))[0], 200)
        time.sleep(1.2)  # no longer remembered as verified: bcrypt runs again, but it verified
        guesses = []

        def guess(i):
            guesses.append(request_from("127.0.%d.%d" % (1 + i // 200, 1 + i % 200), rc.port,
                                        basic("user%d" % i, WRONG), timeout=120)[0])

        flood = [threading.Thread(target=guess, args=(i,)) for i in range(150)]
        for t in flood:
            t.start()
        time.sleep(0.5)  # the auth queue is full of guesses now
        start = time.monotonic()
        st = rc.request("GET", "/v2/", basic("alice", PASSWORD))[0]
        waited = time.monotonic() - start
        for t in flood:
            t.join()
        self.assertEqual(st, 200)
        # Behind at most the two checks running (about 0.13 s each at cost 11), not the 64
        # queued (about 4 s).
        self.assertLess(waited, 1.5, "alice waited %.2f s" % waited)
        self.assertEqual(len(guesses), 150)
        self.assertTrue(set(guesses) <= {401, 503}, guesses)
        self.assertIn(503, guesses)  # the flood did fill the queue

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
