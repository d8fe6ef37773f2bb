from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import pytest

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators import SaveVariablesOperator
from tests.operators.conftest import fault_on_call, sends


def save(**kwargs: Any) -> SaveVariablesOperator:
    return SaveVariablesOperator(task_id="save", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({}, "give 'variables' with 'client_id' or with 'clients', or 'client_variables' alone"),
        ({"variables": {"a": 1}}, "got variables"),
        ({"variables": {"a": 1}, "client_id": 1, "clients": [2]}, "got client_id, clients"),
        ({"client_variables": {1: {"a": 1}}, "variables": {"a": 1}}, "got client_variables, variables"),
        ({"client_id": 1}, "got client_id"),
        ({"client_id": 1, "variables": {}}, "'variables' must be a non-empty mapping"),
        ({"client_id": 1, "variables": {"a": [1, 2]}}, "client 1, variable 'a' must be a string, a number"),
        ({"client_id": 1, "variables": {"a": float("nan")}}, "variable 'a'"),
        ({"client_id": "x", "variables": {"a": 1}}, "client_id"),
        ({"clients": [1, "2b"], "variables": {"a": 1}}, "clients[1]"),
        ({"client_variables": {5: {"a": {"b": 1}}}}, "client_variables[0] (client 5), variable 'a'"),
        ({"client_variables": [{"client_id": 5, "variables": {"": 1}}]}, "variable name"),
        ({"client_variables": [{"variables": {"a": 1}}]}, "must be an object with 'client_id'"),
        ({"client_variables": [{"client_id": 5, "variables": {"a": 1}}], "max_workers": 17}, "'max_workers'"),
        ({"clients": [1], "variables": {"a": 1}, "chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input_is_refused_before_any_request(salebot_emulator: Any, kwargs: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match="Salebot save_variables") as raised:
        save(**kwargs).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_one_client(salebot_emulator: Any) -> None:
    (client,) = salebot_emulator.seed_clients(1, seed=1)
    result = save(client_id=client, variables={"client.phone": "79990001122", "stage": "lead"}).execute({})
    assert result == {"clients": 1, "requests": 1}
    assert salebot_emulator.client(client).variables["phone"] == "79990001122"


@pytest.mark.parametrize("count", [1, 500, 501, 1234])
def test_the_same_variables_for_many_clients_in_chunks(salebot_emulator: Any, count: int) -> None:
    ids = salebot_emulator.seed_clients(count, seed=2, with_deals=False)
    result = save(clients=ids, variables={"client.segment": "vip"}).execute({})
    assert result == {"clients": count, "requests": math.ceil(count / 500)}
    assert all(salebot_emulator.client(i).variables["segment"] == "vip" for i in ids)


def test_per_client_values_are_grouped_by_identical_variables(salebot_emulator: Any) -> None:
    ids = salebot_emulator.seed_clients(40, seed=3, with_deals=False)
    values = {i: {"client.tier": "bronze"} for i in ids[:30]}
    values.update({i: {"client.tier": "gold", "client.score": n} for n, i in enumerate(ids[30:])})
    result = save(client_variables=values, chunk_size=20).execute({})
    assert result == {"clients": 40, "requests": 2 + 10}  # 30 bronze in chunks of 20, 10 singles
    mass = [r.body for r in sends(salebot_emulator, "save_variables") if "clients" in r.body]
    assert sorted(len(b["clients"]) for b in mass) == [10, 20]
    assert salebot_emulator.client(ids[31]).variables.items() >= {"tier": "gold", "score": 1}.items()


def test_a_client_given_twice_gets_the_later_value(salebot_emulator: Any) -> None:
    (client,) = salebot_emulator.seed_clients(1, seed=4, with_deals=False)
    rows = [
        {"client_id": client, "variables": {"client.a": "first", "client.b": "kept"}},
        {"client_id": str(client), "variables": {"client.a": "second"}},
    ]
    assert save(client_variables=rows).execute({}) == {"clients": 1, "requests": 1}
    assert salebot_emulator.client(client).variables.items() >= {"a": "second", "b": "kept"}.items()


def test_a_csv_file_of_per_client_values(salebot_emulator: Any, tmp_path: Any) -> None:
    ids = salebot_emulator.seed_clients(3, seed=5, with_deals=False)
    path = tmp_path / "scores.csv"
    path.write_text(
        "client_id,client.tier,client.note\n"
        f"{ids[0]},gold,\n{ids[1]},gold,\n{ids[2]},silver,new\n"  # an empty cell is not written
    )
    result = save(client_variables=str(path)).execute({})
    assert result == {"clients": 3, "requests": 2}
    assert salebot_emulator.client(ids[0]).variables["tier"] == "gold"
    assert "note" not in salebot_emulator.client(ids[0]).variables
    assert salebot_emulator.client(ids[2]).variables.items() >= {"tier": "silver", "note": "new"}.items()


def test_a_jsonl_file_of_per_client_values(salebot_emulator: Any, tmp_path: Any) -> None:
    ids = salebot_emulator.seed_clients(2, seed=6, with_deals=False)
    path = tmp_path / "scores.jsonl"
    path.write_text(
        json.dumps({"client_id": ids[0], "client.score": 7.5, "client.vip": True})
        + "\n"
        + json.dumps({"client_id": ids[1], "variables": {"client.score": None}})
        + "\n"
    )
    assert save(client_variables=f"file://{path}").execute({}) == {"clients": 2, "requests": 2}
    assert salebot_emulator.client(ids[0]).variables.items() >= {"score": 7.5, "vip": True}.items()
    assert salebot_emulator.client(ids[1]).variables["score"] is None


def test_a_bad_value_in_a_file_names_the_line_client_and_variable(
    salebot_emulator: Any, tmp_path: Any
) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text('{"client_id": 1, "client.a": 1}\n{"client_id": 2, "client.tags": [1]}\n')
    with pytest.raises(
        SalebotValidationError, match=r"line 2 of .*scores.jsonl\) \(client 2\), variable 'client.tags'"
    ):
        save(client_variables=str(path)).execute({})
    assert salebot_emulator.requests == []


def test_requests_run_max_workers_at_a_time_within_the_rate_limit(
    salebot_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(backoff_factor=0, rate_limit=50)
    )
    ids = salebot_emulator.seed_clients(12, seed=7, with_deals=False)
    values = {i: {"client.n": n} for n, i in enumerate(ids)}
    op = save(client_variables=values, max_workers=4)
    real = op.hook.save_variables
    # The first four calls wait for each other: they pass only if four run at the same time.
    together = threading.Barrier(4, timeout=30)
    calls: list[int] = []

    def meet(variables: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= 4:
            together.wait()
        return real(variables, **kwargs)

    op.hook.save_variables = meet  # type: ignore[method-assign]
    started = time.monotonic()
    assert op.execute({}) == {"clients": 12, "requests": 12}
    took = time.monotonic() - started
    assert all(salebot_emulator.client(i).variables["n"] == n for n, i in enumerate(ids))
    # The connection's rate_limit (50/s) spaces the requests of all the threads 20 ms apart, so
    # twelve of them cannot all go out in less than 11 gaps. (Measured around the whole task, not
    # from arrival times, which a loaded machine can bunch together.)
    assert len(sends(salebot_emulator, "save_variables")) == 12
    assert took >= 11 * 0.02


def test_a_failure_says_what_was_written(salebot_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(backoff_factor=0, max_retries=0)
    )
    ids = salebot_emulator.seed_clients(1500, seed=8, with_deals=False)
    op = save(clients=ids, variables={"client.x": 1}, max_workers=1)
    fault_on_call(op.hook, "save_variables", salebot_emulator, 2, status=500)
    with pytest.raises(SalebotError) as raised:
        op.execute({})
    text = str(raised.value)
    # One worker, and the next request already queued when the second failed: it still ran.
    assert f"1,000 of 1,500 clients written; a request for 500 clients (first {ids[500]}) failed" in text
    assert "a retry writes everything again, harmlessly" in text
    assert salebot_emulator.api_key not in text


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="give 'variables'"):
        SaveVariablesOperator(task_id="s", client_id=1)
    with pytest.raises(SalebotValidationError, match="variable 'a' must be a string"):
        SaveVariablesOperator(task_id="s", clients=[1], variables={"a": {"b": 1}})
    with pytest.raises(SalebotValidationError, match=r"client_variables\[1\] \(client 2\), variable 'x'"):
        SaveVariablesOperator(task_id="s", client_variables={1: {"x": 1}, 2: {"x": [2]}})
    # Unknown until the task runs: checked then.
    SaveVariablesOperator(task_id="s", client_id="{{ params.id }}", variables={"a": "{{ params.a }}"})


def test_zero_clients_make_no_request(salebot_emulator: Any) -> None:
    assert save(clients=[], variables={"client.a": 1}).execute({}) == {"clients": 0, "requests": 0}
    assert save(client_variables={}).execute({}) == {"clients": 0, "requests": 0}
    assert salebot_emulator.requests == []


def test_a_short_csv_row_is_refused_rather_than_writing_null(salebot_emulator: Any, tmp_path: Any) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("client_id,client.tier,client.note\n1,gold,x\n2,silver\n")
    with pytest.raises(SalebotValidationError, match=r"line 3 .* has fewer values than the header"):
        save(client_variables=str(path)).execute({})
    assert salebot_emulator.requests == []


def test_a_mapping_rendered_as_text_is_read(salebot_emulator: Any) -> None:
    (client,) = salebot_emulator.seed_clients(1, seed=9, with_deals=False)
    op = save(client_variables="{{ ti.xcom_pull('scores') }}")
    op.client_variables = str({client: {"client.tier": "gold"}})  # what a plain template renders
    assert op.execute({}) == {"clients": 1, "requests": 1}
    assert salebot_emulator.client(client).variables["tier"] == "gold"


def test_rounds_merge_a_client_within_a_round_and_the_later_round_wins(
    salebot_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salebot_provider.operators import variables

    monkeypatch.setattr(variables, "ROUND", 3)
    ids = salebot_emulator.seed_clients(4, seed=10, with_deals=False)
    rows = [
        {"client_id": ids[0], "variables": {"client.v": "a"}},
        {"client_id": ids[1], "variables": {"client.v": "a"}},
        {"client_id": ids[0], "variables": {"client.w": "b"}},  # merged into the first row
        {"client_id": ids[2], "variables": {"client.v": "a"}},  # round 2
        {"client_id": ids[0], "variables": {"client.v": "c"}},  # round 2: wins over round 1
    ]
    result = save(client_variables=rows, max_workers=1).execute({})
    assert result == {"clients": 4, "requests": 4}
    assert salebot_emulator.client(ids[0]).variables.items() >= {"v": "c", "w": "b"}.items()
    assert salebot_emulator.client(ids[2]).variables["v"] == "a"


def test_the_key_is_in_no_output_of_a_failed_run(
    salebot_emulator: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any, caplog: Any
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", salebot_emulator.connection_json(backoff_factor=0, max_retries=1)
    )
    ids = salebot_emulator.seed_clients(3, seed=11, with_deals=False)
    salebot_emulator.inject(action="save_variables", reset=True)
    with pytest.raises(SalebotError) as raised:
        save(client_variables={i: {"client.n": n} for n, i in enumerate(ids)}).execute({})
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value)):
        assert salebot_emulator.api_key not in text
