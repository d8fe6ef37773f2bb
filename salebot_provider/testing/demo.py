"""
``make demo``: the example DAGs run as real Airflow tasks against the emulator, and a report.

The three CRM DAGs run with ``dag.test()``. Then the reply loop: the emulator's clients reply, the
emulator posts each reply to the webhook receiver (a real HTTP server here), the receiver spools it,
``SalebotMessageTrigger`` reads the spool and yields the events, and ``salebot_reply_followup``
handles them. ``dag.test()`` cannot start a run from an asset watcher, so the trigger runs in this
process (its ``run()``) and its events are fed into the run's conf, the DAG's documented replay path;
``make e2e`` runs the same loop under Airflow's real triggerer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing.emulator import SalebotEmulator

DAG_IDS = ("salebot_crm_sync", "salebot_campaign_broadcast", "salebot_order_pipeline")
#: The list new leads join in salebot_crm_sync (one of the emulator's two lists).
LIST_ID = 1170282
NEW_LEADS = 40


def _write_inputs(data: Path) -> None:
    """The CRM's files of the day: new leads (one with an unknown bot) and their attributes."""
    data.mkdir(parents=True, exist_ok=True)
    leads = [{"platform_id": 880000 + i, "group_id": "shop_bot", "client_type": 1} for i in range(NEW_LEADS)]
    leads.append({"platform_id": 880999, "group_id": "no_such_bot", "client_type": 1})
    (data / "leads.jsonl").write_text("".join(json.dumps(lead) + "\n" for lead in leads))
    tiers = ("gold", "silver", "bronze")
    rows = "".join(f"{880000 + i},{tiers[i % 3]},demo\n" for i in range(NEW_LEADS))
    (data / "attributes.csv").write_text("platform_id,client.tier,client.source\n" + rows)


