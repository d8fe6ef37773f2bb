from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators import LoadClientsOperator
from tests.operators.conftest import StateStore, fault_on_call, sends


def telegram(n: int, start: int = 1000) -> list[dict[str, Any]]:
    return [{"platform_id": start + i, "group_id": "shop_bot", "client_type": 1} for i in range(n)]


def load(**kwargs: Any) -> LoadClientsOperator:
    return LoadClientsOperator(task_id="load", **kwargs)


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({"group_id": "shop_bot", "client_type": 1}, "lacks 'platform_id'"),
        ({"platform_id": 1, "client_type": 1}, "lacks 'group_id'"),
        ({"platform_id": 1, "group_id": "shop_bot"}, "lacks 'client_type'"),
        ({"platform_id": 1, "group_id": "shop_bot", "client_type": "one"}, "clients[2].client_type"),
        ({"platform_id": 1, "group_id": "shop_bot", "client_type": 1.5}, "clients[2].client_type"),
        ({"platform_id": 1, "group_id": "", "client_type": 1}, "may be empty only for client_type 13"),
        ({"platform_id": "", "group_id": "shop_bot", "client_type": 1}, "clients[2].platform_id"),
        ("79990001122", "must be a dict"),
    ],
)
def test_a_bad_row_is_named_before_any_request(salebot_emulator: Any, row: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match="Salebot load_clients") as raised:
        load(clients=[*telegram(2), row]).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_each_row_ends_loaded_with_its_id_or_failed_with_the_reason(salebot_emulator: Any) -> None:
    rows = [
        *telegram(3),
        {"platform_id": 7, "group_id": "nope", "client_type": 1},
        {"platform_id": "79990001122@s.whatsapp.net", "group_id": "wa_main", "client_type": 6},
        {"platform_id": "79990003344", "group_id": "wa_main", "client_type": 6},
        {"platform_id": "5551", "group_id": "", "client_type": 13},
    ]
    result = load(clients=rows, chunk_size=2, fail_on_item_error=False).execute({})
    assert result["loaded"] == 6
    assert result["failed"] == 1
    assert result["failures"] == [
        {"item": rows[3], "reason": "No connected channel with group_id nope and this client_type"}
    ]
    ids = result["client_ids"]
    assert len(set(ids)) == 6
    assert [salebot_emulator.client(i).platform_id for i in ids] == [
        "1000",
        "1001",
        "1002",
        "79990001122",
        "79990003344",
        "5551",
    ]
    assert result["path"] is None
    assert len(sends(salebot_emulator, "load_clients")) == 4


def test_a_failed_row_fails_the_task_after_every_chunk(salebot_emulator: Any) -> None:
    rows = [{"platform_id": 7, "group_id": "nope", "client_type": 1}, *telegram(4)]
    with pytest.raises(AirflowFailException, match="4 loaded, 1 failed, 0 in doubt"):
        load(clients=rows, chunk_size=2).execute({})
    assert len(sends(salebot_emulator, "load_clients")) == 3


def test_csv_and_jsonl_files_are_read(salebot_emulator: Any, tmp_path: Any) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text("platform_id,group_id,client_type,name\n5551,,13,A\n1200,shop_bot, 1,B\n")
    jsonl = tmp_path / "leads.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in telegram(3, start=3000)) + "\n")
    from_csv = load(clients=str(csv)).execute({})
    from_jsonl = load(clients=f"file://{jsonl}").execute({})
    assert (from_csv["loaded"], from_jsonl["loaded"]) == (2, 3)
    bodies = [r.body for r in sends(salebot_emulator, "load_clients")]
    assert bodies[0] == [
        {"platform_id": "5551", "group_id": "", "client_type": 13},
        {"platform_id": "1200", "group_id": "shop_bot", "client_type": 1},
    ]


def test_a_bad_csv_row_is_named_by_its_line(salebot_emulator: Any, tmp_path: Any) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text("platform_id,group_id,client_type\n1,shop_bot,1\n2,shop_bot,x\n")
    with pytest.raises(SalebotValidationError, match=r"line 3 of .*leads.csv"):
        load(clients=str(csv)).execute({})
    assert salebot_emulator.requests == []


def test_a_file_of_another_kind_is_refused(salebot_emulator: Any, tmp_path: Any) -> None:
    with pytest.raises(SalebotValidationError, match=r"must be a \.jsonl or \.csv file"):
        load(clients=str(tmp_path / "leads.txt")).execute({})


