from __future__ import annotations

import json
import math
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators.lists import AddToListOperator, RemoveFromListOperator
from tests.operators.conftest import StateStore, fault_on_call, sends

LIST = 5001


def add(**kwargs: Any) -> AddToListOperator:
    return AddToListOperator(task_id="add", **{"list_id": LIST, **kwargs})


def remove(**kwargs: Any) -> RemoveFromListOperator:
    return RemoveFromListOperator(task_id="remove", **{"list_id": LIST, **kwargs})


def members(emulator: Any, list_id: int = LIST) -> list[int]:
    return list(emulator.state.lists[list_id])


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize("make", [add, remove])
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"list_id": "x1", "clients": [1]}, "'list_id' must be an integer id"),
        ({"list_id": -1, "clients": [1]}, "'list_id' must be a non-negative id"),
        ({"clients": [1], "chunk_size": 0}, "'chunk_size' must be a whole number from 1 to 5000"),
        ({"clients": [1], "chunk_size": "5001"}, "chunk_size"),
        ({"clients": [1, "x7"]}, "clients[1]"),
        ({"clients": [1, True]}, "clients[1]"),
        ({"clients": {"a": 1}}, "'clients' must be a list, or the path of a file"),
        ({"clients": None}, "'clients' must be a list, or the path of a file"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    salebot_emulator: Any, make: Any, kwargs: Any, named: str
) -> None:
    salebot_emulator.add_list(LIST)
    op = make(clients=[1])
    for name, value in kwargs.items():
        setattr(op, name, value)  # as a template would render it: checked when the task runs
    with pytest.raises(SalebotValidationError, match=f"Salebot {op.action}") as raised:
        op.execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="'list_id' must be an integer id"):
        AddToListOperator(task_id="a", list_id="one", clients=[1])
    with pytest.raises(SalebotValidationError, match=r"clients\[1\]"):
        RemoveFromListOperator(task_id="r", list_id=1, clients=[1, "two"])
    with pytest.raises(SalebotValidationError, match="chunk_size"):
        AddToListOperator(task_id="a", list_id=1, clients=[1], chunk_size=-1)
    # Templates, XComs and files wait for the task.
    AddToListOperator(task_id="a", list_id="{{ params.list }}", clients="/data/ids.csv", chunk_size="{{ x }}")


def test_a_bad_id_deep_in_a_file_is_named_by_its_line(salebot_emulator: Any, tmp_path: Any) -> None:
    salebot_emulator.add_list(LIST)
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(str(40_000_000 + i) for i in range(700)) + "\n12a\n")
    with pytest.raises(SalebotValidationError, match=r"line 701 of .*ids.txt"):
        add(clients=str(path)).execute({})
    assert salebot_emulator.requests == []


# ------------------------------------------------------------------------------ chunks


@pytest.mark.parametrize("count", [0, 1, 500, 501])
def test_chunk_boundaries_each_id_once_in_order(salebot_emulator: Any, count: int) -> None:
    ids = salebot_emulator.seed_clients(count, seed=30, with_deals=False) if count else []
    salebot_emulator.add_list(LIST)
    result = add(clients=ids).execute({})
    assert result == {"list_id": LIST, "clients": count, "requests": math.ceil(count / 500)}
    assert members(salebot_emulator) == ids
    bodies = [r.body for r in sends(salebot_emulator, "add_to_list")]
    assert [len(b["clients"]) for b in bodies] == [min(500, count - i) for i in range(0, count, 500)]
    assert all(b["list_id"] == LIST for b in bodies)


