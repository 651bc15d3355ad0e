"""regcache serve's status page at GET /, as a person sees it: real pulls through the cache, then
Debian's headless Chromium loads the page (JavaScript on and off), its DOM is checked against
/metrics, and a screenshot is kept as a test artifact (REGCACHE_TEST_ARTIFACTS, default
build/test-artifacts next to the binary)."""

import html.parser
import json
import os
import shutil
import struct
import subprocess
import threading
import time
import zlib

from fixtures import push
from regtest import REGCACHE, RegistryTestCase

KIB = 1 << 10
ARTIFACTS = os.environ.get("REGCACHE_TEST_ARTIFACTS",
                           os.path.join(os.path.dirname(os.path.abspath(REGCACHE)), "test-artifacts"))
WIDTH, HEIGHT = 1280, 2000

# Headless, and kept off the network: every host name but the loopback address fails to resolve,
# and the background services (updates, metrics, safe browsing) are off. (Checked with strace:
# what remains is Chromium's IPv6 reachability probe, a UDP connect() that sends nothing.)
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-breakpad", "--no-pings",
    "--disable-domain-reliability", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars", "--window-size=%d,%d" % (WIDTH, HEIGHT),
]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, pred):
        for c in self.children:
            if isinstance(c, Node):
                if pred(c):
                    yield c
                yield from c.all(pred)

    def find(self, pred):
        return next(self.all(pred), None)

    def by_id(self, ident):
        return self.find(lambda n: n.attrs.get("id") == ident)

    def tags(self, tag):
        return list(self.all(lambda n: n.tag == tag))


def parse_dom(text):
    """The document as a tree of Nodes (tag, attrs, children: Nodes and strings)."""
    root = Node("#document", {}, None)

    class Parser(html.parser.HTMLParser):
        cur = root

        def handle_starttag(self, tag, attrs):
            node = Node(tag, attrs, self.cur)
            self.cur.children.append(node)
            if tag not in VOID:
                self.cur = node

        def handle_startendtag(self, tag, attrs):
            self.cur.children.append(Node(tag, attrs, self.cur))

        def handle_endtag(self, tag):
            n = self.cur
            while n is not root and n.tag != tag:
                n = n.parent
            if n is not root:
                self.cur = n.parent

        def handle_data(self, data):
            self.cur.children.append(data)

    p = Parser(convert_charrefs=True)
    p.feed(text)
    p.close()
    return root


