from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import Asset, ObjectStoragePath

from salebot_provider.exceptions import SalebotError, SalebotPermissionError, SalebotValidationError
from salebot_provider.operators.export import ExportClientsOperator
from tests.operators.conftest import sends


def export(**kwargs: Any) -> ExportClientsOperator:
    return ExportClientsOperator(task_id="export", **kwargs)


def lines(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def newest_first(emulator: Any) -> list[int]:
    """The order get_clients lists the project's clients in."""
    return sorted(emulator.state.clients, reverse=True)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"list_id": "x"}, "'list_id' must be an integer id"),
        ({"with_variables": "yes"}, "'with_variables' must be True or False"),
        ({"max_workers": 0}, "'max_workers' must be a whole number from 1 to 16"),
        ({"max_workers": "17"}, "'max_workers' must be a whole number from 1 to 16"),
        ({"path": "file://relative/clients.jsonl"}, "give an absolute one"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    salebot_emulator: Any, tmp_path: Any, kwargs: Any, named: str
) -> None:
    op = export(path=str(tmp_path / "clients.jsonl"))
    for name, value in kwargs.items():
        setattr(op, name, value)  # as a template would render it: checked when the task runs
    with pytest.raises(SalebotValidationError, match="Salebot") as raised:
        op.execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []
    assert list(tmp_path.iterdir()) == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="list_id"):
        ExportClientsOperator(task_id="e", path="/data/c.jsonl", list_id="one")
    with pytest.raises(SalebotValidationError, match="max_workers"):
        ExportClientsOperator(task_id="e", path="/data/c.jsonl", max_workers=17)
    with pytest.raises(SalebotValidationError, match="with_variables"):
        ExportClientsOperator(task_id="e", path="/data/c.jsonl", with_variables=None)
    with pytest.raises(SalebotValidationError, match="absolute"):
        ExportClientsOperator(task_id="e", path="file://data/c.jsonl")
    ExportClientsOperator(task_id="e", path="{{ params.path }}", list_id="{{ x }}", max_workers="{{ y }}")


# ------------------------------------------------------------------------------ the outlet


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("s3://crm/salebot/clients.jsonl", "s3://crm/salebot/clients.jsonl"),
        ("s3://aws_crm@crm/clients.jsonl", "s3://crm/clients.jsonl"),
        ("file:///data/clients.jsonl", "file:///data/clients.jsonl"),
        ("/data/clients.jsonl", "file:///data/clients.jsonl"),
        (ObjectStoragePath("file:///data/clients.jsonl"), "file:///data/clients.jsonl"),
        (ObjectStoragePath("s3://crm/clients.jsonl", conn_id="aws_crm"), "s3://crm/clients.jsonl"),
    ],
)
def test_a_literal_path_is_the_outlet_asset(path: Any, uri: str) -> None:
    assert export(path=path).outlets == [Asset(uri)]


@pytest.mark.parametrize("path", ["relative/clients.jsonl", "s3://crm/{{ ds }}/clients.jsonl"])
def test_a_relative_or_templated_path_declares_no_outlet(path: str) -> None:
    assert export(path=path).outlets == []


def test_outlets_given_are_kept() -> None:
    mine = Asset("s3://crm/salebot/")
    assert export(path="s3://crm/salebot/clients.jsonl", outlets=[mine]).outlets == [mine]


# ------------------------------------------------------------------------------ the file


@pytest.mark.salebot_emulator(clients=1201, seed=1)
def test_every_client_one_per_line_in_pages(salebot_emulator: Any, tmp_path: Any) -> None:
    out = tmp_path / "clients.jsonl"
    assert export(path=str(out)).execute({}) == {"clients": 1201, "path": str(out)}
    rows = lines(out)
    assert [row["id"] for row in rows] == newest_first(salebot_emulator)
    assert rows[0] == salebot_emulator.client(rows[0]["id"]).public(salebot_emulator.state.project_id)
    assert "Москва" in out.read_text(encoding="utf-8") or "Иванова" in out.read_text(encoding="utf-8")
    assert [r.params.get("offset") for r in sends(salebot_emulator, "get_clients")] == ["0", "500", "1000"]
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


