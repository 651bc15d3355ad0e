"""regcache sync against a source registry that misbehaves: tag-list entries that are no tags, a
tag_regex prone to backtracking, Link headers that loop, leave the origin or never end (issue 13,
items 1 and 5). The hostile registry is hostile.py's; real docker-registry instances where an
image is really copied."""

import json
import os
import subprocess
import time
import unittest

from fixtures import inspect_raw, push
from hostile import HostileRegistry
from regtest import REGCACHE, RegistryTestCase, run_regcache

SANITIZED = bool(os.environ.get("REGCACHE_SANITIZED"))


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

    def test_link_loop_with_the_same_last_stops_with_what_was_listed(self):
        # The Link points back at the page it came with: sync followed it 10,000 times,
        # holding every copy of the list.
        def page(repo, query):
            return ({"name": repo, "tags": ["v1", "v2"]},
                    {"Link": '</v2/%s/tags/list?n=1000&last=v2>; rel="next"' % repo})

        src = self.hostile(page)
        r, rows, took = self.dry_run(self.regex_sync(src.host, "v.*", src.host), timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(row["source"] for row in rows),
                         ["%s/lib/app:v1" % src.host, "%s/lib/app:v2" % src.host])
        self.assertEqual(len(src.requests("/tags/list")), 2, "the first page and the repeated one")
        self.assertIn("the tag list of %s/lib/app leads back to a page already read (last=v2)"
                      % src.host, r.stderr)

    def test_link_to_another_origin_is_never_followed(self):
        other = self.hostile(lambda repo, q: ({"name": repo, "tags": ["evil"]}, {}))

        def page(repo, query):
            return ({"name": repo, "tags": ["v1"]},
                    {"Link": '<http://%s/v2/%s/tags/list?last=v1>; rel="next"' % (other.host, repo)})

        src = self.hostile(page)
        r, rows, took = self.dry_run(self.regex_sync(src.host, "v.*", src.host), timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(rows), 1, rows)
        self.assertFalse(rows[0]["ok"])
        self.assertIn("its Link leads to another origin, 'http://%s'" % other.host, rows[0]["error"])
        self.assertEqual(other.log, [], "the other origin must receive no request at all")

    def test_pages_without_end_stop_at_a_bound_with_bounded_memory(self):
        # Every page names a new `last`, so no loop is seen; each is 2 MiB of valid tags. Without
        # bounds sync held every page (3.4 GB after 30 s in the report). Now the listing fails at
        # its byte bound, naming it, and memory stays near that bound.
        def page(repo, query):
            n = int(query.get("last", ["0"])[0]) + 1
            tags = ["p%06d-%05d-%s" % (n, i, "x" * 86) for i in range(20000)]
            return ({"name": repo, "tags": tags},
                    {"Link": '</v2/%s/tags/list?last=%d>; rel="next"' % (repo, n)})

        src = self.hostile(page)
        path = self.regex_sync(src.host, "v.*", src.host)
        env = dict(os.environ, DOCKER_CONFIG=self.work)
        start = time.monotonic()
        proc = subprocess.Popen([REGCACHE, "sync", "--dry-run", "--json", path, "--retries", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        # Watched while it runs, and killed past a limit far above what it needs (so that a
        # regression ends the test instead of the machine).
        limit_kib = (2048 if SANITIZED else 512) * 1024
        peak_kib = 0
        while proc.poll() is None and time.monotonic() - start < 120:
            try:
                with open("/proc/%d/status" % proc.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
            except OSError:
                pass
            if peak_kib > limit_kib:
                break
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            proc.kill()
        out, err = proc.communicate()
        took = time.monotonic() - start
        self.assertFalse(killed, "still running after %.0f s with %d MiB resident" % (took, peak_kib // 1024))
        self.assertEqual(proc.returncode, 1, err[-2000:])
        rows = json.loads(out)
        self.assertIn("listing tags of %s/lib/app: more than 64.0 MiB of pages (the bound for one listing"
                      % src.host, rows[0]["error"])
        pages = len(src.requests("/tags/list"))
        self.assertLess(pages, 40, "64 MiB is about 32 pages of 2 MiB")
        print("\n  endless pages: %d pages, %.1f s, peak RSS %d MiB" % (pages, took, peak_kib // 1024))


if __name__ == "__main__":
    unittest.main()
