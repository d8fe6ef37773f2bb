from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from salebot_provider.exceptions import SalebotAPIError, SalebotValidationError
from salebot_provider.operators.broadcast import BroadcastOperator
from salebot_provider.operators.find import FindClientsOperator
from tests.operators.conftest import sends


class TaskInstance:
    """What the operator uses of a task instance: ``xcom_push``."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def find(**kwargs: Any) -> FindClientsOperator:
    return FindClientsOperator(task_id="find", **kwargs)


def clients_with(emulator: Any, **variables: Any) -> list[int]:
    return sorted(
        cid
        for cid in emulator.state.clients
        if all(emulator.client(cid).variables.get(k) == v for k, v in variables.items())
    )


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"q": {}}, "parameter 'q' must not be empty"),
        ({"q": [1]}, "parameter 'q' must be a mapping"),
        ({"q": {"": 1}}, "has a key that is not a non-empty string"),
        ({"q": {"a": {"_in": 1}}}, "q['a']['_in'] must be a list of values"),
        ({"q": {"a": {"_gt": 1}}}, "q['a'] as a mapping takes _in, _not_in, _not; got _gt"),
        ({"q": {"a": {}}}, "q['a'] as a mapping takes _in, _not_in, _not; got none"),
        ({"q": "{'a': 1"}, "'q' is text that is neither a JSON object nor a Python literal"),
        ({"q": {"a": 1}, "search_in": "deal"}, "'search_in' must be one of order"),
        ({"q": {"a": 1}, "include_all": "maybe"}, "'include_all' must be True or False"),
    ],
)
def test_bad_input_is_refused_before_any_request(salebot_emulator: Any, kwargs: Any, named: str) -> None:
    op = find(q={"a": 1})
    for name, value in kwargs.items():
        setattr(op, name, value)  # as a template would render it: checked when the task runs
    with pytest.raises(SalebotValidationError, match="Salebot find_clients") as raised:
        op.execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="_in"):
        FindClientsOperator(task_id="f", q={"city": {"_in": "Москва"}})
    with pytest.raises(SalebotValidationError, match="search_in"):
        FindClientsOperator(task_id="f", q={"a": 1}, search_in="orders")
    with pytest.raises(SalebotValidationError, match="include_all"):
        FindClientsOperator(task_id="f", q={"a": 1}, include_all=1)
    FindClientsOperator(
        task_id="f", q="{{ params.q }}", search_in="{{ params.where }}", include_all="{{ x }}"
    )


# ------------------------------------------------------------------------------ results


@pytest.mark.salebot_emulator(clients=300, seed=3)
def test_the_ids_are_the_xcom_and_the_count_its_own_key(salebot_emulator: Any) -> None:
    expected = clients_with(salebot_emulator, segment="vip")
    ti = TaskInstance()
    result = find(q={"segment": "vip"}).execute({"ti": ti})
    assert expected
    assert result == expected
    assert ti.pushed == {"count": len(expected)}
    assert [r.body for r in sends(salebot_emulator, "find_clients")] == [
        {"q": {"segment": "vip"}, "include_all": True}
    ]


@pytest.mark.salebot_emulator(clients=300, seed=4)
def test_conditions_any_one_and_deal_variables(salebot_emulator: Any) -> None:
    vip_or_kazan = sorted(
        set(clients_with(salebot_emulator, segment="vip"))
        | set(clients_with(salebot_emulator, city="Казань"))
    )
    result = find(q={"segment": "vip", "city": {"_in": ["Казань"]}}, include_all="false").execute({})
    assert result == vip_or_kazan
    client = salebot_emulator.seed_clients(1, seed=5, with_deals=False)[0]
    for _ in range(2):  # two matching deals
        salebot_emulator.state.add_deal(client).variables["stage"] = "paid"
    assert find(q={"stage": "paid"}, search_in="order").execute({}) == [client]
    assert sends(salebot_emulator, "find_clients")[-1].body["search_in"] == "order"


def test_nothing_found_is_an_empty_list(salebot_emulator: Any) -> None:
    ti = TaskInstance()
    assert find(q={"city": "Nowhere"}).execute({"ti": ti}) == []
    assert ti.pushed == {"count": 0}


@pytest.mark.salebot_emulator(clients=50, seed=6)
@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl", ""])
def test_output_path_holds_a_file_broadcast_reads(salebot_emulator: Any, tmp_path: Any, suffix: str) -> None:
    expected = clients_with(salebot_emulator, segment="regular")
    out = tmp_path / f"found{suffix}"
    result = find(q={"segment": "regular"}, output_path=f"file://{out}").execute({})
    assert result == expected
    BroadcastOperator(task_id="b", clients=str(out), message="Hi").execute({})
    assert [item.client_id for item in salebot_emulator.outbox] == expected


@pytest.mark.salebot_emulator(clients=10_001, seed=7)
def test_more_than_ten_thousand_go_to_output_path_only(salebot_emulator: Any, tmp_path: Any) -> None:
    out = ObjectStoragePath(f"file://{tmp_path}/found.txt")
    ti = TaskInstance()
    result = find(q={"segment": {"_not": "none"}}, output_path=out).execute({"ti": ti})
    ids = sorted(salebot_emulator.state.clients)
    assert result == str(out)
    assert ti.pushed == {"count": 10_001}
    assert (tmp_path / "found.txt").read_text() == "".join(f"{i}\n" for i in ids)


@pytest.mark.salebot_emulator(clients=10_001, seed=7)
def test_more_than_ten_thousand_without_output_path_fails_naming_it(salebot_emulator: Any) -> None:
    with pytest.raises(AirflowFailException, match=r"10,001 clients found.*give 'output_path'"):
        find(q={"segment": {"_not": "none"}}).execute({})
    assert len(sends(salebot_emulator, "find_clients")) == 1


def test_exactly_ten_thousand_still_fit_the_xcom(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(10_000, seed=8, with_deals=False)
    result = find(q={"segment": {"_not": "none"}}).execute({})
    assert result == sorted(ids)


def test_the_search_is_retried_as_a_read(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(5, seed=9, with_deals=False)
    salebot_emulator.inject("find_clients", status=502, times=1)
    assert find(q={"segment": {"_not": "none"}}).execute({}) == sorted(ids)
    assert [r.status for r in sends(salebot_emulator, "find_clients")] == [502, 200]


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        ([1, 2], "replied with a JSON list where an object with 'client_ids' was expected"),
        ({"status": "success"}, "without a 'client_ids' list (got NoneType)"),
        ({"status": "success", "client_ids": {"1": 2}}, "without a 'client_ids' list (got dict)"),
        ({"status": "success", "client_ids": [1, "x"]}, "client_ids[1] that is not an id"),
        ({"status": "success", "client_ids": [1, None]}, "client_ids[1] that is not an id"),
        ({"status": "success", "client_ids": [True]}, "client_ids[0] that is not an id"),
    ],
)
def test_a_reply_of_another_shape_is_an_api_error(salebot_emulator: Any, reply: Any, named: str) -> None:
    op = find(q={"a": 1})
    op.hook.find_clients = lambda *args, **kwargs: reply  # type: ignore[method-assign]
    with pytest.raises(SalebotAPIError) as raised:
        op.execute({})
    assert named in str(raised.value)


def test_a_client_named_twice_is_one_id_in_the_order_given(salebot_emulator: Any) -> None:
    op = find(q={"a": 1})
    reply = {"status": "success", "client_ids": [30, "10", 30, 20, 10]}  # e.g. once per matching deal
    op.hook.find_clients = lambda *args, **kwargs: reply  # type: ignore[method-assign]
    assert op.execute({}) == [30, 10, 20]


def test_a_refusal_is_an_api_error(salebot_emulator: Any) -> None:
    salebot_emulator.seed_clients(3, seed=10, with_deals=False)
    with pytest.raises(SalebotAPIError, match="Something went wrong"):
        find(q={"segment": 5}).execute({})  # the vendor compares numbers only when all are numbers


def test_q_rendered_as_text_is_read(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(20, seed=11, with_deals=False)
    op = find(q="{{ params.q }}")
    op.q = json.dumps({"segment": {"_in": ["vip", "new", "regular", "lapsed"]}})
    assert op.execute({}) == sorted(ids)
    op.q = "{'segment': {'_not_in': ['vip', 'new', 'regular', 'lapsed']}}"
    assert op.execute({}) == []


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any) -> None:
    salebot_emulator.inject("find_clients", status=400, times=1)
    with pytest.raises(SalebotAPIError) as raised:
        find(q={"a": 1}).execute({})
    result = find(q={"a": 1}).execute({})
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value), json.dumps(result)):
        assert salebot_emulator.api_key not in text
