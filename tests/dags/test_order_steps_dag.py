"""The deal operators, the message and a mapped callback in one real DAG run (dag.test())."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tests.dags.conftest import task_instances

if TYPE_CHECKING:
    import pytest

    from salebot_provider.testing import SalebotEmulator
    from tests.dags.conftest import RunDag


def test_order_steps_pass_the_deal_from_task_to_task(
    salebot_emulator: SalebotEmulator, run_dag: RunDag, capfd: pytest.CaptureFixture[str]
) -> None:
    client = salebot_emulator.add_client("111")
    steps = [{"step": "survey"}, {"step": "review"}]
    dag_run = run_dag("salebot_test_order_steps", client=client, ref="A-7", total=1500.5, steps=steps)

    tis = task_instances(dag_run)
    assert {k: (ti.state, ti.try_number) for k, ti in tis.items()} == {
        **{
            name: ("success", 1)
            for name in ("create", "set_state", "set_vars", "get_vars", "notify", "steps")
        },
        "follow_up[0]": ("success", 1),
        "follow_up[1]": ("success", 1),
    }
    order_id = tis["create"].xcom_pull(task_ids="create")
    assert isinstance(order_id, int)
    deal = salebot_emulator.deal(order_id)
    assert (deal.client_id, deal.name, deal.budget, deal.state_id) == (client, "Order A-7", 1500.5, 104)
    assert deal.variables["ref"] == "A-7"
    assert tis["set_state"].xcom_pull(task_ids="set_state") == {"client_id": client, "state_id": 104}
    assert tis["set_vars"].xcom_pull(task_ids="set_vars") == {
        "client_id": client,
        "order_id": order_id,
        "variables": 2,
    }
    read = tis["get_vars"].xcom_pull(task_ids="get_vars")
    assert read == {"ref": "A-7", "paid_at": deal.variables["paid_at"]}
    assert tis["notify"].xcom_pull(task_ids="notify") == {"client_id": client, "sent": True}
    messages = [item for item in salebot_emulator.outbox if item.kind == "message"]
    assert [(m.client_id, m.text) for m in messages] == [(client, f"Order {order_id} (ref A-7) is paid")]
    callbacks = [item for item in salebot_emulator.outbox if item.kind == "callback"]
    assert [(c.client_id, c.text) for c in callbacks] == [(client, "order_paid")] * 2
    assert salebot_emulator.client(client).variables["step"] in ("survey", "review")
    assert len([r for r in salebot_emulator.requests if r.action == "create_order"]) == 1
    out, err = capfd.readouterr()
    for text in (out, err, json.dumps(read)):
        assert salebot_emulator.api_key not in text


def test_a_create_in_doubt_fails_for_good_without_a_second_deal(
    salebot_emulator: SalebotEmulator, run_dag: RunDag, capfd: pytest.CaptureFixture[str]
) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("create_order", status=502, processed=True, times=1)
    dag_run = run_dag("salebot_test_order_steps", client=client, ref="B-1", total=10, steps=[])

    tis: dict[str, Any] = task_instances(dag_run)
    # Try 1 met the 502 after the deal was made: in doubt, so it failed for good at once, and
    # Airflow's retries (the DAG sets one) did not make a second deal.
    assert (tis["create"].state, tis["create"].try_number) == ("failed", 1)
    assert tis["set_state"].state == "upstream_failed"
    with salebot_emulator.state.lock:
        assert len(salebot_emulator.state.deals_by_client[client]) == 1
    assert len([r for r in salebot_emulator.requests if r.action == "create_order"]) == 1
    out, err = capfd.readouterr()
    assert "may have gone out (in doubt); it is not resent, so that nobody gets it twice" in out + err
    assert salebot_emulator.api_key not in out + err
