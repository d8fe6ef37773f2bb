"""Every client exported to a file declared as an Asset, and one list's (tests run it with dag.test())."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from salebot_provider.operators.export import ExportClientsOperator

#: A literal destination, known when the file is parsed, so that it becomes the outlet Asset.
EXPORT_DIR = os.environ.get("SALEBOT_TEST_EXPORT_DIR", "/tmp")

with DAG(
    "salebot_test_export",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    params={"list_id": 0, "list_path": ""},
) as dag:
    ExportClientsOperator(
        task_id="export", path=f"{EXPORT_DIR}/clients.jsonl", with_variables=True, max_workers=3
    )
    ExportClientsOperator(
        task_id="export_list", path="{{ params.list_path }}", list_id="{{ params.list_id }}"
    )
