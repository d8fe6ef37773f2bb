"""Clients added to a list in chunks, then some of them removed (tests run it with dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from salebot_provider.operators.lists import AddToListOperator, RemoveFromListOperator

with DAG(
    "salebot_test_lists",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={"list_id": 0, "ids": [], "leaving": []},
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
) as dag:
    add = AddToListOperator(task_id="add", list_id="{{ params.list_id }}", clients="{{ params.ids }}")
    remove = RemoveFromListOperator(
        task_id="remove",
        list_id="{{ params.list_id }}",
        clients="{{ params.leaving }}",
        chunk_size=2,
        trigger_rule="all_done",  # after the add, whatever its end
    )
    add >> remove
