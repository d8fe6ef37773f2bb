"""OrderStateSensor against the emulator: poke, reschedule and deferred, and its input checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowRescheduleException

from salebot_provider.exceptions import SalebotNotFoundError, SalebotPermissionError, SalebotValidationError
from salebot_provider.sensors import OrderStateSensor
from salebot_provider.triggers import OrderStateTrigger

if TYPE_CHECKING:
    from salebot_provider.testing import SalebotEmulator


def new_deal(emulator: SalebotEmulator, state_id: int = 101) -> tuple[int, int]:
    client_id = emulator.add_client(f"sensor-{len(emulator.state.clients)}")
    with emulator.state.lock:
        return client_id, emulator.state.add_deal(client_id, state_id).id


def move(emulator: SalebotEmulator, order_id: int, state_id: int) -> None:
    with emulator.state.lock:
        emulator.state.move_deal(emulator.state.deals[order_id], state_id)


def settled(emulator: SalebotEmulator) -> list[Any]:
    """The request log once no more records arrive (a slow request is logged when it ends)."""
    seen = -1
    while len(emulator.requests) != seen:
        seen = len(emulator.requests)
        time.sleep(0.8)
    return emulator.requests


def sensor(**kwargs: Any) -> OrderStateSensor:
    return OrderStateSensor(**{"task_id": "wait", "poke_interval": 0.01, "timeout": 5, **kwargs})


class FakeTI:
    """What reschedule mode asks of the task instance: when the first try started."""

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


@pytest.fixture
def no_retries(salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook does not retry, so that each fault reaches the sensor."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        salebot_emulator.connection_json(backoff_factor=0, max_retries=0, timeout=1.0),
    )


def test_poke_returns_the_state_id_once_a_target_is_reached(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator)
    task = sensor(client_id=client_id, order_id=order_id, target_states=[103, 104], failure_states=[105])
    assert not task.poke({}).is_done
    move(salebot_emulator, order_id, 104)
    done = task.poke({})
    assert (done.is_done, done.xcom_value) == (True, 104)
    assert [r.params for r in salebot_emulator.requests] == [
        {"client_id": str(client_id), "order_id": str(order_id)}
    ] * 2


@pytest.mark.parametrize(
    "targets",
    [104, "104", " 104 ", [104], ["102", 104], "[102, 104]", "['102', '104']", "(102, 104)", (104,), {104}],
)
def test_target_states_take_ids_digit_strings_and_lists(
    salebot_emulator: SalebotEmulator, targets: Any
) -> None:
    client_id, _ = new_deal(salebot_emulator, 104)
    # No order_id: the API answers for the client's current deal.
    assert sensor(client_id=str(client_id), target_states=targets).execute({}) == 104
    assert salebot_emulator.requests[0].params == {"client_id": str(client_id)}


def test_a_failure_state_fails_the_task_without_retries(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator, 105)
    task = sensor(client_id=client_id, order_id=order_id, target_states=104, failure_states="105", retries=3)
    with pytest.raises(
        AirflowFailException, match=rf"deal {order_id} of client {client_id} .*failure state 105"
    ):
        task.execute({})
    assert len(salebot_emulator.requests) == 1


def test_no_such_client_or_deal_fails_the_task(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator)
    someone_else, _ = new_deal(salebot_emulator)
    no_deal = salebot_emulator.add_client("no-deal")
    for ids in (
        {"client_id": 999},
        {"client_id": someone_else, "order_id": order_id},
        {"client_id": no_deal},
    ):
        with pytest.raises(SalebotNotFoundError, match=r"client_not_found|order not found"):
            sensor(target_states=104, **ids).execute({})
    assert [r.status for r in salebot_emulator.requests] == [200, 200, 200]
    assert sensor(client_id=client_id, target_states=101).execute({}) == 101


def test_a_key_without_crm_read_fails_the_task(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, _ = new_deal(salebot_emulator)
    key = salebot_emulator.add_key(["clients_read"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        salebot_emulator.connection_json().replace(salebot_emulator.api_key, key),
    )
    with pytest.raises(SalebotPermissionError, match="crm_read") as raised:
        sensor(client_id=client_id, target_states=104).execute({})
    assert key not in str(raised.value)


@pytest.mark.usefixtures("no_retries")
@pytest.mark.parametrize(
    "fault",
    [{"status": 502}, {"status": 503, "html": True}, {"status": 429}, {"latency": 2.5}, {"reset": True}],
    ids=["502", "503-html", "429", "timeout", "reset"],
)
def test_transient_errors_are_logged_and_polled_through(
    salebot_emulator: SalebotEmulator, capfd: pytest.CaptureFixture[str], fault: dict[str, Any]
) -> None:
    client_id, order_id = new_deal(salebot_emulator, 104)
    salebot_emulator.inject("get_order_state", times=2, **fault)
    task = sensor(client_id=client_id, order_id=order_id, target_states=104)
    assert not task.poke({}).is_done
    assert "Could not read the state of deal" in "".join(capfd.readouterr())
    assert task.execute({}) == 104  # the second fault, then the state
    assert len(settled(salebot_emulator)) == 3
    printed = "".join(capfd.readouterr())
    assert "[warning  ] Could not read the state of deal" in printed
    assert salebot_emulator.api_key not in printed


@pytest.mark.usefixtures("no_retries")
def test_poke_mode_times_out_while_the_service_keeps_failing(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator, 104)
    salebot_emulator.inject("get_order_state", status=502)
    with pytest.raises(AirflowSensorTimeout):
        sensor(
            client_id=client_id, order_id=order_id, target_states=104, poke_interval=0.05, timeout=0.3
        ).execute({})
    assert len(salebot_emulator.requests) >= 3


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"client_id": "abc"}, "client_id"),
        ({"client_id": -5}, "client_id"),
        ({"order_id": "7x"}, "order_id"),
        ({"target_states": []}, "target_states"),
        ({"target_states": ["104", "Paid"]}, "target_states[1]"),
        ({"target_states": 1.5}, "target_states"),
        ({"failure_states": [True]}, "failure_states[0]"),
        ({"failure_states": [104]}, "'target_states' and 'failure_states'"),
    ],
)
def test_bad_input_is_refused_naming_the_parameter_before_any_request(
    salebot_emulator: SalebotEmulator, arguments: dict[str, Any], parameter: str
) -> None:
    good = {"client_id": 40000001, "order_id": None, "target_states": 104, "failure_states": ()}
    # Literal values: refused when the DAG file is parsed.
    with pytest.raises(SalebotValidationError, match=re.escape(parameter)):
        sensor(**{**good, **arguments})
    # Templated values: refused when the task runs, after rendering, before any request.
    task = sensor(**{**good, "client_id": "{{ params.client_id }}"})
    for name, value in {**good, **arguments}.items():
        setattr(task, name, value)
    for run in (task.execute, task.poke):
        with pytest.raises(SalebotValidationError, match=re.escape(parameter)):
            run({})
    assert salebot_emulator.requests == []


def test_templates_are_rendered_before_the_checks(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator, 104)
    with DAG("salebot_sensor_templates", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        task = sensor(
            client_id="{{ params.client }}",
            order_id="{{ params.order }}",
            target_states="{{ params.targets }}",
            failure_states="{{ params.failures }}",
        )
    assert task.template_fields == ("client_id", "order_id", "target_states", "failure_states")
    params = {"client": client_id, "order": order_id, "targets": [103, 104], "failures": 105}
    task.render_template_fields({"params": params})  # type: ignore[arg-type]
    assert (task.client_id, task.target_states) == (str(client_id), "[103, 104]")
    assert task.execute({}) == 104


def test_construction_and_mapping_send_nothing(salebot_emulator: SalebotEmulator) -> None:
    with DAG("salebot_sensor_mapped", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        mapped = OrderStateSensor.partial(task_id="wait", target_states=104).expand(client_id=[1, 2, 3])
        sensor(task_id="one", client_id=1, target_states=104)
    assert mapped.expand_input.value == {"client_id": [1, 2, 3]}
    assert salebot_emulator.requests == []


def test_reschedule_mode_gives_the_slot_back_until_the_target(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator)
    task = sensor(
        client_id=client_id, order_id=order_id, target_states=104, mode="reschedule", poke_interval=60
    )
    context: Any = {"ti": FakeTI()}
    with pytest.raises(AirflowRescheduleException) as rescheduled:
        task.execute(context)
    later = rescheduled.value.reschedule_date - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(seconds=55) < later <= dt.timedelta(seconds=60)
    move(salebot_emulator, order_id, 104)
    assert task.execute(context) == 104


def test_deferrable_defers_after_one_poke_and_its_trigger_finishes_the_task(
    salebot_emulator: SalebotEmulator,
) -> None:
    client_id, order_id = new_deal(salebot_emulator)
    task = sensor(
        client_id=str(client_id),
        order_id=order_id,
        target_states=["104"],
        failure_states=105,
        deferrable=True,
        timeout=600,
        poke_interval=0.05,
    )
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    assert len(salebot_emulator.requests) == 1
    assert (deferred.value.method_name, deferred.value.timeout) == (
        "execute_complete",
        dt.timedelta(seconds=600),
    )
    assert isinstance(deferred.value.trigger, OrderStateTrigger)
    classpath, kwargs = deferred.value.trigger.serialize()
    assert salebot_emulator.api_key not in repr(kwargs)
    from airflow.sdk._shared.module_loading import import_string

    rebuilt = import_string(classpath)(**kwargs)
    move(salebot_emulator, order_id, 104)

    async def first_event() -> Any:
        return [event async for event in rebuilt.run()]

    (event,) = asyncio.run(first_event())
    assert task.execute_complete({}, event.payload) == 104


def test_deferrable_does_not_defer_when_the_first_poke_is_done(salebot_emulator: SalebotEmulator) -> None:
    client_id, order_id = new_deal(salebot_emulator, 104)
    assert (
        sensor(client_id=client_id, order_id=order_id, target_states=104, deferrable=True).execute({}) == 104
    )


@pytest.mark.parametrize(
    ("event", "raised", "message"),
    [
        (
            {
                "status": "failure",
                "state_id": 105,
                "message": "Salebot deal 7 of client 5 reached the failure state 105",
            },
            AirflowFailException,
            "failure state 105",
        ),
        (
            {
                "status": "error",
                "message": "Salebot get_order_state failed (/api/***/get_order_state): HTTP 200",
            },
            AirflowException,
            "/api/\\*\\*\\*/get_order_state",
        ),
        (
            {"status": "error", "message": "client_not_found", "error": "SalebotNotFoundError"},
            SalebotNotFoundError,
            "client_not_found",
        ),
        (
            {"status": "error", "message": "no crm_read", "error": "SalebotPermissionError"},
            SalebotPermissionError,
            "no crm_read",
        ),
        ({"status": "error", "message": "odd", "error": "ValueError"}, AirflowException, "odd"),
        ({"status": "surprise"}, AirflowException, "surprise"),
        ({"status": "success"}, AirflowException, "unexpected event"),
        ({"status": "success", "state_id": "x"}, AirflowException, "unexpected event"),
        (None, AirflowException, "not a dict"),
    ],
)
def test_execute_complete_turns_each_event_into_the_outcome(
    event: dict[str, Any], raised: type[Exception], message: str
) -> None:
    task = sensor(client_id=5, target_states=104)
    with pytest.raises(raised, match=message):
        task.execute_complete({}, event)
    assert task.execute_complete({}, {"status": "success", "state_id": 104, "message": "ok"}) == 104


def test_a_poke_interval_the_trigger_cannot_take_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="'poke_interval' of a deferrable sensor"):
        sensor(client_id=5, target_states=104, deferrable=True, poke_interval=2 * 86400)
    sensor(client_id=5, target_states=104, poke_interval=2 * 86400)  # poke mode: any interval


def test_import_is_cheap_and_deferrable_follows_the_config() -> None:
    code = (
        "import sys; from salebot_provider.sensors import OrderStateSensor as S; "
        "t = S(task_id='w', client_id=1, target_states=2); "
        "print(t.deferrable, 'salebot_provider.hooks.salebot' in sys.modules)"
    )
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split()[-2:] == ["True", "False"]
