"""
Every operator and the sensor in all three modes, each task on its own (run by ``test_secrets.py``).

The tasks have no upstream tasks, so that every one of them runs in a failing run too. Four
connections let the test give a task a key with fewer permissions, a wrong key or a short timeout:
``salebot_default``, ``salebot_alt`` (list and deal writes), ``salebot_fast`` (removing from a list,
callbacks) and ``salebot_sensor`` (the poke sensor).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from salebot_provider.operators import (
    AddToListOperator,
    BroadcastOperator,
    CallbackOperator,
    CreateOrderOperator,
    ExportClientsOperator,
    FindClientsOperator,
    GetOrderVariablesOperator,
    LoadClientsOperator,
    RemoveFromListOperator,
    SaveVariablesOperator,
    SendMessageOperator,
    SetOrderStateOperator,
    SetOrderVariablesOperator,
)
from salebot_provider.sensors import OrderStateSensor

with DAG(
    "salebot_secrets_all",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={
        "ids": [],
        "leads": [],
        "scores": {},
        "list_id": 0,
        "q": {},
        "out_dir": "",
        "client": 0,
        "order": 0,
        "missing": 0,
        "deals": {},
    },
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
) as dag:
    BroadcastOperator(
        task_id="broadcast",
        clients="{{ params.ids }}",
        message="Sale {{ ds }} from {{ conn.salebot_default.host }}",
        chunk_size=2,
    )
    LoadClientsOperator(
        task_id="load_clients",
        clients="{{ params.leads }}",
        chunk_size=2,
        output_path="{{ params.out_dir }}/loaded.jsonl",
    )
    SaveVariablesOperator(task_id="save_variables", client_variables="{{ params.scores }}")
    AddToListOperator(
        task_id="add_to_list",
        list_id="{{ params.list_id }}",
        clients="{{ params.ids }}",
        salebot_conn_id="salebot_alt",
    )
    RemoveFromListOperator(
        task_id="remove_from_list",
        list_id="{{ params.list_id }}",
        clients="{{ params.ids[:2] }}",
        salebot_conn_id="salebot_fast",
    )
    FindClientsOperator(task_id="find_clients", q="{{ params.q }}")
    ExportClientsOperator(
        task_id="export_clients", path="{{ params.out_dir }}/clients.jsonl", with_variables=True
    )
    SendMessageOperator(
        task_id="send_message",
        client_id="{{ params.client }}",
        message="Order {{ params.order }} via {{ conn.salebot_default.host }}",
    )
    CallbackOperator(
        task_id="callback",
        client_id="{{ params.client }}",
        message="order_paid",
        variables={"run": "{{ run_id }}"},
        salebot_conn_id="salebot_fast",
    )
    CreateOrderOperator(
        task_id="create_order",
        client_id="{{ params.client }}",
        name="Order for {{ params.client }}",
        budget="1500.5",
        salebot_conn_id="salebot_alt",
    )
    SetOrderStateOperator(task_id="set_order_state", client_id="{{ params.client }}", state_id=102)
    SetOrderVariablesOperator(
        task_id="set_order_vars",
        client_id="{{ params.client }}",
        order_id="{{ params.order }}",
        variables={"ref": "A-{{ params.order }}", "paid_at": "{{ ds }}"},
    )
    GetOrderVariablesOperator(
        task_id="get_order_vars",
        client_id="{{ params.missing or params.client }}",
        order_id="{{ params.order }}",
        variables=["ref", "paid_at"],
    )
    for mode, conn_id in (
        ("poke", "salebot_sensor"),
        ("reschedule", "salebot_default"),
        ("deferred", "salebot_default"),
    ):
        OrderStateSensor(
            task_id=f"wait_{mode}",
            client_id=f"{{{{ params.deals['{mode}'][0] }}}}",
            order_id=f"{{{{ params.deals['{mode}'][1] }}}}",
            target_states=[104],
            failure_states=[105],
            poke_interval=0.2 if mode != "reschedule" else 1,
            timeout=60,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferred",
            salebot_conn_id=conn_id,
        )
