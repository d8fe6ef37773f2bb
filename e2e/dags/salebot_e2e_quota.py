"""
``make e2e`` only: Salebot work that wants more than the project's quota, to run twice at once.

One task writes a distinct variable to each client it is given, so ``SaveVariablesOperator`` makes
one request per client, ``max_workers`` at a time. Two runs of it on two worker slots each want the
connection's whole ``rate_limit``; only a limiter shared by the processes keeps them (and the
triggerer's sensors) under the quota together.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from salebot_provider.operators import SaveVariablesOperator

with DAG(
    "salebot_e2e_quota",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    max_active_runs=2,
    render_template_as_native_obj=True,
    params={"rows": Param([], type="array", description='[{"client_id": ..., "variables": {...}}, ...]')},
    tags=["salebot", "e2e"],
    doc_md=__doc__,
) as dag:
    SaveVariablesOperator(
        task_id="write_scores",
        client_variables="{{ params.rows }}",
    )
