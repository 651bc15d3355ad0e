"""A registry that misbehaves on demand, for what a real docker-registry will not do: tag lists
with entries that are no tags, Link headers that loop or point at other hosts, pages without end.
A stdlib http.server on 127.0.0.1 (a free port), stopped by the test that started it."""

import http.server
import json
import threading
import urllib.parse


class HostileRegistry:
    """Answers `GET /v2/` with 200 and `GET /v2/<repo>/tags/list` with `tags_list(repo, query)`,
    which returns (body bytes or a JSON-able object, {header: value}); every other request gets
    404 MANIFEST_UNKNOWN (to `regcache sync --dry-run` a missing destination). Records
    (method, path) of every request in `log`."""

    def __init__(self, tags_list=None):
        self.tags_list = tags_list or (lambda repo, query: ({"name": repo, "tags": []}, {}))
        self.log = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, body, headers):
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_one(self):
                with outer.lock:
                    outer.log.append((self.command, self.path))
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/v2/":
                    self.answer(200, b"{}", {})
                elif self.command == "GET" and url.path.startswith("/v2/") and url.path.endswith("/tags/list"):
                    repo = url.path[len("/v2/"):-len("/tags/list")]
                    body, headers = outer.tags_list(repo, urllib.parse.parse_qs(url.query))
                    self.answer(200, body, headers)
                else:
                    self.answer(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "hostile"}]}, {})

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that drops a page half-read (sync at a bound) is expected: no traceback.
        self.server.handle_error = lambda request, client_address: None
        self.port = self.server.server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, contains=""):
        with self.lock:
            return [r for r in self.log if contains in r[1]]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
