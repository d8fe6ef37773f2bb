"""The spool: records written whole before an answer, segments closed on size and age, read back in order."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from typing import TYPE_CHECKING

import pytest

from salebot_provider.webhook.spool import (
    START,
    Position,
    SpoolInUseError,
    SpoolReader,
    SpoolSettings,
    SpoolWriter,
    list_segments,
    record_line,
    segment_name,
)

if TYPE_CHECKING:
    from pathlib import Path


def line(n: int, text: str = "hi") -> bytes:
    return record_line({"id": str(n), "client_id": 1, "is_input": True, "text": text}, {"id": n}, "r1", 0.0)


def ids(records: list) -> list[str]:
    return [record["message"]["id"] for record, _, _ in records]


def die(writer: SpoolWriter) -> None:
    """What a kill -9 leaves: the process's files closed by the system, nothing flushed or renamed."""
    for fd in (writer._fd, writer._folder_lock):
        if fd is not None:
            os.close(fd)
    writer._fd = writer._folder_lock = None


def test_a_second_writer_on_the_folder_is_refused_until_the_first_lets_it_go(tmp_path: Path) -> None:
    first = SpoolWriter(SpoolSettings(folder=tmp_path))
    first.append(line(1))
    with pytest.raises(SpoolInUseError, match=rf"spool folder {tmp_path} is in use .*process {os.getpid()}"):
        SpoolWriter(SpoolSettings(folder=tmp_path))
    assert ids(SpoolReader(tmp_path).read()) == ["1"]  # the refused one touched nothing
    first.close()
    second = SpoolWriter(SpoolSettings(folder=tmp_path))  # a graceful stop lets the folder go
    second.append(line(2))
    assert ids(SpoolReader(tmp_path).read()) == ["1", "2"]
    second.close()


def test_a_record_is_in_the_file_when_append_returns(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path))
    writer.append(line(1))
    [(number, path, closed)] = list_segments(tmp_path)
    assert (number, path.name, closed) == (1, segment_name(1, closed=False), False)
    assert json.loads(path.read_bytes())["message"]["id"] == "1"


def test_segments_close_at_their_size_and_the_reader_goes_through_them_in_order(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path, segment_bytes=600))
    for n in range(20):
        writer.append(line(n))
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    assert all(closed for _, _, closed in segments[:-1])
    reader = SpoolReader(tmp_path)
    got = reader.read(7) + reader.read(100)
    assert ids(got) == [str(n) for n in range(20)]
    # Each record's end is the next one's start.
    assert all(a[2] == b[1] or b[1] == Position(a[2].segment + 1, 0) for a, b in itertools.pairwise(got))
    assert reader.read() == []
    writer.append(line(20))
    assert ids(reader.read()) == ["20"]


def test_a_segment_closes_at_its_age_and_an_empty_one_is_never_left(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path, segment_seconds=0.05))
    assert writer.rotate_if_due() is None  # nothing written: nothing to close
    writer.append(line(1))
    time.sleep(0.06)
    closed = writer.rotate_if_due()
    assert closed is not None
    assert closed.name == "seg-0000000001.jsonl"
    assert [(n, c) for n, _, c in list_segments(tmp_path)] == [(1, True)]
    writer.close()  # nothing open: nothing more
    assert [(n, c) for n, _, c in list_segments(tmp_path)] == [(1, True)]


def test_a_line_a_crash_cut_short_is_cut_off_at_restart_and_never_read(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path))
    writer.append(line(1))
    writer.append(line(2))
    [(_, path, _)] = list_segments(tmp_path)
    with path.open("ab") as file:
        file.write(line(3)[:25])  # the write of an unacknowledged request, cut by kill -9
    assert ids(SpoolReader(tmp_path).read()) == ["1", "2"]  # never a half line
    die(writer)
    again = SpoolWriter(SpoolSettings(folder=tmp_path))  # the receiver starts again
    assert [(n, c) for n, _, c in list_segments(tmp_path)] == [(1, True)]
    assert path.with_name(segment_name(1)).read_bytes().endswith(b"\n")
    again.append(line(4))
    assert ids(SpoolReader(tmp_path).read()) == ["1", "2", "4"]


def test_concurrent_appends_share_writes_and_none_is_lost_or_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import salebot_provider.webhook.spool as spool

    writer = SpoolWriter(SpoolSettings(folder=tmp_path, fsync=True, segment_bytes=20_000))
    writes = []
    real = spool.os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(spool.os, "write", counted)

    def work(base: int) -> None:
        for n in range(base, base + 50):
            writer.append(line(n, "x" * (n % 40)))

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = ids(SpoolReader(tmp_path).read(10_000))
    assert sorted(got, key=int) == sorted((str(k * 1000 + n) for k in range(8) for n in range(50)), key=int)
    for k in range(8):  # each writer's own records in its order
        mine = [g for g in got if int(g) // 1000 == k]
        assert mine == sorted(mine, key=int)
    # While one write is synced, the others' records gather: fewer writes than records.
    assert len(writes) < 400
    assert writer.position.segment >= 2


def test_a_failed_write_is_an_error_for_the_request_it_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path))
    writer.append(line(1))
    import salebot_provider.webhook.spool as spool

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool.os, "write", full)
    with pytest.raises(OSError, match="No space left on device"):
        writer.append(line(2))
    monkeypatch.undo()
    writer.append(line(3))  # the next write works, and carries only its own record
    assert ids(SpoolReader(tmp_path).read()) == ["1", "3"]


def test_the_reader_starts_at_the_end_and_reports_segments_that_were_pruned(tmp_path: Path) -> None:
    writer = SpoolWriter(SpoolSettings(folder=tmp_path, segment_bytes=300))
    for n in range(12):
        writer.append(line(n))
    end = SpoolReader(tmp_path).end()
    writer.append(line(12))
    assert ids(SpoolReader(tmp_path, end).read()) == ["12"]
    reader = SpoolReader(tmp_path, Position(1, 0))
    assert ids(reader.read(1)) == ["0"]
    for _, path, closed in list_segments(tmp_path)[:3]:
        assert closed
        path.unlink()  # retention
    rest = reader.read()
    assert reader.missing == [1, 2, 3]
    assert ids(rest)[-1] == "12"


def test_an_unreadable_line_is_returned_as_such_not_a_stop(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(line(1) + b"{not json\n" + line(2))
    got = SpoolReader(tmp_path, START).read()
    assert [r.get("v") for r, _, _ in got] == [1, 0, 1]
    assert got[1][0]["line"] == "{not json\n"
