"""Each operator in a real DAG run (dag.test(): the real task runner, task_state_store, retries)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.dags.conftest import no_key, task_instances


def test_broadcast_dag_resumes_after_a_mid_way_502_and_mapping_works(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(1200, seed=1, with_deals=False)
    groups = [ids[:3], ids[3:4], ids[4:9]]
    # The second chunk of the big broadcast goes out, then its reply is a 502: in doubt.
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    dag_run = run_dag("salebot_test_broadcast", ids=ids, message="Sale!", groups=groups)
    tis = task_instances(dag_run)
    big = tis["broadcast"]
    # Try 1 failed part-way with an ordinary error; Airflow's retry sent only the rest, then failed
    # naming the in-doubt recipients.
    assert (big.state, big.try_number) == ("failed", 2)
    sent = [item.client_id for item in salebot_emulator.outbox if item.text == "Sale!"]
    assert sent == ids  # the in-doubt chunk was processed once and never resent
    assert len([r for r in salebot_emulator.requests if r.body and r.body.get("message") == "Sale!"]) == 3
    for index, group in enumerate(groups):
        mapped = tis[f"mapped[{index}]"]
        assert mapped.state == "success"
        assert mapped.xcom_pull(task_ids="mapped", map_indexes=index) == {
            "audience": "clients",
            "recipients": len(group),
            "requests": -(-len(group) // 2),
        }
    assert sorted(i.client_id for i in salebot_emulator.outbox if i.text == "Hi") == sorted(ids[:9])
    out, err = capfd.readouterr()
    assert "Salebot broadcast stopped part-way: 500 recipients sent, 500 in doubt" in out + err
    no_key(salebot_emulator, out, err)


def test_load_clients_dag_hands_the_ids_to_the_next_task(
    salebot_emulator: Any, run_dag: Any, tmp_path: Any, capfd: Any
) -> None:
    leads = tmp_path / "leads.jsonl"
    rows = [{"platform_id": 5000 + i, "group_id": "shop_bot", "client_type": 1} for i in range(5)]
    rows.insert(2, {"platform_id": 7, "group_id": "nope", "client_type": 1})
    leads.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "loaded.jsonl"
    dag_run = run_dag("salebot_test_load_clients", leads=str(leads), output=f"file://{output}")
    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == {"load": "success", "welcome": "success"}
    summary = tis["load"].xcom_pull(task_ids="load")
    assert (summary["loaded"], summary["failed"]) == (5, 1)
    assert sorted(i.client_id for i in salebot_emulator.outbox) == sorted(summary["client_ids"])
    assert [json.loads(line)["status"] for line in output.read_text().splitlines()].count("failed") == 1
    out, err = capfd.readouterr()
    no_key(salebot_emulator, out, err, json.dumps(summary))


def test_save_variables_dag(salebot_emulator: Any, run_dag: Any, tmp_path: Any, capfd: Any) -> None:
    ids = salebot_emulator.seed_clients(30, seed=2, with_deals=False)
    scores = tmp_path / "scores.csv"
    scores.write_text(
        "client_id,client.tier\n" + "".join(f"{i},{'gold' if n < 20 else n}\n" for n, i in enumerate(ids))
    )
    dag_run = run_dag("salebot_test_save_variables", scores=str(scores), ids=ids[:5])
    tis = task_instances(dag_run)
    assert tis["per_client"].xcom_pull(task_ids="per_client") == {"clients": 30, "requests": 11}
    assert tis["segment"].xcom_pull(task_ids="segment") == {"clients": 5, "requests": 1}
    assert salebot_emulator.client(ids[0]).variables["segment"] == "vip"
    assert salebot_emulator.client(ids[25]).variables["tier"] == "25"
    out, err = capfd.readouterr()
    no_key(salebot_emulator, out, err)


@pytest.fixture(autouse=True)
def _quiet_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
