"""Benchmark of OrderStateTrigger: 1,000 deferred sensors on one connection under a 10 requests/s quota.

Run with ``make bench`` (or ``.venv/bin/python bench/triggers.py``): 4 to 7 minutes on 2 cores,
longer on a busy machine; ``--help`` for options. It checks the targets of the 1,000-trigger
benchmark: with the Salebot emulator enforcing a quota of ``QUOTA`` requests per second, polling
cannot look at every deal faster than one *sweep* (``TRIGGERS / QUOTA`` = 100 s), so each sensor
must fire within a sweep plus 5 s of its own deal moving, the shared limiter must keep the triggers
at zero 429s, they must make at most 1.1 requests per waiting sensor per sweep, and one triggerer
process must stay under 300 MB. It prints the figures and which targets are met; nothing fails.

Two measurements run side by side, each against its own emulator process (``salebot-emulator``),
each emulator enforcing the quota (its token bucket: bursts of ``QUOTA`` requests, ``QUOTA`` a second):

1. the headline: a real ``airflow triggerer --capacity 1000`` against a private AIRFLOW_HOME
   (sqlite), with a mapped ``OrderStateSensor(deferrable=True)`` whose 1,000 task instances are put
   in the DEFERRED state with their trigger rows, as the sensor's ``defer()`` leaves them. A task
   instance fires when the triggerer marks it SCHEDULED (its ``scheduled_dttm``);
2. the one-loop simulation: the same 1,000 triggers in one asyncio loop in one child process (as the
   triggerer's runner holds them), for the connection's ``rate_limit`` at the quota, twice it, and
   far above it, so the table shows what the shared limiter buys.

Each deal leaves state 101 at its own moment, spread evenly over the first sweep after polling
starts; a sensor's delay is from its own deal's move to its trigger firing. Requests and 429s are
counted by the emulator. "Requests per waiting sensor per sweep" is the requests made (429s
included) in the first sweep after polling starts, when every sensor waits, over the number of
sensors: 1.0 is one request per deal per sweep, more is requests wasted (refused, or repeated
within the sweep). After that sweep the sensors still waiting share the quota the fired ones left,
so each is polled more often than once a sweep by design; "polls of a deal < half a sweep after its
last" counts the repeats that come sooner than half of the sweep of the sensors then waiting.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

#: A benchmark never touches the user's Airflow home: everything it writes goes under this folder,
#: made by ``main`` (the child processes inherit its environment).
WORKDIR = Path(os.environ.get("SALEBOT_BENCH_WORKDIR", "."))

TRIGGERS = 1000
#: The vendor's quota the emulator enforces, requests per second, for all actions together.
QUOTA = 10.0
#: The connection's ``rate_limit`` in the one-loop runs: at the quota, twice it, and "unlimited".
RATE_LIMITS = (10.0, 20.0, 1000.0)
#: Each trigger would poll every 5 s (200 requests/s in all): the quota decides, not the interval.
#: ``--poll-interval`` changes it (the child processes read it from the environment).
POLL_INTERVAL = float(os.environ.get("SALEBOT_BENCH_POLL_INTERVAL", "5"))
TARGETS = [102, 103, 104]
#: What each sensor may take beyond one sweep to fire after its deal moved, in seconds.
SLACK = 5.0
MEMORY_TARGET_MB = 300.0
REQUESTS_TARGET = 1.1
DAG_ID = "salebot_bench_triggerer"
CONN_ID = "salebot_bench"
FIRST_CLIENT = 40_000_001  # the emulator's first seeded client id


def sweep(triggers: int) -> float:
    """Seconds to poll every deal once at the quota."""
    return max(triggers / QUOTA, POLL_INTERVAL)


def run_limit(triggers: int) -> float:
    """How long a run may go on after polling starts: the last move, a sweep, the slack, a margin."""
    return 2 * sweep(triggers) + SLACK + 50.0


# ---------------------------------------------------------------------------------- the emulator


class Emulator:
    """A ``salebot-emulator`` process of its own, so that serving is in none of the measured processes."""

    def __init__(self) -> None:
        script = Path(sys.executable).with_name("salebot-emulator")
        self.proc = subprocess.Popen([str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if line.startswith("Connection JSON: "):
                self.connection: dict[str, Any] = json.loads(line.split(": ", 1)[1])
                break
            if not line:
                raise RuntimeError("salebot-emulator ended early")
        self.host: str = self.connection["host"]

    def prepare(self, count: int) -> list[tuple[int, int]]:
        """``count`` clients with a deal each in state 101, then the quota: (client id, order id)."""
        deals = []
        with httpx.Client(base_url=self.host, timeout=60) as client:
            client.post("/_emulator/seed", json={"clients": count}).raise_for_status()
            path = f"/api/{self.connection['password']}/create_order"
            for client_id in range(FIRST_CLIENT, FIRST_CLIENT + count):
                reply = client.post(path, json={"client_id": client_id, "state_id": 101})
                reply.raise_for_status()
                deals.append((client_id, int(reply.json()["order_id"])))
            client.post("/_emulator/rate_limit", json={"per_second": QUOTA}).raise_for_status()
        return deals

    def polls(self) -> list[dict[str, Any]]:
        """Every ``get_order_state`` request received, in order."""
        records = httpx.get(f"{self.host}/_emulator/requests", timeout=120).json()
        return [r for r in records if r["action"] == "get_order_state"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def set_moves(host: str, deals: list[tuple[int, int]], seed: int) -> dict[int, float]:
    """
    Make each deal leave state 101 once, at its own moment spread over the first sweep from now.

    :return: when each deal moves (epoch seconds), by order id; the emulator's clock is this machine's.
    """
    rng = random.Random(seed)
    span = sweep(len(deals))
    moves = {}
    with httpx.Client(base_url=host, timeout=60) as admin:
        for _, order_id in deals:
            every = max(0.01, rng.uniform(0, span))
            before = time.time()  # the emulator counts from a moment just after this one
            admin.post(f"/_emulator/deals/{order_id}/auto_advance", json={"every": every}).raise_for_status()
            moves[order_id] = before + every
    return moves


# ---------------------------------------------------------------------------------- the one-loop run


def peak_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child() -> None:
    """One measured run: the triggers of one connection in one event loop, as in a triggerer."""
    import asyncio

    from salebot_provider.triggers import OrderStateTrigger

    spec = json.loads(sys.stdin.read())
    deals = [tuple(d) for d in spec["deals"]]
    connection = {**spec["connection"], "extra": {"rate_limit": spec["rate_limit"], "backoff_factor": 0}}
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)
    triggers = [
        OrderStateTrigger(
            client_id, TARGETS, order_id=order_id, poll_interval=POLL_INTERVAL, salebot_conn_id=CONN_ID
        )
        for client_id, order_id in deals
    ]
    fires: dict[int, float] = {}
    statuses: dict[str, int] = {}

    async def fire(trigger: OrderStateTrigger) -> None:
        async for event in trigger.run():
            fires[int(trigger.wait.order_id or 0)] = time.time()
            status = str(event.payload["status"])
            statuses[status] = statuses.get(status, 0) + 1

    async def run_all() -> tuple[float, dict[int, float]]:
        start = time.time()
        tasks = [asyncio.ensure_future(fire(t)) for t in triggers]
        moves = await asyncio.to_thread(set_moves, connection["host"], deals, spec["seed"])
        await asyncio.wait(tasks, timeout=max(0.0, start + spec["limit"] - time.time()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return start, moves

    start, moves = asyncio.run(run_all())
    print(
        json.dumps({"start": start, "moves": moves, "fires": fires, "statuses": statuses, "peak": peak_mb()})
    )


def run_one_loop(emulator: Emulator, rate: float, deals: list[tuple[int, int]]) -> subprocess.Popen[str]:
    """Start the one-loop run of one rate limit in a child process; its output goes to files."""
    name = f"loop-{rate:g}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child"],
        stdin=subprocess.PIPE,
        stdout=(WORKDIR / f"{name}.out").open("w"),
        stderr=(WORKDIR / f"{name}.err").open("w"),
        text=True,
    )
    assert proc.stdin is not None
    spec = {
        "connection": emulator.connection,
        "rate_limit": rate,
        "deals": deals,
        "seed": 7,
        "limit": run_limit(len(deals)),
    }
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def one_loop_result(proc: subprocess.Popen[str], rate: float) -> dict[str, Any]:
    name = f"loop-{rate:g}"
    if proc.wait():
        raise RuntimeError(
            f"the one-loop run at {rate:g}/s failed:\n{(WORKDIR / f'{name}.err').read_text()[-3000:]}"
        )
    out = json.loads((WORKDIR / f"{name}.out").read_text().strip().splitlines()[-1])
    return {
        "start": out["start"],
        "launched": out["start"],
        "moves": {int(k): v for k, v in out["moves"].items()},
        "fires": {int(k): v for k, v in out["fires"].items()},
        "statuses": out["statuses"],
        "peaks": {"the process": out["peak"]},
    }


# ---------------------------------------------------------------------------------- the real triggerer

DAG_FILE = '''"""{count} deferred OrderStateSensors: one mapped task, for bench/triggers.py."""

from airflow.sdk import DAG

from salebot_provider.sensors import OrderStateSensor

DEALS = {deals!r}

with DAG("{dag_id}", schedule=None, catchup=False):
    OrderStateSensor.partial(
        task_id="wait",
        target_states={targets!r},
        salebot_conn_id="{conn_id}",
        deferrable=True,
        poke_interval={poll!r},
        timeout=3600,
    ).expand_kwargs([{{"client_id": c, "order_id": o}} for c, o in DEALS])
'''


def setup_airflow() -> None:
    """
    In the private AIRFLOW_HOME: the DAG in the DB, a run, and its task instances deferred on triggers.

    What the sensor's ``defer()`` leaves behind (a trigger row each, the task instance DEFERRED with
    ``next_method``), without running 1,000 tasks first.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from salebot_provider.triggers import OrderStateTrigger

    deals = [tuple(d) for d in json.loads(sys.stdin.read())]
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_ID}.py"
    dag_file.write_text(
        DAG_FILE.format(
            count=len(deals), deals=deals, dag_id=DAG_ID, targets=TARGETS, conn_id=CONN_ID, poll=POLL_INTERVAL
        )
    )
    DagBundlesManager().sync_bundles_to_db()  # type: ignore[no-untyped-call]
    bag = DagBag(dag_folder=str(dag_file))
    if bag.import_errors or DAG_ID not in bag.dags:
        raise SystemExit(f"{DAG_ID} did not import: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        dag = SerializedDagModel.get_dag(DAG_ID, session=session)
        assert dag is not None
        now = dt.datetime.now(dt.timezone.utc)
        run = dag.create_dagrun(
            run_id="bench",
            run_after=now,
            start_date=now,
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            session=session,
        )
        tis = run.get_task_instances(session=session)
        if len(tis) != len(deals):
            raise SystemExit(f"the run has {len(tis)} task instances, not {len(deals)}")
        for ti in tis:
            client_id, order_id = deals[ti.map_index]
            trigger = Trigger.from_object(
                OrderStateTrigger(
                    client_id,
                    TARGETS,
                    order_id=order_id,
                    poll_interval=POLL_INTERVAL,
                    salebot_conn_id=CONN_ID,
                )
            )
            session.add(trigger)
            session.flush()
            ti.state = TaskInstanceState.DEFERRED
            ti.trigger_id = trigger.id
            ti.next_method = "execute_complete"
            ti.try_number = 1
            ti.start_date = now
            ti.trigger_timeout = now + dt.timedelta(hours=1)
    print(f"{len(deals)} deferred task instances")


def _children(pid: int) -> list[int]:
    """The process's descendants, from each process's parent id in ``/proc/<pid>/stat``."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # "pid (comm) state ppid ...": the command may hold spaces and parentheses.
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        kids = sorted(p for p, parent in parents.items() if parent == todo[0])
        found += kids
        todo = todo[1:] + kids
    return found


def _peak_rss_mb(pid: int) -> tuple[str, float]:
    """A process's command and its peak resident size (VmHWM), while it is alive."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return command, int(line.split()[1]) / 1024
    return command, 0.0


def _utc_epoch(text: str) -> float:
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def run_airflow(emulator: Emulator, deals: list[tuple[int, int]]) -> dict[str, Any]:
    """
    The headline: a real ``airflow triggerer`` with ``len(deals)`` deferred task instances.

    :return: when polling started, when each deal moved and each task instance was marked
        SCHEDULED (epoch seconds, by order id), and the triggerer's processes' peak memory.
    """
    home = WORKDIR / "airflow-home"
    (home / "dags").mkdir(parents=True)
    database = home / "airflow.db"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{database}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # as a triggerer runs by default
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {**emulator.connection, "extra": {"rate_limit": QUOTA, "backoff_factor": 0}}
        ),
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    with (home / "setup.log").open("w") as log:
        subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=log, check=True)
        subprocess.run(
            [sys.executable, __file__, "--setup-airflow"],
            env=env,
            input=json.dumps(deals),
            text=True,
            stdout=log,
            stderr=log,
            check=True,
        )
    by_index = {index: order_id for index, (_, order_id) in enumerate(deals)}
    log = (home / "triggerer.log").open("w")
    triggerer = subprocess.Popen(
        [airflow, "triggerer", "--capacity", str(len(deals)), "--skip-serve-logs"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        launched = time.time()
        while not emulator.polls():
            if triggerer.poll() is not None or time.time() - launched > 300:
                raise RuntimeError(f"the triggerer made no request; see {home / 'triggerer.log'}")
            time.sleep(0.5)
        start = time.time()
        moves = set_moves(emulator.host, deals, seed=7)
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        query = "SELECT map_index, scheduled_dttm FROM task_instance WHERE dag_id = ? AND state = 'scheduled'"
        while True:
            scheduled = db.execute(query, (DAG_ID,)).fetchall()
            if len(scheduled) == len(deals) or time.time() - start > run_limit(len(deals)):
                break
            if triggerer.poll() is not None:
                raise RuntimeError(f"the triggerer ended early; see {home / 'triggerer.log'}")
            time.sleep(2)
        peaks = {pid: _peak_rss_mb(pid) for pid in [triggerer.pid, *_children(triggerer.pid)]}
        db.close()
    finally:
        triggerer.send_signal(signal.SIGTERM)
        try:
            triggerer.wait(60)
        except subprocess.TimeoutExpired:
            triggerer.kill()
            triggerer.wait()
        log.close()
    roles = {}
    for number, (pid, (command, mb)) in enumerate(peaks.items()):
        role = "main process (its DB loop)" if number == 0 else f"child {number} (the triggers' event loop)"
        roles[f"{role}, pid {pid}, {Path(command.split()[1]).name if ' ' in command else command}"] = mb
    return {
        "start": start,
        "launched": launched,
        "moves": moves,
        "fires": {by_index[index]: _utc_epoch(stamp) for index, stamp in scheduled},
        "statuses": {"scheduled": len(scheduled)},
        "peaks": roles,
        "phases": trigger_phases(home / "logs", launched),
    }


def trigger_phases(logs: Path, launched: float) -> dict[str, list[float]]:
    """
    From the triggers' own log files: when each started, and when it had read its connection.

    The triggerer logs "trigger ... starting" when it starts one; OrderStateTrigger logs "Waiting
    for ..." once it has the connection's settings, just before its first poll. Seconds after launch.
    """
    phases: dict[str, list[float]] = {"triggers started": [], "triggers had read their connection": []}
    for path in logs.rglob("*.trigger.*.log"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                event = str(record["event"])
                phase = (
                    "triggers started"
                    if event.endswith(" starting")
                    else "triggers had read their connection"
                )
                if event.endswith(" starting") or event.startswith("Waiting for "):
                    phases[phase].append(_utc_epoch(record["timestamp"].replace("Z", "+00:00")) - launched)
    return phases


# ---------------------------------------------------------------------------------- figures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def figures(run: dict[str, Any], polls: list[dict[str, Any]], count: int) -> dict[str, float]:
    """The table's figures of one run, from its moves and fires and the emulator's request log."""
    moves: dict[int, float] = run["moves"]
    fires: dict[int, float] = run["fires"]
    # Waiting is counted from the first poll, which the emulator saw: the same clock as the others.
    start: float = min((r["time"] for r in polls), default=run["start"])
    delays = [fires[o] - moves[o] for o in fires]
    bound = sweep(count) + SLACK
    by_deal: dict[int, list[float]] = {}
    for record in polls:
        by_deal.setdefault(int(record["params"]["order_id"]), []).append(record["time"])
    end = max([*fires.values(), *(t for ts in by_deal.values() for t in ts), start])
    # A deal waits until its last poll (the one that saw the move), or to the end if it never fired.
    waits_end = sorted(max(by_deal[o]) if o in fires and o in by_deal else end for o in moves)
    first_polls = [min(ts) - run["launched"] for ts in by_deal.values()]
    # The quota, not the poll interval, limits the requests while this many sensors wait.
    saturated = int(QUOTA * POLL_INTERVAL)
    saturated_end = waits_end[-saturated] if len(waits_end) > saturated else start
    in_saturation = sum(1 for r in polls if r["time"] <= saturated_end)
    statuses = [r["status"] for r in polls]
    early = 0  # polls of a deal less than half a sweep (at that moment) after its previous one
    for times in by_deal.values():
        for before, after in itertools.pairwise(times):
            waiting = len(waits_end) - bisect.bisect_right(waits_end, before)
            if after - before < 0.5 * max(waiting / QUOTA, POLL_INTERVAL):
                early += 1
    return {
        "fired": len(fires),
        "in_bound": sum(1 for d in delays if d <= bound),
        "median": percentile(delays, 0.5),
        "p95": percentile(delays, 0.95),
        "max": max(delays, default=float("nan")),
        "all_after_last_move": (max(fires.values()) - max(moves.values())) if fires else float("nan"),
        "first_poll_median": percentile(first_polls, 0.5),
        "first_poll_max": max(first_polls, default=float("nan")),
        "requests": len(polls),
        "saturated_rate": in_saturation / (saturated_end - start) if saturated_end > start else float("nan"),
        "rate": len(polls) / max(end - start, 1e-9),
        "throttled": statuses.count(429),
        "per_sweep": sum(1 for r in polls if r["time"] < start + sweep(count)) / count,
        "early": early,
        "peak": max(run["peaks"].values()),
    }


ROWS = [
    ("sensors fired", "fired", "{:,.0f}"),
    ("fired within a sweep + {slack:g} s of their move", "in_bound", "{:,.0f}"),
    ("move to fire, median (s)", "median", "{:.1f}"),
    ("move to fire, 95th percentile (s)", "p95", "{:.1f}"),
    ("move to fire, slowest (s)", "max", "{:.1f}"),
    ("all fired, after the last deal moved (s)", "all_after_last_move", "{:.1f}"),
    ("first poll of a deal after the start, median (s)", "first_poll_median", "{:.1f}"),
    ("first poll of a deal after the start, slowest (s)", "first_poll_max", "{:.1f}"),
    ("get_order_state requests", "requests", "{:,.0f}"),
    ("requests/s while they waited", "rate", "{:.2f}"),
    ("requests/s while the quota was the limit", "saturated_rate", "{:.2f}"),
    ("429s seen", "throttled", "{:,.0f}"),
    ("requests per waiting sensor per sweep (the first)", "per_sweep", "{:.3f}"),
    ("polls of a deal < half a sweep after its last", "early", "{:,.0f}"),
    ("peak memory of the trigger process (MB)", "peak", "{:.0f}"),
]


def table(columns: dict[str, dict[str, float]], base: str, labels: dict[str, str]) -> None:
    """Rows of figures, a column per run, and each other run's ratio to ``base`` (headed by ``labels``)."""
    others = [name for name in columns if name != base]
    names = [name.format(slack=SLACK) for name, _, _ in ROWS]
    width = max(map(len, names))
    ratios = [labels[name] for name in others]
    print(
        f"  {'':<{width}}" + "".join(f"{name:>20}" for name in columns) + "".join(f"{r:>14}" for r in ratios)
    )
    for name, (_, key, shape) in zip(names, ROWS, strict=True):
        cells = [shape.format(run[key]) for run in columns.values()]
        ratio_cells = []
        for other in others:
            first, value = columns[base][key], columns[other][key]
            ratio_cells.append(
                f"{value / first:.2f}x" if first and first == first and value == value else "-"
            )
        print(
            f"  {name:<{width}}"
            + "".join(f"{c:>20}" for c in cells)
            + "".join(f"{r:>14}" for r in ratio_cells)
        )


def verdicts(name: str, figs: dict[str, float], count: int) -> None:
    bound = sweep(count) + SLACK
    checks = [
        (f"each of {count:,} fires within {bound:g} s of its deal moving", figs["in_bound"] == count),
        ("zero 429s", figs["throttled"] == 0),
        (
            f"at most {REQUESTS_TARGET} requests per waiting sensor per sweep",
            figs["per_sweep"] <= REQUESTS_TARGET,
        ),
        (f"every trigger process under {MEMORY_TARGET_MB:g} MB", figs["peak"] < MEMORY_TARGET_MB),
    ]
    print(f"  targets, {name}: " + "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks))


def main() -> None:
    global WORKDIR, POLL_INTERVAL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=TRIGGERS, help="deferred sensors per run")
    parser.add_argument("--no-airflow", action="store_true", help="skip the real triggerer")
    parser.add_argument(
        "--poll-interval", type=float, default=POLL_INTERVAL, help="the sensors' poke_interval"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, the Airflow home)")
    args = parser.parse_args()
    count: int = args.triggers
    POLL_INTERVAL = args.poll_interval
    os.environ["SALEBOT_BENCH_POLL_INTERVAL"] = repr(POLL_INTERVAL)
    WORKDIR = Path(tempfile.mkdtemp(prefix="salebot-bench-triggers-"))
    os.environ["SALEBOT_BENCH_WORKDIR"] = str(WORKDIR)
    os.environ["AIRFLOW_HOME"] = str(WORKDIR / "loop-home")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    # A line per trigger otherwise, and one per 429 (thousands); warnings still reach the child's log.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    began = time.time()
    names = [f"rate_limit {rate:g}" for rate in RATE_LIMITS]
    emulators: dict[str, Emulator] = {}
    try:
        for name in [*names, *([] if args.no_airflow else ["airflow triggerer"])]:
            emulators[name] = Emulator()
        deals: dict[str, list[tuple[int, int]]] = {}

        def prepare(name: str) -> None:
            deals[name] = emulators[name].prepare(count)

        workers = [threading.Thread(target=prepare, args=(name,)) for name in emulators]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if len(deals) != len(emulators):
            raise RuntimeError("preparing the deals failed")
        loops = {
            name: run_one_loop(emulators[name], rate, deals[name])
            for name, rate in zip(names, RATE_LIMITS, strict=True)
        }
        runs: dict[str, dict[str, Any]] = {}
        failure: list[BaseException] = []

        def real() -> None:
            try:
                runs["airflow triggerer"] = run_airflow(
                    emulators["airflow triggerer"], deals["airflow triggerer"]
                )
            except BaseException as exc:  # reported below, after the one-loop runs
                failure.append(exc)

        airflow_thread = threading.Thread(target=real)
        if not args.no_airflow:
            airflow_thread.start()
        for name, rate in zip(names, RATE_LIMITS, strict=True):
            runs[name] = one_loop_result(loops[name], rate)
        if not args.no_airflow:
            airflow_thread.join()
        polls = {name: emulators[name].polls() for name in runs}
        figs = {name: figures(run, polls[name], count) for name, run in runs.items()}
        (WORKDIR / "runs.json").write_text(json.dumps({"runs": runs, "polls": polls}))
    finally:
        for emulator in emulators.values():
            emulator.stop()

    print(
        f"OrderStateTrigger benchmark: {count:,} deferred sensors on one connection, the emulator enforcing "
        f"{QUOTA:g} requests/s (a sweep: {sweep(count):g} s), poll_interval {POLL_INTERVAL:g} s, each deal "
        f"moving once, spread over the first sweep ({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    if not args.no_airflow:
        print()
        if failure:
            print(f"A real airflow triggerer: FAILED: {type(failure[0]).__name__}: {failure[0]}")
        else:
            print(
                f"1. A real `airflow triggerer --capacity {count}` (sqlite, private AIRFLOW_HOME), "
                f"rate_limit {QUOTA:g}, vs the same triggers in one loop; fired = its TI marked SCHEDULED"
            )
            loop = "one loop, rate 10"
            table(
                {"airflow triggerer": figs["airflow triggerer"], loop: figs[names[0]]},
                loop,
                {"airflow triggerer": "real / loop"},
            )
            for role, mb in runs["airflow triggerer"]["peaks"].items():
                print(f"  peak memory, {role}: {mb:.0f} MB")
            for phase, seconds in runs["airflow triggerer"]["phases"].items():
                if seconds:
                    print(
                        f"  {phase}, after the triggerer's launch: {len(seconds):,}, "
                        f"first {min(seconds):.1f} s, median {percentile(seconds, 0.5):.1f} s, "
                        f"last {max(seconds):.1f} s"
                    )
            verdicts("airflow triggerer", figs["airflow triggerer"], count)
    print()
    print("2. One asyncio loop in one process, by the connection's rate_limit against the quota")
    ratios = {name: f"{rate:g} vs {RATE_LIMITS[0]:g}" for name, rate in zip(names, RATE_LIMITS, strict=True)}
    table({name: figs[name] for name in names}, names[0], ratios)
    for name in names:
        verdicts(name, figs[name], count)
    print(f"\n({time.time() - began:.0f} s in all)")
    if args.keep:
        print(f"work folder kept: {WORKDIR}")
    else:
        shutil.rmtree(WORKDIR, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    elif sys.argv[1:] == ["--setup-airflow"]:
        setup_airflow()
    else:
        main()