def test_remove_takes_the_clients_out_and_leaves_the_others(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(7, seed=31, with_deals=False)
    salebot_emulator.add_list(LIST, clients=ids)
    result = remove(clients=[ids[1], str(ids[3]), ids[1], f"00{ids[5]}"], chunk_size=2).execute({})
    assert result == {"list_id": LIST, "clients": 3, "requests": 2}
    assert members(salebot_emulator) == [ids[0], ids[2], ids[4], ids[6]]
    assert [r.body["clients"] for r in sends(salebot_emulator, "remove_from_list")] == [
        [ids[1], str(ids[3])],
        [f"00{ids[5]}"],
    ]


@pytest.mark.parametrize("form", ["txt", "csv", "jsonl", "uri", "json-text", "rendered-list-id"])
def test_ids_from_a_file_or_text(salebot_emulator: Any, tmp_path: Any, form: str) -> None:
    ids = salebot_emulator.seed_clients(5, seed=32, with_deals=False)
    salebot_emulator.add_list(LIST)
    source: Any
    if form == "txt":
        source = tmp_path / "ids.txt"
        source.write_text("\n".join(map(str, ids)) + "\n\n")
    elif form == "csv":
        source = tmp_path / "ids.csv"
        source.write_text("name,client_id\n" + "".join(f"n{i},{i}\n" for i in ids))
    elif form == "jsonl":
        source = tmp_path / "ids.jsonl"
        source.write_text("".join(json.dumps({"client_id": i}) + "\n" for i in ids))
    elif form == "uri":
        (tmp_path / "ids.txt").write_text("\n".join(map(str, ids)))
        source = f"file://{tmp_path}/ids.txt"
    else:
        source = json.dumps(ids)
    op = add(clients=str(source))
    if form == "rendered-list-id":
        op.list_id = str(LIST)  # a plain template renders the number as text
    assert op.execute({}) == {"list_id": LIST, "clients": 5, "requests": 1}
    assert members(salebot_emulator) == ids


def test_an_unknown_list_is_an_ordinary_error_with_nothing_sent(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(3, seed=33, with_deals=False)
    with pytest.raises(SalebotError, match="List 5001 not found") as raised:
        add(clients=ids).execute({})
    assert not isinstance(raised.value, AirflowFailException)  # nothing went out: Airflow may retry


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("make", [add, remove])
def test_a_mid_way_502_without_task_state_fails_for_good_with_the_counts(
    salebot_emulator: Any, make: Any
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=34, with_deals=False)
    salebot_emulator.add_list(LIST, clients=[] if make is add else ids)
    op = make(clients=ids)
    fault_on_call(op.hook, op.action, salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    text = str(raised.value)
    assert f"Salebot {op.action} stopped part-way" in text
    assert "500 clients sent, 500 in doubt (it may have been processed; not resent), 200 not sent" in text
    assert f"in doubt now: {ids[500]}, {ids[501]}," in text
    assert f"the first not sent is client id {ids[1000]}, number 1,001 of the input" in text
    assert "automatic retries are off" in text
    # The 502 came after the chunk was processed; it was not resent, and the last chunk not sent.
    assert members(salebot_emulator) == (ids[:1000] if make is add else ids[1000:])
    assert len(sends(salebot_emulator, op.action)) == 2


def test_a_retry_with_task_state_sends_only_the_rest_and_names_the_in_doubt(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=35, with_deals=False)
    salebot_emulator.add_list(LIST)
    first = add(clients=ids)
    fault_on_call(first.hook, "add_to_list", salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(SalebotError) as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)  # Airflow may retry: it is safe
    assert "500 clients sent, 500 in doubt" in str(raised.value)
    assert "A retry of this task sends only what was not sent" in str(raised.value)
    with pytest.raises(AirflowFailException) as ended:
        add(clients=ids).execute({"task_state_store": store})
    assert "700 sent, 500 in doubt" in str(ended.value)
    assert f"client ids {ids[500]}, {ids[501]}" in str(ended.value)
    bodies = [r.body["clients"] for r in sends(salebot_emulator, "add_to_list")]
    assert bodies == [ids[:500], ids[500:1000], ids[1000:]]  # the in-doubt chunk never resent
    assert members(salebot_emulator) == ids
    assert store.data["salebot_add_to_list"]["counts"] == {"sent": 700}
    # A further clear sends nothing more.
    with pytest.raises(AirflowFailException):
        add(clients=ids).execute({"task_state_store": store})
    assert len(sends(salebot_emulator, "add_to_list")) == 3


def test_a_definite_refusal_mid_way_is_resent_by_the_retry(
    salebot_emulator: Any, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=36, with_deals=False)
    salebot_emulator.add_list(LIST)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(backoff_factor=0, max_retries=0)
    )
    first = add(clients=ids)
    fault_on_call(first.hook, "add_to_list", salebot_emulator, 2, status=429)
    with pytest.raises(SalebotError, match="500 clients sent, 0 in doubt") as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert add(clients=ids).execute({"task_state_store": store}) == {
        "list_id": LIST,
        "clients": 1200,
        "requests": 4,
    }
    assert members(salebot_emulator) == ids


def test_a_retry_on_different_input_is_refused(salebot_emulator: Any, store: StateStore) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=37, with_deals=False)
    salebot_emulator.add_list(LIST)
    salebot_emulator.add_list(LIST + 1)
    first = add(clients=ids)
    fault_on_call(first.hook, "add_to_list", salebot_emulator, 2, status=502)
    with pytest.raises(SalebotError):
        first.execute({"task_state_store": store})
    before = len(salebot_emulator.requests)
    with pytest.raises(SalebotValidationError, match="sent part of a different input"):
        add(clients=ids[:-1]).execute({"task_state_store": store})
    with pytest.raises(SalebotValidationError, match="different input"):
        add(clients=ids, list_id=LIST + 1).execute({"task_state_store": store})
    assert len(salebot_emulator.requests) == before


def test_an_interruption_that_is_not_a_salebot_error_counts_as_in_doubt(
    salebot_emulator: Any, store: StateStore
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=38, with_deals=False)
    salebot_emulator.add_list(LIST)
    op = add(clients=ids)
    real = op.hook.add_to_list

    def timed_out(list_id: Any, clients: Any) -> Any:
        reply = real(list_id, clients)
        if len(sends(salebot_emulator, "add_to_list")) == 1:
            raise TimeoutError("execution_timeout")  # e.g. AirflowTaskTimeout, after it went out
        return reply

    op.hook.add_to_list = timed_out  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="0 clients sent, 500 in doubt") as raised:
        op.execute({"task_state_store": store})
    assert "interrupted by TimeoutError" in str(raised.value)
    with pytest.raises(AirflowFailException, match="700 sent, 500 in doubt"):
        add(clients=ids).execute({"task_state_store": store})
    assert members(salebot_emulator) == ids


def test_the_progress_record_stays_small(salebot_emulator: Any, store: StateStore) -> None:
    ids = salebot_emulator.seed_clients(20_000, seed=39, with_deals=False)
    salebot_emulator.add_list(LIST)
    assert add(clients=ids).execute({"task_state_store": store})["requests"] == 40
    assert len(json.dumps(store.data)) < 1000
    assert store.data["salebot_add_to_list"]["counts"] == {"sent": 20_000}


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any) -> None:
    ids = salebot_emulator.seed_clients(600, seed=40, with_deals=False)
    salebot_emulator.add_list(LIST)
    op = add(clients=ids)
    fault_on_call(op.hook, "add_to_list", salebot_emulator, 2, status=502)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value)):
        assert salebot_emulator.api_key not in text
