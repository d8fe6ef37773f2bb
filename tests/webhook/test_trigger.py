"""SalebotMessageTrigger: filters and payloads, resuming from the asset state store (ack mode), Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import fakeredis
import pytest
import redis.asyncio
from airflow.triggers.shared_stream import SharedStreamManager

from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.webhook import trigger as trigger_module
from salebot_provider.webhook.forward import Forwarder, trim
from salebot_provider.webhook.model import parse_message
from salebot_provider.webhook.spool import SpoolSettings, SpoolWriter, record_line
from salebot_provider.webhook.trigger import SalebotMessageTrigger

if TYPE_CHECKING:
    from pathlib import Path


class Store:
    """An asset state store as the triggerer gives a watcher (``aget`` / ``aset``), in memory."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))

    async def aset(self, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = json.loads(json.dumps(value))


def message(
    n: int, text: str = "ok", *, is_input: int = 1, client_type: int = 1, block: int | None = None
) -> dict[str, Any]:
    return {
        "id": n,
        "client": {
            "id": 40000000 + n,
            "client_type": client_type,
            "name": f"Клиент {n}",
            "recepient": f"tg{n}",
        },
        "message": text,
        "is_input": is_input,
        "message_id": block,
        "project_id": 1,
        "attachments": ["https://f/a.jpg"] if n % 7 == 0 else [],
    }


class Spool:
    def __init__(self, folder: Path, segment_bytes: int = 2_000) -> None:
        self.folder = folder
        self.writer = SpoolWriter(SpoolSettings(folder=folder, segment_bytes=segment_bytes))

    def post(self, *payloads: dict[str, Any]) -> None:
        for payload in payloads:
            self.writer.append(record_line(parse_message(payload).as_dict(), payload, "r1", time.time()))


async def drive(
    trigger: SalebotMessageTrigger,
    store: Any,
    want: int,
    *,
    within: float = 10.0,
    confirm: bool = True,
    manager: SharedStreamManager | None = None,
) -> list[dict[str, Any]]:
    """Run the trigger as the triggerer does (a shared stream in ack mode) until ``want`` events came."""
    manager = manager or SharedStreamManager(ack_timeout=1.0)
    trigger.asset_state_store = store
    key = trigger.shared_stream_key()
    stream = manager.subscribe(trigger_id=1, trigger=trigger, key=key)
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in trigger.filter_shared_stream(stream):
            events.append(event.payload)
            seq = manager.bind_pending_event(trigger_id=1, key=key)
            if confirm and seq is not None:
                manager.confirm_persisted([seq])  # Airflow stored the event
            if len(events) >= want:
                return

    try:
        await asyncio.wait_for(consume(), within)
    except (asyncio.TimeoutError, Exception) as exc:
        if want and not isinstance(exc, asyncio.TimeoutError):
            raise
    await asyncio.sleep(0.3)  # the advances of what was confirmed
    await manager.unsubscribe(1, key)
    return events


def spool_trigger(folder: Path, **kwargs: Any) -> SalebotMessageTrigger:
    return SalebotMessageTrigger(spool=str(folder), start="beginning", poll_interval=0.05, **kwargs)


# ------------------------------------------------------------------------------ what an event is


def test_by_default_only_what_clients_write_and_no_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.post(message(1, "привет"), message(2, "bot reply", is_input=0), message(3, "new_chat_member"))
    events = asyncio.run(drive(spool_trigger(tmp_path), Store(), 2))
    assert [e["id"] for e in events] == ["1", "3"]
    assert events[0] == {
        "id": "1",
        "client_id": 40000001,
        "is_input": True,
        "client_type": 1,
        "message_id": None,
        "project_id": 1,
        "notice": None,
        "received_at": events[0]["received_at"],
    }
    assert events[1]["notice"] == "new_chat_member"
    assert "привет" not in json.dumps(events, ensure_ascii=False)


def test_filters_text_pattern_labels_and_the_text_when_asked(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.post(
        message(1, "Стоп, хватит", client_type=1),
        message(2, "хочу скидку", client_type=6),
        message(3, "стоп", client_type=6, block=11),
        message(4, "отказ", is_input=0, block=11),
    )
    only_whatsapp = asyncio.run(drive(spool_trigger(tmp_path, client_type=[6]), Store(), 2))
    assert [e["id"] for e in only_whatsapp] == ["2", "3"]
    stops = asyncio.run(drive(spool_trigger(tmp_path, text_pattern=r"(?i)^стоп"), Store(), 2, within=1))
    assert [(e["id"], e["matched"]) for e in stops] == [("1", "Стоп"), ("3", "стоп")]
    labelled = asyncio.run(
        drive(spool_trigger(tmp_path, labels={"stop": r"(?i)^стоп", "deal": "скидк"}), Store(), 3)
    )
    assert [e["labels"] for e in labelled] == [["stop"], ["deal"], ["stop"]]
    from_block = asyncio.run(drive(spool_trigger(tmp_path, is_input=None, message_id=11), Store(), 2))
    assert [e["id"] for e in from_block] == ["3", "4"]
    bot_only = asyncio.run(drive(spool_trigger(tmp_path, is_input=0), Store(), 1))
    assert [e["id"] for e in bot_only] == ["4"]
    with_text = asyncio.run(drive(spool_trigger(tmp_path, include_text=True), Store(), 1))
    assert (with_text[0]["text"], with_text[0]["name"], with_text[0]["recepient"]) == (
        "Стоп, хватит",
        "Клиент 1",
        "tg1",
    )


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({}, "'spool'"),
        ({"spool": "/s", "redis": "redis://h"}, "'spool'"),
        ({"redis": "redis://:pw@h:6379/0"}, "'redis' must not hold credentials"),
        ({"redis": "redis://user:pw@h/0"}, "'redis' must not hold credentials"),
        ({"spool": "/s", "is_input": 2}, "'is_input'"),
        ({"spool": "/s", "client_type": "x"}, "'client_type'"),
        ({"spool": "/s", "client_type": [True]}, "'client_type'"),
        ({"spool": "/s", "message_id": []}, "'message_id'"),
        ({"spool": "/s", "text_pattern": "(unclosed"}, "'text_pattern' is not a valid regular expression"),
        ({"spool": "/s", "labels": {"stop": "["}}, "'labels['stop']'"),
        ({"spool": "/s", "labels": []}, "'labels'"),
        ({"spool": "/s", "start": "middle"}, "'start'"),
        ({"spool": "/s", "poll_interval": 0}, "'poll_interval'"),
        ({"spool": "/s", "dedup_window": -1}, "'dedup_window'"),
        ({"spool": "", "redis": None}, "'spool'"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(SalebotValidationError, match="SalebotMessageTrigger") as raised:
        SalebotMessageTrigger(**kwargs)
    assert names in str(raised.value)


def test_it_serializes_to_plain_kwargs_and_back() -> None:
    trigger = SalebotMessageTrigger(redis="redis_webhook", labels={"stop": "стоп"}, client_type=6)
    path, kwargs = trigger.serialize()
    assert path == "salebot_provider.webhook.trigger.SalebotMessageTrigger"
    again = SalebotMessageTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs)
    assert again.shared_stream_key() == trigger.shared_stream_key()
    assert again.cursor_key == trigger.cursor_key
    # The place is kept across a change of what only shapes the payload.
    assert (
        SalebotMessageTrigger(redis="redis_webhook", client_type=6, include_text=True).cursor_key
        == trigger.cursor_key
    )
    assert SalebotMessageTrigger(redis="redis_webhook", client_type=1).cursor_key != trigger.cursor_key


# ------------------------------------------------------------------------------ resuming, ack mode


def test_fifty_messages_in_a_second_give_fifty_events_and_a_rebuilt_watcher_resumes_without_a_gap(
    tmp_path: Path,
) -> None:
    spool, store = Spool(tmp_path), Store()
    spool.post(*(message(n) for n in range(50)))
    first = asyncio.run(drive(spool_trigger(tmp_path), store, 30))
    assert [e["id"] for e in first] == [str(n) for n in range(30)]
    spool.post(*(message(n) for n in range(50, 60)))
    # The triggerer rebuilds the watcher from its kwargs (a restart): it goes on from the stored place.
    second = asyncio.run(drive(spool_trigger(tmp_path), store, 30))
    assert [e["id"] for e in second] == [str(n) for n in range(30, 60)]
    [state] = store.data.values()
    assert state["seen"][-1] == "59"


def test_the_place_moves_only_once_airflow_stored_the_events(tmp_path: Path) -> None:
    spool, store = Spool(tmp_path), Store()
    spool.post(*(message(n) for n in range(5)))
    unstored = asyncio.run(drive(spool_trigger(tmp_path), store, 5, confirm=False, within=2.5))
    assert len(unstored) >= 1
    [state] = store.data.values() or [{}]
    assert state.get("seen", []) == []  # nothing confirmed: nothing counted as done
    again = asyncio.run(drive(spool_trigger(tmp_path), store, 5))
    assert [e["id"] for e in again] == [str(n) for n in range(5)]  # delivered again: never skipped


def test_a_message_posted_twice_or_to_two_receivers_is_one_event(tmp_path: Path) -> None:
    spool, store = Spool(tmp_path), Store()
    spool.post(message(1), message(2), message(1), message(3), message(2))
    events = asyncio.run(drive(spool_trigger(tmp_path), store, 3))
    assert [e["id"] for e in events] == ["1", "2", "3"]
    spool.post(message(3), message(4))  # a repeat after a restart of the watcher
    later = asyncio.run(drive(spool_trigger(tmp_path), store, 1))
    assert [e["id"] for e in later] == ["4"]


def test_a_new_watcher_starts_at_the_end_unless_told_the_beginning(tmp_path: Path) -> None:
    spool, store = Spool(tmp_path), Store()
    spool.post(message(1))
    trigger = SalebotMessageTrigger(spool=str(tmp_path), poll_interval=0.05)

    async def both() -> list[dict[str, Any]]:
        task = asyncio.create_task(drive(trigger, store, 1))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(spool.post, message(2))
        return await task

    assert [e["id"] for e in asyncio.run(both())] == ["2"]


def test_errors_back_off_and_never_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.post(message(1))
    real, calls = trigger_module.SpoolReader.read, []

    def flaky(self: Any, limit: int = 500) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise OSError("Stale file handle")
        return real(self, limit)

    monkeypatch.setattr(trigger_module.SpoolReader, "read", flaky)
    monkeypatch.setattr(trigger_module._Producer, "_pause", _quick_pause)
    with caplog.at_level(logging.WARNING):
        events = asyncio.run(drive(spool_trigger(tmp_path), Store(), 1))
    assert [e["id"] for e in events] == ["1"]
    assert caplog.text.count("Stale file handle") == 2


async def _quick_pause(self: Any, attempt: int, exc: BaseException) -> None:
    trigger_module.log.warning("reading failed (%s); trying again", exc)
    await asyncio.sleep(0.01)


def test_run_outside_a_shared_stream_reads_the_same(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.post(message(1), message(2, is_input=0), message(3))

    async def collect() -> list[str]:
        got = []
        trigger = spool_trigger(tmp_path)
        async for event in trigger.run():
            got.append(event.payload["id"])
            if len(got) == 2:
                break
        return got

    assert asyncio.run(collect()) == ["1", "3"]


# ------------------------------------------------------------------------------ through Redis


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        redis.asyncio.Redis,
        "from_url",
        staticmethod(lambda url, **kw: fakeredis.FakeAsyncRedis(server=server)),
    )
    return server


async def forward(
    folders: list[Path], until: int, server: fakeredis.FakeServer, within: float = 10.0
) -> list[Forwarder]:
    """Run a forwarder per spool until the stream holds ``until`` entries."""
    forwarders = [Forwarder(folder, "redis://127.0.0.1:6379/2", idle=0.02) for folder in folders]
    tasks = [asyncio.create_task(f.run()) for f in forwarders]
    client = fakeredis.FakeAsyncRedis(server=server)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await client.exists("salebot:webhook") and await client.xlen("salebot:webhook") >= until:
            break
        await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return forwarders


def test_two_receivers_forward_to_one_stream_and_the_watcher_takes_each_message_once(
    tmp_path: Path, fake_redis: fakeredis.FakeServer
) -> None:
    one, two = Spool(tmp_path / "r1"), Spool(tmp_path / "r2")
    one.post(message(1), message(2), message(3))
    two.post(message(4), message(2), message(5))  # 2 reached both receivers
    asyncio.run(forward([tmp_path / "r1", tmp_path / "r2"], 6, fake_redis))
    store = Store()
    trigger = SalebotMessageTrigger(redis="redis://127.0.0.1:6379/2", start="beginning", poll_interval=0.05)
    events = asyncio.run(drive(trigger, store, 5))
    assert sorted(e["id"] for e in events) == ["1", "2", "3", "4", "5"]

    async def pending() -> Any:
        client = fakeredis.FakeAsyncRedis(server=fake_redis)
        return await client.xinfo_groups("salebot:webhook")

    [group] = asyncio.run(pending())
    assert group["name"].decode().startswith("salebot:watcher:")
    assert group["pending"] == 0  # every entry acknowledged once stored (the repeat too)


def test_an_airflow_redis_connection_gives_the_url_and_keeps_the_password_out_of_the_kwargs(
    tmp_path: Path, fake_redis: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {"conn_type": "redis", "host": "redis.internal", "port": 6380, "password": "s3cr/t"}
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_REDIS", json.dumps({**connection, "extra": {"db": 2}}))
    urls: list[str] = []
    monkeypatch.setattr(
        redis.asyncio.Redis,
        "from_url",
        staticmethod(lambda url, **kw: urls.append(url) or fakeredis.FakeAsyncRedis(server=fake_redis)),
    )
    spool = Spool(tmp_path)
    trigger = SalebotMessageTrigger(redis="webhook_redis", start="beginning", poll_interval=0.05)
    assert "s3cr" not in json.dumps(trigger.serialize())
    spool.post(message(1))
    asyncio.run(forward([tmp_path], 1, fake_redis))
    assert [e["id"] for e in asyncio.run(drive(trigger, Store(), 1))] == ["1"]
    assert urls[1:] == ["redis://:s3cr%2Ft@redis.internal:6380/2"]  # after the forwarder's


def test_an_entry_is_acknowledged_only_once_stored_and_a_restarted_consumer_takes_it_back(
    tmp_path: Path, fake_redis: fakeredis.FakeServer
) -> None:
    spool = Spool(tmp_path)
    spool.post(message(1), message(2))
    asyncio.run(forward([tmp_path], 2, fake_redis))
    store = Store()
    url = "redis://127.0.0.1:6379/2"
    unstored = asyncio.run(
        drive(
            SalebotMessageTrigger(redis=url, start="beginning", poll_interval=0.05),
            store,
            2,
            confirm=False,
            within=2.5,
        )
    )
    assert unstored

    async def pending() -> int:
        client = fakeredis.FakeAsyncRedis(server=fake_redis)
        [group] = await client.xinfo_groups("salebot:webhook")
        return int(group["pending"])

    assert asyncio.run(pending()) >= 1  # not acknowledged: Airflow did not store the events
    again = asyncio.run(
        drive(SalebotMessageTrigger(redis=url, start="beginning", poll_interval=0.05), store, 2)
    )
    assert [e["id"] for e in again] == ["1", "2"]
    assert asyncio.run(pending()) == 0


def test_an_acknowledgement_that_fails_never_ends_the_watcher_and_is_made_later(
    tmp_path: Path,
    fake_redis: fakeredis.FakeServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis goes away between reading and acknowledging (seen in make e2e): no raise, no repeat."""
    spool = Spool(tmp_path)
    spool.post(message(1), message(2))
    asyncio.run(forward([tmp_path], 2, fake_redis))
    real, failures = fakeredis.FakeAsyncRedis.xack, []

    async def flaky(self: Any, *args: Any) -> Any:
        if not failures:
            failures.append(args)
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await real(self, *args)

    monkeypatch.setattr(fakeredis.FakeAsyncRedis, "xack", flaky)
    store = Store()
    url = "redis://127.0.0.1:6379/2"
    with caplog.at_level(logging.WARNING):
        events = asyncio.run(
            drive(
                SalebotMessageTrigger(redis=url, start="beginning", poll_interval=0.05), store, 3, within=2.0
            )
        )
    assert failures  # the acknowledgement did fail once
    assert [e["id"] for e in events] == ["1", "2"]  # each once, although its entry was read again
    assert "acknowledging" in caplog.text

    async def pending() -> int:
        [group] = await fakeredis.FakeAsyncRedis(server=fake_redis).xinfo_groups("salebot:webhook")
        return int(group["pending"])

    assert asyncio.run(pending()) == 0  # acknowledged later, as repeats


def test_a_redis_outage_delays_and_loses_nothing(
    tmp_path: Path, fake_redis: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, segment_bytes=5_000)
    fake_redis.connected = False  # Redis is down
    spool.post(*(message(n) for n in range(100)))

    async def outage() -> tuple[Forwarder, int, int]:
        forwarder = Forwarder(tmp_path, "redis://127.0.0.1:6379/2", idle=0.02)
        task = asyncio.create_task(forwarder.run())
        await asyncio.sleep(1.0)
        during = forwarder.forwarded
        fake_redis.connected = True  # back
        client = fakeredis.FakeAsyncRedis(server=fake_redis)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            not await client.exists("salebot:webhook") or await client.xlen("salebot:webhook") < 100
        ):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return forwarder, during, int(await client.xlen("salebot:webhook"))

    with caplog.at_level(logging.WARNING):
        forwarder, during, length = asyncio.run(outage())
    assert during == 0
    assert length == 100
    assert "cannot be reached" in caplog.text
    assert forwarder.position == Forwarder(tmp_path, "redis://x").position  # the cursor was saved
    events = asyncio.run(
        drive(
            SalebotMessageTrigger(redis="redis://127.0.0.1:6379/2", start="beginning", poll_interval=0.05),
            Store(),
            100,
        )
    )
    assert [e["id"] for e in events] == [str(n) for n in range(100)]  # all 100, once each


def test_a_group_lost_with_redis_is_made_again_at_the_beginning_of_the_stream(
    tmp_path: Path, fake_redis: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis restarted without persistence: what was forwarded after it came back is read, none twice."""
    spool = Spool(tmp_path)
    store = Store()
    url = "redis://127.0.0.1:6379/2"

    def watcher() -> SalebotMessageTrigger:
        return SalebotMessageTrigger(redis=url, start="end", poll_interval=0.05)

    assert asyncio.run(drive(watcher(), store, 0, within=0.5)) == []  # the group is made at the end
    spool.post(message(1), message(2))
    asyncio.run(forward([tmp_path], 2, fake_redis))
    assert [e["id"] for e in asyncio.run(drive(watcher(), store, 2))] == ["1", "2"]

    async def flush() -> None:
        await fakeredis.FakeAsyncRedis(server=fake_redis).flushall()

    asyncio.run(flush())  # a restart that kept nothing: the stream and the group are gone
    spool.post(message(3), message(4), message(2))
    asyncio.run(forward([tmp_path], 3, fake_redis))
    with caplog.at_level(logging.WARNING):
        again = asyncio.run(drive(watcher(), store, 2))
    assert [e["id"] for e in again] == ["3", "4"]  # nothing missed, the repeat of 2 dropped
    assert "consumer group of Redis stream salebot:webhook was gone" in caplog.text


def test_the_stream_is_never_trimmed_past_the_slowest_group(fake_redis: fakeredis.FakeServer) -> None:
    async def scenario() -> tuple[int, int, int]:
        client = fakeredis.FakeAsyncRedis(server=fake_redis)
        ids = [await client.xadd("salebot:webhook", {"r": str(n)}) for n in range(10)]
        assert await trim(client, "salebot:webhook") == 0  # no group yet: nothing goes
        await client.xgroup_create("salebot:webhook", "fast", id="0")
        await client.xgroup_create("salebot:webhook", "slow", id="0")
        await client.xreadgroup("fast", "c", {"salebot:webhook": ">"}, count=10)
        await client.xack("salebot:webhook", "fast", *ids)
        await client.xreadgroup("slow", "c", {"salebot:webhook": ">"}, count=4)  # 4 read, not acknowledged
        first = await trim(client, "salebot:webhook")
        await client.xack("salebot:webhook", "slow", *ids[:4])
        second = await trim(client, "salebot:webhook")
        return first, second, int(await client.xlen("salebot:webhook"))

    first, second, left = asyncio.run(scenario())
    assert first == 0  # the slow group still holds its pending entries
    assert second == 4
    assert left == 6


def test_a_group_that_holds_entries_back_for_a_day_is_named_with_the_way_to_remove_it(
    fake_redis: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salebot_provider.webhook import forward

    monkeypatch.setattr(forward, "_stale_warned", {})
    two_days_ago = int((time.time() - 2 * 86_400) * 1000)

    async def scenario() -> tuple[int, int]:
        client = fakeredis.FakeAsyncRedis(server=fake_redis)
        ids = [
            await client.xadd("salebot:webhook", {"r": str(n)}, id=f"{two_days_ago}-{n}") for n in range(3)
        ]
        ids.append(await client.xadd("salebot:webhook", {"r": "new"}))
        await client.xgroup_create("salebot:webhook", "salebot:live", id="0")
        await client.xgroup_create("salebot:webhook", "salebot:gone", id="0")  # its watcher never came
        await client.xreadgroup("salebot:live", "c", {"salebot:webhook": ">"}, count=10)
        await client.xack("salebot:webhook", "salebot:live", *ids)
        first = await trim(client, "salebot:webhook")
        second = await trim(client, "salebot:webhook")  # within the hour: not named again
        await client.xgroup_destroy("salebot:webhook", "salebot:gone")
        third = await trim(client, "salebot:webhook")
        return first + second, third

    with caplog.at_level(logging.WARNING):
        held, trimmed = asyncio.run(scenario())
    assert held == 0  # the forgotten group holds every entry
    assert trimmed == 4  # once it is removed, the live group's entries go
    warnings = [r.getMessage() for r in caplog.records if "has not taken entries" in r.getMessage()]
    assert len(warnings) == 1
    assert "salebot:gone" in warnings[0]
    assert "XGROUP DESTROY salebot:webhook salebot:gone" in warnings[0]
    assert "salebot:live" not in warnings[0]


def test_on_airflow_before_3_3_the_trigger_says_what_it_needs() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['airflow.triggers.shared_stream'] = None  # as on Airflow 3.0 to 3.2\n"
        "try:\n"
        "    import salebot_provider.webhook.trigger\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "SalebotMessageTrigger needs Airflow 3.3 or later" in done.stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="a swallowed cancel is seen by Task.cancelling, 3.11+")
def test_a_cancel_the_redis_client_swallows_still_ends_the_watcher(
    tmp_path: Path, fake_redis: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's ``asyncio.wait_for`` in a client can drop a cancel: the triggerer's stop still ends."""
    spool = Spool(tmp_path)
    spool.post(message(1))
    asyncio.run(forward([tmp_path], 1, fake_redis))
    real, swallowed = fakeredis.FakeAsyncRedis.xreadgroup, []

    async def swallowing(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await real(self, *args, **kwargs)
        except asyncio.CancelledError:
            swallowed.append(args)
            return []  # the cancel is lost, as in the race; the task is still marked as cancelling

    monkeypatch.setattr(fakeredis.FakeAsyncRedis, "xreadgroup", swallowing)
    trigger = SalebotMessageTrigger(redis="redis://127.0.0.1:6379/2", start="beginning", poll_interval=2.0)
    events: list[dict[str, Any]] = []
    # In a thread: were the read loop to go on, the unsubscribe (which waits for it) would never return.
    runner = threading.Thread(
        target=lambda: events.extend(asyncio.run(drive(trigger, Store(), 1))), daemon=True
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the watcher's read loop went on after the triggerer stopped it"
    assert [e["id"] for e in events] == ["1"]
    assert swallowed  # the stop's cancel came during a read, and the client dropped it
