"""
An order's path: a deal created in SalebotCRM, waited on until paid (or lost), marked, and thanked.

The wait is a deferrable sensor: it holds no worker while the client pays, and it fails the run at
once if the deal reaches the lost state.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, Param

from salebot_provider.operators import CreateOrderOperator, SendMessageOperator, SetOrderVariablesOperator
from salebot_provider.sensors import OrderStateSensor

#: Seconds between two looks at the deal (the demo makes it short).
POKE_INTERVAL = float(os.environ.get("SALEBOT_EXAMPLE_POKE_INTERVAL", "60"))

with DAG(
    "salebot_order_pipeline",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={
        "client_id": Param(40000001, type="integer", description="the buyer's Salebot client id"),
        "budget": Param(4900, type="number"),
        "paid_state": Param(104, type="integer", description="the funnel state 'Paid'"),
        "lost_state": Param(105, type="integer", description="the funnel state 'Lost'"),
    },
    tags=["salebot", "example"],
    doc_md=__doc__,
) as dag:
    create = CreateOrderOperator(
        task_id="create_order",
        client_id="{{ params.client_id }}",
        name="Order {{ dag_run.run_id }}",
        budget="{{ params.budget }}",
    )
    paid = OrderStateSensor(
        task_id="wait_until_paid",
        client_id="{{ params.client_id }}",
        order_id=create.output,
        target_states="{{ params.paid_state }}",
        failure_states="{{ params.lost_state }}",
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=7 * 24 * 3600,
    )
    mark = SetOrderVariablesOperator(
        task_id="mark_paid",
        client_id="{{ params.client_id }}",
        order_id=create.output,
        variables={
            "paid_at": "{{ ti.start_date.isoformat() }}",
            "paid_state": "{{ ti.xcom_pull(task_ids='wait_until_paid') }}",
        },
    )
    thanks = SendMessageOperator(
        task_id="thank_you",
        client_id="{{ params.client_id }}",
        message="Thank you! Your order {{ ti.xcom_pull(task_ids='create_order') }} is paid.",
    )
    create >> paid >> mark >> thanks
