"""A forward HTTP proxy that records what a child process sends and what it gets back.

paywarden's HTTP client (reqwest) honours `HTTP_PROXY`, so starting `paywarden serve` with
`HTTP_PROXY=<this proxy>` routes every plain-HTTP request it makes (to its in-process emulator
on loopback) through here unchanged: the bytes the connectors really send, and the answers the
emulator really gives, with no change to either. Plain HTTP only (no CONNECT): the emulator is
`http://127.0.0.1`.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


@dataclass
class Exchange:
    """One request as sent and its answer as received."""

    method: str
    url: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes


class RecordingProxy:
    """`with RecordingProxy() as proxy:` ... `proxy.url` for HTTP_PROXY, `proxy.exchanges`."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self.send_error(400, "absolute http:// URL expected (forward proxy)")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                with httpx.Client(trust_env=False, timeout=60) as client:
                    answer = client.request(self.command, self.path, headers=headers, content=body)
                with outer._lock:
                    outer.exchanges.append(
                        Exchange(
                            method=self.command,
                            url=self.path,
                            path=target.path,
                            query=target.query,
                            request_headers={k.lower(): v for k, v in headers.items()},
                            request_body=body,
                            status=answer.status_code,
                            response_headers={k.lower(): v for k, v in answer.headers.items()},
                            response_body=answer.content,
                        )
                    )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-length", "content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)
