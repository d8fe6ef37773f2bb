"""LoadWebhookMessagesOperator: closed segments loaded once each, repeats left out, a manifest kept."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.webhook.load import COLUMNS, MANIFEST, LoadWebhookMessagesOperator
from salebot_provider.webhook.model import parse_message
from salebot_provider.webhook.spool import SpoolSettings, SpoolWriter, record_line

if TYPE_CHECKING:
    from pathlib import Path


def post(writer: SpoolWriter, *numbers: int) -> None:
    for n in numbers:
        payload = {
            "id": n,
            "client": {"id": 40000000 + n, "variables": {"tier": "gold"}},
            "message": f"текст {n}",
            "is_input": 1,
        }
        writer.append(
            record_line(parse_message(payload).as_dict(), payload, writer.settings.receiver, time.time())
        )


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load(source: Path, destination: Path, **kwargs: Any) -> dict[str, Any]:
    return LoadWebhookMessagesOperator(
        task_id="load", source=str(source), destination=str(destination), **kwargs
    ).execute({})


def test_each_closed_segment_is_loaded_once_and_the_open_one_waits(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    writer = SpoolWriter(SpoolSettings(folder=spool, receiver="r1", segment_bytes=1_500))
    post(writer, *range(10))
    first = load(spool, out)
    assert first["segments"] >= 2
    loaded = sorted(out.glob("seg-*.jsonl"))
    got = [row["id"] for path in loaded for row in rows(path)]
    assert got == [str(n) for n in range(len(got))]  # in order, each once; the open segment's wait
    assert len(got) < 10
    row = rows(loaded[0])[0]
    assert list(row) == list(COLUMNS)
    assert (row["text"], json.loads(row["variables"]), row["receiver"]) == ("текст 0", {"tier": "gold"}, "r1")
    again = load(spool, out)
    assert again["segments"] == 0  # nothing new
    writer.close()  # the open segment closes
    last = load(spool, out)
    assert last["segments"] == 1
    every = [row["id"] for path in sorted(out.glob("seg-*.jsonl")) for row in rows(path)]
    assert every == [str(n) for n in range(10)]
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["loaded"]) == sorted(p.name for p in out.glob("seg-*.jsonl"))
    assert manifest["recent_ids"][-1] == "9"


def test_repeats_across_segments_and_receivers_are_left_out(tmp_path: Path) -> None:
    shipped, out = tmp_path / "shipped", tmp_path / "out"
    for receiver, numbers in (("r1", (1, 2, 3, 2)), ("r2", (3, 4, 5))):
        writer = SpoolWriter(SpoolSettings(folder=shipped / receiver, receiver=receiver))
        post(writer, *numbers)
        writer.close()
    result = load(shipped, out)
    assert (result["segments"], result["messages"], result["repeats"]) == (2, 5, 2)
    assert [r["id"] for r in rows(out / "r1" / "seg-0000000001.jsonl")] == ["1", "2", "3"]
    assert [r["id"] for r in rows(out / "r2" / "seg-0000000001.jsonl")] == ["4", "5"]
    writer = SpoolWriter(SpoolSettings(folder=shipped / "r2", receiver="r2"))
    post(writer, 5, 6)  # a later segment repeating an earlier run's message
    writer.close()
    assert load(shipped, out)["repeats"] == 1


def test_a_run_that_failed_before_the_manifest_writes_the_same_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    writer = SpoolWriter(SpoolSettings(folder=spool))
    post(writer, 1, 2)
    writer.close()

    def crash(*args: Any) -> None:
        raise OSError("the worker died")

    monkeypatch.setattr(LoadWebhookMessagesOperator, "_save", staticmethod(crash))
    with pytest.raises(OSError, match="the worker died"):
        load(spool, out)
    assert (out / "seg-0000000001.jsonl").exists()
    assert not (out / MANIFEST).exists()
    monkeypatch.undo()
    result = load(spool, out)
    assert (result["segments"], result["messages"], result["repeats"]) == (1, 2, 0)
    assert [r["id"] for r in rows(out / "seg-0000000001.jsonl")] == ["1", "2"]
    assert load(spool, out)["segments"] == 0


def test_parquet_without_the_text_when_asked(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    writer = SpoolWriter(SpoolSettings(folder=spool))
    post(writer, 1, 2)
    writer.close()
    result = load(spool, out, format="parquet", include_text=False)
    assert result["messages"] == 2
    table = pq.read_table(out / "seg-0000000001.parquet")
    assert table.column_names == list(COLUMNS)
    assert table.column("client_id").to_pylist() == [40000001, 40000002]
    for personal in ("text", "attachments", "name", "avatar", "recepient", "variables", "extra"):
        assert table.column(personal).to_pylist() == [None, None], personal
    assert "текст" not in (out / "seg-0000000001.parquet").read_bytes().decode("utf-8", "replace")


def test_parquet_with_the_payload_as_posted(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "out"
    writer = SpoolWriter(SpoolSettings(folder=spool))
    post(writer, 1, 2)
    writer.close()
    load(spool, out, format="parquet", include_payload=True)
    table = pq.read_table(out / "seg-0000000001.parquet")
    assert table.column_names == [*COLUMNS, "payload"]
    assert json.loads(table.column("payload").to_pylist()[0])["message"] == "текст 1"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SalebotValidationError, match="'format' must be 'jsonl' or 'parquet'"):
        LoadWebhookMessagesOperator(task_id="x", source="/s", destination="/d", format="csv")
    with pytest.raises(SalebotValidationError, match="'include_payload' loads the text"):
        LoadWebhookMessagesOperator(
            task_id="x", source="/s", destination="/d", include_text=False, include_payload=True
        )
    with pytest.raises(Exception, match="does not exist"):
        load(tmp_path / "nowhere", tmp_path / "out")