def png_pixels(path):
    """(width, height, distinct colours) of an 8-bit RGB or RGBA PNG, with the stdlib only:
    chunks read with struct, CRCs and the image data checked with zlib, scanlines unfiltered."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("%s is not a PNG" % path)
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + chunk) != crc:
            raise AssertionError("bad CRC in %s chunk" % kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise AssertionError("unexpected PNG format %r" % (header,))
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    if len(raw) != height * (stride + 1):
        raise AssertionError("PNG data is %d bytes, expected %d" % (len(raw), height * (stride + 1)))
    colours = set()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        for x in range(0, stride, bpp):
            colours.add(bytes(line[x:x + 3]))
        prev = line
    return width, height, colours


class StatusPageTest(RegistryTestCase):
    def setUp(self):
        super().setUp()
        self.chromium = shutil.which("chromium")
        if not self.chromium:
            self.fail("chromium is not installed: the status page is tested in a real browser "
                      "(scripts/setup.sh installs Debian's chromium package)")

    def browser(self, url, *args, javascript=True):
        """Runs headless Chromium on `url` with `args`; returns its stdout. Without JavaScript:
        a profile whose preferences block it, as a user's setting would (Blink's scriptEnabled
        switch would also stop --dump-dom, which reads the DOM with a script)."""
        profile = os.path.join(self.work, "chromium-profile" + ("" if javascript else "-nojs"))
        if not javascript and not os.path.exists(profile):
            os.makedirs(os.path.join(profile, "Default"))
            with open(os.path.join(profile, "Default", "Preferences"), "w") as f:
                json.dump({"profile": {"default_content_setting_values": {"javascript": 2}}}, f)
        cmd = [self.chromium, *CHROMIUM_FLAGS, "--user-data-dir=" + profile, *args, url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, "chromium failed: %s" % r.stderr[-2000:])
        return r.stdout

    def dom(self, url, javascript=True):
        text = self.browser(url, "--dump-dom", javascript=javascript)
        self.assertIn("</html>", text)
        return text

    def seed(self, registry, repo, layers, layer_size, seed):
        layout, digest = self.image("%s-%d" % (repo.replace("/", "_"), seed), tag="v1",
                                    platforms=[("linux", "amd64", "")], layers=layers,
                                    layer_size=layer_size, seed=seed)
        push(layout, "v1", "%s/%s:v1" % (registry.host, repo))
        return digest

    def pull(self, rc, repo):
        r = subprocess.run(["skopeo", "copy", "--all", "-q", "--src-tls-verify=false",
                            "docker://%s/%s:v1" % (rc.host, repo),
                            "oci:%s:v1" % os.path.join(self.work, "out-%s-%f" % (repo.replace("/", "_"), time.time()))],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)

    def settled_metrics(self, rc):
        """/metrics once the store's figures stopped moving (the evictor publishes them every
        2 s)."""
        m, since, deadline = rc.metrics(), time.time(), time.time() + 15
        while time.time() - since < 2.5 and time.time() < deadline:
            time.sleep(0.25)
            again = rc.metrics()
            if (again["regcache_store_bytes"], again["regcache_store_blobs"]) != \
                    (m["regcache_store_bytes"], m["regcache_store_blobs"]):
                m, since = again, time.time()
        return m

    def test_status_page_in_a_real_browser(self):
        started = time.time()
        hub = self.registry("hub")
        self.seed(hub, "library/app", layers=2, layer_size=256 * KIB, seed=1)
        self.seed(hub, "team/tool", layers=1, layer_size=128 * KIB, seed=2)
        self.seed(hub, "team/big", layers=1, layer_size=3 << 20, seed=3)
        # Docker Hub's rate-limit headers on every answer, as registry-1.docker.io sends them.
        proxy = self.proxy(hub.port)
        proxy.extra_headers = {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600",
                               "Docker-RateLimit-Source": "192.0.2.7"}
        rc = self.regcache([{"name": "hub", "url": "http://" + proxy.host}])
        url = "http://%s/" % rc.host

        # A cold pull (misses), a warm one (hits), another repository once, a missing tag.
        self.pull(rc, "library/app")
        self.pull(rc, "library/app")
        self.pull(rc, "team/tool")
        self.assertEqual(rc.request("GET", "/v2/library/nope/manifests/v1")[0], 404)

        # The page over plain HTTP: HTML, never cached, no script; HEAD has the length only.
        st, h, body = rc.request("GET", "/")
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        self.assertEqual(h["cache-control"], "no-store")
        self.assertIn("default-src 'none'", h["content-security-policy"])
        self.assertNotIn(b"<script", body)
        st, h, head_body = rc.request("HEAD", "/")
        self.assertEqual((st, head_body), (200, b""))
        self.assertGreater(int(h["content-length"]), 5000)

        m = self.settled_metrics(rc)
        results = {}
        for k, v in m.items():
            if k.startswith('regcache_requests_by_upstream_total{upstream="hub"'):
                result = k.split('result="')[1].split('"')[0]
                results[result] = results.get(result, 0) + int(v)
        requests = sum(v for r, v in results.items() if r != "negative")
        hits = sum(results.get(r, 0) for r in ("hit", "revalidated", "stale"))
        self.assertGreater(hits, 0)
        self.assertGreater(requests, hits)
        served = int(m['regcache_bytes_served_by_upstream_total{upstream="hub"}'])
        fetched = int(m['regcache_bytes_fetched_by_upstream_total{upstream="hub"}'])
        self.assertEqual(served, int(m["regcache_bytes_served_total"]))  # one upstream: all of it
        self.assertGreater(served, fetched)
        self.assertGreater(fetched, 2 * 256 * KIB + 128 * KIB)  # every layer once

        # Rendered by the browser, with and without JavaScript.
        t0 = time.time()
        on = self.dom(url)
        browser_s = time.time() - t0
        off = self.dom(url, javascript=False)
        doc = parse_dom(on)
        self.assertEqual(doc.tags("script"), [])
        self.assertNotIn("<script", off)

        row = doc.find(lambda n: n.tag == "tr" and n.attrs.get("data-upstream") == "hub")
        self.assertIsNotNone(row, "no row for upstream hub")
        cell = lambda cls: row.find(lambda n: cls in n.attrs.get("class", "").split())
        ratio = cell("hit-ratio").find(lambda n: n.tag == "data")
        self.assertEqual(ratio.attrs["value"], "%.4f" % (hits / requests))
        self.assertEqual(ratio.text(), "%.1f%%" % (100 * hits / requests))
        self.assertEqual(cell("requests").find(lambda n: n.tag == "data").attrs["value"], str(requests))
        self.assertEqual(cell("fetched").find(lambda n: n.tag == "data").attrs["value"], str(fetched))
        from_cache = [d.attrs["value"] for d in cell("from-cache").tags("data")]
        self.assertEqual(from_cache, [str(served - fetched), str(served)])
        self.assertIn("healthy", row.text())
        limit = cell("ratelimit")
        self.assertEqual(limit.find(lambda n: n.tag == "data").attrs["value"], "76")
        self.assertIn("of 100 per 6 h", limit.text())
        self.assertIn("192.0.2.7", limit.text())

        storage = doc.by_id("storage").find(lambda n: n.tag == "data")
        self.assertEqual(storage.attrs["value"], str(int(m["regcache_store_bytes"])))
        self.assertIn("%d blobs" % int(m["regcache_store_blobs"]), doc.by_id("storage").text())
        version = subprocess.run([REGCACHE, "--version"], capture_output=True, text=True).stdout
        self.assertEqual("regcache " + doc.by_id("version").text(), version.strip())
        self.assertGreaterEqual(int(doc.by_id("uptime").attrs["data-seconds"]), 0)

        pulled = [r.attrs["data-repository"] for r in doc.by_id("most-pulled").tags("tr")
                  if "data-repository" in r.attrs]
        self.assertEqual(pulled[:2], ["library/app", "team/tool"])

        # The hit-ratio chart: an SVG with a line and a dot for upstream hub.
        chart = doc.by_id("chart-hit-ratio").find(lambda n: n.tag == "svg")
        self.assertIsNotNone(chart)
        line = chart.find(lambda n: n.tag == "path" and n.attrs.get("data-series") == "hub")
        self.assertIsNotNone(line, "no hit-ratio line for hub")
        dots = [float(c.attrs["data-value"]) for c in chart.tags("circle")
                if c.attrs.get("data-series") == "hub"]
        self.assertTrue(dots and all(0 <= v <= 100 for v in dots), dots)
        if line.attrs["data-points"] == "1":  # all the traffic in one sampling interval
            self.assertAlmostEqual(dots[-1], 100 * hits / requests, places=2)
        traffic = doc.by_id("chart-traffic").find(lambda n: n.tag == "svg")
        self.assertTrue(traffic.find(lambda n: n.tag == "path" and
                                     n.attrs.get("data-series") == "fetched from hub"))

        # JavaScript off: the same figures (the page has no script to change them). That the
        # profile really runs no script is checked on a page that has one.
        probe = "data:text/html,<p id=probe>static</p><script>probe.textContent='ran'</script>"
        self.assertIn('<p id="probe">static</p>', self.dom(probe, javascript=False))
        doc_off = parse_dom(off)
        for ident in ("upstreams", "most-pulled", "storage", "total-hit-ratio"):
            self.assertEqual(doc_off.by_id(ident).text(), doc.by_id(ident).text(), ident)
        self.assertEqual(len(doc_off.tags("svg")), 2)

        # A slow download in flight, shown with its progress; the screenshot catches it.
        proxy.throttle_bps = 512 * KIB
        st, _, body = rc.request("GET", "/v2/team/big/manifests/v1", {"Accept": "*/*"})
        self.assertEqual(st, 200)
        child = json.loads(body)["manifests"][0]["digest"]
        layer = json.loads(rc.request("GET", "/v2/team/big/manifests/" + child,
                                      {"Accept": "*/*"})[2])["layers"][0]
        got = {}
        fetcher = threading.Thread(target=lambda: got.update(
            r=rc.request("GET", "/v2/team/big/blobs/" + layer["digest"], timeout=120)))
        fetcher.start()
        deadline = time.time() + 20
        while rc.metrics().get("regcache_fills_in_flight", 0) < 1 and time.time() < deadline:
            time.sleep(0.05)
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "status-page.png")
        if os.path.exists(shot):
            os.remove(shot)
        self.browser(url, "--screenshot=" + shot)
        flight = parse_dom(self.dom(url))
        fetcher.join()
        self.assertEqual(got["r"][0], 200)
        self.assertEqual(len(got["r"][2]), layer["size"])
        fills = flight.by_id("fills")
        self.assertEqual(fills.tag, "table", "no download in flight on the page")
        row = fills.find(lambda n: n.tag == "tr" and "team/big" in n.text())
        self.assertIsNotNone(row)
        bar = row.find(lambda n: n.tag == "progress")
        self.assertEqual(int(bar.attrs["max"]), layer["size"])
        self.assertLessEqual(int(bar.attrs["value"]), layer["size"])

        width, height, colours = png_pixels(shot)
        self.assertEqual((width, height), (WIDTH, HEIGHT))
        self.assertGreater(len(colours), 50, "the screenshot is (nearly) blank")
        print("\nstatus page screenshot: %s (%dx%d, %d colours); one browser load %.1f s; test %.1f s"
              % (shot, width, height, len(colours), browser_s, time.time() - started))
