"""
The receiver's spool: webhook messages appended to JSON Lines segment files, and read back in order.

A spool is one folder, written by one receiver process (it holds ``receiver.lock`` locked; a second
receiver on the folder is refused with :class:`SpoolInUseError`). Messages go into the open segment,
``seg-<number>.jsonl.open``; it is closed (flushed, synced, renamed ``seg-<number>.jsonl``) when it
reaches ``segment_bytes`` or ``segment_seconds``, and the next number is opened. Each line is one
record: ``{"v": 1, "received_at", "receiver", "message": <normalized>, "payload": <as posted>}``.
A record is acknowledged (HTTP 200) only once its line has been written to the file, so it survives
a kill of the receiver; with ``fsync`` it is also synced to the disk, and survives a power loss.

Readers (the forwarder, the trigger, the batch loader) keep a :class:`Position`: a segment number and
a byte offset just after the last whole line read. A line cut short by a crash is never read: it was
never acknowledged, and the receiver cuts it off when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

#: Segment files: ``seg-0000000001.jsonl`` (closed) or ``seg-0000000001.jsonl.open`` (being written).
_SEGMENT = re.compile(r"^seg-(\d{10})\.jsonl(\.open)?$")
#: The most bytes one group write gathers from waiting requests.
_BATCH_BYTES = 4 * 2**20
#: The file a receiver holds locked while it writes the spool (it names the process).
LOCK_NAME = "receiver.lock"


class SpoolInUseError(RuntimeError):
    """Another receiver process writes this spool folder: each needs a folder of its own."""


def _hold_folder(folder: Path) -> int:
    """Lock the spool folder for this process (released when it ends, however it ends)."""
    import fcntl

    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SpoolInUseError(
            f"spool folder {folder} is in use by another receiver (process {holder}); each receiver "
            "needs a spool folder of its own"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Position(NamedTuple):
    """Where a reader is: the segment's number and the byte offset after the last whole line read."""

    segment: int
    offset: int

    def as_list(self) -> list[int]:
        """The position as JSON."""
        return [self.segment, self.offset]


START = Position(0, 0)


def segment_name(number: int, *, closed: bool = True) -> str:
    """The file name of segment ``number``."""
    return f"seg-{number:010d}.jsonl" + ("" if closed else ".open")


