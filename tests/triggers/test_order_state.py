"""OrderStateTrigger against the emulator: its events, its backoff, and what triggers share."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.serde import deserialize, serialize

from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.triggers import OrderStateTrigger, order_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from salebot_provider.testing import SalebotEmulator

CLASSPATH = "salebot_provider.triggers.order_state.OrderStateTrigger"


def new_deal(emulator: SalebotEmulator, state_id: int = 101) -> tuple[int, int]:
    client_id = emulator.add_client(f"trigger-{len(emulator.state.clients)}")
    with emulator.state.lock:
        return client_id, emulator.state.add_deal(client_id, state_id).id


def move(emulator: SalebotEmulator, order_id: int, state_id: int) -> None:
    with emulator.state.lock:
        emulator.state.move_deal(emulator.state.deals[order_id], state_id)


@pytest.fixture
def later() -> Iterator[Callable[..., None]]:
    """Run something on a timer thread, e.g. move a deal while triggers poll."""
    timers: list[threading.Timer] = []

    def schedule(seconds: float, action: Callable[..., None], *args: Any) -> None:
        timers.append(threading.Timer(seconds, action, args))
        timers[-1].start()

    yield schedule
    for timer in timers:
        timer.cancel()
        timer.join()


@pytest.fixture
def emulator(salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> SalebotEmulator:
    """``salebot_default`` allows 100 requests/s, so that tests need not wait for the 1/s default."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(backoff_factor=0, rate_limit=100)
    )
    return salebot_emulator


def run(*triggers: OrderStateTrigger, timeout: float = 30) -> list[dict[str, Any]]:
    """Run the triggers together in one event loop, as a triggerer would; each must yield one event."""

    async def events(trigger: OrderStateTrigger) -> list[Any]:
        return [event.payload async for event in trigger.run()]

    async def main() -> list[list[Any]]:
        return await asyncio.wait_for(asyncio.gather(*map(events, triggers)), timeout)

    results = asyncio.run(main())
    assert [len(r) for r in results] == [1] * len(triggers)
    assert order_state._SHARED == {}  # the last trigger out closed the shared client
    return [r[0] for r in results]


def run_for(seconds: float, *triggers: OrderStateTrigger) -> None:
    """Let the triggers poll for a while, then cancel them as the triggerer does on a timeout."""

    async def main() -> None:
        tasks = [asyncio.ensure_future(anext(t.run())) for t in triggers]
        done, _ = await asyncio.wait(tasks, timeout=seconds)
        assert not done, [t.result() for t in done]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert order_state._SHARED == {}


def test_serialize_holds_the_checked_arguments_and_never_the_key(emulator: SalebotEmulator) -> None:
    trigger = OrderStateTrigger(
        "40000001", ["104", 103, "104"], order_id=70001, failure_states="105", poll_interval=5
    )
    classpath, kwargs = trigger.serialize()
    assert (classpath, kwargs) == (
        CLASSPATH,
        {
            "client_id": "40000001",
            "target_states": [104, 103],
            "order_id": 70001,
            "failure_states": [105],
            "poll_interval": 5.0,
            "salebot_conn_id": "salebot_default",
        },
    )
    # As the triggerer gets them: through Airflow's serde, then the class rebuilt from its path.
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    for text in (json.dumps(kwargs), repr(trigger), repr(rebuilt)):
        assert emulator.api_key not in text
        assert "password" not in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"client_id": "x1"}, "'client_id'"),
        ({"target_states": ()}, "'target_states'"),
        ({"failure_states": [104]}, "both"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"poll_interval": "60"}, "poll_interval"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    emulator: SalebotEmulator, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(SalebotValidationError, match=message):
        OrderStateTrigger(**{"client_id": 1, "target_states": 104, **arguments})
    assert emulator.requests == []


