"""Leads loaded from a file, then the loaded ones messaged (tests run it with dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from salebot_provider.operators import BroadcastOperator, LoadClientsOperator

with DAG(
    "salebot_test_load_clients",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    params={"leads": "", "output": ""},
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
) as dag:
    load = LoadClientsOperator(
        task_id="load",
        clients="{{ params.leads }}",
        chunk_size=2,
        output_path="{{ params.output }}",
        fail_on_item_error=False,
    )
    load >> BroadcastOperator(task_id="welcome", clients=load.output["client_ids"], message="Welcome!")
