"""Clients found by their variables, then messaged via the client_ids XCom (tests run it with dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from salebot_provider.operators.broadcast import BroadcastOperator
from salebot_provider.operators.find import FindClientsOperator

with DAG(
    "salebot_test_find_broadcast",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={"q": {}, "message": "Hello"},
) as dag:
    find = FindClientsOperator(task_id="find", q="{{ params.q }}")
    find >> BroadcastOperator(
        task_id="announce", clients=find.output, message="{{ params.message }}", chunk_size=3
    )