def test_success_when_the_deal_reaches_a_target(
    emulator: SalebotEmulator, later: Callable[..., None]
) -> None:
    client_id, order_id = new_deal(emulator)
    later(0.3, move, emulator, order_id, 103)
    (event,) = run(OrderStateTrigger(client_id, [103, 104], failure_states=105, poll_interval=0.05))
    assert event == {
        "status": "success",
        "state_id": 103,
        "message": f"Salebot the current deal of client {client_id} reached 103",
    }
    assert len(emulator.requests) >= 2
    assert all(r.params == {"client_id": str(client_id)} for r in emulator.requests)


def test_failure_when_the_deal_reaches_a_failure_state(
    emulator: SalebotEmulator, later: Callable[..., None]
) -> None:
    client_id, order_id = new_deal(emulator)
    later(0.2, move, emulator, order_id, 105)
    (event,) = run(
        OrderStateTrigger(client_id, 104, order_id=order_id, failure_states=[105], poll_interval=0.05)
    )
    assert event["status"] == "failure"
    assert event["state_id"] == 105
    assert f"deal {order_id} of client {client_id} reached the failure state 105" in event["message"]


def test_errors_that_polling_would_not_fix_end_with_an_error_event(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, order_id = new_deal(emulator)
    no_deal = emulator.add_client("no-deal")
    unknown, other_deal, none = run(
        OrderStateTrigger(999, 104, poll_interval=0),
        OrderStateTrigger(no_deal, 104, order_id=order_id, poll_interval=0),
        OrderStateTrigger(no_deal, 104, poll_interval=0),
    )
    assert [e["status"] for e in (unknown, other_deal, none)] == ["error"] * 3
    assert "client_not_found" in unknown["message"]
    assert "order not found" in other_deal["message"]
    assert "/api/***/get_order_state" in none["message"]
    key = emulator.add_key(["clients_read"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json().replace(emulator.api_key, key)
    )
    (refused,) = run(OrderStateTrigger(client_id, 104, poll_interval=0))
    assert refused["status"] == "error"
    assert "crm_read" in refused["message"]
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", json.dumps({"conn_type": "salebot", "password": "short"})
    )
    (bad_connection,) = run(OrderStateTrigger(client_id, 104, poll_interval=0))
    assert bad_connection["status"] == "error"
    assert "password field" in bad_connection["message"]
    (no_connection,) = run(
        OrderStateTrigger(client_id, 104, poll_interval=0, salebot_conn_id="salebot_nowhere")
    )
    assert no_connection["status"] == "error"
    assert "salebot_nowhere" in no_connection["message"]
    assert len(emulator.requests) == 4  # one each; none for the bad connections
    for event in (unknown, other_deal, none, refused, bad_connection, no_connection):
        assert emulator.api_key not in event["message"]
        assert key not in event["message"]


@pytest.mark.parametrize(
    "fault",
    [{"status": 502}, {"status": 503, "html": True}, {"status": 429}, {"latency": 0.5}, {"reset": True}],
    ids=["502", "503-html", "429", "timeout", "reset"],
)
def test_transient_errors_are_logged_and_polled_through(
    salebot_emulator: SalebotEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    fault: dict[str, Any],
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        salebot_emulator.connection_json(backoff_factor=0, rate_limit=100, timeout=0.2),
    )
    client_id, order_id = new_deal(salebot_emulator, 104)
    salebot_emulator.inject("get_order_state", times=2, **fault)
    (event,) = run(OrderStateTrigger(client_id, 104, order_id=order_id, poll_interval=0.05))
    assert event["status"] == "success"
    printed = "".join(capfd.readouterr())
    assert "failed (2 in a row), polling again in" in printed
    assert salebot_emulator.api_key not in printed


def test_backoff_grows_with_jitter_and_honours_retry_after(emulator: SalebotEmulator) -> None:
    trigger = OrderStateTrigger(1, 104, poll_interval=2)
    settings = order_state.ConnectionSettings("http://x", "k" * 10, backoff_factor=0)
    error = order_state.SalebotAPIError("429", http_status=429, retry_after=30)
    plain = order_state.SalebotAPIError("502", http_status=502)
    waits = [[trigger._backoff(n, settings, plain) for _ in range(50)] for n in (1, 2, 3)]
    for n, samples in enumerate(waits, 1):
        ceiling = 2 * 2 ** (n - 1)
        assert all(ceiling / 2 <= w <= ceiling for w in samples)
        assert len(set(samples)) > 1
    assert trigger._backoff(1, settings, error) == 30
    assert trigger._backoff(20, settings, plain) <= order_state.MAX_BACKOFF


def test_an_unreachable_service_is_polled_until_the_timeout(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    closed = emulator.base_url.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        json.dumps(
            {
                "conn_type": "salebot",
                "host": closed,
                "password": emulator.api_key,
                "extra": {"backoff_factor": 0},
            }
        ),
    )
    run_for(1.0, OrderStateTrigger(1, 104, poll_interval=0.05))
    printed = "".join(capfd.readouterr())
    assert "no reply: ConnectError" in printed
    assert "(GET /api/***/get_order_state)" in printed
    assert emulator.api_key not in printed


def test_triggers_on_one_connection_share_one_client_and_one_limiter(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, later: Callable[..., None]
) -> None:
    built: list[Any] = []
    original = order_state._new_client

    def counting(settings: Any) -> Any:
        built.append(settings.base_url)
        return original(settings)

    monkeypatch.setattr(order_state, "_new_client", counting)
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_OTHER", emulator.connection_json(rate_limit=100))
    deals = [new_deal(emulator) for _ in range(30)]
    for _, order_id in deals:
        later(0.6, move, emulator, order_id, 104)
    triggers = [OrderStateTrigger(c, 104, order_id=o, poll_interval=0.1) for c, o in deals[:25]]
    triggers += [
        OrderStateTrigger(c, 104, order_id=o, poll_interval=0.1, salebot_conn_id="salebot_other")
        for c, o in deals[25:]
    ]
    events = run(*triggers)
    assert [e["state_id"] for e in events] == [104] * 30
    assert len(built) == 2  # one per connection, for 25 and 5 triggers


def test_the_shared_limiter_keeps_many_triggers_within_the_rate(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(rate_limit=20))
    triggers = [
        OrderStateTrigger(c, 104, order_id=o, poll_interval=0)
        for c, o in (new_deal(salebot_emulator) for _ in range(10))
    ]
    run_for(1.0, *triggers)
    times = [r.time for r in salebot_emulator.requests]
    # At most the rate allows (a busy machine may make fewer: never more).
    assert 3 <= len(times) <= 21
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] > 0.045  # the median; one request may come late and the next on time


