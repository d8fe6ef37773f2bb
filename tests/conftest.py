"""Test set-up: a private AIRFLOW_HOME, a Salebot connection, and a scripted local HTTP server."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

# Before anything imports Airflow: a private home, no example DAGs.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="salebot-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

API_KEY = "5f3c1a9be07d4c2e8f6a0b1c2d3e4f5a6b7c"
BASE_URL = "http://salebot.test"


def conn_json(host: str = BASE_URL, **extra: Any) -> str:
    extras = {"backoff_factor": 0, "max_retries": 2, "timeout": 5, **extra}
    return json.dumps({"conn_type": "salebot", "host": host, "password": API_KEY, "extra": extras})


@pytest.fixture
def salebot_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point ``salebot_default`` at a host; extras default to no backoff and 2 retries."""

    def set_conn(host: str = BASE_URL, **extra: Any) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", conn_json(host, **extra))

    set_conn()
    return set_conn


@pytest.fixture
def hook(salebot_conn: Callable[..., None]) -> Iterator[Any]:
    from salebot_provider.hooks import SalebotHook

    with SalebotHook() as h:
        yield h


def url(action: str) -> str:
    return f"{BASE_URL}/api/{API_KEY}/{action}"


@dataclass
class Seen:
    method: str
    action: str
    query: dict[str, list[str]]
    body: bytes
    connection: int


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b'{"status": "success"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    truncate: bool = False
    trickle: float = 0.0  # seconds between the body's bytes, sent one at a time


class ScriptedServer:
    """A real HTTP/1.1 server on 127.0.0.1 that answers from a script and records what it saw."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.default = Reply(body={"status": "success"})
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections += 1
                    self.connection_number = server._connections

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.seen.append(
                        Seen(
                            self.command,
                            parts.path.rsplit("/", 1)[-1],
                            parse_qs(parts.query),
                            body,
                            self.connection_number,
                        )
                    )
                    reply = server.script.pop(0) if server.script else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.close_connection = True
                    self.connection.close()
                    return
                data = reply.body
                if not isinstance(data, bytes | str):
                    data = json.dumps(data)
                raw = data.encode() if isinstance(data, str) else data
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.headers.pop("Content-Type", "application/json"))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if reply.trickle:
                    self.wfile.flush()
                    for byte in raw:
                        time.sleep(reply.trickle)
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:  # the client gave up, as it should
                            return
                    return
                if reply.truncate:
                    self.wfile.write(raw[: len(raw) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(raw)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def connections(self) -> int:
        return self._connections

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(salebot_conn: Callable[..., None]) -> Iterator[ScriptedServer]:
    """A scripted local server, with ``salebot_default`` pointing at it."""
    with ScriptedServer() as srv:
        salebot_conn(srv.base_url)
        yield srv