def test_the_outcomes_go_to_output_path(salebot_emulator: Any, tmp_path: Any) -> None:
    rows = [*telegram(2), {"platform_id": 7, "group_id": "nope", "client_type": 1}]
    out = f"file://{tmp_path}/loaded.jsonl"
    result = load(clients=rows, output_path=out, fail_on_item_error=False).execute({})
    lines = [json.loads(line) for line in (tmp_path / "loaded.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["loaded", "loaded", "failed"]
    assert [line["item"] for line in lines] == rows
    assert [line["id"] for line in lines][:2] == result["client_ids"]
    assert lines[2]["id"] is None
    assert result["path"] == out


def test_more_than_ten_thousand_rows_need_output_path(salebot_emulator: Any, tmp_path: Any) -> None:
    rows = telegram(10_001)
    with pytest.raises(SalebotValidationError, match="give 'output_path'"):
        load(clients=rows).execute({})
    assert salebot_emulator.requests == []
    result = load(clients=rows, output_path=str(tmp_path / "out.jsonl")).execute({})
    assert (result["loaded"], result["client_ids"]) == (10_001, None)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 10_001


def test_a_chunk_that_fails_outright_stops_the_task_naming_the_rows(
    salebot_emulator: Any, tmp_path: Any
) -> None:
    op = load(clients=telegram(5), chunk_size=2, output_path=str(tmp_path / "out.jsonl"))
    fault_on_call(op.hook, "load_clients", salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    assert "2 rows loaded, 0 failed; rows 3-4 in doubt; row 5 not tried" in str(raised.value)
    statuses = [json.loads(line)["status"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert statuses == ["loaded", "loaded", "in_doubt", "in_doubt", "not_tried"]


def test_a_retry_loads_only_the_rows_not_tried_and_keeps_every_id(
    salebot_emulator: Any, store: StateStore
) -> None:
    rows = telegram(5)
    first = load(clients=rows, chunk_size=2)
    fault_on_call(first.hook, "load_clients", salebot_emulator, 2, status=400)
    with pytest.raises(SalebotError, match="rows 3-5 not tried") as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    result = load(clients=rows, chunk_size=2).execute({"task_state_store": store})
    assert result["loaded"] == 5
    assert len(set(result["client_ids"])) == 5
    assert [salebot_emulator.client(i).platform_id for i in result["client_ids"]] == [
        str(1000 + i) for i in range(5)
    ]
    assert [len(r.body) for r in sends(salebot_emulator, "load_clients") if r.status == 200] == [2, 2, 1]
    assert sorted(c.platform_id for c in salebot_emulator.state.clients.values()) == [
        str(1000 + i) for i in range(5)
    ]


def test_a_retry_never_reloads_rows_in_doubt(salebot_emulator: Any, store: StateStore) -> None:
    rows = telegram(6)
    first = load(clients=rows, chunk_size=2)
    fault_on_call(first.hook, "load_clients", salebot_emulator, 2, status=504, processed=True)
    with pytest.raises(SalebotError, match="rows 3-4 in doubt; rows 5-6 not tried"):
        first.execute({"task_state_store": store})
    with pytest.raises(AirflowFailException, match="4 loaded, 0 failed, 2 in doubt"):
        load(clients=rows, chunk_size=2).execute({"task_state_store": store})
    assert len(sends(salebot_emulator, "load_clients")) == 3


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match=r"clients\[1\]' lacks 'client_type'"):
        LoadClientsOperator(task_id="l", clients=[*telegram(1), {"platform_id": 1, "group_id": "g"}])
    with pytest.raises(SalebotValidationError, match="chunk_size"):
        LoadClientsOperator(task_id="l", clients="leads.csv", chunk_size=0)
    LoadClientsOperator(task_id="l", clients="{{ params.leads }}", chunk_size="{{ params.size }}")


@pytest.mark.parametrize("count", [0, 1, 500, 501])
def test_chunk_boundaries(salebot_emulator: Any, count: int) -> None:
    result = load(clients=telegram(count)).execute({})
    assert result["loaded"] == count
    assert len(set(result["client_ids"])) == count
    assert [len(r.body) for r in sends(salebot_emulator, "load_clients")] == [
        min(500, count - i) for i in range(0, count, 500)
    ]


def test_fail_on_item_error_rendered_as_text(salebot_emulator: Any) -> None:
    rows = [{"platform_id": 7, "group_id": "nope", "client_type": 1}]
    op = load(clients=rows, fail_on_item_error="{{ params.strict }}")
    op.fail_on_item_error = "False"  # as rendered
    assert op.execute({})["failed"] == 1
    op.fail_on_item_error = "maybe"
    with pytest.raises(SalebotValidationError, match="'fail_on_item_error' must be True or False"):
        op.execute({})


def test_a_reply_that_does_not_echo_a_row_leaves_it_in_doubt(salebot_emulator: Any) -> None:
    op = load(clients=telegram(3))
    real = op.hook.load_clients

    def reordered(chunk: Any) -> Any:
        reply = real(chunk)
        reply["items"] = [reply["items"][0], reply["items"][2]]  # one missing, one out of place
        return reply

    op.hook.load_clients = reordered  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match=r"1 loaded, 0 failed, 2 in doubt \(rows 2, 3\)"):
        op.execute({})


def test_a_retry_keeps_the_earlier_tries_failures(salebot_emulator: Any, store: StateStore) -> None:
    rows = [{"platform_id": 7, "group_id": "nope", "client_type": 1}, *telegram(3)]
    first = load(clients=rows, chunk_size=2, fail_on_item_error=False)
    fault_on_call(first.hook, "load_clients", salebot_emulator, 2, status=400)
    with pytest.raises(SalebotError, match="1 rows loaded, 1 failed; rows 3-4 not tried"):
        first.execute({"task_state_store": store})
    result = load(clients=rows, chunk_size=2, fail_on_item_error=False).execute({"task_state_store": store})
    assert (result["loaded"], result["failed"]) == (3, 1)
    assert result["failures"] == [
        {"item": rows[0], "reason": "No connected channel with group_id nope and this client_type"}
    ]
    assert len(store.data["salebot_load_clients:0"]["ids"]) == 2


def test_the_key_is_in_no_output(salebot_emulator: Any, tmp_path: Any, capfd: Any, caplog: Any) -> None:
    op = load(clients=telegram(4), chunk_size=2, output_path=str(tmp_path / "out.jsonl"))
    fault_on_call(op.hook, "load_clients", salebot_emulator, 2, status=502)
    with pytest.raises(AirflowFailException) as raised:
        op.execute({})
    out, err = capfd.readouterr()
    written = (tmp_path / "out.jsonl").read_text()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value), written):
        assert salebot_emulator.api_key not in text


def test_told_to_stop_it_finishes_the_chunk_under_way_then_a_retry_loads_the_rest(
    salebot_emulator: Any, store: StateStore, tmp_path: Any
) -> None:
    rows = telegram(5)
    first = load(clients=rows, chunk_size=2, output_path=str(tmp_path / "first.jsonl"))
    real = first.hook.load_clients

    def killed_meanwhile(chunk: Any) -> Any:
        first.on_kill()  # SIGTERM while the first request is out: Airflow calls on_kill
        return real(chunk)

    first.hook.load_clients = killed_meanwhile  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="told to stop") as raised:
        first.execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)  # the retry is safe
    assert "2 rows loaded, 0 failed; rows 3-5 not tried" in str(raised.value)
    lines = [json.loads(line)["status"] for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    assert lines == ["loaded", "loaded", "not_tried", "not_tried", "not_tried"]
    result = load(clients=rows, chunk_size=2).execute({"task_state_store": store})
    assert result["loaded"] == 5
    assert [len(r.body) for r in sends(salebot_emulator, "load_clients")] == [2, 2, 1]


def test_told_to_stop_without_task_state_it_fails_for_good(salebot_emulator: Any) -> None:
    op = load(clients=telegram(5), chunk_size=2)
    real = op.hook.load_clients

    def killed_meanwhile(chunk: Any) -> Any:
        op.on_kill()
        return real(chunk)

    op.hook.load_clients = killed_meanwhile  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match="told to stop"):
        op.execute({})
    assert len(sends(salebot_emulator, "load_clients")) == 1


