#!/usr/bin/python3
"""Answer any HTTP request on ports 3000, 4318 and 16686 with 200 and an empty body."""

import http.server
import threading

PORTS = (3000, 4318, 16686)


class Sink(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


ANY = "0.0.0.0"  # noqa: S104 - inside its container, published by compose only to 127.0.0.1
servers = [http.server.ThreadingHTTPServer((ANY, port), Sink) for port in PORTS]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
