"""
Daily CRM sync: the day's new leads into Salebot, their attributes written, listed, and every client exported.

The CRM drops two files a day into the folder ``SALEBOT_EXAMPLE_DATA`` names: ``leads.jsonl``
(``platform_id``, ``group_id``, ``client_type`` per line) and ``attributes.csv`` (``platform_id``
and one column per client variable, e.g. ``client.tier``). The export at the end is an Asset:
``salebot_campaign_broadcast`` runs when it is updated.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os

from airflow.sdk import DAG, Param, task

from salebot_provider.operators import (
    AddToListOperator,
    ExportClientsOperator,
    LoadClientsOperator,
    SaveVariablesOperator,
)

#: The CRM's files: leads.jsonl and attributes.csv in, loaded/ and export/ out (any local folder).
DATA = os.path.abspath(os.environ.get("SALEBOT_EXAMPLE_DATA", "/tmp/salebot-example"))
#: Every client, as JSON Lines: the Asset salebot_campaign_broadcast is scheduled on.
CLIENTS_EXPORT = f"file://{DATA}/export/clients.jsonl"

with DAG(
    "salebot_crm_sync",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "leads": Param(f"{DATA}/leads.jsonl", type="string", description="the new leads, JSON Lines"),
        "attributes": Param(f"{DATA}/attributes.csv", type="string", description="platform_id + variables"),
        "list_id": Param(1170282, type="integer", description="the Salebot list the new leads join"),
    },
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    tags=["salebot", "example"],
    doc_md=__doc__,
) as dag:
    load = LoadClientsOperator(
        task_id="load_leads",
        clients="{{ params.leads }}",
        output_path=DATA + "/loaded/{{ dag_run.run_after | ds }}.jsonl",
        fail_on_item_error=False,  # a bad lead is reported in the summary, the rest go on
    )

    @task
    def key_attributes_by_client(loaded: dict, attributes: str, out: str) -> str:
        """Give the CRM's attributes (keyed by platform_id) the client ids Salebot gave the leads."""
        ids = {}
        with open(loaded["path"], encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                if row["status"] == "loaded":
                    ids[str(row["item"]["platform_id"]).removesuffix("@s.whatsapp.net")] = row["id"]
        with (
            open(attributes, encoding="utf-8", newline="") as source,
            open(out, "w", encoding="utf-8") as sink,
        ):
            for row in csv.DictReader(source):
                client_id = ids.get(row.pop("platform_id").removesuffix("@s.whatsapp.net"))
                if client_id is not None:
                    sink.write(json.dumps({"client_id": client_id, **row}) + "\n")
        return out

    values = key_attributes_by_client(
        load.output, "{{ params.attributes }}", DATA + "/loaded/{{ dag_run.run_after | ds }}-attributes.jsonl"
    )
    write = SaveVariablesOperator(task_id="write_attributes", client_variables=values)
    listed = AddToListOperator(
        task_id="add_to_list", list_id="{{ params.list_id }}", clients=load.output["client_ids"]
    )
    export = ExportClientsOperator(task_id="export_clients", path=CLIENTS_EXPORT)
    [write, listed] >> export