@pytest.mark.salebot_emulator(clients=40, seed=2)
@pytest.mark.parametrize("workers", [1, 4, 10])
def test_with_variables_in_the_order_of_the_clients(
    salebot_emulator: Any, tmp_path: Any, workers: int
) -> None:
    # Slow, uneven replies make the requests finish out of order; the lines must not.
    salebot_emulator.inject("get_variables", latency=(0.0, 0.02))
    out = ObjectStoragePath(f"file://{tmp_path}/clients.jsonl")
    result = export(path=out, with_variables=True, max_workers=workers).execute({})
    assert result == {"clients": 40, "path": str(out)}
    rows = lines(tmp_path / "clients.jsonl")
    assert [row["id"] for row in rows] == newest_first(salebot_emulator)
    for row in rows:
        client = salebot_emulator.client(row["id"])
        assert row["variables"] == client.variables
        deal = salebot_emulator.state.current_deal(row["id"])
        assert row["order_variables"] == (deal.variables if deal else {})
    assert len(sends(salebot_emulator, "get_variables")) == 40


@pytest.mark.salebot_emulator(clients=5, seed=4)
def test_a_client_deleted_during_the_export_gets_a_line_saying_so(
    salebot_emulator: Any, tmp_path: Any
) -> None:
    gone = newest_first(salebot_emulator)[2]
    op = export(path=str(tmp_path / "clients.jsonl"), with_variables=True, max_workers=1)
    real = op.hook.get_variables

    def deleted_meanwhile(client_id: Any) -> Any:
        if client_id == gone:
            salebot_emulator.state.delete_client(gone)
        return real(client_id)

    op.hook.get_variables = deleted_meanwhile  # type: ignore[method-assign]
    assert op.execute({})["clients"] == 5
    rows = {row["id"]: row for row in lines(tmp_path / "clients.jsonl")}
    assert rows[gone]["deleted"] is True
    assert rows[gone]["variables"] is None
    assert sum(1 for row in rows.values() if row.get("deleted")) == 1


def test_the_variables_are_fetched_concurrently(salebot_emulator: Any, tmp_path: Any) -> None:
    salebot_emulator.seed_clients(8, seed=3, with_deals=False)
    op = export(path=str(tmp_path / "c.jsonl"), with_variables=True, max_workers=4)
    real = op.hook.get_variables
    barrier = threading.Barrier(4, timeout=30)  # passes only if four requests run at once

    def together(client_id: Any) -> Any:
        barrier.wait()
        return real(client_id)

    op.hook.get_variables = together  # type: ignore[method-assign]
    assert op.execute({})["clients"] == 8


@pytest.mark.salebot_emulator(clients=3, seed=4)
def test_a_list_only(salebot_emulator: Any, tmp_path: Any) -> None:
    ids = sorted(salebot_emulator.state.clients)
    list_id = salebot_emulator.add_list(clients=ids[:2])
    out = tmp_path / "list.jsonl"
    op = export(path=str(out), list_id="{{ params.list }}")
    op.list_id = str(list_id)  # as rendered
    assert op.execute({})["clients"] == 2
    assert sorted(row["id"] for row in lines(out)) == ids[:2]
    assert sends(salebot_emulator, "get_clients")[0].params["list"] == str(list_id)


def test_an_empty_project_is_an_empty_file(salebot_emulator: Any, tmp_path: Any) -> None:
    out = tmp_path / "clients.jsonl"
    assert export(path=str(out), with_variables=True).execute({}) == {"clients": 0, "path": str(out)}
    assert out.read_text() == ""


# ------------------------------------------------------------------------------ failures


