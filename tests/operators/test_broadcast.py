from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators import BroadcastOperator
from tests.operators.conftest import StateStore, fault_on_call, sends


def broadcast(**kwargs: Any) -> BroadcastOperator:
    return BroadcastOperator(task_id="broadcast", **{"message": "Hello", **kwargs})


def recipients(emulator: Any) -> list[int]:
    return [item.client_id for item in emulator.outbox]


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({}, "got none"),
        ({"list_id": 1, "clients": [1]}, "got list_id, clients"),
        ({"clients": [1], "platform_ids": ["a"], "group_id": "bot"}, "got clients, platform_ids"),
        ({"platform_ids": ["42"]}, "'group_id' is required with 'platform_ids'"),
        ({"clients": [1], "group_id": "bot"}, "'group_id' applies only with 'platform_ids'"),
        ({"clients": [1], "message": None}, "give 'message', an attachment"),
        (
            {"clients": [1], "attachment_url": "https://x.test/a.png"},
            "'attachment_url' and 'attachment_type'",
        ),
        ({"clients": [1], "attachment_type": "gif", "attachment_url": "u"}, "attachment_type"),
        ({"clients": [1], "time_shift": 5, "send_time": "2026-12-01 10:00:00"}, "not both"),
        ({"clients": [1], "send_time": "tomorrow"}, "send_time"),
        ({"clients": [1], "shift": -1}, "shift"),
        ({"clients": [1], "chunk_size": 0}, "'chunk_size' must be a whole number from 1 to 5000"),
        ({"clients": [1], "chunk_size": 5001}, "chunk_size"),
        ({"clients": [1, "x7"]}, "clients[1]"),
        ({"clients": [1, True]}, "clients[1]"),
        ({"clients": {"a": 1}}, "'clients' must be a list, or the path of a file"),
        ({"platform_ids": ["1", ""], "group_id": "bot"}, "platform_ids[1]"),
    ],
)
def test_bad_input_is_refused_before_any_request(salebot_emulator: Any, kwargs: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match="Salebot broadcast") as raised:
        broadcast(**kwargs).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_a_bad_id_deep_in_a_file_is_named_by_its_line_before_anything_is_sent(
    salebot_emulator: Any, tmp_path: Any
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=1, with_deals=False)
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(map(str, ids[:1100])) + "\n12a\n")
    with pytest.raises(SalebotValidationError, match=r"line 1101 of .*ids.txt"):
        broadcast(clients=str(path)).execute({})
    assert salebot_emulator.requests == []


def test_a_missing_file_is_a_clear_error(salebot_emulator: Any, tmp_path: Any) -> None:
    with pytest.raises(SalebotValidationError, match=r"cannot read 'clients' from .*nothing.csv"):
        broadcast(clients=str(tmp_path / "nothing.csv")).execute({})
    assert salebot_emulator.requests == []


def test_a_csv_without_the_id_column_is_refused(salebot_emulator: Any, tmp_path: Any) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("id,name\n1,A\n")
    with pytest.raises(SalebotValidationError, match="has no 'client_id' column"):
        broadcast(clients=str(path)).execute({})


# ------------------------------------------------------------------------------ chunks


@pytest.mark.parametrize("count", [0, 1, 500, 501, 100_000])
def test_chunk_boundaries_each_id_once_in_order(salebot_emulator: Any, count: int) -> None:
    ids = salebot_emulator.seed_clients(count, seed=2, with_deals=False) if count else []
    result = broadcast(clients=ids).execute({})
    assert result == {"audience": "clients", "recipients": count, "requests": math.ceil(count / 500)}
    assert recipients(salebot_emulator) == ids
    assert [len(r.body["clients"]) for r in sends(salebot_emulator, "broadcast")] == [
        min(500, count - i) for i in range(0, count, 500)
    ]


