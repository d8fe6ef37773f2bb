"""
The receiver's forwarder: every spooled message appended to a Redis stream, from a saved cursor.

The spool stays the record. The forwarder reads it from the position saved in the spool folder
(``forwarded.json``), appends each record to the stream (``XADD``, field ``r``: the record's JSON
line) and saves the new position only after Redis took them. A Redis outage therefore delays
messages and loses none; a forwarder killed between the ``XADD`` and the save appends those
records again on restart, which the readers drop by message id.

It also trims the stream, never past its slowest consumer group: entries older than every group's
oldest pending entry (or, with none pending, its last delivered one) are removed. With no group
yet, nothing is trimmed. A group that holds entries back for a day (its watcher is gone: the DAG
was deleted or its filters changed, which names a new group) is named in a warning once an hour,
with the command that removes it; the forwarder never removes a group itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
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
#: Seconds a group may hold the stream's oldest entries back before a warning names it.
STALE_AFTER = 86_400.0
#: Seconds between two warnings about the same group.
STALE_WARN_EVERY = 3_600.0
#: (stream, group) -> when it was last named in a warning (monotonic seconds).
_stale_warned: dict[tuple[str, str], float] = {}


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


async def trim(client: Any, stream: str, stale_after: float = STALE_AFTER) -> int:
    """
    Remove the entries every consumer group is done with; return how many were removed.

    A group whose oldest entry not done with is older than ``stale_after`` is named in a warning.

    :param client: a ``redis.asyncio`` client.
    :param stream: the stream's name.
    :param stale_after: seconds a group may hold entries back before it is named.
    """
    try:
        groups = await client.xinfo_groups(stream)
    except Exception:  # no stream yet
        return 0
    if not groups:
        return 0
    floors: dict[str, tuple[int, int]] = {}  # each group's first entry not done with
    for group in groups:
        name = _as_text(group["name"])
        if int(group.get("pending") or 0):
            summary = await client.xpending(stream, name)
            floors[name] = _entry_key(_as_text(summary["min"]))
        else:
            millis, sequence = _entry_key(_as_text(group.get("last-delivered-id") or "0-0"))
            floors[name] = (millis, sequence + 1)
    await _name_stale(client, stream, floors, stale_after)
    millis, sequence = min(floors.values())
    return int(await client.xtrim(stream, minid=f"{millis}-{sequence}", approximate=False))


def _entry_key(entry: str) -> tuple[int, int]:
    millis, sequence = (int(p) for p in entry.split("-"))
    return millis, sequence


async def _name_stale(
    client: Any, stream: str, floors: dict[str, tuple[int, int]], stale_after: float
) -> None:
    """Warn of each group that holds back an entry older than ``stale_after`` seconds."""
    oldest_allowed = (time.time() - stale_after) * 1000
    old = {name: floor for name, floor in floors.items() if floor[0] < oldest_allowed}
    if not old:
        return  # the usual case: no second round trip
    newest = await client.xrevrange(stream, count=1)
    if not newest:
        return
    last = _entry_key(_as_text(newest[0][0]))
    for name, floor in old.items():
        if floor > last:
            continue  # done with every entry the stream holds
        if time.monotonic() - _stale_warned.get((stream, name), -math.inf) < STALE_WARN_EVERY:
            continue
        _stale_warned[(stream, name)] = time.monotonic()
        log.warning(
            "Salebot webhook: consumer group %s has not taken entries of stream %s for over %.0f hours, "
            "so the stream is not trimmed past them. If its watcher is gone (its DAG deleted, or its "
            "filters changed, which names a new group), remove it: XGROUP DESTROY %s %s",
            name,
            stream,
            stale_after / 3600,
            stream,
            name,
        )


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