@pytest.mark.salebot_emulator(clients=1500, seed=5)
@pytest.mark.parametrize("with_variables", [False, True])
def test_a_failure_mid_way_leaves_no_file_and_the_earlier_export_intact(
    salebot_emulator: Any, tmp_path: Any, with_variables: bool
) -> None:
    out = tmp_path / "clients.jsonl"
    out.write_text('{"id": 1}\n')  # yesterday's export
    # The third page is refused (not retried): the first two were already written to the part file.
    salebot_emulator.inject("get_clients", status=400, after=2, times=1)
    with pytest.raises(SalebotError) as raised:
        export(path=str(out), with_variables=with_variables, max_workers=2).execute({})
    # Lines written before the failure: two pages, less the window of clients awaiting their variables.
    written = 1000 - (2 * 2 - 1) if with_variables else 1000
    assert f"Salebot export stopped after {written:,} clients" in str(raised.value)
    assert f"nothing was written to {out}" in str(raised.value)
    assert list(tmp_path.iterdir()) == [out]  # the part file is removed
    assert out.read_text() == '{"id": 1}\n'
    if with_variables:
        # Streamed: variables were fetched for the first pages before the third was asked for,
        # and at most a window of 2 * max_workers clients ahead of the lines written.
        actions = [r.action for r in salebot_emulator.requests]
        third_page = [i for i, a in enumerate(actions) if a == "get_clients"][2]
        assert actions[:third_page].count("get_variables") >= written
        assert actions.count("get_variables") <= 1000


@pytest.mark.salebot_emulator(clients=10, seed=7)
def test_a_refusal_keeps_its_class(salebot_emulator: Any, tmp_path: Any, monkeypatch: Any) -> None:
    weak = salebot_emulator.add_key(["crm_read"])  # no clients_read
    conn = salebot_emulator.connection_json(backoff_factor=0).replace(salebot_emulator.api_key, weak)
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", conn)
    with pytest.raises(SalebotPermissionError, match="Salebot export stopped after 0 clients") as raised:
        export(path=str(tmp_path / "clients.jsonl")).execute({})
    assert "clients_read" in str(raised.value)
    assert weak not in str(raised.value)


@pytest.mark.salebot_emulator(clients=30, seed=6)
def test_a_bad_variables_reply_is_an_api_error_and_leaves_no_file(
    salebot_emulator: Any, tmp_path: Any
) -> None:
    out = tmp_path / "clients.jsonl"
    op = export(path=str(out), with_variables=True)
    real = op.hook.get_variables
    calls: list[Any] = []

    def odd(client_id: Any) -> Any:
        calls.append(client_id)
        return {"status": "success", "variables": [1]} if len(calls) == 20 else real(client_id)

    op.hook.get_variables = odd  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="without a 'variables' object"):
        op.execute({})
    assert list(tmp_path.iterdir()) == []


def test_a_client_without_an_id_is_an_api_error(salebot_emulator: Any, tmp_path: Any) -> None:
    op = export(path=str(tmp_path / "c.jsonl"), with_variables=True)
    op.hook.iter_clients = lambda **kwargs: iter([{"name": "x"}])  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="listed a client without an id"):
        op.execute({})
    assert list(tmp_path.iterdir()) == []


def test_a_reply_that_is_not_an_object_is_an_api_error(salebot_emulator: Any, tmp_path: Any) -> None:
    salebot_emulator.seed_clients(2, seed=7, with_deals=False)
    op = export(path=str(tmp_path / "c.jsonl"), with_variables=True)
    op.hook.get_variables = lambda client_id: []  # type: ignore[method-assign]
    with pytest.raises(SalebotError, match="get_variables replied with a JSON list"):
        op.execute({})


def test_reads_are_retried(salebot_emulator: Any, tmp_path: Any) -> None:
    salebot_emulator.seed_clients(5, seed=8, with_deals=False)
    salebot_emulator.inject("get_clients", status=502, times=1)
    salebot_emulator.inject("get_variables", status=503, times=2)
    out = tmp_path / "c.jsonl"
    assert export(path=str(out), with_variables=True, max_workers=1).execute({})["clients"] == 5
    assert len(lines(out)) == 5


def test_the_key_is_in_no_output(salebot_emulator: Any, tmp_path: Any, capfd: Any, caplog: Any) -> None:
    salebot_emulator.seed_clients(600, seed=9, with_deals=False)
    salebot_emulator.inject("get_clients", status=403, after=1, times=1)
    with pytest.raises(SalebotError, match="HTTP 403") as raised:
        export(path=str(tmp_path / "c.jsonl"), with_variables=True).execute({})
    result = export(path=str(tmp_path / "c.jsonl")).execute({})
    out, err = capfd.readouterr()
    texts = (out, err, caplog.text, str(raised.value), repr(raised.value), json.dumps(result))
    for text in (*texts, (tmp_path / "c.jsonl").read_text()):
        assert salebot_emulator.api_key not in text
