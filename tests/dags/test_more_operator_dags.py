"""The list, find and export operators in real DAG runs (dag.test(): the real task runner, XComs, retries)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.dags.conftest import no_key, task_instances


def test_lists_dag_resumes_after_a_mid_way_502_and_removes(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=41, with_deals=False)
    list_id = salebot_emulator.add_list()
    # The second chunk is processed, then its reply is a 502: in doubt, never resent.
    salebot_emulator.inject("add_to_list", status=502, processed=True, after=1, times=1)
    leaving = [ids[0], ids[700], ids[1199]]
    dag_run = run_dag("salebot_test_lists", list_id=list_id, ids=ids, leaving=leaving)
    tis = task_instances(dag_run)
    add, remove = tis["add"], tis["remove"]
    # Try 1 failed part-way with an ordinary error; Airflow's retry sent only the last chunk, then
    # failed naming the in-doubt ids.
    assert (add.state, add.try_number) == ("failed", 2)
    assert [len(r.body["clients"]) for r in salebot_emulator.requests if r.action == "add_to_list"] == [
        500,
        500,
        200,
    ]
    assert remove.state == "success"
    assert remove.xcom_pull(task_ids="remove") == {"list_id": list_id, "clients": 3, "requests": 2}
    assert list(salebot_emulator.state.lists[list_id]) == [i for i in ids if i not in leaving]
    out, err = capfd.readouterr()
    assert "Salebot add_to_list stopped part-way: 500 clients sent, 500 in doubt" in out + err
    assert "Salebot add_to_list: every client id was tried: 700 sent, 500 in doubt" in out + err
    no_key(salebot_emulator, out, err)


@pytest.mark.salebot_emulator(clients=200, seed=42)
def test_find_then_broadcast_through_the_xcom(salebot_emulator: Any, run_dag: Any, capfd: Any) -> None:
    vip = sorted(
        c for c in salebot_emulator.state.clients if salebot_emulator.client(c).variables["segment"] == "vip"
    )
    dag_run = run_dag("salebot_test_find_broadcast", q={"segment": "vip"}, message="VIP sale")
    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == {"find": "success", "announce": "success"}
    assert tis["find"].xcom_pull(task_ids="find") == vip
    assert tis["find"].xcom_pull(task_ids="find", key="count") == len(vip)
    assert [item.client_id for item in salebot_emulator.outbox if item.text == "VIP sale"] == vip
    assert tis["announce"].xcom_pull(task_ids="announce") == {
        "audience": "clients",
        "recipients": len(vip),
        "requests": -(-len(vip) // 3),
    }
    out, err = capfd.readouterr()
    no_key(salebot_emulator, out, err)


@pytest.mark.salebot_emulator(clients=700, seed=43)
def test_export_dag_writes_the_files_and_records_the_asset_event(
    salebot_emulator: Any, run_dag: Any, tmp_path: Any, capfd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    monkeypatch.setenv("SALEBOT_TEST_EXPORT_DIR", str(tmp_path))  # the DAG file's literal path
    members = sorted(salebot_emulator.state.clients)[:5]
    list_id = salebot_emulator.add_list(clients=members)
    list_path = tmp_path / "list.jsonl"
    dag_run = run_dag("salebot_test_export", list_id=list_id, list_path=f"file://{list_path}")
    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == {"export": "success", "export_list": "success"}
    everyone = tmp_path / "clients.jsonl"
    assert tis["export"].xcom_pull(task_ids="export") == {"clients": 700, "path": str(everyone)}
    rows = [json.loads(line) for line in everyone.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == sorted(salebot_emulator.state.clients, reverse=True)
    assert all(row["variables"] == salebot_emulator.client(row["id"]).variables for row in rows)
    assert sorted(json.loads(line)["id"] for line in list_path.read_text().splitlines()) == members
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients.jsonl", "list.jsonl"]
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == f"file://{everyone}")
            .all()
        )
        assert [(e.source_dag_id, e.source_task_id) for e in events] == [("salebot_test_export", "export")]
    out, err = capfd.readouterr()
    no_key(salebot_emulator, out, err, everyone.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _quiet_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
