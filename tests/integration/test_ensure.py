"""regcache ensure against real docker-registry instances, skopeo as the reference client."""

import base64
import hashlib
import json
import os
import stat
import subprocess
import time
import unittest

from fixtures import OCI_INDEX, OCI_MANIFEST, inspect_raw, push
from regtest import REGCACHE, RegistryTestCase, run_parallel, run_regcache

MIB = 1 << 20
FAST = ["--retries", "2", "--retry-base-ms", "50"]


def by_digest(ref, digest):
    """What ensure prints for destination `ref`: its repository, without the tag, @digest."""
    repo = ref.split("@")[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return repo + "@" + digest


class EnsureTest(RegistryTestCase):
    def seeded(self, registry, repo="lib/app", tag="v1", creds=None, **kw):
        kw.setdefault("layer_size", MIB)
        layout, digest = self.image(repo.replace("/", "_") + tag + str(kw.get("seed", 1)), tag=tag, **kw)
        push(layout, tag, "%s/%s:%s" % (registry.host, repo, tag), creds=creds)
        return digest

    def assert_same_image(self, src_ref, dst_ref, dst_creds=None, src_creds=None):
        src_raw = inspect_raw(src_ref, creds=src_creds)
        dst_raw = inspect_raw(dst_ref, creds=dst_creds)
        self.assertIsNotNone(src_raw)
        self.assertEqual(src_raw, dst_raw, "destination manifest bytes differ from the source's")
        index = json.loads(src_raw)
        for m in index.get("manifests", []):
            repo = dst_ref.rsplit(":", 1)[0]
            srepo = src_ref.rsplit(":", 1)[0]
            self.assertEqual(inspect_raw(srepo + "@" + m["digest"], creds=src_creds),
                             inspect_raw(repo + "@" + m["digest"], creds=dst_creds))

    def test_copies_missing_image_all_platforms_byte_exact(self):
        src = self.registry("src")
        dst = self.registry("dst", auth=("htpasswd", {"ci": "pw"}))
        digest = self.seeded(src)
        dst_ref = "%s/mirror/app:v1" % dst.host
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, dst_ref, "--dest-creds", "ci:pw", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["copied"])
        self.assertEqual(out["destination_digest"], digest)
        self.assertEqual(out["source_digest"], digest)
        self.assertEqual(out["destination"], by_digest(dst_ref, digest))
        self.assertEqual(out["destination_tag"], "v1")
        self.assertEqual(out["blobs"]["copied"], 10)  # 2 platforms x (4 layers + config)
        self.assertEqual(out["manifests"]["pushed"], 3)
        self.assertGreater(out["bytes_copied"], 8 * MIB)
        self.assert_same_image("%s/lib/app:v1" % src.host, dst_ref, dst_creds="ci:pw")

        # Plain output: one line, the repository by digest (no tag), usable as a FROM.
        r2 = run_regcache("ensure", "%s/lib/app:v1" % src.host, dst_ref, "--dest-creds", "ci:pw")
        self.assertEqual(r2.returncode, 0, r2.stderr)
        self.assertEqual(r2.stdout, "%s/mirror/app@%s\n" % (dst.host, digest))

    def test_printed_reference_is_one_skopeo_accepts(self):
        # It printed DST:tag@sha256:…, which skopeo refuses ("Docker references with both a tag
        # and digest are currently not supported"); buildah, podman, docker and ctr took it.
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src)
        for dst_arg in ("%s/m/app:v1" % dst.host, "%s/m/other" % dst.host):  # with a tag, without
            # The acceptance check of issue 13, as a user would type it (plain HTTP on loopback).
            inspect = subprocess.run(
                ["bash", "-c", "skopeo inspect --tls-verify=false docker://$(%s ensure %s %s)"
                 % (REGCACHE, "%s/lib/app:v1" % src.host, dst_arg)],
                capture_output=True, text=True, timeout=120, env=dict(os.environ, DOCKER_CONFIG=self.work))
            self.assertEqual(inspect.returncode, 0, inspect.stderr)
            r = run_regcache("ensure", "%s/lib/app:v1" % src.host, dst_arg)
            self.assertEqual(r.returncode, 0, r.stderr)
            ref = r.stdout.strip()
            self.assertEqual(ref, by_digest(dst_arg, digest))
            self.assertEqual(json.loads(inspect.stdout)["Name"], ref.split("@")[0])
            raw = inspect_raw(ref)
            self.assertEqual("sha256:" + hashlib.sha256(raw).hexdigest(), digest)
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, "--mirror", dst.host + "/cache", "--json")
        out = json.loads(r.stdout)
        self.assertEqual(out["destination"], "%s/cache/127.0.0.1-%d/lib/app@%s" % (dst.host, src.port, digest))
        self.assertEqual(out["destination_tag"], "v1")

    def test_present_image_makes_no_request_to_source(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src)
        src_ref, dst_ref = "%s/lib/app:v1" % src.host, "%s/m/app:v1" % dst.host
        self.assertEqual(run_regcache("ensure", src_ref, dst_ref).returncode, 0)
        before = len(src.requests())
        src.stop()  # any request to the source would now fail
        r = run_regcache("ensure", src_ref, dst_ref, "--json", *FAST)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertFalse(out["copied"])
        self.assertEqual(out["reason"], "present")
        self.assertEqual(out["destination_digest"], digest)
        self.assertEqual(out["source_requests"]["total"], 0)
        self.assertEqual(len(src.requests()), before)

    def test_check_upstream_uses_heads_and_follows_moved_tag(self):
        src = self.registry("src")
        dst = self.registry("dst")
        old = self.seeded(src, seed=1)
        proxy = self.proxy(src.port)
        src_ref, dst_ref = "%s/lib/app:v1" % proxy.host, "%s/m/app:v1" % dst.host
        self.assertEqual(run_regcache("ensure", src_ref, dst_ref).returncode, 0)

        proxy.log.clear()
        r = run_regcache("ensure", "--check-upstream", src_ref, dst_ref, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(json.loads(r.stdout)["copied"])
        manifest_gets = proxy.requests("GET", "/manifests/")
        self.assertEqual(manifest_gets, [], "an unchanged tag must be checked with HEAD only")
        self.assertEqual(len(proxy.requests("HEAD", "/manifests/")), 1)

        new = self.seeded(src, seed=2)  # the tag moves upstream
        self.assertNotEqual(old, new)
        r = run_regcache("ensure", src_ref, dst_ref)
        self.assertEqual(r.stdout.strip(), by_digest(dst_ref, old), "without --check-upstream: no source contact")
        r = run_regcache("ensure", "--check-upstream", src_ref, dst_ref, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["copied"])
        self.assertEqual(out["reason"], "tag moved")
        self.assertEqual(out["destination_digest"], new)
        self.assert_same_image("%s/lib/app:v1" % src.host, dst_ref)

    def test_platform_selection(self):
        src = self.registry("src")
        dst = self.registry("dst")
        plats = [("linux", "amd64", ""), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
        digest = self.seeded(src, platforms=plats, layers=2)
        index = json.loads(inspect_raw("%s/lib/app:v1" % src.host))
        arm64 = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64"][0]
        src_ref = "%s/lib/app:v1" % src.host

        r = run_regcache("ensure", "--platform", "linux/arm64", src_ref, "%s/one/app:v1" % dst.host, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["destination_digest"], arm64, "one platform keeps that platform's digest")
        self.assertEqual(out["blobs"]["copied"], 3)
        self.assertEqual(inspect_raw("%s/one/app:v1" % dst.host), inspect_raw("%s/lib/app@%s" % (src.host, arm64)))

        r = run_regcache("ensure", "--platform", "linux/amd64", "--platform", "linux/arm/v7", src_ref,
                         "%s/two/app:v1" % dst.host, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertNotEqual(out["destination_digest"], digest)
        got = json.loads(inspect_raw("%s/two/app:v1" % dst.host))
        self.assertEqual(sorted(m["platform"]["architecture"] for m in got["manifests"]), ["amd64", "arm"])

        r = run_regcache("ensure", "--platform", "windows/amd64", src_ref, "%s/none/app:v1" % dst.host)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("linux/arm64/v8", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)

    def test_bearer_token_source_and_docker_config_destination(self):
        ts = self.token_server({"pusher": "pushpw"}, access_token_only=True)
        src = self.registry("src", auth=("token", ts))
        dst = self.registry("dst", auth=("htpasswd", {"ci": "pw"}))
        digest = self.seeded(src, creds="pusher:pushpw")
        ts.requests.clear()
        cfg = os.path.join(self.work, "dockercfg")
        os.makedirs(cfg)
        with open(os.path.join(cfg, "config.json"), "w") as f:
            import base64
            json.dump({"auths": {"http://%s" % dst.host: {"auth": base64.b64encode(b"ci:pw").decode()}}}, f)
        dst_ref = "%s/m/app:v1" % dst.host
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, dst_ref, env={"DOCKER_CONFIG": cfg})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), by_digest(dst_ref, digest))
        # Anonymous pull, one token per scope: the token is cached, not fetched per request.
        self.assertTrue(all(req["user"] is None for req in ts.requests))
        self.assertLessEqual(len(ts.requests), 2)
        self.assert_same_image("%s/lib/app:v1" % src.host, dst_ref, dst_creds="ci:pw",
                               src_creds="pusher:pushpw")

        # Wrong destination password: an authentication failure, exit 3, one line.
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, "%s/m/other:v1" % dst.host,
                         "--dest-creds", "ci:wrong", *FAST)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("unauthenticated", r.stderr)

    def test_credential_helper_supplies_destination_credentials(self):
        src = self.registry("src")
        dst = self.registry("dst", auth=("htpasswd", {"AWS": "ecr-secret"}))
        self.seeded(src)
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir)
        helper = os.path.join(bindir, "docker-credential-fake-ecr")
        with open(helper, "w") as f:
            f.write('#!/bin/sh\nread url\necho "$url" >> %s/helper.log\n'
                    'echo \'{"ServerURL":"\'$url\'","Username":"AWS","Secret":"ecr-secret"}\'\n' % self.work)
        os.chmod(helper, 0o755)
        cfg = os.path.join(self.work, "dockercfg")
        os.makedirs(cfg)
        with open(os.path.join(cfg, "config.json"), "w") as f:
            json.dump({"credHelpers": {dst.host: "fake-ecr"}}, f)
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, "%s/m/app:v1" % dst.host,
                         env={"DOCKER_CONFIG": cfg, "PATH": bindir + ":" + os.environ["PATH"]})
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.work, "helper.log")) as f:
            self.assertEqual(f.read().split(), [dst.host])  # asked once, for the destination only

    def test_same_registry_different_credentials_mounts_blobs(self):
        reg = self.registry("one", auth=("htpasswd", {"alice": "a-pw", "bob": "b-pw"}))
        digest = self.seeded(reg, repo="team-a/app", creds="alice:a-pw")
        r = run_regcache("ensure", "%s/team-a/app:v1" % reg.host, "%s/team-b/app:v1" % reg.host,
                         "--src-creds", "alice:a-pw", "--dest-creds", "bob:b-pw", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["destination_digest"], digest)
        self.assertEqual(out["blobs"]["mounted"], 10)
        self.assertEqual(out["bytes_copied"], 0)

    def test_blob_redirect_never_carries_authorization(self):
        src = self.registry("src", auth=("htpasswd", {"u": "p"}))
        dst = self.registry("dst")
        self.seeded(src, creds="u:p")
        import base64
        cdn = self.proxy(src.port, inject_auth="Basic " + base64.b64encode(b"u:p").decode())
        front = self.proxy(src.port)
        front.redirect_to = "http://localhost:%d" % cdn.port  # another origin, like a CDN
        r = run_regcache("ensure", "%s/lib/app:v1" % front.host, "%s/m/app:v1" % dst.host,
                         "--src-creds", "u:p")
        self.assertEqual(r.returncode, 0, r.stderr)
        blob_gets = cdn.requests("GET", "/blobs/")
        self.assertEqual(len(blob_gets), 10)
        for _, path, headers in blob_gets:
            self.assertNotIn("authorization", {k.lower() for k in headers}, path)
        self.assertTrue(any("authorization" in {k.lower() for k in h} for _, _, h in front.requests("GET", "/manifests/")))

    def test_interrupted_blob_download_resumes_with_range(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src)
        proxy = self.proxy(src.port)
        proxy.cut_after, proxy.cut_count = 300000, 1
        r = run_regcache("ensure", "%s/lib/app:v1" % proxy.host, "%s/m/app:v1" % dst.host, "-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip().rsplit("@", 1)[1], digest)
        ranges = [h.get("Range") for _, _, h in proxy.requests("GET", "/blobs/") if h.get("Range")]
        self.assertEqual(ranges, ["bytes=300000-"])
        self.assert_same_image("%s/lib/app:v1" % src.host, "%s/m/app:v1" % dst.host)

    def test_source_dies_mid_blob_then_rerun_succeeds(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src)
        proxy = self.proxy(src.port)
        port = proxy.port
        proxy.cut_after, proxy.cut_count, proxy.die_on_cut = 200000, 1, True
        dst_ref = "%s/m/app:v1" % dst.host
        r = run_regcache("ensure", "%s/lib/app:v1" % proxy.host, dst_ref, *FAST)
        self.assertEqual(r.returncode, 6, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertIn("unavailable", r.stderr)
        self.assertIsNone(inspect_raw(dst_ref), "a failed copy must not leave a tag")
        proxy.stop()
        self.proxy(src.port, port=port)  # the source comes back
        r = run_regcache("ensure", "127.0.0.1:%d/lib/app:v1" % port, dst_ref)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), by_digest(dst_ref, digest))
        self.assert_same_image("%s/lib/app:v1" % src.host, dst_ref)

    def test_corrupted_blob_is_rejected_and_nothing_tagged(self):
        src = self.registry("src")
        dst = self.registry("dst")
        self.seeded(src)
        proxy = self.proxy(src.port)
        proxy.corrupt = True
        dst_ref = "%s/m/app:v1" % dst.host
        r = run_regcache("ensure", "%s/lib/app:v1" % proxy.host, dst_ref, *FAST)
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertIn("integrity", r.stderr)
        self.assertIsNone(inspect_raw(dst_ref))
        # No blob of the image was committed at the destination from corrupted bytes.
        committed = [p for m, p, status in dst.requests()
                     if m == "PUT" and "/blobs/uploads/" in p and status == "201"]
        self.assertEqual(committed, [])

    def test_rate_limited_manifest_is_retried_after_retry_after(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src)
        proxy = self.proxy(src.port)
        proxy.extra_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "42;w=21600",
                               "docker-ratelimit-source": "127.0.0.1"}
        proxy.fail_next.append(["GET", "/manifests/v1", 429, {"Retry-After": "1"}, 1])
        r = run_regcache("ensure", "%s/lib/app:v1" % proxy.host, "%s/m/app:v1" % dst.host, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["destination_digest"], digest)
        self.assertEqual(out["ratelimit"]["remaining"], 42)
        self.assertEqual(out["ratelimit"]["limit"], 100)

        # A 429 that outlasts the retries: exit 5 with the reason.
        proxy.fail_next.append(["GET", "/manifests/v1", 429, {"Retry-After": "3600"}, 10])
        r = run_regcache("ensure", "%s/lib/app:v1" % proxy.host, "%s/m/other:v1" % dst.host, *FAST)
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertIn("rate_limited", r.stderr)

    def test_refused_monolithic_upload_falls_back_to_chunks(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src, platforms=[("linux", "amd64", "")], layers=1, layer_size=3 * MIB)
        front = self.proxy(dst.port)
        front.fail_next.append(["PUT", "/blobs/uploads/", 413, {}, 1, b""])
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, "%s/m/app:v1" % front.host, "-j", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip().rsplit("@", 1)[1], digest)
        patches = front.requests("PATCH", "/blobs/uploads/")
        self.assertGreaterEqual(len(patches), 1)
        for _, _, headers in patches:
            self.assertRegex(headers.get("Content-Range", ""), r"^[0-9]+-[0-9]+$")
        self.assert_same_image("%s/lib/app:v1" % src.host, "%s/m/app:v1" % dst.host)

    def test_missing_destination_repository_is_reported_before_any_source_pull(self):
        # ECR does not create repositories on push: its upload POST answers 404 NAME_UNKNOWN.
        src = self.registry("src")
        dst = self.registry("dst")
        self.seeded(src)
        src_proxy = self.proxy(src.port)
        ecr = self.proxy(dst.port)
        ecr.fail_next.append(["POST", "/v2/mirror/app/blobs/uploads/", 404, {"Content-Type": "application/json"}, 99,
                              b'{"errors":[{"code":"NAME_UNKNOWN","message":"The repository with name '
                              b"'mirror/app' does not exist in the registry with id '123456789012'\"}]}"])
        r = run_regcache("ensure", "%s/lib/app:v1" % src_proxy.host, "%s/mirror/app:v1" % ecr.host, *FAST)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("does not exist", r.stderr)
        self.assertIn("create it first", r.stderr)
        self.assertEqual(src_proxy.requests("GET", "/manifests/"), [], "no source pull for a doomed copy")

    def test_mirror_writes_prefix_registry_repository_byte_exact(self):
        # The layout the backing tier of `regcache serve` reads: PREFIX/<registry>/<repository>,
        # the source registry's port written as "-<port>".
        src = self.registry("src")
        dst = self.registry("dst", auth=("htpasswd", {"ci": "pw"}))
        digest = self.seeded(src)
        src_ref = "%s/lib/app:v1" % src.host
        repo = "cache/127.0.0.1-%d/lib/app" % src.port
        mirror_ref = "%s/%s:v1" % (dst.host, repo)
        r = run_regcache("ensure", src_ref, "--mirror", dst.host + "/cache", "--dest-creds", "ci:pw",
                         "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["copied"])
        self.assertEqual(out["destination"], by_digest(mirror_ref, digest))
        self.assertEqual(out["destination_digest"], digest)

        # Asked of the registry itself: that one repository, the tag's bytes hash to the source's
        # digest, and so do the children's.
        auth = {"Authorization": "Basic " + base64.b64encode(b"ci:pw").decode()}
        st, _, body = dst.api("GET", "/v2/_catalog", headers=auth)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["repositories"], [repo])
        st, h, body = dst.api("GET", "/v2/%s/manifests/v1" % repo,
                              headers=dict(auth, Accept=OCI_INDEX + ", " + OCI_MANIFEST))
        self.assertEqual(st, 200, body)
        self.assertEqual(h["docker-content-digest"], digest)
        self.assertEqual("sha256:" + hashlib.sha256(body).hexdigest(), digest)
        self.assert_same_image(src_ref, mirror_ref, dst_creds="ci:pw")

        # Again: present, nothing asked of the source; plain output is the mirror reference.
        before = len(src.requests())
        r = run_regcache("ensure", src_ref, "--mirror", dst.host + "/cache/", "--dest-creds", "ci:pw")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, by_digest(mirror_ref, digest) + "\n")
        self.assertEqual(len(src.requests()), before)
        # A source by digest lands in the same repository by digest.
        r = run_regcache("ensure", "%s/lib/app@%s" % (src.host, digest), "--mirror", dst.host + "/cache",
                         "--dest-creds", "ci:pw")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "%s/%s@%s\n" % (dst.host, repo, digest))

    def test_serve_backing_tier_and_ensure_mirror_share_one_layout(self):
        # What `ensure --mirror` writes, a node of `regcache serve --backing` on an empty disk
        # serves without a GET at the source; what the node writes through, ensure finds present.
        src = self.registry("src")
        backing = self.registry("backing")
        digest = self.seeded(src)
        r = run_regcache("ensure", "%s/lib/app:v1" % src.host, "--mirror", backing.host + "/cache")
        self.assertEqual(r.returncode, 0, r.stderr)
        def content_gets():  # manifests and blobs; the /v2/ ping is no pull
            return [p for m, p, _ in src.requests() if m == "GET" and ("/manifests/" in p or "/blobs/" in p)]

        gets_before = content_gets()
        node = self.regcache([{"name": "src", "url": "http://" + src.host}],
                             extra="backing: 'http://%s/cache'\n" % backing.host)
        out = os.path.join(self.work, "pulled")
        pull = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                               "docker://%s/lib/app:v1" % node.host, "oci:%s:v1" % out],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(pull.returncode, 0, pull.stderr)
        with open(os.path.join(out, "index.json")) as f:
            self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)
        self.assertEqual(content_gets(), gets_before)

        v2 = self.seeded(src, tag="v2", seed=2)
        pull = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                               "docker://%s/lib/app:v2" % node.host, "oci:%s:v2" % out],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(pull.returncode, 0, pull.stderr)
        tag_path = "/v2/cache/127.0.0.1-%d/lib/app/manifests/v2" % src.port
        deadline = time.time() + 60
        while backing.api("HEAD", tag_path, headers={"Accept": OCI_INDEX})[0] != 200:
            self.assertLess(time.time(), deadline, "the node never wrote v2 through")
            time.sleep(0.2)
        src.stop()  # the tag goes last: the image is all there, and ensure must not need the source
        r = run_regcache("ensure", "%s/lib/app:v2" % src.host, "--mirror", backing.host + "/cache",
                         "--json", *FAST)
        self.assertEqual(r.returncode, 0, r.stderr)
        res = json.loads(r.stdout)
        self.assertEqual((res["copied"], res["reason"], res["destination_digest"]), (False, "present", v2))

    def test_mirror_bad_input_writes_nothing(self):
        dst = self.registry("dst")
        cases = [
            (["ruby:3.3", dst.host + "/m/ruby:3.3", "--mirror", dst.host + "/cache"], "not both"),
            (["ruby:3.3", "--mirror", "cache"], "registry host"),
            (["ruby:3.3", "--mirror", "http://%s/cache" % dst.host], "URL scheme"),
            (["ruby:3.3", "--mirror", dst.host + "/cache:v1"], "no tag or digest"),
            (["ruby:3.3", "--mirror", dst.host + "/Cache"], "invalid path"),
        ]
        for args, text in cases:
            r = run_regcache("ensure", *args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(text, r.stderr, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertEqual(r.stdout, "")
        self.assertEqual(dst.requests(), [])

    def test_bad_input_and_unreachable_hosts(self):
        cases = [
            (["ensure", "Ruby:3", "localhost:5000/x"], 2, "lowercase"),
            (["ensure", "ruby:3", "localhost:5000/x@sha256:abc"], 2, "digest"),
            (["ensure", "ruby:", "localhost:5000/x"], 2, "tag"),
            (["ensure", "ruby", "localhost:5000/x", "--platform", "linux"], 2, "platform"),
            (["ensure", "ruby"], 2, "DST"),
            (["ensure", "--src-creds", "nocolon", "ruby", "localhost:5000/x"], 2, "USER:PASS"),
            (["ensure", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1", *FAST], 6, "cannot reach"),
            # CLI11 said "A subcommand is required" for a command it does not know.
            (["prefetch", "ruby"], 2, "unknown command 'prefetch' (commands: ensure, sync, serve"),
            ([], 2, "a command is required (commands: ensure, sync, serve"),
        ]
        for args, code, text in cases:
            r = run_regcache(*args)
            self.assertEqual(r.returncode, code, (args, r.stderr))
            self.assertIn(text, r.stderr, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertEqual(r.stdout, "")

    def test_concurrent_ensures_both_succeed(self):
        src = self.registry("src")
        dst = self.registry("dst")
        digest = self.seeded(src, layer_size=2 * MIB)
        dst_ref = "%s/m/app:v1" % dst.host
        results = [None, None]

        def go(i):
            results[i] = run_regcache("ensure", "%s/lib/app:v1" % src.host, dst_ref)

        run_parallel(go, 2)
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.strip(), by_digest(dst_ref, digest))
        self.assert_same_image("%s/lib/app:v1" % src.host, dst_ref)


if __name__ == "__main__":
    unittest.main()
