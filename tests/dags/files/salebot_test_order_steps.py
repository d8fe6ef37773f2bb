"""Deal steps from creation to a message to the client, fed by templates and XComs (run by dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from salebot_provider.operators.callbacks import CallbackOperator
from salebot_provider.operators.messages import SendMessageOperator
from salebot_provider.operators.orders import (
    CreateOrderOperator,
    GetOrderVariablesOperator,
    SetOrderStateOperator,
    SetOrderVariablesOperator,
)

with DAG(
    "salebot_test_order_steps",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={"client": 0, "ref": "", "total": 0, "steps": []},
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
) as dag:
    create = CreateOrderOperator(
        task_id="create",
        client_id="{{ params.client }}",
        name="Order {{ params.ref }}",
        budget="{{ params.total }}",
    )
    paid = SetOrderStateOperator(task_id="set_state", client_id="{{ params.client }}", state_id=104)
    note = SetOrderVariablesOperator(
        task_id="set_vars",
        client_id="{{ params.client }}",
        order_id=create.output,
        variables={"ref": "{{ params.ref }}", "paid_at": "{{ ds }}"},
    )
    read = GetOrderVariablesOperator(
        task_id="get_vars",
        client_id="{{ params.client }}",
        order_id="{{ ti.xcom_pull(task_ids='create') }}",
        variables=["ref", "paid_at"],
    )
    tell = SendMessageOperator(
        task_id="notify",
        client_id="{{ params.client }}",
        message=(
            "Order {{ ti.xcom_pull(task_ids='create') }} (ref "
            "{{ ti.xcom_pull(task_ids='get_vars')['ref'] }}) is paid"
        ),
    )

    @task
    def steps(values: list[dict[str, str]]) -> list[dict[str, str]]:
        return values

    # One callback per mapped task instance, each saving its own variables on the client.
    follow_up = CallbackOperator.partial(
        task_id="follow_up", client_id="{{ params.client }}", message="order_paid"
    ).expand(variables=steps("{{ params.steps }}"))
    create >> paid >> note >> read >> tell >> follow_up
