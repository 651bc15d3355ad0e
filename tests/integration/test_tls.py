"""regcache serve with TLS on the listener: a CA and certificates for 127.0.0.1 made with the
openssl CLI, clients (python's ssl, curl, skopeo) verifying them; plain HTTP on the TLS port and a
ClientHello on a plain port; certificate rotation on SIGHUP and on file change; mutual TLS."""

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import warnings

from fixtures import push
from regtest import RegistryTestCase, free_port, run_regcache, write_htpasswd

MIB = 1 << 20


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    """A CA in `directory` and the certificates it issues (EC P-256 keys: quick to make)."""

    def __init__(self, directory, name):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.ca = os.path.join(directory, name + ".crt")
        self.ca_key = os.path.join(directory, name + ".key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=" + name)

    def issue(self, name, serial, client=False, expired=False):
        """(certificate, key) paths: for 127.0.0.1 and localhost, or a client's; `expired`: one
        that was valid in January 2020 only."""
        crt, key, csr = (os.path.join(self.dir, name + ext) for ext in (".crt", ".key", ".csr"))
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("extendedKeyUsage=clientAuth\n" if client else
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        if not expired:
            openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                    "-set_serial", serial, "-days", "2", "-extfile", ext, "-out", crt)
            return crt, key
        # `openssl x509` cannot date a certificate in the past; `openssl ca` can.
        db = os.path.join(self.dir, name + ".db")
        os.makedirs(db)
        open(os.path.join(db, "index.txt"), "w").close()
        with open(os.path.join(db, "serial"), "w") as f:
            f.write(serial[2:] + "\n")
        config = os.path.join(db, "ca.cnf")
        with open(config, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\nnew_certs_dir = %s\n"
                    "serial = %s/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                    "[p]\ncommonName = supplied\n" % (db, db, db))
        openssl("ca", "-batch", "-config", config, "-cert", self.ca, "-keyfile", self.ca_key,
                "-in", csr, "-out", crt, "-startdate", "20200101000000Z", "-enddate",
                "20200201000000Z", "-extfile", ext)
        return crt, key


def client_context(ca, cert=None, alpn=("h2", "http/1.1")):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(*cert)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def https(port, ctx, method, path, headers=None, timeout=30):
    """One request on its own TLS connection: (status, headers (lowercase keys), body)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {"Accept": "*/*"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def handshake(port, ctx):
    """(TLS version, ALPN protocol, certificate serial) of a new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.version(), t.selected_alpn_protocol(), t.getpeercert()["serialNumber"]


def wait_for_value(predicate, timeout):
    """Whether `predicate` came true within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class TlsTest(RegistryTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.mkdtemp(prefix="regcache-tls-pki-")
        cls.pki = Pki(os.path.join(cls.pki_dir, "server"), "regcache-test-ca")
        cls.cert_a = cls.pki.issue("server-a", "0xA1")
        cls.cert_b = cls.pki.issue("server-b", "0xB2")
        cls.clients = Pki(os.path.join(cls.pki_dir, "clients"), "regcache-test-client-ca")
        cls.client = cls.clients.issue("ci-runner", "0xC3", client=True)
        cls.stranger = cls.pki.issue("stranger", "0xD4", client=True)  # another CA's client
        cls.expired = cls.pki.issue("server-old", "0xE5", expired=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, ignore_errors=True)

    def tls_files(self, pair, name="tls"):
        """Copies a certificate and key to where regcache reads them; returns (cert, key)."""
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        paths = (os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
        for src, dst in zip(pair, paths):
            shutil.copyfile(src, dst + ".new")
            os.replace(dst + ".new", dst)  # as renewals do: the new file renamed over the old
        return paths

    def tls_regcache(self, upstream_url, cert, key, client_ca=None, watch="5s", extra_lines=(),
                     tls_lines=(), **kw):
        lines = list(extra_lines) + ["tls:", "  cert: " + cert, "  key: " + key,
                                     "  watch_interval: " + watch] + ["  " + l for l in tls_lines]
        if client_ca:
            lines.append("  client_ca: " + client_ca)
        return self.regcache([{"name": "hub", "url": upstream_url}], extra="\n".join(lines) + "\n", **kw)

    def seeded_hub(self, layer_size=256 * 1024, layers=2):
        hub = self.registry("hub")
        layout, digest = self.image("app", platforms=[("linux", "amd64", "")], layers=layers,
                                    layer_size=layer_size)
        push(layout, "v1", "%s/library/app:v1" % hub.host)
        return hub, digest

    def cert_dir(self, files):
        """A certificate directory as skopeo and podman read it: {name in it: file to copy}."""
        d = os.path.join(self.work, "certs.d")
        os.makedirs(d)
        for name, src in files.items():
            shutil.copyfile(src, os.path.join(d, name))
        return d

    def skopeo_pull(self, host, *flags):
        """Copies library/app:v1 from `host` with skopeo and `flags`; the index digest written."""
        out = os.path.join(self.work, "out")
        r = subprocess.run(["skopeo", "copy", "--all", "-q", *flags,
                            "docker://%s/library/app:v1" % host, "oci:%s:v1" % out],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "index.json")) as f:
            return json.load(f)["manifests"][0]["digest"]

    def layer_of(self, port, ctx):
        _, _, index = https(port, ctx, "GET", "/v2/library/app/manifests/v1")
        child = json.loads(index)["manifests"][0]["digest"]
        _, _, manifest = https(port, ctx, "GET", "/v2/library/app/manifests/" + child)
        return json.loads(manifest)["layers"][0]

    def test_pulls_over_tls_1_2_or_newer_with_http_1_1(self):
        hub, digest = self.seeded_hub()
        rc = self.tls_regcache("http://" + hub.host, *self.tls_files(self.cert_a))
        ctx = client_context(self.pki.ca)
        version, alpn, serial = handshake(rc.port, ctx)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(alpn, "http/1.1")  # h2 was offered first
        self.assertEqual(serial, "A1")
        tls12 = client_context(self.pki.ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        self.assertEqual(handshake(rc.port, tls12)[0], "TLSv1.2")

        # TLS 1.0 and 1.1 are refused by the server (the client here would allow them).
        old = client_context(self.pki.ca)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with self.assertRaisesRegex(ssl.SSLError, "PROTOCOL_VERSION"):
            handshake(rc.port, old)

        curl = subprocess.run(["curl", "-sv", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                               self.pki.ca, "https://127.0.0.1:%d/v2/" % rc.port],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(curl.stdout, "200", curl.stderr)
        self.assertRegex(curl.stderr, r"SSL connection using TLSv1\.[23]")
        self.assertIn("ALPN: server accepted http/1.1", curl.stderr)

        # skopeo trusts the CA from --src-cert-dir (a directory holding ca.crt), nothing else.
        cert_dir = self.cert_dir({"ca.crt": self.pki.ca})
        self.assertEqual(self.skopeo_pull(rc.host, "--src-cert-dir", cert_dir), digest)

        # Hits (manifest from memory, blob from the file), HEAD and a range, on one connection.
        layer = self.layer_of(rc.port, ctx)
        conn = http.client.HTTPSConnection("127.0.0.1", rc.port, context=ctx, timeout=30)
        for _ in range(2):
            conn.request("GET", "/v2/library/app/manifests/v1", headers={"Accept": "*/*"})
            r = conn.getresponse()
            self.assertEqual((r.status, sha(r.read())), (200, digest))
            conn.request("GET", "/v2/library/app/blobs/" + layer["digest"])
            r = conn.getresponse()
            self.assertEqual((r.status, sha(r.read())), (200, layer["digest"]))
        conn.request("HEAD", "/v2/library/app/blobs/" + layer["digest"])
        r = conn.getresponse()
        r.read()
        self.assertEqual((r.status, int(r.getheader("Content-Length"))), (200, layer["size"]))
        conn.request("GET", "/v2/library/app/blobs/" + layer["digest"], headers={"Range": "bytes=10-19"})
        r = conn.getresponse()
        self.assertEqual((r.status, len(r.read())), (206, 10))
        conn.close()

    def test_a_tls_connection_in_use_outlives_the_handshake_deadline_and_idles_out(self):
        rc = self.tls_regcache("http://127.0.0.1:9", *self.tls_files(self.cert_a),
                               extra_lines=["idle_timeout: 1s"])  # also the handshake's deadline
        conn = http.client.HTTPSConnection("127.0.0.1", rc.port, context=client_context(self.pki.ca),
                                           timeout=10)
        for _ in range(8):  # 2.4 s on one connection, never idle for long
            conn.request("GET", "/v2/")
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"{}"))
            time.sleep(0.3)
        time.sleep(2)
        with self.assertRaises((ConnectionError, http.client.RemoteDisconnected, ssl.SSLError)):
            conn.request("GET", "/v2/")
            conn.getresponse()
        conn.close()

    def test_plain_http_on_the_tls_port_is_answered_400(self):
        rc = self.tls_regcache("http://127.0.0.1:9", *self.tls_files(self.cert_a))
        st, h, body = rc.request("GET", "/v2/")
        self.assertEqual(st, 400)
        self.assertEqual(h.get("connection"), "close")
        message = json.loads(body)["errors"][0]["message"]
        self.assertIn("use https://127.0.0.1:%d/" % rc.port, message)
        # With a body the client is still sending, the answer arrives (no reset).
        st, _, _ = rc.request("POST", "/v2/x/blobs/uploads/", body=b"x" * (256 * 1024))
        self.assertEqual(st, 400)
        log = rc.log_text()
        self.assertRegex(log, r"plain HTTP request from 127\.0\.0\.1:\d+ on the HTTPS port "
                              r"\(GET /v2/\): answered 400")
        st, _, metrics = https(rc.port, client_context(self.pki.ca), "GET", "/metrics")
        self.assertIn('regcache_wrong_protocol_total{received="http"} 2', metrics.decode())

    def test_tls_and_basic_authentication_together(self):
        """The issue's acceptance as one run: --tls-cert/--tls-key with --htpasswd."""
        hub, digest = self.seeded_hub()
        users = write_htpasswd(os.path.join(self.work, "htpasswd"), {"ci": "s3cret-Pa55"})
        cert, key = self.tls_files(self.cert_a)
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}],
                           args=["--tls-cert", cert, "--tls-key", key, "--htpasswd", users])
        ctx = client_context(self.pki.ca)
        st, h, body = https(rc.port, ctx, "GET", "/v2/")
        self.assertEqual((st, h.get("www-authenticate")), (401, 'Basic realm="regcache"'))
        self.assertIn(b"UNAUTHORIZED", body)
        wrong = {"Authorization": "Basic " + base64.b64encode(b"ci:guess").decode()}
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/", wrong)[0], 401)
        cert_dir = self.cert_dir({"ca.crt": self.pki.ca})
        self.assertEqual(self.skopeo_pull(rc.host, "--src-cert-dir", cert_dir,
                                          "--src-creds", "ci:s3cret-Pa55"), digest)
        plain = http.client.HTTPConnection("127.0.0.1", rc.port, timeout=10)
        plain.request("GET", "/v2/")
        r = plain.getresponse()
        self.assertEqual(r.status, 400)
        self.assertIn(b"https", r.read().lower())
        plain.close()

    def test_client_hello_on_a_plain_port_gets_a_tls_alert(self):
        hub, digest = self.seeded_hub()
        rc = self.regcache([{"name": "hub", "url": "http://" + hub.host}])
        start = time.time()
        with self.assertRaisesRegex(ssl.SSLError, "HANDSHAKE_FAILURE"):
            handshake(rc.port, client_context(self.pki.ca))
        self.assertLess(time.time() - start, 2)
        self.assertRegex(rc.log_text(), r"TLS ClientHello from 127\.0\.0\.1:\d+ on a plain-HTTP "
                                        r"port: answered with a TLS alert")
        # skopeo (like podman) told the registry is insecure tries HTTPS first: the alert sends it
        # to plain HTTP at once.
        start = time.time()
        self.assertEqual(self.skopeo_pull(rc.host, "--src-tls-verify=false"), digest)
        self.assertLess(time.time() - start, 20)
        self.assertGreaterEqual(rc.metrics().get('regcache_wrong_protocol_total{received="tls"}', 0), 2)

    def test_client_hellos_on_a_plain_port_are_counted_and_logged_once_per_address(self):
        """Issue 13, item 10: every podman/buildah/skopeo pull from a registry set `insecure =
        true` tries HTTPS first, and each attempt was a warning in the log."""
        rc = self.regcache([{"name": "hub", "url": "http://127.0.0.1:9"}])
        for _ in range(2):
            with self.assertRaisesRegex(ssl.SSLError, "HANDSHAKE_FAILURE"):
                handshake(rc.port, client_context(self.pki.ca))
        self.assertEqual(rc.metrics()['regcache_wrong_protocol_total{received="tls"}'], 2)
        log = rc.log_text()
        self.assertEqual(log.count("TLS ClientHello from 127.0.0.1"), 1, log)
        self.assertIn("insecure = true", log)

    def test_stalled_handshakes_are_capped_and_closed_at_the_deadline(self):
        """Issue 13, item 7: each stalled handshake held about 95 KiB for 15 s, without a cap."""
        rc = self.tls_regcache("http://127.0.0.1:9", *self.tls_files(self.cert_a),
                               tls_lines=["handshake_timeout: 2s", "max_handshakes: 50"])
        ctx = client_context(self.pki.ca)
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/")[0], 200)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        hello_client = client_context(self.pki.ca).wrap_bio(inc, out, server_hostname="127.0.0.1")
        with self.assertRaises(ssl.SSLWantReadError):
            hello_client.do_handshake()
        hello = out.read()  # a whole ClientHello record
        base_fds, base_rss = rc.fd_count(), rc.rss_kib()
        socks = []
        start = time.monotonic()
        try:
            # 250 send a whole ClientHello and stall (the server holds OpenSSL state for them),
            # 150 send part of one, 100 nothing at all.
            for i in range(500):
                s = socket.create_connection(("127.0.0.1", rc.port), timeout=10)
                if i % 2 == 0:
                    s.sendall(hello)
                elif i % 5 != 1:
                    s.sendall(hello[:20])
                socks.append(s)
            opened = time.monotonic()
            peak_rss = rc.rss_kib()
            # A real client still gets in, at once: the oldest stalled handshake makes room.
            t = time.monotonic()
            self.assertEqual(https(rc.port, ctx, "GET", "/v2/", timeout=5)[0], 200)
            self.assertLess(time.monotonic() - t, 1.0)
            m = https(rc.port, ctx, "GET", "/metrics")[2].decode()
            evicted = re.search(r"^regcache_tls_handshakes_evicted_total (\d+)", m, re.M)
            self.assertTrue(evicted, m)
            self.assertGreaterEqual(int(evicted.group(1)), 150)
            # Every stalled connection is closed by the server within the deadline of 2 s.
            closed_at = []
            for s in socks:
                s.settimeout(max(0.1, start + 6 - time.monotonic()))
                try:
                    while s.recv(65536):
                        pass
                    closed_at.append(time.monotonic())
                except ConnectionResetError:
                    closed_at.append(time.monotonic())
                except socket.timeout:
                    pass
            self.assertEqual(len(closed_at), len(socks), "connections the server left open")
            self.assertLess(max(closed_at) - opened, 2 + 1.5)
        finally:
            for s in socks:
                s.close()
        self.assertTrue(wait_for_value(lambda: rc.fd_count() <= base_fds + 5, 5),
                        "fds: %d before, %d now" % (base_fds, rc.fd_count()))
        after_rss = rc.rss_kib()
        print("\nstalled-handshake burst of 500: RSS %d KiB before, %d KiB with them, %d KiB after"
              % (base_rss, peak_rss, after_rss))
        if not os.environ.get("REGCACHE_SANITIZED"):
            # 50 handshakes at about 95 KiB and 450 connections at a few KiB, not 500 at 95 KiB.
            self.assertLess(peak_rss - base_rss, 20 * 1024)
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/")[0], 200)
        self.assertIn("reached max_handshakes (50)", rc.log_text())

    def test_an_expired_certificate_is_an_error_and_readyz_says_so(self):
        """Issue 13, item 14: an expired certificate loaded on reload was logged at info level."""
        cert, key = self.tls_files(self.cert_a)
        rc = self.tls_regcache("http://127.0.0.1:9", cert, key, watch="0s")
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        self.assertEqual(https(rc.port, unverified, "GET", "/readyz")[0], 200)
        self.tls_files(self.expired)
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: TLS certificate reloaded" in rc.log_text(), 10, "the reload")
        self.assertRegex(rc.log_text(), r" error SIGHUP: TLS certificate reloaded: subject "
                                        r"CN=server-old, serial E5, EXPIRED on 2020-02-01")
        st, _, body = https(rc.port, unverified, "GET", "/readyz")
        self.assertEqual(st, 503, body)
        ready = json.loads(body)
        self.assertEqual(ready["status"], "degraded")
        self.assertIn("expired", ready["tls"])
        self.assertNotIn("storage", ready)
        # Clients that verify refuse it; the server still starts with it (and says so loudly).
        with self.assertRaisesRegex(ssl.SSLError, "CERTIFICATE_VERIFY_FAILED"):
            handshake(rc.port, client_context(self.pki.ca))
        rc.stop()
        rc.start()
        self.assertRegex(rc.log_text(), r" error TLS certificate: subject CN=server-old.*EXPIRED")
        self.assertEqual(https(rc.port, unverified, "GET", "/readyz")[0], 503)
        # Renewed: ready again.
        self.tls_files(self.cert_b)
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "serial B2" in rc.log_text(), 10, "the renewal")
        self.assertEqual(https(rc.port, unverified, "GET", "/readyz")[0], 200)

    def test_sighup_rotates_the_certificate_while_a_transfer_completes(self):
        hub, _ = self.seeded_hub(layer_size=4 * MIB, layers=1)
        proxy = self.proxy(hub.port)
        cert, key = self.tls_files(self.cert_a)
        rc = self.tls_regcache("http://" + proxy.host, cert, key, watch="0s")
        ctx = client_context(self.pki.ca)
        layer = self.layer_of(rc.port, ctx)
        proxy.throttle_bps = 2 * MIB  # about two seconds
        started = threading.Event()
        result = {}

        def download():
            conn = http.client.HTTPSConnection("127.0.0.1", rc.port, context=ctx, timeout=60)
            conn.connect()
            result["serial"] = conn.sock.getpeercert()["serialNumber"]
            conn.request("GET", "/v2/library/app/blobs/" + layer["digest"])
            r = conn.getresponse()
            started.set()
            result["blob"] = (r.status, sha(r.read()))
            # The connection stays usable, with the certificate it began with.
            conn.request("GET", "/v2/")
            result["again"] = conn.getresponse().status
            result["serial_after"] = conn.sock.getpeercert()["serialNumber"]
            conn.close()

        t = threading.Thread(target=download)
        t.start()
        self.assertTrue(started.wait(30))
        self.tls_files(self.cert_b)
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: TLS certificate reloaded" in rc.log_text(), 10, "the reload")
        self.assertTrue(t.is_alive(), "the transfer should still be running")
        self.assertEqual(handshake(rc.port, ctx)[2], "B2")
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/")[0], 200)
        t.join(60)
        self.assertEqual(result.get("blob"), (200, layer["digest"]))
        self.assertEqual((result["serial"], result["again"], result["serial_after"]), ("A1", 200, "A1"))
        self.assertIn("serial B2", rc.log_text())
        self.assertIsNone(rc.proc.poll())

    def test_changed_files_reload_without_sighup_and_bad_ones_are_refused(self):
        # Laid out as a Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data -> a dated
        # directory, switched by renaming a new link over ..data.
        volume = os.path.join(self.work, "secret")
        os.makedirs(volume)

        def publish(pair, version):
            d = self.tls_files(pair, name=os.path.join("secret", "..v%d" % version))
            link = os.path.join(volume, "..data_tmp")
            os.symlink(os.path.basename(os.path.dirname(d[0])), link)
            os.replace(link, os.path.join(volume, "..data"))

        publish(self.cert_a, 1)
        for name in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", name), os.path.join(volume, name))
        rc = self.tls_regcache("http://127.0.0.1:9", os.path.join(volume, "tls.crt"),
                               os.path.join(volume, "tls.key"), watch="1s")
        ctx = client_context(self.pki.ca)
        self.assertEqual(handshake(rc.port, ctx)[2], "A1")
        publish(self.cert_b, 2)
        wait_for(lambda: handshake(rc.port, ctx)[2] == "B2", 10, "the new certificate")
        self.assertIn("certificate files changed: TLS certificate reloaded", rc.log_text())

        # A certificate with another certificate's key: refused, on SIGHUP and by the watcher
        # (once), while the current certificate keeps serving.
        publish((self.cert_a[0], self.cert_b[1]), 3)
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "not loaded" in rc.log_text(), 10, "the refusal")
        time.sleep(2.5)  # the watcher sees the files settle
        log = rc.log_text()
        self.assertRegex(log, r"TLS files not loaded, the current certificate keeps serving: TLS "
                              r"key \S+ does not match the certificate")
        self.assertEqual(log.count("not loaded"), 1, log)
        self.assertEqual(handshake(rc.port, ctx)[2], "B2")
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/")[0], 200)
        m = https(rc.port, ctx, "GET", "/metrics")[2].decode()
        self.assertIn('regcache_tls_reloads_total{result="rejected"} 1', m)
        self.assertIn('regcache_tls_reloads_total{result="ok"} 1', m)

    def test_a_configuration_reload_switches_to_other_files(self):
        cert, key = self.tls_files(self.cert_a)
        rc = self.tls_regcache("http://127.0.0.1:9", cert, key, watch="0s")
        ctx = client_context(self.pki.ca)
        self.assertEqual(handshake(rc.port, ctx)[2], "A1")
        with open(rc.config) as f:
            config = f.read()
        other_cert, other_key = self.tls_files(self.cert_b, name="elsewhere")
        with open(rc.config, "w") as f:
            f.write(config.replace(cert, other_cert).replace(key, other_key))
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration: TLS certificate reloaded" in rc.log_text(), 10, "the switch")
        self.assertEqual(handshake(rc.port, ctx)[2], "B2")
        # Turning TLS off takes a restart: said in the log, and HTTPS goes on.
        with open(rc.config, "w") as f:
            f.write(config[:config.index("tls:")])
        rc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "'tls' changed" in rc.log_text(), 10, "the warning")
        self.assertEqual(handshake(rc.port, ctx)[2], "B2")

    def test_mutual_tls_requires_a_client_certificate_from_the_ca(self):
        hub, digest = self.seeded_hub()
        rc = self.tls_regcache("http://" + hub.host, *self.tls_files(self.cert_a),
                               client_ca=self.clients.ca)
        for who in (None, self.stranger):
            with self.assertRaises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                https(rc.port, client_context(self.pki.ca, cert=who), "GET", "/v2/")
        self.assertIn("TLS handshake with 127.0.0.1", rc.log_text())
        ctx = client_context(self.pki.ca, cert=self.client)
        self.assertEqual(https(rc.port, ctx, "GET", "/v2/")[0], 200)

        # skopeo presents the *.cert/*.key pair from its certificate directory.
        cert_dir = self.cert_dir({"ca.crt": self.pki.ca, "client.cert": self.client[0],
                                  "client.key": self.client[1]})
        self.assertEqual(self.skopeo_pull(rc.host, "--src-cert-dir", cert_dir), digest)

    def test_a_bad_certificate_stops_the_start_with_one_line(self):
        listen = "127.0.0.1:%d" % free_port()
        data = os.path.join(self.work, "data")
        cases = [
            ([self.cert_a[0], self.cert_b[1]], "does not match the certificate"),
            ([os.path.join(self.work, "missing.crt"), self.cert_a[1]], "missing.crt: cannot read it"),
            ([self.cert_a[1], self.cert_a[1]], "no PEM certificate"),
        ]
        for (cert, key), expected in cases:
            r = run_regcache("serve", "--listen", listen, "--data-dir", data, "--upstream",
                             "hub=http://127.0.0.1:9", "--tls-cert", cert, "--tls-key", key,
                             timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            lines = [l for l in r.stderr.splitlines() if l.startswith("regcache:")]
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn(expected, lines[0])
        r = run_regcache("serve", "--listen", listen, "--data-dir", data, "--upstream",
                         "hub=http://127.0.0.1:9", "--tls-cert", self.cert_a[0], timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("both a certificate and its key", r.stderr)

        # --check-config reads the files too.
        config = os.path.join(self.work, "serve.yaml")
        for key, expected_code in ((self.cert_b[1], 2), (self.cert_a[1], 0)):
            with open(config, "w") as f:
                f.write("tls: {cert: %s, key: %s}\n" % (self.cert_a[0], key))
            r = run_regcache("serve", "--check-config", config, timeout=30)
            self.assertEqual(r.returncode, expected_code, r.stderr)
        self.assertEqual(r.stdout.strip(), config + ": ok")


if __name__ == "__main__":
    unittest.main()