def test_duplicates_are_dropped_and_the_order_kept(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(7, seed=3, with_deals=False)
    given = [ids[3], str(ids[1]), ids[3], ids[1], *ids, str(ids[6])]
    result = broadcast(clients=given, chunk_size=2).execute({})
    expected = [ids[3], ids[1], ids[0], ids[2], ids[4], ids[5], ids[6]]
    assert recipients(salebot_emulator) == expected
    assert result == {"audience": "clients", "recipients": 7, "requests": 4}


@pytest.mark.parametrize("form", ["txt", "csv", "jsonl", "jsonl-bare", "uri", "object-path", "json-text"])
def test_ids_from_a_file_or_text(salebot_emulator: Any, tmp_path: Any, form: str) -> None:
    ids = salebot_emulator.seed_clients(5, seed=4, with_deals=False)
    if form == "txt":
        source: Any = tmp_path / "ids.txt"
        source.write_text("\n".join(map(str, ids)) + "\n\n")
    elif form == "csv":
        source = tmp_path / "ids.csv"
        source.write_text("name,client_id\n" + "".join(f"n{i}, {i}\n" for i in ids))
    elif form == "jsonl":
        source = tmp_path / "ids.jsonl"
        source.write_text("".join(json.dumps({"client_id": i, "x": 1}) + "\n" for i in ids))
    elif form == "jsonl-bare":
        source = tmp_path / "ids.ndjson"
        source.write_text("".join(f"{i}\n" for i in ids))
    elif form == "uri":
        (tmp_path / "ids.txt").write_text("\n".join(map(str, ids)))
        source = f"file://{tmp_path}/ids.txt"
    elif form == "object-path":
        (tmp_path / "ids.csv").write_text("client_id\n" + "\n".join(map(str, ids)))
        source = ObjectStoragePath(f"file://{tmp_path}/ids.csv")
    else:
        source = json.dumps(ids)  # an XCom rendered by a plain template
    result = broadcast(
        clients=source if form in ("uri", "object-path", "json-text") else str(source)
    ).execute({})
    assert result["recipients"] == 5
    assert recipients(salebot_emulator) == ids


def test_platform_ids_of_one_bot(salebot_emulator: Any) -> None:
    first = salebot_emulator.add_client("111", client_type=1, group="shop_bot")
    second = salebot_emulator.add_client("222", client_type=1, group="shop_bot")
    result = broadcast(platform_ids=["222", 111, "222"], group_id="shop_bot", chunk_size=1).execute({})
    assert result == {"audience": "platform_ids", "recipients": 2, "requests": 2}
    assert recipients(salebot_emulator) == [second, first]


def test_a_list_is_one_request(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(3, seed=5, with_deals=False)
    list_id = salebot_emulator.add_list(clients=ids)
    assert broadcast(list_id=list_id).execute({}) == {"audience": "list", "recipients": None, "requests": 1}
    assert sorted(recipients(salebot_emulator)) == sorted(ids)


# ------------------------------------------------------------------------------ pacing


def test_with_shift_each_chunk_begins_when_the_previous_sequence_ends(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(250, seed=6, with_deals=False)
    broadcast(clients=ids, shift=0.5, chunk_size=100).execute({})
    due = [item.due_at for item in salebot_emulator.outbox]
    gaps = [b - a for a, b in itertools.pairwise(due)]
    # Never overlapping; a chunk begins late only by how long its request took to reach Salebot
    # (time_shift counts from then), never by another chunk's length.
    assert all(0.5 - 1e-6 <= gap < 30 for gap in gaps)
    assert due[-1] - due[0] >= 249 * 0.5 - 1e-6
    time_shifts = [r.body.get("time_shift") for r in sends(salebot_emulator, "broadcast")]
    assert time_shifts[0] is None
    assert [type(t) for t in time_shifts[1:]] == [int, int]
    assert 49 <= time_shifts[1] <= 50
    assert 99 <= time_shifts[2] <= 100


@pytest.mark.salebot_emulator(timezone="Europe/Moscow")
@pytest.mark.parametrize(
    "send_time",
    [
        "2031-03-01 10:00:00",
        dt.datetime(2031, 3, 1, 10, 0, 0),
        pendulum.datetime(2031, 3, 1, 7, 0, 0, tz="UTC"),
        "2031-03-01T07:00:00+00:00",
        "2031-03-01 07:00:00+00:00",
    ],
)
def test_send_time_forms_and_pacing_across_chunks(salebot_emulator: Any, send_time: Any) -> None:
    ids = salebot_emulator.seed_clients(30, seed=7, with_deals=False)
    broadcast(clients=ids, shift=2, chunk_size=10, send_time=send_time).execute({})
    start = pendulum.datetime(2031, 3, 1, 10, 0, 0, tz="Europe/Moscow").timestamp()
    assert [item.due_at - start for item in salebot_emulator.outbox] == [2.0 * i for i in range(30)]
    assert [r.body["send_time"] for r in sends(salebot_emulator, "broadcast")] == [
        "2031-03-01 10:00:00",
        "2031-03-01 10:00:20",
        "2031-03-01 10:00:40",
    ]


def test_without_shift_chunks_are_paced_at_salebots_own_pause(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(4, seed=8, with_deals=False)
    broadcast(clients=ids, chunk_size=2, time_shift=60).execute({})
    # The second chunk begins after the first's two messages at Salebot's default 0.2 s apart.
    assert [r.body["time_shift"] for r in sends(salebot_emulator, "broadcast")] == [60, 61]
    assert "shift" not in sends(salebot_emulator, "broadcast")[0].body


def test_a_slow_request_never_makes_chunks_overlap(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(30, seed=18, with_deals=False)
    op = broadcast(clients=ids, shift=0.2, chunk_size=10)
    fault_on_call(op.hook, "broadcast", salebot_emulator, 2, latency=2.0)
    op.execute({})
    due = [item.due_at for item in sorted(salebot_emulator.outbox, key=lambda item: item.due_at)]
    assert [item.client_id for item in sorted(salebot_emulator.outbox, key=lambda i: i.due_at)] == ids
    assert all(b - a >= 0.2 - 1e-6 for a, b in itertools.pairwise(due))


# ------------------------------------------------------------------------------ failures


def test_a_mid_way_502_without_task_state_fails_for_good_with_the_counts(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=9, with_deals=False)
    op = broadcast(clients=ids)
    fault_on_call(op.hook, "broadcast", salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    text = str(raised.value)
    assert "500 recipients sent, 500 in doubt (it may have been processed; not resent), 200 not sent" in text
    assert f"in doubt now: {ids[500]}, {ids[501]}," in text
    assert f"the first not sent is client id {ids[1000]}, number 1,001 of the input" in text
    assert "automatic retries are off" in text
    assert recipients(salebot_emulator) == ids[:1000]  # the 502 came after processing
    assert len(sends(salebot_emulator, "broadcast")) == 2  # the in-doubt chunk was not resent


def test_a_failure_before_anything_went_out_is_an_ordinary_error(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(3, seed=10, with_deals=False)
    salebot_emulator.inject(action="broadcast", times=1, status=400)
    with pytest.raises(SalebotError) as raised:
        broadcast(clients=ids).execute({})
    assert not isinstance(raised.value, AirflowFailException)
    assert recipients(salebot_emulator) == []


def test_a_mid_way_429_is_waited_out_and_completes(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(1500, seed=11, with_deals=False)
    op = broadcast(clients=ids)
    fault_on_call(op.hook, "broadcast", salebot_emulator, 2, status=429)
    assert op.execute({}) == {"audience": "clients", "recipients": 1500, "requests": 3}
    assert recipients(salebot_emulator) == ids
    assert [r.status for r in sends(salebot_emulator, "broadcast")] == [200, 429, 200, 200]


def test_a_retry_with_task_state_sends_only_the_rest_and_names_the_in_doubt(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=12, with_deals=False)
    first = broadcast(clients=ids)
    fault_on_call(first.hook, "broadcast", salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(SalebotError) as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)  # Airflow may retry: it is safe
    assert "A retry of this task sends only what was not sent" in str(raised.value)
    with pytest.raises(AirflowFailException) as ended:
        broadcast(clients=ids).execute({"task_state_store": store})
    assert "700 sent, 500 in doubt" in str(ended.value)
    assert f"client ids {ids[500]}, {ids[501]}" in str(ended.value)
    assert recipients(salebot_emulator) == ids  # the in-doubt chunk was processed once, never resent
    assert len(sends(salebot_emulator, "broadcast")) == 3
    # A third try (a clear) sends nothing more.
    with pytest.raises(AirflowFailException):
        broadcast(clients=ids).execute({"task_state_store": store})
    assert len(sends(salebot_emulator, "broadcast")) == 3


def test_a_chunk_in_flight_when_the_worker_died_is_never_resent(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(1000, seed=13, with_deals=False)
    op = broadcast(clients=ids)
    real = op.hook.broadcast
    recorded: list[Any] = []

    def killed_after_second(**kwargs: Any) -> Any:
        reply = real(**kwargs)
        if len(sends(salebot_emulator, "broadcast")) == 2:
            # SIGKILL after sending: nothing runs after this, so the record still says in flight.
            recorded.append(store.get("salebot_broadcast"))
            raise SystemExit("killed")
        return reply

    op.hook.broadcast = killed_after_second  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        op.execute({"task_state_store": store})
    assert recorded[0]["in_flight"] == [500, 1000]
    store.data["salebot_broadcast"] = recorded[0]  # as a SIGKILL would have left it
    with pytest.raises(AirflowFailException, match="500 sent, 500 in doubt"):
        broadcast(clients=ids).execute({"task_state_store": store})
    assert recipients(salebot_emulator) == ids
    assert len(sends(salebot_emulator, "broadcast")) == 2


def test_a_task_timeout_mid_send_leaves_the_chunk_in_doubt(salebot_emulator: Any, store: StateStore) -> None:
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    for context in ({"task_state_store": store}, {}):
        salebot_emulator.reset()
        ids = salebot_emulator.seed_clients(1000, seed=23, with_deals=False)
        op = broadcast(clients=ids)
        real = op.hook.broadcast

        def timed_out(real: Any = real, **kwargs: Any) -> Any:
            real(**kwargs)
            if len(sends(salebot_emulator, "broadcast")) == 2:
                raise AirflowTaskTimeout("execution_timeout")  # a BaseException
            return None

        op.hook.broadcast = timed_out  # type: ignore[method-assign]
        expected = AirflowTaskTimeout if context else AirflowFailException
        with pytest.raises(expected):
            op.execute(context)
    assert store.data["salebot_broadcast"]["in_doubt"] == [[500, 1000]]


def test_a_definite_refusal_is_retried_from_the_same_chunk(
    salebot_emulator: Any, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=14, with_deals=False)
    conn = salebot_emulator.connection_json(backoff_factor=0, max_retries=0)
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", conn)
    first = broadcast(clients=ids)
    fault_on_call(first.hook, "broadcast", salebot_emulator, 2, status=429)
    with pytest.raises(SalebotError, match="500 recipients sent, 0 in doubt"):
        first.execute({"task_state_store": store})
    assert broadcast(clients=ids).execute({"task_state_store": store})["requests"] == 4
    assert recipients(salebot_emulator) == ids


def test_a_retry_on_different_input_is_refused(salebot_emulator: Any, store: StateStore) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=15, with_deals=False)
    first = broadcast(clients=ids)
    fault_on_call(first.hook, "broadcast", salebot_emulator, 2, status=502)
    with pytest.raises(SalebotError):
        first.execute({"task_state_store": store})
    before = len(salebot_emulator.requests)
    with pytest.raises(SalebotValidationError, match="sent part of a different input"):
        broadcast(clients=ids[:-1]).execute({"task_state_store": store})
    with pytest.raises(SalebotValidationError, match="different input"):
        broadcast(clients=ids, message="Other text").execute({"task_state_store": store})
    assert len(salebot_emulator.requests) == before


def test_the_progress_record_stays_small(salebot_emulator: Any, store: StateStore) -> None:
    ids = salebot_emulator.seed_clients(20_000, seed=16, with_deals=False)
    broadcast(clients=ids, shift=0.1).execute({"task_state_store": store})
    assert len(json.dumps(store.data)) < 1000
    assert store.data["salebot_broadcast"]["counts"] == {"sent": 20_000}


def test_an_interruption_that_is_not_a_salebot_error_counts_as_in_doubt(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=19, with_deals=False)
    op = broadcast(clients=ids)
    real = op.hook.broadcast

    def timed_out(**kwargs: Any) -> Any:
        if len(sends(salebot_emulator, "broadcast")) == 1:
            real(**kwargs)
            raise TimeoutError("execution_timeout")  # e.g. AirflowTaskTimeout, after it went out
        return real(**kwargs)

    op.hook.broadcast = timed_out  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match="interrupted by TimeoutError"):
        op.execute({})
    salebot_emulator.reset()
    ids = salebot_emulator.seed_clients(1200, seed=19, with_deals=False)
    op = broadcast(clients=ids)
    op.hook.broadcast = timed_out  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="500 recipients sent, 500 in doubt"):
        op.execute({"task_state_store": store})
    with pytest.raises(AirflowFailException, match="700 sent, 500 in doubt"):
        broadcast(clients=ids).execute({"task_state_store": store})
    assert recipients(salebot_emulator) == ids


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any) -> None:
    ids = salebot_emulator.seed_clients(600, seed=17, with_deals=False)
    op = broadcast(clients=ids)
    fault_on_call(op.hook, "broadcast", salebot_emulator, 2, status=502)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value)):
        assert salebot_emulator.api_key not in text


# ------------------------------------------------------------------------------ parse time


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="give 'message', an attachment"):
        BroadcastOperator(task_id="b", clients=[1, 2])
    with pytest.raises(SalebotValidationError, match=r"clients\[1\]"):
        BroadcastOperator(task_id="b", clients=[1, "two"], message="hi")
    with pytest.raises(SalebotValidationError, match="chunk_size"):
        BroadcastOperator(task_id="b", list_id=1, message="hi", chunk_size=-1)


def test_templated_arguments_are_checked_when_the_task_runs(salebot_emulator: Any) -> None:
    op = BroadcastOperator(
        task_id="b",
        clients="{{ ti.xcom_pull('find') }}",
        message="{{ params.text }}",
        send_time="{{ data_interval_end }}",
        chunk_size="{{ params.size }}",
    )
    op.clients, op.message, op.send_time, op.chunk_size = "[1, 2]", "  ", "2030-01-01", "2"  # as rendered
    with pytest.raises(SalebotValidationError, match="'message' must not be empty"):
        op.execute({})
    assert salebot_emulator.requests == []


def test_ids_with_leading_zeros_are_one_client(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(2, seed=20, with_deals=False)
    result = broadcast(clients=[ids[0], f"00{ids[0]}", ids[1]]).execute({})
    assert result["recipients"] == 2
    assert recipients(salebot_emulator) == ids


def test_a_python_list_rendered_as_text_is_read(salebot_emulator: Any) -> None:
    first = salebot_emulator.add_client("111", client_type=1, group="shop_bot")
    op = broadcast(platform_ids="{{ ti.xcom_pull('find') }}", group_id="shop_bot")
    op.platform_ids = "['111']"  # a plain template renders a list of strings with single quotes
    assert op.execute({})["recipients"] == 1
    assert recipients(salebot_emulator) == [first]
    op.platform_ids = "[1, 2"
    with pytest.raises(SalebotValidationError, match="neither a JSON list nor a Python literal"):
        op.execute({})


def test_a_hundred_thousand_ids_from_a_file(salebot_emulator: Any, tmp_path: Any) -> None:
    ids = salebot_emulator.seed_clients(100_000, seed=21, with_deals=False)
    path = tmp_path / "ids.csv"
    path.write_text("client_id\n" + "\n".join(map(str, ids)) + "\n")
    assert broadcast(clients=f"file://{path}").execute({})["requests"] == 200
    assert recipients(salebot_emulator) == ids


def test_a_clear_after_success_sends_nothing_again(
    salebot_emulator: Any, store: StateStore, caplog: Any
) -> None:
    ids = salebot_emulator.seed_clients(3, seed=22, with_deals=False)
    broadcast(clients=ids).execute({"task_state_store": store})
    assert broadcast(clients=ids).execute({"task_state_store": store})["recipients"] == 3
    assert len(sends(salebot_emulator, "broadcast")) == 1
    assert "nothing is sent again" in caplog.text


def test_told_to_stop_it_starts_no_further_chunk_and_a_retry_sends_the_rest(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(5, seed=9, with_deals=False)
    first = BroadcastOperator(task_id="b", clients=ids, message="Hi", chunk_size=2)
    real = first.hook.broadcast

    def killed_meanwhile(**kwargs: Any) -> Any:
        first.on_kill()  # SIGTERM while the first request is out: Airflow calls on_kill
        return real(**kwargs)

    first.hook.broadcast = killed_meanwhile  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="told to stop") as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert "2 recipients sent, 0 in doubt" in str(raised.value)
    retry = BroadcastOperator(task_id="b", clients=ids, message="Hi", chunk_size=2)
    retry.execute({"task_state_store": store})
    assert [i.client_id for i in salebot_emulator.outbox] == ids
