"""
A campaign broadcast to a segment of clients, when the CRM sync has exported them, or by hand.

Finds the segment's clients (``find_clients`` on their variables) and sends them the message, paced
by ``shift`` and starting at ``send_time`` (by default an hour after the run). Trigger it by hand
with other ``params`` for another segment or text.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, Asset, Param

from salebot_provider.operators import BroadcastOperator, FindClientsOperator

#: The Asset salebot_crm_sync updates: every client, exported as JSON Lines.
DATA = os.path.abspath(os.environ.get("SALEBOT_EXAMPLE_DATA", "/tmp/salebot-example"))
CLIENTS_EXPORT = f"file://{DATA}/export/clients.jsonl"

with DAG(
    "salebot_campaign_broadcast",
    schedule=[Asset(CLIENTS_EXPORT)],
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,  # the segment stays a dict, the ids a list
    params={
        "segment": Param({"segment": "vip"}, type="object", description="client variables to match"),
        "message": Param("Our VIP sale starts now: 20% off until Friday", type="string"),
        "send_time": Param(None, type=["null", "string"], description="'%Y-%m-%d %H:%M:%S'; default +1 h"),
        "shift": Param(0.5, type="number", description="seconds between two messages"),
    },
    # A retry of a part-sent broadcast sends only what surely never went out (docs/reliability.md).
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    tags=["salebot", "example"],
    doc_md=__doc__,
) as dag:
    find = FindClientsOperator(task_id="find_segment", q="{{ params.segment }}")
    BroadcastOperator(
        task_id="broadcast",
        clients=find.output,
        message="{{ params.message }}",
        shift="{{ params.shift }}",
        send_time="{{ params.send_time or dag_run.run_after + macros.timedelta(hours=1) }}",
    )
