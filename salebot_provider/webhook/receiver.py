"""
The webhook receiver: an ASGI app (Starlette) that spools every message Salebot POSTs, and its server.

Salebot posts each message of a project once and never again, whatever the answer. The receiver
therefore answers 200 only after the message is written to the spool (a kill of the receiver cannot
lose what it acknowledged), keeps a body it cannot parse whole in a dead-letter file before it
answers 400, and does nothing slow on the way: the spool's closed segments are shipped, forwarded to
Redis and pruned in the background.

Build the app with :func:`create_app`; run it with the ``salebot-webhook`` console script
(:func:`main`, uvicorn), or mount it in any ASGI server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salebot_provider.webhook.model import WebhookPayloadError, decode_body, parse_message
from salebot_provider.webhook.spool import (
    SpoolInUseError,
    SpoolSettings,
    SpoolWriter,
    list_segments,
    record_line,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from salebot_provider.webhook.forward import Forwarder

log = logging.getLogger("salebot_provider.webhook")

#: A secret is at least this long, of URL-safe characters: it is the only thing guarding the URL.
_SECRET = re.compile(r"^[A-Za-z0-9_\-]{16,200}$")
#: Request headers kept with a dead letter (never Authorization or cookies).
_KEPT_HEADERS = ("content-type", "content-length", "user-agent", "x-forwarded-for", "x-real-ip")
#: Bodies up to this many bytes are parsed in the event loop; bigger ones in a thread.
INLINE_PARSE = 64 * 1024


@dataclass
class ReceiverSettings:
    """
    Everything the receiver is told.

    :param spool: the spool's folder (segments, dead letters, cursors).
    :param secret: the secret part of the URL: the receiver answers only at ``<prefix>/<secret>``.
    :param prefix: a path before the secret (e.g. ``/salebot`` behind a reverse proxy).
    :param name: this receiver's name, written into each record (default: the host's name).
    :param fsync: sync each write to the disk before answering (survives a power loss; slower).
    :param max_body: the largest body accepted, in bytes; a larger one is answered 413.
    :param segment_bytes: close a segment at this size.
    :param segment_seconds: close a segment at this age.
    :param retention_seconds: delete closed segments this old (once shipped and forwarded).
    :param ship_to: an object storage folder (``s3://bucket/salebot``, ``file:///data/...``) that
        each closed segment is copied to, as ``<ship_to>/<name>/seg-<n>.jsonl``.
    :param redis: a Redis URL to forward every message to, as a stream (for triggers elsewhere).
    :param stream: the Redis stream's name.
    """

    spool: Path
    secret: str
    prefix: str = ""
    name: str = field(default_factory=socket.gethostname)
    fsync: bool = False
    max_body: int = 2**20
    segment_bytes: int = 64 * 2**20
    segment_seconds: float = 300.0
    retention_seconds: float = 7 * 86400.0
    ship_to: str | None = None
    redis: str | None = None
    stream: str = "salebot:webhook"

    def __post_init__(self) -> None:
        self.spool = Path(self.spool)
        if not _SECRET.match(self.secret or ""):
            raise ValueError(
                "secret: give at least 16 URL-safe characters (letters, digits, - and _), e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        if self.prefix and not re.match(r"^(/[A-Za-z0-9_\-.]+)+$", self.prefix):
            raise ValueError(f"prefix: {self.prefix!r} is not a path such as /salebot")
        if self.max_body < 1024:
            raise ValueError("max_body: at least 1024 bytes")
        if self.redis is not None and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis: a redis:// or rediss:// URL")

    @property
    def path(self) -> str:
        """The path the receiver answers at (secret: never logged)."""
        return f"{self.prefix}/{self.secret}"


class Receiver:
    """The receiver's state and handlers; :func:`create_app` builds the ASGI app around it."""

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings
        self.writer = SpoolWriter(
            SpoolSettings(
                folder=settings.spool,
                receiver=settings.name,
                segment_bytes=settings.segment_bytes,
                segment_seconds=settings.segment_seconds,
                fsync=settings.fsync,
            )
        )
        self.dead_letters = settings.spool / "deadletter.jsonl"
        self._dead_lock = threading.Lock()
        self.forwarder: Forwarder | None = None
        self.counts = {"accepted": 0, "rejected": 0, "too_large": 0, "failed": 0}
        self._ship_lock = threading.Lock()

    # ------------------------------------------------------------------ requests

    async def receive(self, request: Request) -> Response:
        """A message from Salebot: spooled, then 200; or 400 (dead-lettered), 413, 503."""
        from starlette.responses import JSONResponse

        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.settings.max_body):
            self.counts["too_large"] += 1
            return JSONResponse({"status": "error", "error": "body too large"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.settings.max_body:
                self.counts["too_large"] += 1
                return JSONResponse({"status": "error", "error": "body too large"}, status_code=413)
        received_at, data = time.time(), bytes(body)
        try:
            if len(data) <= INLINE_PARSE:
                line = self._line(data, received_at)
            else:  # a big body (a Python-literal one is slow to read) must not hold up the others
                line = await asyncio.to_thread(self._line, data, received_at)
        except WebhookPayloadError as exc:
            return await self._reject(data, str(exc), request, received_at)
        try:
            await self.writer.append_async(line)
        except OSError as exc:
            self.counts["failed"] += 1
            log.error("Salebot webhook: a message could not be spooled (%s); answered 503", exc)
            return JSONResponse({"status": "error", "error": "not stored"}, status_code=503)
        self.counts["accepted"] += 1
        if self.forwarder is not None:
            self.forwarder.wake()
        return JSONResponse({"status": "ok"})

    def _line(self, body: bytes, received_at: float) -> bytes:
        """The spool line of one body, or :class:`WebhookPayloadError`."""
        payload = decode_body(body)
        return record_line(parse_message(payload).as_dict(), payload, self.settings.name, received_at)

    async def _reject(self, body: bytes, reason: str, request: Request, received_at: float) -> Response:
        """Keep a body that is not a message whole, then answer 400."""
        from starlette.responses import JSONResponse

        headers = {k: v for k, v in request.headers.items() if k.lower() in _KEPT_HEADERS}
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        letter = {
            "received_at": received_at,
            "receiver": self.settings.name,
            "reason": reason,
            "headers": headers,
            "body": text,
        }
        if text is None:
            import base64

            letter["body_base64"] = base64.b64encode(body).decode("ascii")
        line = (json.dumps(letter, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            await asyncio.to_thread(self._append_dead_letter, line)
        except OSError as exc:
            self.counts["failed"] += 1
            log.error("Salebot webhook: a body that is not a message could not be kept (%s)", exc)
            return JSONResponse({"status": "error", "error": "not stored"}, status_code=503)
        self.counts["rejected"] += 1
        log.warning(
            "Salebot webhook: a body that is not a message was kept in %s: %s", self.dead_letters, reason
        )
        return JSONResponse({"status": "error", "error": reason}, status_code=400)

    def _append_dead_letter(self, line: bytes) -> None:
        with self._dead_lock:
            fd = os.open(self.dead_letters, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                if self.settings.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)

    async def health(self, request: Request) -> Response:
        """``GET /healthz``: 200 while the spool can be written, with counts (no secret)."""
        from starlette.responses import JSONResponse

        writable = os.access(self.settings.spool, os.W_OK)
        body: dict[str, Any] = {
            "status": "ok" if writable else "error",
            "receiver": self.settings.name,
            "position": self.writer.position.as_list(),
            **self.counts,
        }
        if self.forwarder is not None:
            body["forwarded"] = self.forwarder.forwarded
            body["redis"] = "ok" if self.forwarder.healthy else "unreachable"
        return JSONResponse(body, status_code=200 if writable else 503)

    # ------------------------------------------------------------------ background

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start the background work; on shutdown, close the open segment and let it go out."""
        tasks = [asyncio.create_task(self._maintain(), name="salebot-webhook-maintenance")]
        if self.settings.redis:
            from salebot_provider.webhook.forward import Forwarder

            self.forwarder = Forwarder(self.settings.spool, self.settings.redis, self.settings.stream)
            tasks.append(asyncio.create_task(self.forwarder.run(), name="salebot-webhook-forwarder"))
        log.info(
            "Salebot webhook receiver %s: spooling to %s (fsync %s)%s",
            self.settings.name,
            self.settings.spool,
            "on" if self.settings.fsync else "off",
            f", forwarding to Redis stream {self.settings.stream}" if self.settings.redis else "",
        )
        try:
            yield
        finally:
            await asyncio.to_thread(self.writer.close)
            if self.forwarder is not None:
                # A last chance for what was just written to reach Redis, without holding the stop up.
                with contextlib.suppress(Exception):
                    self.forwarder.wake()
                    await asyncio.sleep(min(1.0, self.forwarder.idle * 5))
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await asyncio.to_thread(self.ship)
            log.info("Salebot webhook receiver %s stopped: %s", self.settings.name, self.counts)

    async def _maintain(self) -> None:
        """Every second: close a segment that is due; every minute: ship, prune and report."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.writer.rotate_if_due)
                if time.monotonic() - last >= 60:
                    last = time.monotonic()
                    await asyncio.to_thread(self.ship)
                    await asyncio.to_thread(self.prune)
                    log.info("Salebot webhook receiver %s: %s", self.settings.name, self.counts)
            except Exception as exc:
                log.warning("Salebot webhook: background work failed (%s); trying again", exc)

    def ship(self) -> int:
        """Copy every closed segment not yet shipped to ``ship_to``; return how many were copied."""
        if not self.settings.ship_to:
            return 0
        from airflow.sdk import ObjectStoragePath

        with self._ship_lock:
            marker = self.settings.spool / "shipped.json"
            done = json.loads(marker.read_text())["through"] if marker.exists() else 0
            target = ObjectStoragePath(self.settings.ship_to) / self.settings.name
            copied = 0
            for number, path, closed in list_segments(self.settings.spool):
                if not closed or number <= done:
                    continue
                destination = target / path.name
                if destination.protocol in ("", "file", "local"):
                    destination.parent.mkdir(parents=True, exist_ok=True)
                with path.open("rb") as source, destination.open("wb") as sink:  # type: ignore[no-untyped-call]
                    shutil.copyfileobj(source, sink, 2**20)
                done, copied = number, copied + 1
                marker.with_suffix(".tmp").write_text(json.dumps({"through": done}))
                os.replace(marker.with_suffix(".tmp"), marker)
            return copied

    def prune(self) -> int:
        """Delete closed segments past their retention that are shipped and forwarded."""
        shipped = forwarded = 1 << 62
        if self.settings.ship_to:
            marker = self.settings.spool / "shipped.json"
            shipped = json.loads(marker.read_text())["through"] if marker.exists() else 0
        if self.forwarder is not None:
            forwarded = self.forwarder.position.segment - 1
        cutoff = time.time() - self.settings.retention_seconds
        removed = 0
        for number, path, closed in list_segments(self.settings.spool):
            if closed and number <= min(shipped, forwarded) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def create_app(settings: ReceiverSettings) -> Starlette:
    """
    The receiver as an ASGI app.

    ``POST <prefix>/<secret>`` takes a message; ``GET /healthz`` reports; anything else is 404.

    :param settings: what the receiver is told.
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    receiver = Receiver(settings)
    app = Starlette(
        routes=[
            Route(settings.path, receiver.receive, methods=["POST"]),
            Route("/healthz", receiver.health, methods=["GET"]),
        ],
        lifespan=receiver.lifespan,
    )
    app.state.receiver = receiver
    return app


@contextlib.contextmanager
def serve(settings: ReceiverSettings, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """
    Run the receiver with uvicorn in a background thread (tests, the demo); yields the URL for Salebot.

    :param settings: what the receiver is told.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one.
    """
    import uvicorn

    if not port:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, access_log=False, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="salebot-webhook-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the webhook receiver did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}{settings.path}"
    finally:
        server.should_exit = True
        thread.join(30)


def _settings_from(argv: list[str] | None) -> tuple[ReceiverSettings, str, int]:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="salebot-webhook",
        description="Receive Salebot's webhook: spool every message durably, optionally forward to Redis.",
        epilog="The secret comes from SALEBOT_WEBHOOK_SECRET or --secret-file, never the command line "
        "(other users can read it there). The Redis URL may come from SALEBOT_WEBHOOK_REDIS.",
    )
    parser.add_argument("--spool", default=env("SALEBOT_WEBHOOK_SPOOL"), help="the spool folder")
    parser.add_argument("--secret-file", help="a file holding the secret part of the URL")
    parser.add_argument(
        "--prefix", default=env("SALEBOT_WEBHOOK_PREFIX", ""), help="a path before the secret"
    )
    parser.add_argument("--host", default=env("SALEBOT_WEBHOOK_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("SALEBOT_WEBHOOK_PORT", "8765")))
    parser.add_argument("--name", default=env("SALEBOT_WEBHOOK_NAME") or socket.gethostname())
    parser.add_argument(
        "--fsync",
        action=argparse.BooleanOptionalAction,
        default=env("SALEBOT_WEBHOOK_FSYNC", "").lower() in ("1", "true", "yes"),
        help="sync each write to the disk before answering",
    )
    parser.add_argument("--max-body", type=int, default=2**20, help="bytes (default 1 MiB)")
    parser.add_argument("--segment-bytes", type=int, default=64 * 2**20)
    parser.add_argument("--segment-seconds", type=float, default=300.0)
    parser.add_argument("--retention-days", type=float, default=7.0)
    parser.add_argument("--ship-to", default=env("SALEBOT_WEBHOOK_SHIP_TO"), help="object storage folder")
    parser.add_argument("--redis", default=env("SALEBOT_WEBHOOK_REDIS"), help="Redis URL to forward to")
    parser.add_argument("--stream", default=env("SALEBOT_WEBHOOK_STREAM", "salebot:webhook"))
    args = parser.parse_args(argv)
    if not args.spool:
        parser.error("--spool (or SALEBOT_WEBHOOK_SPOOL) is required")
    secret = Path(args.secret_file).read_text().strip() if args.secret_file else env("SALEBOT_WEBHOOK_SECRET")
    try:
        settings = ReceiverSettings(
            spool=Path(args.spool),
            secret=secret or "",
            prefix=args.prefix,
            name=args.name,
            fsync=args.fsync,
            max_body=args.max_body,
            segment_bytes=args.segment_bytes,
            segment_seconds=args.segment_seconds,
            retention_seconds=args.retention_days * 86400,
            ship_to=args.ship_to,
            redis=args.redis,
            stream=args.stream,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return settings, args.host, args.port


def main(argv: list[str] | None = None) -> None:
    """``salebot-webhook``: run the receiver with uvicorn until SIGTERM or Ctrl-C."""
    import uvicorn

    settings, host, port = _settings_from(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info(
        "Salebot webhook receiver: listening on %s:%s at %s/*** (the secret is not shown)",
        host,
        port,
        settings.prefix,
    )
    try:
        app = create_app(settings)
    except SpoolInUseError as exc:
        raise SystemExit(f"salebot-webhook: {exc}") from None
    # No access log: it would print the secret path of every request.
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


if __name__ == "__main__":
    main()
