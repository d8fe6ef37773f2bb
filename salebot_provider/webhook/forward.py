"""
The receiver's forwarder: every spooled message appended to a Redis stream, from a saved cursor.

The spool stays the record. The forwarder reads it from the position saved in the spool folder
(``forwarded.json``), appends each record to the stream (``XADD``, field ``r``: the record's JSON
line) and saves the new position only after Redis took them. A Redis outage therefore delays
messages and loses none; a forwarder killed between the ``XADD`` and the save appends those
records again on restart, which the readers drop by message id.

It also trims the stream, never past its slowest consumer group: entries older than every group's
oldest pending entry (or, with none pending, its last delivered one) are removed. With no group
yet, nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from salebot_provider.webhook.spool import Position, SpoolReader

log = logging.getLogger(__name__)

#: The stream's default name.
STREAM = "salebot:webhook"
#: Records appended in one round trip.
BATCH = 500
#: Seconds between trims of the stream.
TRIM_EVERY = 30.0


def shown_url(url: str) -> str:
    """A Redis URL without its credentials, for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or ''}"


def _load_position(path: Path) -> Position:
    try:
        return Position(*json.loads(path.read_text())["position"])
    except FileNotFoundError:
        return Position(0, 0)


def _save_position(path: Path, position: Position) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as file:
        json.dump({"position": position.as_list()}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


async def trim(client: Any, stream: str) -> int:
    """
    Remove the entries every consumer group is done with; return how many were removed.

    :param client: a ``redis.asyncio`` client.
    :param stream: the stream's name.
    """
    try:
        groups = await client.xinfo_groups(stream)
    except Exception:  # no stream yet
        return 0
    if not groups:
        return 0
    floors = []
    for group in groups:
        name = group["name"]
        if int(group.get("pending") or 0):
            summary = await client.xpending(stream, name)
            floors.append(_as_text(summary["min"]))
        else:
            last = _as_text(group.get("last-delivered-id") or "0-0")
            millis, sequence = (int(p) for p in last.split("-"))
            floors.append(f"{millis}-{sequence + 1}")
    floor = min(floors, key=lambda entry: tuple(int(p) for p in entry.split("-")))
    return int(await client.xtrim(stream, minid=floor, approximate=False))


def _as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Forwarder:
    """
    Appends what the spool holds to a Redis stream, for as long as it runs.

    :param folder: the spool's folder (the cursor is kept in it).
    :param url: the Redis URL (``redis://[:password@]host:port/db``).
    :param stream: the stream's name.
    :param idle: seconds between looks at the spool when there was nothing new.
    """

    def __init__(self, folder: Path, url: str, stream: str = STREAM, idle: float = 0.1) -> None:
        self.folder = Path(folder)
        self.url = url
        self.stream = stream
        self.idle = idle
        self.cursor_file = self.folder / "forwarded.json"
        self.position = _load_position(self.cursor_file)
        #: Records appended since the start, and whether Redis is reachable now.
        self.forwarded = 0
        self.healthy = True
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the spool now (a record was just written)."""
        self._wake.set()

    async def run(self) -> None:
        """Forward until cancelled; an outage is logged once and waited out with a growing pause."""
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        reader = SpoolReader(self.folder, self.position)
        pause, trimmed_at = 0.5, 0.0
        try:
            while True:
                try:
                    batch = await asyncio.to_thread(reader.read, BATCH)
                    if batch:
                        await self._append(client, batch)
                        self.position = batch[-1][2]
                        await asyncio.to_thread(_save_position, self.cursor_file, self.position)
                        self.forwarded += len(batch)
                    if not self.healthy:
                        log.warning(
                            "Salebot webhook: Redis at %s is back; forwarding again", shown_url(self.url)
                        )
                    self.healthy, pause = True, 0.5
                    if time.monotonic() - trimmed_at > TRIM_EVERY:
                        trimmed_at = time.monotonic()
                        await trim(client, self.stream)
                    if not batch:
                        self._wake.clear()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.idle)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.healthy:
                        log.warning(
                            "Salebot webhook: Redis at %s cannot be reached (%s); the spool keeps every "
                            "message and they are forwarded once it is back",
                            shown_url(self.url),
                            type(exc).__name__,
                        )
                    self.healthy = False
                    reader = SpoolReader(self.folder, self.position)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            await client.aclose()

    async def _append(self, client: Any, batch: list[tuple[dict[str, Any], Position, Position]]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for record, _, _ in batch:
                pipe.xadd(self.stream, {"r": json.dumps(record, ensure_ascii=False, separators=(",", ":"))})
            await pipe.execute()