def test_without_rate_limit_triggers_poll_at_one_request_a_second(salebot_emulator: SalebotEmulator) -> None:
    triggers = [
        OrderStateTrigger(c, 104, order_id=o, poll_interval=0)
        for c, o in (new_deal(salebot_emulator) for _ in range(3))
    ]
    run_for(1.5, *triggers)
    times = [r.time for r in salebot_emulator.requests]
    assert 1 <= len(times) <= 2  # three waiting triggers, yet one request a second
    assert all(b - a > 0.95 for a, b in itertools.pairwise(times))


def test_first_polls_are_spread_by_jitter(emulator: SalebotEmulator) -> None:
    triggers = [
        OrderStateTrigger(c, 104, order_id=o, poll_interval=1.0)
        for c, o in (new_deal(emulator) for _ in range(10))
    ]
    run_for(0.9, *triggers)
    times = sorted(r.time for r in emulator.requests)
    assert 2 <= len(times) <= 10
    assert times[-1] - times[0] > 0.2


def test_a_429_pauses_every_trigger_on_the_connection(
    emulator: SalebotEmulator, later: Callable[..., None]
) -> None:
    # One request a second passes; any more is a 429 with Retry-After: 1.
    emulator.rate_limit(1, "get_order_state")
    deals = [new_deal(emulator) for _ in range(2)]
    for _, order_id in deals:
        later(2.5, move, emulator, order_id, 104)
    events = run(*(OrderStateTrigger(c, 104, order_id=o, poll_interval=0.01) for c, o in deals))
    assert [e["status"] for e in events] == ["success", "success"]
    records = emulator.requests
    refused = [r.time for r in records if r.status == 429]
    assert refused
    for at in refused:
        # Only requests already on their way when the 429 came back may arrive in the next second.
        assert not [r for r in records if at + 0.1 < r.time < at + 0.95], (
            at,
            [(r.time, r.status) for r in records],
        )
    assert len(records) <= 10


