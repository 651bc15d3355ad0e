"""The Debian package: built with CPack from this build tree (or the .deb in $REGCACHE_DEB, which
CI builds from a Release tree), installed with apt-get, its unit checked by systemd-analyze, and
the installed binary serving with the packaged config, started directly (the machine need not run
systemd) as an unprivileged user without a home, as the unit's DynamicUser would. The package is
purged afterwards. Needs root; skipped otherwise, and when a regcache package is already
installed (the test would replace it)."""

import fcntl
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import unittest

from regtest import free_port, http_request, stop_process, wait_port

BIN = "/usr/bin/regcache"
UNIT = "/lib/systemd/system/regcache.service"
CONFIG = "/etc/regcache/serve.yaml"
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
# Another build tree's run of this test (another engineer, or CI) must not install or purge the
# package under this one.
LOCK = "/run/lock/regcache-package-test.lock"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def dpkg_status(package):
    r = run(["dpkg-query", "-W", "-f=${Status}", package])
    return r.stdout if r.returncode == 0 else ""


def apt_get(*args):
    r = run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", *args], env=APT_ENV)
    if r.returncode != 0:
        raise AssertionError("apt-get %s failed: %s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


def build_deb(outdir):
    """CPack over this build tree's installed files: the binary the other tests ran, stripped."""
    build_dir = os.environ.get("REGCACHE_BUILD_DIR")
    if not build_dir:
        raise unittest.SkipTest("neither REGCACHE_DEB nor REGCACHE_BUILD_DIR is set (run via ctest)")
    cpack = os.environ.get("REGCACHE_CPACK", "cpack")
    r = run([cpack, "-G", "DEB", "-B", outdir, "--config",
             os.path.join(build_dir, "CPackConfig.cmake")])
    debs = glob.glob(os.path.join(outdir, "regcache_*.deb"))
    if r.returncode != 0 or len(debs) != 1:
        raise AssertionError("cpack failed: %s%s" % (r.stdout, r.stderr))
    return debs[0]


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("installing a package needs root")
        for tool in ("apt-get", "dpkg-deb", "systemd-analyze"):
            if not shutil.which(tool):
                raise unittest.SkipTest(tool + " is not installed (scripts/setup.sh installs it)")
        cls.lock = open(LOCK, "w")
        fcntl.flock(cls.lock, fcntl.LOCK_EX)
        if "installed" in dpkg_status("regcache"):
            cls.lock.close()
            raise unittest.SkipTest("a regcache package is already installed here; not replacing it")
        cls.work = tempfile.mkdtemp(prefix="regcache-pkg-")
        try:
            cls.deb = os.environ.get("REGCACHE_DEB") or build_deb(cls.work)
            # A path with a slash is what makes apt-get take a file rather than a package name.
            apt_get("install", "--no-install-recommends", os.path.abspath(cls.deb))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if dpkg_status("regcache"):
                apt_get("purge", "regcache")
        finally:
            shutil.rmtree(cls.work, ignore_errors=True)
            cls.lock.close()

    def field(self, name):
        return run(["dpkg-deb", "-f", self.deb, name]).stdout.strip()

    def test_control_fields_and_dependencies(self):
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(self.field("Package"), "regcache")
        self.assertEqual(self.field("Architecture"), arch)
        self.assertRegex(self.field("Version"), r"^\d+\.\d+\.\d+$")
        depends = [d.split()[0] for d in self.field("Depends").split(", ")]
        # dpkg-shlibdeps found the shared libraries the binary links (names carry sonames, so
        # only the stem is checked).
        for lib in ("libc6", "libstdc++6", "libcurl4", "libssl3", "libsqlite3-0", "libyaml-cpp",
                    "libspdlog", "ca-certificates"):
            self.assertTrue(any(d.startswith(lib) for d in depends), "%s not in %s" % (lib, depends))
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "regcache"]).stdout
        self.assertIn(CONFIG, conffiles)

    def test_files_in_place(self):
        listed = run(["dpkg", "-L", "regcache"]).stdout.split()
        for path in (BIN, UNIT, CONFIG):
            self.assertIn(path, listed)
            self.assertTrue(os.path.isfile(path), path)
        self.assertTrue(os.access(BIN, os.X_OK))
        # Stripped: no debug sections in what users install.
        sections = run(["readelf", "-S", BIN]).stdout
        self.assertNotIn(".debug_info", sections)
        self.assertEqual(run([BIN, "--help"]).returncode, 0)

    def test_unit_verifies(self):
        r = run(["systemd-analyze", "verify", UNIT])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("regcache.service", r.stdout + r.stderr)
        unit = {}
        with open(UNIT) as f:
            for line in f:
                key, eq, value = line.strip().partition("=")
                if eq and not key.startswith("#"):
                    unit.setdefault(key, []).append(value)
        for key, value in [("ExecStart", BIN + " serve --config " + CONFIG),
                           ("ExecReload", "/bin/kill -HUP $MAINPID"), ("Restart", "on-failure"),
                           ("DynamicUser", "yes"), ("StateDirectory", "regcache"),
                           ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes")]:
            self.assertEqual(unit.get(key), [value], key)

    def test_serves_with_packaged_config(self):
        with open(CONFIG) as f:
            self.assertIn("\ndata_dir: /var/lib/regcache\n", f.read())
        # The unit's dynamic user, approximated: nobody, no home, an empty environment, and
        # only the data directory writable. Listen address and data directory are overridden
        # by flags; everything else is the packaged file.
        nobody = pwd.getpwnam("nobody")
        data = os.path.join(self.work, "data")
        os.mkdir(data, 0o750)
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        os.chmod(self.work, 0o755)
        port = free_port()
        log_path = os.path.join(self.work, "serve.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["setpriv", "--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid),
                 "--clear-groups", BIN, "serve", "--config", CONFIG,
                 "--listen", "127.0.0.1:%d" % port, "--data-dir", data],
                stdout=log, stderr=log, cwd="/", env={"PATH": "/usr/bin:/bin"})
        try:
            wait_port(port, proc=proc, log_path=log_path)
            status, _, body = http_request(port, "GET", "/healthz", timeout=10)
            self.assertEqual((status, body.strip()), (200, b"ok"))
            status, headers, _ = http_request(port, "GET", "/v2/", timeout=10)
            self.assertEqual(status, 200)
            self.assertEqual(headers.get("docker-distribution-api-version"), "registry/2.0")
        finally:
            stop_process(proc, signal.SIGTERM, 40)
        with open(log_path) as f:
            log_text = f.read()
        self.assertEqual(proc.returncode, 0, log_text)
        # The packaged upstreams, in the packaged order.
        self.assertIn("upstreams: docker.io (default), ghcr.io, quay.io, registry.k8s.io, gcr.io, "
                      "public.ecr.aws", log_text)
        self.assertTrue(os.path.exists(os.path.join(data, "metadata.db")))


if __name__ == "__main__":
    unittest.main()