def test_a_task_timeout_mid_chunk_leaves_its_rows_in_doubt_and_the_retry_never_reloads_them(
    salebot_emulator: Any, store: StateStore, tmp_path: Any
) -> None:
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    rows = telegram(6)
    first = load(clients=rows, chunk_size=2)
    real = first.hook.load_clients

    def timed_out(chunk: Any) -> Any:
        reply = real(chunk)
        if len(sends(salebot_emulator, "load_clients")) == 2:
            raise AirflowTaskTimeout("execution_timeout")  # a BaseException, after it went out
        return reply

    first.hook.load_clients = timed_out  # type: ignore[method-assign]
    with pytest.raises(AirflowTaskTimeout):
        first.execute({"task_state_store": store})
    assert store.data["salebot_load_clients"]["in_doubt"] == [[2, 4]]
    output = tmp_path / "rows.jsonl"
    with pytest.raises(AirflowFailException, match=r"2 in doubt \(rows 3, 4\)"):
        load(clients=rows, chunk_size=2, output_path=str(output)).execute({"task_state_store": store})
    assert [len(r.body) for r in sends(salebot_emulator, "load_clients")] == [2, 2, 2]
    statuses = [json.loads(line)["status"] for line in output.read_text().splitlines()]
    assert statuses == ["loaded", "loaded", "in_doubt", "in_doubt", "loaded", "loaded"]


def test_a_retry_on_different_rows_is_refused_before_any_request(
    salebot_emulator: Any, store: StateStore
) -> None:
    first = load(clients=telegram(5), chunk_size=2)
    fault_on_call(first.hook, "load_clients", salebot_emulator, 2, status=502, processed=True)
    with pytest.raises(SalebotError, match="stopped part-way"):
        first.execute({"task_state_store": store})
    before = len(salebot_emulator.requests)
    with pytest.raises(SalebotValidationError, match="sent part of a different input"):
        load(clients=telegram(5, start=2000), chunk_size=2).execute({"task_state_store": store})
    assert len(salebot_emulator.requests) == before