def list_segments(folder: Path) -> list[tuple[int, Path, bool]]:
    """The segments in a spool folder, in order: ``(number, path, closed)``."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            match = _SEGMENT.match(entry.name)
            if match:
                found.append((int(match.group(1)), Path(entry.path), match.group(2) is None))
    return sorted(found)


def record_line(message: dict[str, Any], payload: Any, receiver: str, received_at: float) -> bytes:
    """One spool line (UTF-8, ending in a newline) for a parsed message and the payload it came from."""
    record = {
        "v": 1,
        "received_at": dt.datetime.fromtimestamp(received_at, dt.timezone.utc).isoformat(),
        "receiver": receiver,
        "message": message,
        "payload": payload,
    }
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass
class SpoolSettings:
    """
    How a spool writes.

    :param folder: the spool's folder (made if missing).
    :param receiver: this receiver's name, written into each record.
    :param segment_bytes: close the open segment once it holds this many bytes.
    :param segment_seconds: close the open segment once it is this old (and not empty).
    :param fsync: also sync each write to the disk before it is acknowledged.
    """

    folder: Path
    receiver: str = "receiver"
    segment_bytes: int = 64 * 2**20
    segment_seconds: float = 300.0
    fsync: bool = False


class SpoolWriter:
    """
    Appends records to the open segment, in one thread-safe place, and closes segments on time.

    :meth:`append` writes (and, with ``fsync``, syncs) before it returns. Concurrent callers share
    one write and one sync (group commit): the first to arrive writes everything that is waiting.
    """

    def __init__(self, settings: SpoolSettings) -> None:
        self.settings = settings
        self.folder = Path(settings.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._folder_lock: int | None = _hold_folder(self.folder)
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_cond = threading.Condition(threading.Lock())
        self._generation = 0  # bumped by each group write
        self._written = 0  # the last generation written
        self._failed: dict[int, OSError] = {}  # a failed group write's error, by generation
        self._fd: int | None = None
        self._number = 0
        self._size = 0
        self._opened = 0.0
        #: Called with each closed segment's path (shipping, the forwarder's wake-up).
        self.on_close: list[Any] = []
        self._recover()

    # ------------------------------------------------------------------ life cycle

    def _recover(self) -> None:
        """Cut off a line a crash left unfinished in an open segment, and close it."""
        segments = list_segments(self.folder)
        for number, path, closed in segments:
            if closed:
                continue
            with path.open("r+b") as file:
                data = file.read()
                whole = data.rfind(b"\n") + 1
                if whole != len(data):
                    file.truncate(whole)
                file.flush()
                os.fsync(file.fileno())
            if whole:
                os.replace(path, path.with_name(segment_name(number)))
                self._synced_folder()
            else:
                path.unlink()
        self._number = max((n for n, _, _ in list_segments(self.folder)), default=0)

    def _open_next(self) -> None:
        self._number += 1
        path = self.folder / segment_name(self._number, closed=False)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._synced_folder()
        self._size = 0
        self._opened = time.monotonic()

    def _synced_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close_segment(self) -> Path | None:
        """Close the open segment if it holds anything: sync it and give it its closed name."""
        with self._lock:
            return self._close_locked()

    def _close_locked(self) -> Path | None:
        if self._fd is None:
            return None
        fd, self._fd = self._fd, None
        os.fsync(fd)
        os.close(fd)
        open_path = self.folder / segment_name(self._number, closed=False)
        if not self._size:
            open_path.unlink(missing_ok=True)
            return None
        closed = open_path.with_name(segment_name(self._number))
        os.replace(open_path, closed)
        self._synced_folder()
        for callback in self.on_close:
            callback(closed)
        return closed

    def rotate_if_due(self) -> Path | None:
        """Close the open segment if it is older than ``segment_seconds``; returns the closed path."""
        with self._lock:
            age = time.monotonic() - self._opened
            if self._fd is not None and self._size and age >= self.settings.segment_seconds:
                return self._close_locked()
        return None

    def close(self) -> None:
        """Write what is waiting, close the open segment and let the folder go (graceful shutdown)."""
        self._flush_pending()
        self.close_segment()
        if self._folder_lock is not None:
            os.close(self._folder_lock)
            self._folder_lock = None

    @property
    def position(self) -> Position:
        """Where the next record will go (a reader there has read everything written)."""
        with self._lock:
            if self._fd is None:
                return Position(self._number + 1, 0)
            return Position(self._number, self._size)

    # ------------------------------------------------------------------ writing

    def append(self, line: bytes) -> None:
        """
        Append one record line; return once it is written (and synced, with ``fsync``).

        :param line: one JSON line ending in a newline (:func:`record_line`).
        :raises OSError: the write failed (a full disk ...): the record is not in the spool.
        """
        with self._pending_cond:
            self._pending.append(line)
            mine = self._generation + 1
        self._flush_pending()
        with self._pending_cond:
            while self._written < mine:
                self._pending_cond.wait()
            error = self._failed.get(mine)
        if error is not None:
            raise OSError(f"the spool write failed: {error}")

    def _flush_pending(self) -> None:
        """Write every waiting line in one write (and one sync): the group commit."""
        with self._lock:
            with self._pending_cond:
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._generation += 1
                generation = self._generation
            error: OSError | None = None
            try:
                data = b"".join(batch)
                if self._fd is None:
                    self._open_next()
                assert self._fd is not None
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                if self.settings.fsync:
                    os.fdatasync(self._fd)
                self._size += len(data)
                if self._size >= self.settings.segment_bytes:
                    self._close_locked()
            except OSError as exc:
                error = exc
            with self._pending_cond:
                if error is not None:
                    self._failed[generation] = error
                    # Kept a little while for the waiters of that write; never growing.
                    for old in [g for g in self._failed if g < generation - 1000]:
                        del self._failed[old]
                self._written = generation
                self._pending_cond.notify_all()

    async def append_async(self, line: bytes) -> None:
        """:meth:`append` from an event loop, in a worker thread (a write or a sync never blocks the loop)."""
        await asyncio.to_thread(self.append, line)


class SpoolReader:
    """
    Reads whole records from a spool folder, in order, from a :class:`Position`.

    Blocking file I/O: call it from a thread (``asyncio.to_thread``) in an event loop.
    """

    def __init__(self, folder: Path | str, position: Position = START) -> None:
        self.folder = Path(folder)
        self.position = Position(*position)
        #: Segments passed over because they were gone (deleted after their retention).
        self.missing: list[int] = []

    def end(self) -> Position:
        """The position after the last whole record in the spool now."""
        segments = list_segments(self.folder)
        if not segments:
            return START
        number, path, closed = segments[-1]
        if closed:
            return Position(number + 1, 0)
        data = path.read_bytes()
        return Position(number, data.rfind(b"\n") + 1)

    def read(self, limit: int = 500) -> list[tuple[dict[str, Any], Position, Position]]:
        """
        Up to ``limit`` records after the position: ``(record, start, end)`` each; the position moves on.

        An unreadable line (it should not happen: the receiver writes whole JSON lines) is returned
        as a record ``{"v": 0, "error": ..., "line": <text>}`` so that a reader can report it, not
        stop on it.
        """
        out: list[tuple[dict[str, Any], Position, Position]] = []
        while len(out) < limit:
            later = [s for s in list_segments(self.folder) if s[0] >= self.position.segment]
            if not later:
                return out
            number, path, closed = later[0]
            if number != self.position.segment:
                if self.position != START:
                    self.missing.extend(range(self.position.segment, number))
                self.position = Position(number, 0)
            try:
                with path.open("rb") as file:
                    file.seek(self.position.offset)
                    data = file.read(_BATCH_BYTES)
                    if data and b"\n" not in data and len(data) == _BATCH_BYTES:
                        data += file.read()  # one record longer than a chunk
            except FileNotFoundError:
                continue  # closed (renamed) or removed since the listing: list again
            whole = data.rfind(b"\n") + 1
            offset = self.position.offset
            for raw in data[:whole].splitlines(keepends=True):
                if len(out) >= limit:
                    break
                start = Position(number, offset)
                offset += len(raw)
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    record = {"v": 0, "error": str(exc), "line": raw.decode("utf-8", "replace")}
                out.append((record, start, Position(number, offset)))
            self.position = Position(number, offset)
            if len(out) >= limit:
                return out
            if len(data) >= _BATCH_BYTES:
                continue  # more of this segment to read
            if not closed:
                return out  # the open segment's end: wait for more
            self.position = Position(number + 1, 0)  # a closed segment is read to its end
        return out
