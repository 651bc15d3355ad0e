"""regcache sync against a source registry that misbehaves: tag-list entries that are no tags, a
tag_regex prone to backtracking (issue 13, item 1). The hostile registry is hostile.py's; real
docker-registry instances where an image is really copied."""

import json
import os
import time
import unittest

from fixtures import inspect_raw, push
from hostile import HostileRegistry
from regtest import RegistryTestCase, run_regcache


class SyncHostileTest(RegistryTestCase):
    def hostile(self, tags_list=None):
        h = HostileRegistry(tags_list)
        self._stops.append(h.stop)
        return h

    def write(self, text):
        path = os.path.join(self.work, "sync.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def regex_sync(self, src_host, tag_regex, dst_host):
        return self.write("images:\n  - source: %s/lib/app\n    tag_regex: '%s'\n"
                          "    destination: %s/mirror/app\n" % (src_host, tag_regex, dst_host))

    def dry_run(self, path, timeout=60):
        """`sync --dry-run --json`: (completed process, rows, seconds taken)."""
        start = time.monotonic()
        r = run_regcache("sync", "--dry-run", "--json", path, "--retries", "1", timeout=timeout)
        rows = json.loads(r.stdout) if r.stdout.strip() else None
        return r, rows, time.monotonic() - start

    def test_entries_that_are_not_tags_are_dropped_and_the_rest_copied(self):
        # A 50,000-character "tag" crashed the whole run (SIGSEGV: std::regex_match recursed
        # once per character); 2,000 characters were tried as a tag. Both are dropped with one
        # log line, and the real tags are copied.
        src = self.registry("src")
        dst = self.registry("dst")
        digests = {}
        for tag, seed in (("v1", 1), ("v2", 2)):
            layout, digests[tag] = self.image("app-" + tag, tag=tag, seed=seed, layers=1, layer_size=4096)
            push(layout, tag, "%s/lib/app:%s" % (src.host, tag))
        proxy = self.proxy(src.port)
        listed = ["v1", "v" * 50000, "v2", "v" * 2000, "v/../x", "-v"]
        body = json.dumps({"name": "lib/app", "tags": listed}).encode()
        proxy.fail_next.append(["GET", "/tags/list", 200, {"Content-Type": "application/json"}, 10, body])
        r = run_regcache("sync", self.regex_sync(proxy.host, "^v.*$", dst.host), timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr[-2000:])
        self.assertIn("2 copied, 0 already present, 0 failed", r.stdout)
        for tag in ("v1", "v2"):
            self.assertEqual(inspect_raw("%s/mirror/app:%s" % (dst.host, tag)),
                             inspect_raw("%s/lib/app:%s" % (src.host, tag)))
        said = [line for line in r.stderr.splitlines() if "not valid tags" in line]
        self.assertEqual(len(said), 1, r.stderr[-2000:])
        self.assertIn("ignoring 4 of 6 entries in the tag list of %s/lib/app" % proxy.host, said[0])
        self.assertIn("(50000 characters)", said[0])
        self.assertLess(len(said[0]), 400)

    def test_backtracking_pattern_against_a_chosen_tag_ends_at_once(self):
        # `(a|a)*b` backtracks 2^n ways in std::regex: against 33 a's and a c, sync hung.
        src = self.hostile(lambda repo, q: ({"name": repo, "tags": ["a" * 33 + "c", "ab", "aab"]}, {}))
        r, rows, took = self.dry_run(self.regex_sync(src.host, "(a|a)*b", src.host), timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(row["source"] for row in rows),
                         ["%s/lib/app:aab" % src.host, "%s/lib/app:ab" % src.host])
        self.assertLess(took, 10)


if __name__ == "__main__":
    unittest.main()
