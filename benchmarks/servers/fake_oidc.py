"""A tiny OIDC userinfo endpoint for mozilla-django-oidc's bearer authentication.

``Authorization: Bearer oidc-<n>`` gets ``{"sub": ..., "email": "oidc<n>@bench.test"}``,
anything else 401. Prints its base URL once listening (loopback, a free port).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = re.compile(r"Bearer oidc-(\d+)")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        match = TOKEN.fullmatch(self.headers.get("Authorization", ""))
        if self.path != "/userinfo" or match is None:
            body = b'{"error": "invalid_token"}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        else:
            n = match.group(1)
            body = json.dumps({"sub": f"sub-{n}", "email": f"oidc{n}@bench.test"}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