@contextlib.contextmanager
def _into(log: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Airflow's task logs too) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _migrate(log: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    with log.open("ab") as sink:
        subprocess.run([str(airflow), "db", "migrate"], stdout=sink, stderr=sink, check=True)


def _module(dags: Path, dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"demo_{dag_id}", dags / f"{dag_id}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(dags: Path, dag_id: str, **params: Any) -> Any:
    """Put the DAG file's DAG in the metadata DB, as the DAG processor would, and run it once."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()  # type: ignore[no-untyped-call]
    bag = DagBag(dag_folder=str(dags / f"{dag_id}.py"))
    if bag.import_errors or dag_id not in bag.dags:
        raise SystemExit(f"{dag_id} did not import: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    return _module(dags, dag_id).dag.test(run_conf=params or None)


class _DealWatch:
    """Note each funnel state a new deal passes through while the order pipeline runs."""

    def __init__(self, emulator: SalebotEmulator) -> None:
        self.emulator, self._stop = emulator, threading.Event()
        self.path: list[int] = []
        with emulator.state.lock:
            self._known = set(emulator.state.deals)
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            with self.emulator.state.lock:
                new = sorted(set(self.emulator.state.deals) - self._known)
            if new:
                state = self.emulator.deal(new[0]).state_id
                if not self.path or self.path[-1] != state:
                    self.path.append(state)

    def __enter__(self) -> _DealWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tasks(dag_run: Any) -> list[str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = sorted(dag_run.get_task_instances(session=session), key=lambda ti: ti.start_date or ti.end_date)
        return [
            f"    {ti.task_id:<26} {ti.state!s:<8} {ti.duration or 0:5.1f}s"
            + (f"  (try {ti.try_number})" if ti.try_number > 1 else "")
            for ti in tis
        ]


def _xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = next(t for t in dag_run.get_task_instances(session=session) if t.task_id == task_id)
        return ti.xcom_pull(task_ids=task_id, session=session)


#: What the demo's clients write back: one unsubscribes, two answer.
REPLIES = ("Стоп", "Когда будет доставка?", "Хочу оплатить заказ")


class _MemoryStore:
    """An asset state store of this process only (the triggerer's is in the metadata DB)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = value


def _events(trigger: Any, want: int, within: float = 20.0) -> list[dict[str, Any]]:
    """Run the trigger in this process until it yielded ``want`` events (the triggerer's loop, in small)."""

    async def collect() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) >= want:
                break
        return events

    return asyncio.run(asyncio.wait_for(collect(), within))


def _reply_loop(dags: Path, home: Path, emulator: SalebotEmulator, log: Path) -> Any:
    """Clients reply; the webhook, the receiver, the trigger and the reply DAG do the rest."""
    from salebot_provider.webhook.receiver import ReceiverSettings, serve
    from salebot_provider.webhook.spool import SpoolReader
    from salebot_provider.webhook.trigger import SalebotMessageTrigger

    spool = home / "webhook-spool"
    shutil.rmtree(spool, ignore_errors=True)
    with emulator.state.lock:
        # Salebot's message ids never repeat; the emulator's restart with it, so each demo run starts
        # them anew, or the reply DAG (it remembers the ids it handled) would take a rerun's replies
        # for the earlier run's.
        emulator.state.next_message_id = int(time.time() * 1000)
    os.environ["SALEBOT_WEBHOOK_SPOOL"] = str(spool)
    with emulator.state.lock:
        # Clients with an open deal in the first funnel states, so that a reply can move it on.
        replying = [
            c
            for c in sorted(emulator.state.clients)
            if (deal := emulator.state.current_deal(c)) is not None and deal.state_id in (101, 102)
        ][: len(REPLIES)]
        before = {c: emulator.state.current_deal(c).state_id for c in replying}  # type: ignore[union-attr]
    print("\nThe reply loop: webhook -> receiver -> SalebotMessageTrigger -> salebot_reply_followup")
    settings = ReceiverSettings(spool=spool, secret=secrets.token_urlsafe(24), name="demo")
    with _into(log), serve(settings) as url:  # the receiver's and the server's lines go to the log
        emulator.webhook(url)
        for client_id, text in zip(replying, REPLIES, strict=True):
            emulator.client_says(client_id, text)
        emulator.wait_webhook()
        emulator.webhook(None)
    spooled = len(SpoolReader(spool).read(10_000))
    print(
        f"  {len(REPLIES)} clients replied; the receiver answered 200 to each and spooled {spooled} messages"
    )
    watcher = _module(dags, "salebot_reply_followup").inbound.watchers[0].trigger
    # The DAG's watcher starts at the spool's end when Airflow first runs it; here it reads from the start.
    trigger = SalebotMessageTrigger(**{**watcher.serialize()[1], "start": "beginning", "poll_interval": 0.1})
    trigger.asset_state_store = _MemoryStore()  # type: ignore[assignment]  # the triggerer gives the DB's
    events = _events(trigger, len(REPLIES))
    for event in events:
        print(f"  event {event['id']}: client {event['client_id']}, labels {event['labels']}, no text in it")
    with _into(log):
        dag_run = _run(dags, "salebot_reply_followup", events=events)
    print(f"salebot_reply_followup: {dag_run.state}")
    print("\n".join(_tasks(dag_run)))
    for client_id, text in zip(replying, REPLIES, strict=True):
        client = emulator.client(client_id)
        with emulator.state.lock:
            deal = emulator.state.current_deal(client_id)
        if client.variables.get("unsubscribed"):
            said = [i.text for i in emulator.outbox if i.client_id == client_id and i.action == "message"]
            print(f"  client {client_id} wrote {text!r}: unsubscribed, told {said[-1]!r}")
        else:
            moved = f"{deal.id}: {before[client_id]} -> {deal.state_id}" if deal else "-"
            print(f"  client {client_id} wrote {text!r}: deal {moved}")
    return dag_run


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the exit status is 0 when every DAG succeeded."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--dags", type=Path, default=Path("example_dags"), help="the example DAGs' folder")
    args = parser.parse_args(argv)
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(Path(".airflow-demo").resolve())))
    data = Path(os.environ.setdefault("SALEBOT_EXAMPLE_DATA", str(home / "data")))
    os.environ.setdefault("SALEBOT_EXAMPLE_POKE_INTERVAL", "1")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(args.dags.resolve())
    home.mkdir(parents=True, exist_ok=True)
    log = home / "demo.log"
    log.write_text("")
    started = time.monotonic()
    print("Salebot provider demo: the example DAGs as real Airflow tasks, on the bundled emulator")
    print(f"  Airflow home {home} (sqlite); every task log goes to {log}")
    _migrate(log)
    _write_inputs(data)

    from salebot_provider.testing.emulator import SalebotEmulator

    failed = []
    with SalebotEmulator(clients=3000, seed=7) as emulator:
        os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = emulator.connection_json(backoff_factor=0.2)
        emulator.auto_advance_new_deals(1.5)  # the buyer pays on their own: 101 -> 102 -> 103 -> 104
        print(f"  Emulator at {emulator.base_url}: 3,000 clients, a five-state funnel\n")
        listed_before = len(emulator.state.lists[LIST_ID])
        buyer = next(iter(emulator.state.clients))
        runs = {}
        with _into(log):
            runs["salebot_crm_sync"] = _run(args.dags, "salebot_crm_sync")
            runs["salebot_campaign_broadcast"] = _run(
                args.dags, "salebot_campaign_broadcast", message="Our VIP sale starts now: 20% off"
            )
            with _DealWatch(emulator) as watch:
                runs["salebot_order_pipeline"] = _run(args.dags, "salebot_order_pipeline", client_id=buyer)
        for dag_id, dag_run in runs.items():
            print(f"{dag_id}: {dag_run.state}")
            print("\n".join(_tasks(dag_run)))
            if str(dag_run.state) != "success":
                failed.append(dag_id)
        print("\nWhat Salebot (the emulator) saw:")
        loaded = _xcom(runs["salebot_crm_sync"], "load_leads") or {}
        print(
            f"  leads loaded: {loaded.get('loaded')}, failed: {loaded.get('failed')} "
            f"({(loaded.get('failures') or [{}])[0].get('reason', '-')})"
        )
        tiers = [emulator.client(i).variables.get("tier") for i in loaded.get("client_ids") or []]
        print(f"  variables written: client.tier on {sum(t is not None for t in tiers)} new clients")
        print(f"  list {LIST_ID}: {listed_before} -> {len(emulator.state.lists[LIST_ID])} members")
        sent = [item for item in emulator.outbox if item.action == "broadcast"]
        if sent:
            first, last = (time.strftime("%H:%M:%S", time.localtime(sent[i].due_at)) for i in (0, -1))
            print(f"  broadcast: {len(sent)} recipients, due from {first} to {last} (0.5 s apart)")
        path = " -> ".join(map(str, watch.path)) or "-"
        print(f"  the new deal's path through the funnel: {path} (104 is Paid)")
        thanks = [item.text for item in emulator.outbox if item.action == "message"]
        print(f"  thank-you message: {thanks[-1] if thanks else '-'}")
        print(f"  exported clients: {data / 'export' / 'clients.jsonl'} (the Asset the broadcast ran on)")
        replies = _reply_loop(args.dags, home, emulator, log)
        if str(replies.state) != "success":
            failed.append("salebot_reply_followup")
    masked = next((line.strip() for line in log.read_text().splitlines() if "/api/***/" in line), None)
    if masked:
        print(f"\nA task log line, the key masked: {masked[:160]}")
    print(
        f"\n{'All four DAGs succeeded' if not failed else 'FAILED: ' + ', '.join(failed)}"
        f" in {time.monotonic() - started:.0f}s."
    )
    print(
        "Next: docs/examples.md explains the DAGs, docs/operators.md every operator, docs/webhook.md the "
        "reply loop. To run the same "
        "DAGs against the real Salebot, set the connection salebot_default to your API key "
        '(docs/connection.md): AIRFLOW_CONN_SALEBOT_DEFAULT=\'{"conn_type": "salebot", '
        '"password": "<api key>"}\''
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
