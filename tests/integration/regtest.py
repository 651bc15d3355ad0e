"""Integration-test harness: real docker-registry (CNCF distribution) processes on loopback, a
token server of our own (Docker Hub's Bearer flow, JWTs signed with openssl), and a fault proxy
that cuts, corrupts, redirects or annotates responses. Everything listens on 127.0.0.1 with free
ports and is stopped by PID."""

import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REGCACHE = os.environ.get("REGCACHE_BIN", os.path.join(HERE, "..", "..", "build", "regcache"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15, proc=None, log_path=None):
    """Waits until something accepts on `port`. With `proc`, gives up as soon as that process has
    exited, quoting the end of `log_path` (e.g. a config key the binary does not know)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited (status %s) before listening on port %d: %s"
                                   % (proc.returncode, port, log_tail(log_path)))
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d" % port)


def log_tail(path, lines=3):
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-lines:])


def stop_process(proc, sig, timeout):
    """Sends `sig` to a running process, waits up to `timeout` seconds, then kills it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_request(port, method, path, headers=None, body=None, timeout=60):
    """One request on its own connection to 127.0.0.1:port: (status, headers dict (lowercase
    keys), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def write_htpasswd(path, users, costs=None):
    """Writes {user: password} as bcrypt entries, the way `htpasswd -nbB` makes them (at
    htpasswd's default cost, or costs[user])."""
    with open(path, "w") as f:
        for user, pw in users.items():
            cost = ["-C", str(costs[user])] if costs and user in costs else []
            line = subprocess.run(["htpasswd", "-nbB", *cost, user, pw], check=True,
                                  capture_output=True, text=True).stdout.strip()
            f.write(line + "\n")
    return path


def run_parallel(fn, count):
    """Calls fn(i) for i in range(count) on as many threads at once; returns when all are done."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class TokenIssuer:
    """Key and self-signed certificate for signing registry JWTs (RS256, x5c header)."""

    def __init__(self, workdir):
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=regcache-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.lock = threading.Lock()

    def sign(self, claims):
        def b64(data):
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return signing_input + "." + b64(sig)


class TokenServer:
    """A token endpoint like auth.docker.io: Basic credentials in, a scoped JWT out.
    Anonymous callers get pull access only when allow_anonymous_pull is set."""

    def __init__(self, workdir, users, service="regcache-test", issuer="regcache-test-issuer",
                 allow_anonymous_pull=True, access_token_only=False):
        self.issuer_keys = TokenIssuer(workdir)
        self.users, self.service, self.issuer = users, service, issuer
        self.allow_anonymous_pull = allow_anonymous_pull
        self.access_token_only = access_token_only
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if outer.users.get(u) != p:
                        self.send_response(401)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()
                        self.wfile.write(b'{"details":"incorrect username or password"}')
                        return
                    user = u
                outer.requests.append({"user": user, "scope": q.get("scope", [])})
                access = []
                for scope in q.get("scope", []):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    wanted = actions.split(",")
                    granted = wanted if user else [a for a in wanted if a == "pull" and outer.allow_anonymous_pull]
                    if granted:
                        access.append({"type": kind, "name": name, "actions": granted})
                now = int(time.time())
                claims = {"iss": outer.issuer, "sub": user or "", "aud": q.get("service", [""])[0],
                          "exp": now + 300, "nbf": now - 10, "iat": now,
                          "jti": hashlib.sha256(os.urandom(8)).hexdigest(), "access": access}
                token = outer.issuer_keys.sign(claims)
                body = {"access_token": token} if outer.access_token_only else {"token": token, "expires_in": 300}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.realm = "http://127.0.0.1:%d/token" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Registry:
    """A docker-registry (distribution 2.8) process. auth: None, ("htpasswd", {user: pass}) or
    ("token", TokenServer)."""

    def __init__(self, workdir, name, auth=None, port=None, proxy_remote=None):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "registry.log")
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}, "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": "127.0.0.1:%d" % self.port, "secret": "regcache-test-secret"},
        }
        if auth and auth[0] == "htpasswd":
            path = write_htpasswd(os.path.join(self.dir, "htpasswd"), auth[1])
            config["auth"] = {"htpasswd": {"realm": "regcache-test", "path": path}}
        elif auth and auth[0] == "token":
            ts = auth[1]
            config["auth"] = {"token": {"realm": ts.realm, "service": ts.service, "issuer": ts.issuer,
                                        "rootcertbundle": ts.issuer_keys.cert}}
        if proxy_remote:  # CNCF distribution's pull-through cache mode
            config["proxy"] = {"remoteurl": proxy_remote}
        self.config_path = os.path.join(self.dir, "config.yml")
        with open(self.config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config_path],
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, 10)
        self.proc = None
        self.log.close()

    def requests_with_size(self):
        """(method, path, status, response bytes) of every request in the access log so far."""
        out = []
        with open(self.log_path, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                q = line.find('"')
                if q < 0 or 'HTTP/1.' not in line:
                    continue
                parts = line[q + 1:].split(" ")
                if len(parts) >= 5 and parts[0] in ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"):
                    size = int(parts[4]) if parts[4].isdigit() else 0
                    out.append((parts[0], parts[1], parts[3], size))
        return out

    def requests(self):
        """(method, path, status) of every request in the access log so far."""
        return [(m, p, st) for m, p, st, _ in self.requests_with_size()]

    def api(self, method, path, body=None, headers=None):
        """One request to the registry API: (status, headers dict (lowercase keys), body)."""
        return http_request(self.port, method, path, headers, body)

    def put_blob(self, repo, data):
        """Uploads `data` to `repo` monolithically (POST, then PUT ?digest=); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        st, h, body = self.api("POST", "/v2/%s/blobs/uploads/" % repo)
        if st != 202:
            raise RuntimeError("starting an upload to %s: %d %r" % (repo, st, body))
        loc = urllib.parse.urlparse(h["location"])
        target = loc.path + "?" + (loc.query + "&" if loc.query else "") + "digest=" + digest
        st, _, body = self.api("PUT", target, data, {"Content-Type": "application/octet-stream"})
        if st != 201:
            raise RuntimeError("uploading %s to %s: %d %r" % (digest, repo, st, body))
        return digest

    def mount_blob(self, repo, digest, from_repo):
        st, _, body = self.api("POST", "/v2/%s/blobs/uploads/?mount=%s&from=%s" % (repo, digest, from_repo))
        if st != 201:
            raise RuntimeError("mounting %s into %s: %d %r" % (digest, repo, st, body))

    def put_manifest(self, repo, ref, data, media_type):
        st, _, body = self.api("PUT", "/v2/%s/manifests/%s" % (repo, ref), data, {"Content-Type": media_type})
        if st != 201:
            raise RuntimeError("PUT manifest %s:%s: %d %r" % (repo, ref, st, body))
        return "sha256:" + hashlib.sha256(data).hexdigest()


class FaultProxy:
    """HTTP proxy in front of an upstream with switchable faults on blob GETs:
    cut_after (bytes) + cut_count, die_on_cut, corrupt, redirect_to (another origin), and
    extra_headers on every response. Records (method, path, headers) of each request.
    Also: blackhole (read every request, never answer, keep the socket open), stall_after (blob
    GET bodies stop after that many bytes, socket kept open) and header_overrides; `connections`
    and `attempts` count accepted sockets and received requests, dropped ones included."""

    def __init__(self, upstream_port, inject_auth=None, port=0):
        self.upstream_port = upstream_port
        self.inject_auth = inject_auth
        self.cut_after = None
        self.cut_count = 0
        self.die_on_cut = False
        self.dead = False
        self.throttle_bps = None  # slow blob bodies down to this many bytes per second
        self.corrupt = False
        self.redirect_to = None
        self.extra_headers = {}
        # [method, path substring, status, headers, remaining count, optional body]: canned answers
        self.fail_next = []
        self.blackhole = False  # requests are read and logged, never answered; sockets stay open
        self.stall_after = None  # blob GET bodies: this many bytes, then silence on an open socket
        # [method, path substring, {header: value, or None to drop it}, remaining count]
        self.header_overrides = []
        self.connections = 0  # TCP connections accepted
        self.attempts = 0  # requests received, including dropped and black-holed ones
        self.stopped = threading.Event()
        self.log = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                with outer.lock:
                    outer.connections += 1
                super().setup()

            def hold(self):
                """Keeps the connection open without sending another byte until the proxy stops."""
                outer.stopped.wait()
                self.close_connection = True

            def handle_one(self):
                with outer.lock:
                    outer.attempts += 1
                if outer.dead:  # a dead upstream: connections drop without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with outer.lock:
                    outer.log.append((self.command, self.path, dict(self.headers)))
                if outer.blackhole:
                    self.hold()
                    return
                is_blob_get = self.command == "GET" and "/blobs/sha256:" in self.path
                with outer.lock:
                    canned = None
                    for f in outer.fail_next:
                        if f[0] == self.command and f[1] in self.path and f[4] > 0:
                            f[4] -= 1
                            canned = f
                            break
                if canned:
                    self.send_response(canned[2])
                    for k, v in canned[3].items():
                        self.send_header(k, v)
                    body = canned[5] if len(canned) > 5 else \
                        b'{"errors":[{"code":"TOOMANYREQUESTS","message":"canned"}]}'
                    self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                    return
                if is_blob_get and outer.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", outer.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                if outer.inject_auth:
                    headers["Authorization"] = outer.inject_auth
                conn = http.client.HTTPConnection("127.0.0.1", outer.upstream_port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                overrides = outer.take_header_overrides(self.command, self.path)
                for k, v in resp.getheaders():
                    if k.lower() in ("connection", "transfer-encoding") or k.lower() in overrides:
                        continue
                    if k.lower() == "location" and v.startswith("http://127.0.0.1:%d" % outer.upstream_port):
                        v = v.replace(":%d" % outer.upstream_port, ":%d" % outer.port, 1)
                    self.send_header(k, v)
                for k, v in outer.extra_headers.items():
                    self.send_header(k, v)
                for k, v in overrides.items():
                    if v is not None:
                        self.send_header(k, v)
                if self.command == "HEAD" or resp.status in (204, 304):
                    self.end_headers()
                    resp.read()
                    conn.close()
                    return
                data = resp.read()
                conn.close()
                if "Content-Length" not in resp.headers and "content-length" not in overrides:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if is_blob_get and resp.status in (200, 206):
                    with outer.lock:
                        cut = (outer.cut_after is not None and outer.cut_count > 0
                               and len(data) > outer.cut_after)
                        if cut:
                            outer.cut_count -= 1
                    if outer.corrupt and len(data) > 0:
                        data = bytearray(data)
                        data[len(data) // 2] ^= 0xFF
                        data = bytes(data)
                    if cut:
                        self.wfile.write(data[:outer.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        if outer.die_on_cut:
                            outer.dead = True
                        return
                    if outer.stall_after is not None:
                        self.wfile.write(data[:outer.stall_after])
                        self.wfile.flush()
                        self.hold()
                        return
                bps = outer.throttle_bps
                if is_blob_get and bps:
                    step = 64 * 1024
                    for off in range(0, len(data), step):
                        if outer.dead:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        self.wfile.write(data[off:off + step])
                        time.sleep(step / bps)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped.set()  # releases black-holed and stalled connections
        try:
            self.server.shutdown()
            self.server.server_close()
        except Exception:
            pass

    def requests(self, method=None, contains=None):
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method)
                    and (contains is None or contains in r[1])]

    def take_header_overrides(self, method, path):
        """The header overrides (lowercase names) for this response, spending one use of each."""
        out = {}
        with self.lock:
            for o in self.header_overrides:
                if o[0] == method and o[1] in path and o[3] > 0:
                    o[3] -= 1
                    out.update({k.lower(): v for k, v in o[2].items()})
        return out


class Regcache:
    """A `regcache serve` process with a YAML config written for it (and `args`, more flags)."""

    def __init__(self, workdir, upstreams, name="rc", extra="", port=None, shutdown_grace="10s",
                 args=()):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "regcache.log")
        lines = ["listen: 127.0.0.1:%d" % self.port, "data_dir: %s" % self.data,
                 "shutdown_grace: " + shutdown_grace, "upstreams:"]
        for u in upstreams:
            lines.append("  - " + json.dumps(u))
        self.config = os.path.join(self.dir, "serve.yaml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)
        self.args = list(args)
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, DOCKER_CONFIG=os.path.join(self.dir, "no-docker-config"))
        self.proc = subprocess.Popen([REGCACHE, "serve", "--config", self.config, *self.args],
                                     stdout=self.log, stderr=self.log, env=env)
        wait_port(self.port, proc=self.proc, log_path=self.log_path)

    def stop(self, sig=signal.SIGTERM):
        stop_process(self.proc, sig, 20)
        self.proc = None
        self.log.close()

    def request(self, method, path, headers=None, body=None, timeout=60):
        """(status, headers dict (lowercase keys), body bytes)."""
        return http_request(self.port, method, path, headers, body, timeout)

    def reload(self, timeout=10):
        """Sends SIGHUP and waits for the reload to be logged: True if it was applied, False if
        it was rejected."""
        before = self.log_text()
        applied, rejected = before.count("reloaded the configuration"), before.count("reload rejected")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log_text()
            if text.count("reloaded the configuration") > applied:
                return True
            if text.count("reload rejected") > rejected:
                return False
            time.sleep(0.05)
        raise RuntimeError("no reload logged within %d s: %s" % (timeout, log_tail(self.log_path)))

    def metrics(self):
        out = {}
        for line in self.request("GET", "/metrics")[2].decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def stored_blobs(self):
        found = []
        for root, _, files in os.walk(os.path.join(self.data, "blobs")):
            found += files
        return found

    def temp_files(self):
        t = os.path.join(self.data, "tmp")
        return os.listdir(t) if os.path.isdir(t) else []

    def fd_count(self):
        """Open file descriptors of the running process."""
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def rss_kib(self):
        """Resident set size of the running process (VmRSS), in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def nginx_preamble(d):
    """The top of an nginx.conf that keeps every file under `d`, up to inside `http {`."""
    return """
user root;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/logs/error.log;
events { worker_connections 256; }
http {
  access_log %(d)s/logs/access.log;
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fcgi; uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;
""" % {"d": d}


class Balancer:
    """nginx in front of several caches, hashing the request path consistently (each digest has
    one owning node), retrying GET/HEAD on the next node when one is down."""

    def __init__(self, workdir, ports, name="lb"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        servers = "\n".join("    server 127.0.0.1:%d max_fails=1 fail_timeout=30s;" % p for p in ports)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_preamble(self.dir) + """
  upstream caches {
    hash $request_uri consistent;
%(servers)s
    keepalive 16;
  }
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      proxy_pass http://caches;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 2;
      proxy_connect_timeout 2s;
    }
  }
}
""" % {"port": self.port, "servers": servers})
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, 10)


class Nginx:
    """nginx in front of an upstream, optionally rate-limiting with limit_req (429 + Retry-After)."""

    def __init__(self, workdir, upstream_port, name="nginx"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.upstream_port = upstream_port
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.write_config(limit=False)
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def write_config(self, limit):
        limit_lines = ("limit_req zone=pulls nodelay; limit_req_status 429; "
                       "add_header Retry-After 120 always;") if limit else ""
        with open(self.conf, "w") as f:
            f.write(nginx_preamble(self.dir) + """
  limit_req_zone $binary_remote_addr zone=pulls:1m rate=1r/m;
  server {
    listen 127.0.0.1:%(port)d;
    client_max_body_size 0;
    location / {
      %(limit)s
      proxy_pass http://127.0.0.1:%(up)d;
      proxy_set_header Host $http_host;
      proxy_buffering off;
    }
  }
}
""" % {"dir": self.dir, "port": self.port, "up": self.upstream_port, "limit": limit_lines})

    def set_limit(self, limit):
        self.write_config(limit)
        subprocess.run(["nginx", "-p", self.dir, "-c", self.conf, "-s", "reload"], check=True,
                       capture_output=True)
        time.sleep(0.5)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, 10)


def run_regcache(*args, env=None, timeout=300, input=None):
    e = dict(os.environ)
    e.setdefault("DOCKER_CONFIG", tempfile.mkdtemp(prefix="regcache-dc-"))
    if env:
        e.update(env)
    return subprocess.run([REGCACHE, *args], capture_output=True, text=True, timeout=timeout,
                          env=e, input=input)


class RegistryTestCase(unittest.TestCase):
    """Gives each test a work directory and stops what it started."""

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="regcache-it-")
        self._stops = []

    def tearDown(self):
        for fn in reversed(self._stops):
            try:
                fn()
            except Exception:
                pass
        if not os.environ.get("REGCACHE_KEEP_WORK"):
            shutil.rmtree(self.work, ignore_errors=True)

    def registry(self, name, auth=None):
        r = Registry(self.work, name, auth)
        self._stops.append(r.stop)
        return r

    def token_server(self, users, **kw):
        t = TokenServer(self.work, users, **kw)
        self._stops.append(t.stop)
        return t

    def proxy(self, upstream_port, **kw):
        p = FaultProxy(upstream_port, **kw)
        self._stops.append(p.stop)
        return p

    def regcache(self, upstreams, **kw):
        r = Regcache(self.work, upstreams, **kw)
        self._stops.append(r.stop)
        return r

    def nginx(self, upstream_port):
        n = Nginx(self.work, upstream_port)
        self._stops.append(n.stop)
        return n

    def image(self, name="img", **kw):
        layout = os.path.join(self.work, "layout-" + name)
        digest = make_layout_cached(layout, **kw)
        return layout, digest


def make_layout_cached(layout, **kw):
    from fixtures import make_layout
    return make_layout(layout, **kw)
