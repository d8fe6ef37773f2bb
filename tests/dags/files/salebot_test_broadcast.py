"""A broadcast in chunks, and the operator mapped over several audiences (run by tests with dag.test())."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from salebot_provider.operators import BroadcastOperator

with DAG(
    "salebot_test_broadcast",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    params={"ids": [], "message": "Hello", "groups": []},
    default_args={"retries": 1, "retry_delay": dt.timedelta(seconds=0)},
) as dag:

    @task(trigger_rule="all_done")  # after the big broadcast, whatever its end
    def audiences(groups: list[list[int]]) -> list[list[int]]:
        return groups

    big = BroadcastOperator(
        task_id="broadcast",
        clients="{{ params.ids }}",
        message="{{ params.message }}",
        shift=0.5,
        send_time="{{ dag_run.run_after + macros.timedelta(days=1) }}",
    )
    groups = audiences("{{ params.groups }}")
    big >> groups
    BroadcastOperator.partial(task_id="mapped", message="Hi", chunk_size=2).expand(clients=groups)
