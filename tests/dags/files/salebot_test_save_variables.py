"""Per-client values from a file, and one value for many clients (tests run it with dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from salebot_provider.operators import SaveVariablesOperator

with DAG(
    "salebot_test_save_variables",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={"scores": "", "ids": [], "segment": "vip"},
) as dag:
    SaveVariablesOperator(task_id="per_client", client_variables="{{ params.scores }}")
    SaveVariablesOperator(
        task_id="segment", clients="{{ params.ids }}", variables={"client.segment": "{{ params.segment }}"}
    )