def test_a_pause_holds_back_a_request_that_already_had_its_turn() -> None:
    async def main() -> tuple[float, float]:
        limiter = order_state._RateLimiter(10)
        loop = asyncio.get_running_loop()
        await limiter.acquire()
        start = loop.time()
        waiting = asyncio.ensure_future(limiter.acquire())  # its turn comes in 0.1 s
        await asyncio.sleep(0.05)
        limiter.pause(0.5)
        await waiting
        held = loop.time() - start
        await limiter.acquire()
        return held, loop.time() - start

    held, next_one = asyncio.run(main())
    assert held >= 0.5
    assert next_one >= held + 0.09


def test_httpx_request_lines_never_show_the_key(
    emulator: SalebotEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    client_id, _ = new_deal(emulator, 104)
    run(OrderStateTrigger(client_id, 104, poll_interval=0))
    assert "/api/***/get_order_state" in caplog.text
    assert "HTTP Request: GET" in caplog.text
    assert emulator.api_key not in caplog.text


def test_waiters_cancelled_in_the_queue_leave_no_gap() -> None:
    async def main() -> float:
        limiter = order_state._RateLimiter(10)
        await limiter.acquire()
        first = limiter._last
        queued = [asyncio.ensure_future(limiter.acquire()) for _ in range(30)]
        await asyncio.sleep(0)
        for waiter in queued:
            waiter.cancel()  # as the triggerer cancels the triggers of cleared tasks
        await asyncio.gather(*queued, return_exceptions=True)
        await limiter.acquire()
        limiter.close()
        return limiter._last - first

    # The turn after the first is 0.1 s later, not 3 s (thirty cancelled turns).
    assert asyncio.run(main()) < 1.5


def test_a_429_pause_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    paused: list[float] = []
    monkeypatch.setattr(order_state._RateLimiter, "pause", lambda self, seconds: paused.append(seconds))
    error = order_state.SalebotAPIError("429", http_status=429, retry_after=10_000)

    async def main() -> None:
        trigger = OrderStateTrigger(1, 104, poll_interval=0)
        settings = order_state.ConnectionSettings("http://127.0.0.1:9", "k" * 10, backoff_factor=0)

        async def refused(*args: Any) -> Any:
            raise error

        monkeypatch.setattr(order_state, "_fetch", refused)
        task = asyncio.ensure_future(trigger._watch(settings))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert paused
    assert max(paused) == order_state.MAX_BACKOFF


def test_a_connection_that_cannot_be_read_for_a_while_is_waited_out(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    client_id, order_id = new_deal(emulator, 104)
    real = OrderStateTrigger._settings
    calls: list[int] = []

    async def busy_at_first(self: OrderStateTrigger) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("the API server is busy")  # AirflowRuntimeError is a plain Exception
        return await real(self)

    monkeypatch.setattr(OrderStateTrigger, "_settings", busy_at_first)
    monkeypatch.setattr(order_state, "MAX_BACKOFF", 0.05)
    (event,) = run(OrderStateTrigger(client_id, 104, order_id=order_id, poll_interval=0))
    assert event["status"] == "success"
    assert "Reading connection 'salebot_default' failed (2 in a row)" in "".join(capfd.readouterr())


def test_a_connection_edited_during_the_wait_is_used(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, order_id = new_deal(emulator, 104)
    weak = emulator.add_key(["clients_read"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        emulator.connection_json(rate_limit=100).replace(emulator.api_key, weak),
    )
    real = OrderStateTrigger._settings
    reads: list[int] = []

    async def rotated_after_first_read(self: OrderStateTrigger) -> Any:
        reads.append(1)
        if len(reads) == 2:  # the key was replaced in the connection meanwhile
            monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json(rate_limit=100))
        return await real(self)

    monkeypatch.setattr(OrderStateTrigger, "_settings", rotated_after_first_read)
    (event,) = run(OrderStateTrigger(client_id, 104, order_id=order_id, poll_interval=0))
    assert event["status"] == "success"
    assert [r.status for r in emulator.requests][-1] == 200


def test_an_error_event_names_the_error_class(emulator: SalebotEmulator) -> None:
    (event,) = run(OrderStateTrigger(999, 104, poll_interval=0))
    assert (event["status"], event["error"]) == ("error", "SalebotNotFoundError")


def test_triggers_that_start_together_share_one_read_of_the_connection(
    emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A triggerer that starts with many triggers: one read of the connection (an API server round
    # trip, and two to the supervisor to mask the key), not one per trigger.
    real = OrderStateTrigger._read_settings
    reads: list[int] = []
    gate = threading.Event()

    async def slow_read(self: OrderStateTrigger) -> Any:
        reads.append(1)
        await asyncio.to_thread(gate.wait, 10)  # every trigger asks while this read is under way
        return await real(self)

    monkeypatch.setattr(OrderStateTrigger, "_read_settings", slow_read)
    deals = [new_deal(emulator, 104) for _ in range(20)]
    threading.Timer(0.3, gate.set).start()
    events = run(*(OrderStateTrigger(c, 104, order_id=o, poll_interval=0) for c, o in deals))
    assert [e["status"] for e in events] == ["success"] * 20
    assert reads == [1]
    assert order_state._READS == {}  # done reads are forgotten: a later read is fresh


def test_a_trigger_cancelled_during_the_shared_read_does_not_cancel_it_for_the_others(
    emulator: SalebotEmulator,
) -> None:
    client_id, order_id = new_deal(emulator, 104)

    async def main() -> Any:
        leaving = OrderStateTrigger(client_id, 104, order_id=order_id, poll_interval=0)
        staying = OrderStateTrigger(client_id, 104, order_id=order_id, poll_interval=0)
        first = asyncio.ensure_future(leaving._settings())
        second = asyncio.ensure_future(staying._settings())
        await asyncio.sleep(0)
        first.cancel()
        return await second

    settings = asyncio.run(main())
    assert settings.base_url == emulator.base_url


def test_turns_handed_out_late_keep_the_schedule_but_never_come_closer_than_nine_tenths() -> None:
    limiter = order_state._RateLimiter(10)  # a turn every 0.1 s
    # Turns handed out a little late (a busy loop) are counted on schedule: the rate holds.
    last = 0.0
    for _ in range(100):
        due = last + limiter.interval
        last = limiter._taken(due, due + 0.005)
    assert last == pytest.approx(100 * limiter.interval)
    # However late a turn is handed out, the next one is at least 0.9 of a turn after it.
    for late in (0.0, 0.005, 0.01, 0.05, 0.3, 10.0):
        handed_out = 1.0 + late
        next_turn = limiter._taken(1.0, handed_out) + limiter.interval
        assert next_turn - handed_out >= 0.9 * limiter.interval - 1e-9


def test_the_limiters_backlog_counts_the_waiters_in_its_queue() -> None:
    async def main() -> tuple[float, float]:
        limiter = order_state._RateLimiter(10)
        await limiter.acquire()
        empty = limiter.backlog
        queued = [asyncio.ensure_future(limiter.acquire()) for _ in range(5)]
        await asyncio.sleep(0)
        waiting = limiter.backlog
        for waiter in queued:
            waiter.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        limiter.close()
        return empty, waiting

    empty, waiting = asyncio.run(main())
    assert empty == 0
    assert waiting == pytest.approx(0.5)
