"""OrderStateSensor in real DAG runs (dag.test()): deferred to its trigger, and in reschedule mode."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import DAG

from salebot_provider.sensors import OrderStateSensor
from tests.dags.conftest import task_instances

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing import SalebotEmulator
    from tests.dags.conftest import RunDag

TRIGGER = "salebot_provider.triggers.order_state.OrderStateTrigger"


@pytest.fixture
def deal(salebot_emulator: SalebotEmulator) -> Iterator[tuple[int, int]]:
    """A deal in state 101 that starts moving (101 -> ... -> 104) once the sensor first looks at it."""
    client_id = salebot_emulator.add_client("dag-test")
    with salebot_emulator.state.lock:
        order_id = salebot_emulator.state.add_deal(client_id, 101).id
    done = threading.Event()

    def start_moving() -> None:
        while not done.is_set():
            if any(r.action == "get_order_state" for r in salebot_emulator.requests):
                salebot_emulator.auto_advance(order_id, every=0.3)
                return
            time.sleep(0.02)

    mover = threading.Thread(target=start_moving, daemon=True)
    mover.start()
    yield client_id, order_id
    done.set()
    mover.join()


def trigger_rows_after(last_id: int) -> list[Any]:
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(Trigger).where(Trigger.id > last_id)).all()
        return [(row.classpath, row.kwargs) for row in rows]


def last_trigger_id() -> int:
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.max(Trigger.id))) or 0


def test_deferrable_sensor_waits_in_its_trigger_and_pushes_the_state(
    salebot_emulator: SalebotEmulator,
    run_dag: RunDag,
    deal: tuple[int, int],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client_id, order_id = deal
    with DAG(
        "salebot_test_order_state_deferred",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        params={"client": client_id},
    ) as dag:
        OrderStateSensor(
            task_id="wait",
            client_id="{{ params.client }}",
            order_id=order_id,
            target_states=["104"],
            failure_states=105,
            poke_interval=0.2,
            timeout=120,
            deferrable=True,
        )
    before = last_trigger_id()

    dag_run = run_dag(dag)

    wait = task_instances(dag_run)["wait"]
    assert (dag_run.state, wait.state, wait.try_number) == ("success", "success", 1)
    assert wait.xcom_pull(task_ids="wait") == 104
    # The first poke saw 101 and deferred; the trigger polled until 104.
    polls = [r for r in salebot_emulator.requests if r.action == "get_order_state"]
    assert len(polls) >= 3
    assert all(r.params == {"client_id": str(client_id), "order_id": str(order_id)} for r in polls)
    triggers = trigger_rows_after(before)
    assert triggers == [
        (
            TRIGGER,
            {
                "client_id": str(client_id),
                "target_states": [104],
                "order_id": order_id,
                "failure_states": [105],
                "poll_interval": 0.2,
                "salebot_conn_id": "salebot_default",
            },
        )
    ]
    out, err = capfd.readouterr()
    assert "reached 104" in out + err
    logs = [p.read_text(errors="replace") for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log")]
    for text in (out, err, caplog.text, json.dumps(triggers), *logs):
        assert salebot_emulator.api_key not in text


def test_reschedule_mode_frees_the_slot_between_pokes(
    salebot_emulator: SalebotEmulator, run_dag: RunDag, deal: tuple[int, int]
) -> None:
    client_id, _ = deal
    with DAG("salebot_test_order_state_reschedule", schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        OrderStateSensor(
            task_id="wait",
            client_id=client_id,
            target_states=[104],
            poke_interval=1,
            timeout=120,
            mode="reschedule",
        )
    before = last_trigger_id()

    dag_run = run_dag(dag)

    wait = task_instances(dag_run)["wait"]
    assert (dag_run.state, wait.state, wait.try_number) == ("success", "success", 1)
    assert wait.xcom_pull(task_ids="wait") == 104
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        reschedules = session.scalar(
            select(func.count()).select_from(TaskReschedule).where(TaskReschedule.ti_id == wait.id)
        )
    # Each poke before 104 ended the try with a reschedule; none of them deferred.
    assert reschedules is not None
    assert reschedules >= 1
    assert len([r for r in salebot_emulator.requests if r.action == "get_order_state"]) == reschedules + 1
    assert trigger_rows_after(before) == []
