"""regcache sync: a YAML list of images kept mirrored, against real docker-registry instances."""

import base64
import hashlib
import json
import os
import threading
import time
import unittest

from fixtures import inspect_raw, push
from regtest import RegistryTestCase, run_regcache

MIB = 1 << 20


class SyncTest(RegistryTestCase):
    def setUp(self):
        super().setUp()
        self.src = self.registry("src")
        self.dst = self.registry("dst", auth=("htpasswd", {"ci": "pw"}))
        self.digests = {}
        for repo, tag, seed in [("library/ruby", "3.3", 1), ("library/ruby", "3.2", 2),
                                ("library/ruby", "2.7", 3), ("tools/app", "v1.0", 4),
                                ("tools/app", "v1.1", 5), ("tools/app", "v2.0", 6)]:
            layout, digest = self.image("%s-%s" % (repo.replace("/", "_"), tag), tag=tag, seed=seed,
                                        layers=2, layer_size=256 * 1024)
            push(layout, tag, "%s/%s:%s" % (self.src.host, repo, tag))
            self.digests[(repo, tag)] = digest

    def write(self, text):
        path = os.path.join(self.work, "sync.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def config(self, src_host, extra=""):
        return self.write("""
parallel: 2
registries:
  %(dst)s: {username: ci, password: pw}
%(extra)s
images:
  - source: %(src)s/library/ruby
    tags: ["3.3", "3.2"]
    destination_prefix: %(dst)s/mirror
  - source: %(src)s/tools/app
    tag_regex: '^v1\\.[0-9]+$'
    destination: %(dst)s/apps/app
""" % {"src": src_host, "dst": self.dst.host, "extra": extra})

    def test_sync_copies_then_reports_present_and_dry_run_lists(self):
        path = self.config(self.src.host)
        r = run_regcache("sync", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("4 copied, 0 already present, 0 failed", r.stdout)
        self.assertIn("RESULT", r.stdout.splitlines()[0])
        for repo, tag, dest in [("library/ruby", "3.3", "mirror/library/ruby:3.3"),
                                ("library/ruby", "3.2", "mirror/library/ruby:3.2"),
                                ("tools/app", "v1.0", "apps/app:v1.0"),
                                ("tools/app", "v1.1", "apps/app:v1.1")]:
            self.assertEqual(inspect_raw("%s/%s" % (self.dst.host, dest), creds="ci:pw"),
                             inspect_raw("%s/%s:%s" % (self.src.host, repo, tag)), dest)
        self.assertIsNone(inspect_raw("%s/apps/app:v2.0" % self.dst.host, creds="ci:pw"))

        r = run_regcache("sync", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0 copied, 4 already present, 0 failed", r.stdout)

        # A new upstream tag matching the regex: dry run lists it and reads no manifest upstream.
        layout, digest = self.image("app-v1.2", tag="v1.2", seed=7, layers=1, layer_size=1024)
        push(layout, "v1.2", "%s/tools/app:v1.2" % self.src.host)
        proxy = self.proxy(self.src.port)
        r = run_regcache("sync", "--dry-run", self.config(proxy.host))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 would be copied, 4 already present, 0 failed", r.stdout)
        self.assertIn("apps/app:v1.2", r.stdout)
        self.assertEqual(proxy.requests("GET", "/manifests/"), [])
        self.assertIsNone(inspect_raw("%s/apps/app:v1.2" % self.dst.host, creds="ci:pw"))

        r = run_regcache("sync", "--json", self.config(self.src.host))
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = json.loads(r.stdout)
        copied = [row for row in rows if row.get("copied")]
        self.assertEqual(len(copied), 1)
        self.assertEqual(copied[0]["destination_digest"], digest)

    def test_mirror_prefix_writes_the_layout_ensure_mirror_writes(self):
        # defaults.mirror_prefix for two images, the older flat destination_prefix for a third.
        path = self.write("""
registries:
  %(dst)s: {username: ci, password: pw}
defaults: {mirror_prefix: %(dst)s/cache}
images:
  - source: %(src)s/library/ruby
    tags: ["3.3"]
  - source: %(src)s/tools/app
    tag_regex: '^v1\\.[0-9]+$'
  - source: %(src)s/library/ruby:3.2
    destination_prefix: %(dst)s/flat
""" % {"src": self.src.host, "dst": self.dst.host})
        r = run_regcache("sync", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("4 copied, 0 already present, 0 failed", r.stdout)
        under = "cache/127.0.0.1-%d/" % self.src.port
        auth = {"Authorization": "Basic " + base64.b64encode(b"ci:pw").decode()}
        st, _, body = self.dst.api("GET", "/v2/_catalog", headers=auth)
        self.assertEqual(st, 200, body)
        self.assertEqual(sorted(json.loads(body)["repositories"]),
                         [under + "library/ruby", under + "tools/app", "flat/library/ruby"])
        for repo, tag, dest in [("library/ruby", "3.3", under + "library/ruby:3.3"),
                                ("tools/app", "v1.0", under + "tools/app:v1.0"),
                                ("tools/app", "v1.1", under + "tools/app:v1.1"),
                                ("library/ruby", "3.2", "flat/library/ruby:3.2")]:
            self.assertIn("%s/%s" % (self.dst.host, dest), r.stdout)
            raw = inspect_raw("%s/%s" % (self.dst.host, dest), creds="ci:pw")
            self.assertEqual(raw, inspect_raw("%s/%s:%s" % (self.src.host, repo, tag)), dest)
            self.assertEqual("sha256:" + hashlib.sha256(raw).hexdigest(), self.digests[(repo, tag)])

        # `ensure --mirror` with the same prefix finds what sync wrote: one layout.
        r = run_regcache("ensure", "%s/tools/app:v1.1" % self.src.host, "--mirror",
                         self.dst.host + "/cache", "--dest-creds", "ci:pw", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["copied"], out["reason"]), (False, "present"))
        self.assertEqual(out["destination"], "%s/%stools/app@%s"
                         % (self.dst.host, under, self.digests[("tools/app", "v1.1")]))
        self.assertEqual(out["destination_tag"], "v1.1")

        bad = self.write("images: [{source: ruby, mirror_prefix: x.io/c, destination: x.io/r}]")
        r = run_regcache("sync", bad)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("images[0]: give one of", r.stderr)

    def test_sync_continues_past_failures_and_exits_non_zero(self):
        path = self.write("""
registries:
  %(dst)s: {username: ci, password: pw}
images:
  - source: %(src)s/library/ruby:9.9
    destination: %(dst)s/mirror/ruby:9.9
  - source: %(src)s/library/ruby:3.3
    destination: %(dst)s/mirror/ruby:3.3
""" % {"src": self.src.host, "dst": self.dst.host})
        r = run_regcache("sync", path, "--retries", "1")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("1 copied, 0 already present, 1 failed", r.stdout)
        self.assertIn("MANIFEST_UNKNOWN", r.stdout)
        self.assertIsNotNone(inspect_raw("%s/mirror/ruby:3.3" % self.dst.host, creds="ci:pw"))

        bad = self.write("images: [{source: Ruby, destination: x.io/r}]")
        r = run_regcache("sync", bad)
        self.assertEqual(r.returncode, 2)
        self.assertIn("images[0].source", r.stderr)

    def test_rate_limit_guard_stops_before_burning_the_last_pulls(self):
        proxy = self.proxy(self.src.port)
        proxy.extra_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "3;w=21600"}
        path = self.config(proxy.host, extra="parallel: 1\nratelimit: {min_remaining: 5, action: stop}")
        # parallel appears twice in that text; keep the second (YAML last-wins is not portable).
        with open(path) as f:
            text = f.read().replace("parallel: 2\n", "", 1)
        with open(path, "w") as f:
            f.write(text)
        r = run_regcache("sync", path)
        self.assertEqual(r.returncode, 5, r.stdout + r.stderr)
        self.assertIn("1 copied, 0 already present, 3 failed", r.stdout)
        self.assertIn("3 pulls remaining (threshold 5)", r.stdout)
        self.assertIn("stopping", r.stderr)

    def test_rate_limit_guard_waits_until_quota_returns(self):
        proxy = self.proxy(self.src.port)
        proxy.extra_headers = {"ratelimit-remaining": "1;w=21600"}
        path = self.config(proxy.host, extra="ratelimit: {min_remaining: 5, action: wait, wait_interval: 1s, max_wait: 30s}")

        def refill():
            time.sleep(2.5)
            proxy.extra_headers = {"ratelimit-remaining": "90;w=21600"}

        threading.Thread(target=refill, daemon=True).start()
        r = run_regcache("sync", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("4 copied", r.stdout)
        self.assertIn("waiting 1 s", r.stderr)
        # While waiting it re-read the quota with HEADs, which cost no pulls.
        self.assertGreater(len(proxy.requests("HEAD", "/manifests/")), 0)


if __name__ == "__main__":
    unittest.main()
