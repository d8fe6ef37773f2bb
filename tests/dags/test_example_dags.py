"""The example DAGs: they import cleanly, and each runs with dag.test() against the emulator."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.dags.conftest import no_key, task_instances

EXAMPLES = Path(__file__).parents[2] / "example_dags"
DAG_IDS = {
    "salebot_crm_sync",
    "salebot_campaign_broadcast",
    "salebot_order_pipeline",
    "salebot_reply_followup",
}


def test_the_example_dags_import_without_errors_or_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == DAG_IDS
    assert [str(w.message) for w in caught if "example_dags" in str(w.filename)] == []
    for dag in bag.dags.values():
        assert "example" in dag.tags
        assert dag.doc_md


def test_crm_sync_loads_writes_lists_and_exports(
    salebot_emulator: Any, run_dag: Any, example: Any, tmp_path: Path, capfd: Any
) -> None:
    existing = salebot_emulator.seed_clients(20, seed=3)
    leads = [{"platform_id": 7000 + i, "group_id": "shop_bot", "client_type": 1} for i in range(6)]
    leads.append({"platform_id": 99, "group_id": "no_such_bot", "client_type": 1})
    (tmp_path / "leads.jsonl").write_text("".join(json.dumps(lead) + "\n" for lead in leads))
    (tmp_path / "attributes.csv").write_text(
        "platform_id,client.tier,client.source\n" + "".join(f"{7000 + i},gold,ads\n" for i in range(3))
    )
    dag_run = run_dag(example("salebot_crm_sync"), logical_date=None)  # as a trigger from the UI
    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == dict.fromkeys(
        ["load_leads", "key_attributes_by_client", "write_attributes", "add_to_list", "export_clients"],
        "success",
    )
    summary = tis["load_leads"].xcom_pull(task_ids="load_leads")
    assert (summary["loaded"], summary["failed"]) == (6, 1)
    new = summary["client_ids"]
    assert [salebot_emulator.client(i).variables.get("tier") for i in new] == ["gold"] * 3 + [None] * 3
    assert set(new) <= set(salebot_emulator.state.lists[1170282])
    exported = [json.loads(line) for line in (tmp_path / "export/clients.jsonl").read_text().splitlines()]
    assert {c["id"] for c in exported} == set(existing) | set(new)
    no_key(salebot_emulator, *capfd.readouterr())


def test_campaign_broadcast_messages_the_segment(
    salebot_emulator: Any, run_dag: Any, example: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(60, seed=4)
    vips = [i for i in ids if salebot_emulator.client(i).variables.get("segment") == "vip"]
    assert vips
    dag_run = run_dag(example("salebot_campaign_broadcast"), message="Hello, VIP")
    assert {ti.state for ti in task_instances(dag_run).values()} == {"success"}
    outbox = [item for item in salebot_emulator.outbox if item.text == "Hello, VIP"]
    assert [item.client_id for item in outbox] == vips
    start = pendulum.instance(dag_run.run_after).add(hours=1).timestamp()
    assert outbox[0].due_at == pytest.approx(start, abs=1)
    assert outbox[-1].due_at == pytest.approx(start + 0.5 * (len(vips) - 1), abs=1)
    no_key(salebot_emulator, *capfd.readouterr())


def test_order_pipeline_waits_for_payment_then_thanks(
    salebot_emulator: Any, run_dag: Any, example: Any, capfd: Any
) -> None:
    (client,) = salebot_emulator.seed_clients(1, seed=5, with_deals=False)
    salebot_emulator.auto_advance_new_deals(0.3)  # the client pays on their own: 101 -> ... -> 104
    # Triggered by hand through the REST API or the UI: no logical date, so no ds or ts.
    dag_run = run_dag(example("salebot_order_pipeline"), logical_date=None, client_id=client)
    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == dict.fromkeys(
        ["create_order", "wait_until_paid", "mark_paid", "thank_you"], "success"
    )
    order_id = tis["create_order"].xcom_pull(task_ids="create_order")
    assert tis["wait_until_paid"].xcom_pull(task_ids="wait_until_paid") == 104
    deal = salebot_emulator.deal(order_id)
    assert (deal.state_id, deal.variables["paid_state"]) == (104, 104)
    assert deal.variables["paid_at"].startswith(str(dag_run.run_after.year))
    (thanks,) = salebot_emulator.outbox
    assert (thanks.client_id, thanks.text) == (client, f"Thank you! Your order {order_id} is paid.")
    no_key(salebot_emulator, *capfd.readouterr())
