"""A local fake provider: a real HTTP server on 127.0.0.1 that records every request and answers
with the routes a test gives it. Adapters talk real HTTP to it; tests check what arrived.

    with FakeProvider() as fake:
        fake.route("POST", "/cgi-bin/gettoken", lambda req: (200, {"errcode": 0, ...}))
        ... fake.url ...
        assert fake.requests[0].json["touser"] == ...
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


# A handler answers (status, body) where body is a dict/list (sent as JSON), str or bytes; or
# (status, body, headers).
Handler = Callable[[Request], tuple]


@dataclass
class FakeProvider:
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method.upper(), path)] = handler

    def calls(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeProvider:
        provider = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with provider.lock:
                    provider.requests.append(request)
                handler = provider.routes.get((self.command, parts.path))
                if handler is None:
                    answer: tuple = (404, {"error": f"no route {self.command} {parts.path}"})
                else:
                    answer = handler(request)
                status, body, *rest = answer
                headers = rest[0] if rest else {}
                if isinstance(body, dict | list):
                    payload = json.dumps(body, ensure_ascii=False).encode()
                    headers = {"Content-Type": "application/json; charset=utf-8", **headers}
                elif isinstance(body, str):
                    payload = body.encode()
                else:
                    payload = body
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
