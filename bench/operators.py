"""Benchmark of the bulk operators: SaveVariablesOperator, ExportClientsOperator and BroadcastOperator.

Run with ``make bench`` (or ``.venv/bin/python bench/operators.py``; ``--only save_variables``,
``--only export`` or ``--only broadcast`` for one part); about 9 minutes on a quiet 2-core
machine, 4 of them the plain loop below. Nothing here is a pass/fail test: each part prints its
table, measured side by side in one run, and under it each target with the measured value and
"met" or "MISSED".

The emulator runs as its own process (the ``salebot-emulator`` console script), seeded with the
clients each part needs, so that the measured process holds only the client; request counts come
from the emulator's admin API. Each case runs in a fresh child process, ``op.execute(context)``
with a small context, the connection in ``AIRFLOW_CONN_SALEBOT_DEFAULT`` with ``rate_limit``
10,000/s (so the connection's throttle is not what is measured) and ``backoff_factor`` 0. Peak
memory is the child's ``ru_maxrss``, shown with its increase over the child's size after imports.

1. SaveVariablesOperator, per-client mode (``client_variables`` from a CSV file; context ``{}``:
   it keeps no progress record), 10,000 clients, 20 ms added to every request: (a) 5 distinct value
   sets, (b) every client's own values; ``max_workers`` 4 (the default), 8, 10 (the most allowed)
   and 16, against a plain loop of ``hook.save_variables(variables, client_id=...)``. The loop of
   (a) is measured in full (10,000 requests, about 3.5 minutes); the loop of (b) makes the same one
   request per client, and is measured over its first 2,000 clients and scaled by 5 (labelled).
   Then 1,000,000 CSV rows (1,000 value sets, a random 1% of rows unique, fixed seed), no added
   latency. The emulator is seeded with every client written to: it skips unknown ids in a
   ``clients`` list silently and answers 404 for an unknown ``client_id``, so writing to clients it
   does not know would measure neither honestly.
2. ExportClientsOperator to a JSON Lines file (context ``{}``): 1,000 and 100,000 clients, and with
   ``with_variables=True`` 1,000 and 10,000 (one ``get_variables`` per client).
3. BroadcastOperator to 100,000 client ids from a file, one per line (context: an in-memory
   stand-in for Airflow 3.3's ``task_state_store``, as in ``tests/operators/conftest.py``, so the
   progress record is written as in a real task, but not to a database).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _emulator import Emulator  # bench/, first on sys.path when a script here runs

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# A line per request and per progress step otherwise; warnings still show.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

#: The emulator's first client id.
FIRST_ID = 40_000_001
SEED = 7
LATENCY = 0.02
LATENCY_CLIENTS = 10_000
#: The plain loop of the all-distinct case is measured over this many clients, then scaled.
LOOP_SAMPLE = 2_000
WORKERS = (4, 8, 10, 16)
BIG_ROWS = 1_000_000
BIG_SETS = 1_000
EXPORT_SIZES = (1_000, 100_000)
EXPORT_WITH_VARIABLES = (1_000, 10_000)
BROADCAST_RECIPIENTS = (1_000, 100_000)
RATE_LIMIT = 10_000


# ------------------------------------------------------------------------------- the measured child


def rss_mb() -> float:
    """The memory the process holds now (Linux): the peak alone hides what imports used and freed."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StateStore:
    """Airflow 3.3's ``task_state_store`` as a task sees it: JSON values by key (in memory)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(key, default))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.data[key] = json.loads(json.dumps(value))
        self.writes += 1


def child() -> None:
    """One measured case, as the spec on stdin says; prints its figures as one line of JSON."""
    spec = json.loads(sys.stdin.read())
    connection = {**spec["connection"], "extra": {"rate_limit": RATE_LIMIT, "backoff_factor": 0}}
    os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = json.dumps(connection)

    from salebot_provider.exceptions import SalebotError
    from salebot_provider.hooks import SalebotHook
    from salebot_provider.operators import BroadcastOperator, ExportClientsOperator, SaveVariablesOperator

    base = rss_mb()
    kind = spec["kind"]
    out: dict[str, Any] = {}
    context: Any = {}
    start = time.perf_counter()
    try:
        if kind == "loop":
            with SalebotHook() as hook, open(spec["csv"], newline="") as source:
                made = 0
                for row in csv.DictReader(source):
                    if made == spec["limit"]:
                        break
                    client_id = int(row.pop("client_id"))
                    hook.save_variables({k: v for k, v in row.items() if v != ""}, client_id=client_id)
                    made += 1
            out["result"] = {"clients": made, "requests": made}
        elif kind == "save_variables":
            op = SaveVariablesOperator(
                task_id="save", client_variables=spec["csv"], max_workers=spec["max_workers"]
            )
            out["result"] = op.execute(context)
        elif kind == "export":
            export = ExportClientsOperator(
                task_id="export", path=spec["path"], with_variables=spec["with_variables"]
            )
            out["result"] = export.execute(context)
            out["bytes"] = os.path.getsize(spec["path"])
        elif kind == "broadcast":
            store = StateStore()
            context["task_state_store"] = store
            sender = BroadcastOperator(task_id="broadcast", clients=spec["ids"], message="Summer sale")
            out["result"] = sender.execute(context)
            out["store_writes"] = store.writes
        else:
            raise ValueError(kind)
    except SalebotError as exc:
        out["error"] = str(exc)
    out["seconds"] = time.perf_counter() - start
    out["base_mb"] = base
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    with open("/proc/self/status") as status:
        # The peak of this process's own memory since it started: ru_maxrss, had it inherited more.
        out["hwm_mb"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps(out))


def measure(emulator: Emulator, action: str, **spec: Any) -> dict[str, Any]:
    """Run one case in a fresh child process; its figures and the requests the emulator got."""
    before = emulator.requests(action)
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps({"connection": emulator.connection, **spec}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the case {spec} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["requests"] = emulator.requests(action) - before
    return result


# ----------------------------------------------------------------------------------------- helpers


def write_csv(path: Path, header: list[str], rows: Any) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(title)
    print(
        "  " + "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))
    )
    for row in rows:
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row)]
        print("  " + "  ".join(cells))


def target(text: str, value: str, met: bool) -> None:
    print(f"  target: {text}: {value}: {'met' if met else 'MISSED'}")


#: Cases whose ru_maxrss is above the child's own peak (VmHWM): inherited from the process that started it.
INHERITED: list[str] = []


def memory(result: dict[str, Any]) -> tuple[str, str]:
    """Peak MB and its increase over the size after imports; marked ``*`` when ru_maxrss was inherited."""
    peak = f"{result['peak_mb']:.0f}"
    if result["peak_mb"] - result["hwm_mb"] > 2:
        peak += "*"
        INHERITED.append(f"{result['peak_mb']:.0f} MB against its own {result['hwm_mb']:.0f} MB")
    return peak, f"{result['peak_mb'] - result['base_mb']:+.0f}"


# --------------------------------------------------------------------------------- 1. save_variables


def save_variables(work: Path) -> None:
    rng = random.Random(SEED)
    ids = range(FIRST_ID, FIRST_ID + LATENCY_CLIENTS)
    five = work / "five_sets.csv"
    distinct = work / "distinct.csv"
    header = ["client_id", "client.tier", "client.score"]
    sets = [rng.randrange(5) for _ in ids]
    write_csv(five, header, ([cid, f"tier-{k}", k * 10] for cid, k in zip(ids, sets, strict=True)))
    write_csv(distinct, header, ([cid, f"tier-{i % 5}", i] for i, cid in enumerate(ids)))

    with Emulator(LATENCY_CLIENTS) as emulator:
        emulator.call("POST", "/faults", {"latency": LATENCY})
        cases: dict[str, dict[str, Any]] = {}
        for name, path in (("a", five), ("b", distinct)):
            limit = LATENCY_CLIENTS if name == "a" else LOOP_SAMPLE
            cases[f"{name}-loop"] = measure(
                emulator, "save_variables", kind="loop", csv=str(path), limit=limit
            )
            for workers in WORKERS:
                cases[f"{name}-{workers}"] = measure(
                    emulator, "save_variables", kind="save_variables", csv=str(path), max_workers=workers
                )
        last = FIRST_ID + LATENCY_CLIENTS - 1
        if emulator.variables(last).get("score") != str(LATENCY_CLIENTS - 1):
            raise RuntimeError(f"client {last} does not hold its own values after (b)")

    scale = LATENCY_CLIENTS / LOOP_SAMPLE
    loop_b = cases["b-loop"]
    loop_b["seconds"] *= scale
    loop_b["requests"] = int(loop_b["requests"] * scale)
    header_row = ["", "requests", "wall s", "requests vs loop", "faster than loop", "peak MB", "over imports"]
    rows: list[list[str]] = []
    refusals: list[str] = []
    for name, label in (("a", "(a) 5 distinct value sets"), ("b", "(b) every client's own values")):
        loop = cases[f"{name}-loop"]
        measured = (
            f"all {LATENCY_CLIENTS:,} measured" if name == "a" else f"{LOOP_SAMPLE:,} measured, x{scale:g}"
        )
        rows.append([label, *[""] * (len(header_row) - 1)])
        figures = [f"{loop['requests']:,}", f"{loop['seconds']:.1f}", "1x", "1x", *memory(loop)]
        rows.append([f"  plain loop of hook.save_variables ({measured})", *figures])
        for workers in WORKERS:
            case = cases[f"{name}-{workers}"]
            if "error" in case:
                rows.append([f"  operator, max_workers={workers}", "refused", *[""] * (len(header_row) - 2)])
                refusals.append(f"{name}, max_workers={workers}: {case['error']}")
                continue
            rows.append(
                [
                    f"  operator, max_workers={workers}",
                    f"{case['requests']:,}",
                    f"{case['seconds']:.2f}",
                    f"{loop['requests'] / max(case['requests'], 1):,.1f}x fewer",
                    f"{loop['seconds'] / case['seconds']:,.1f}x",
                    *memory(case),
                ]
            )
    table(
        f"SaveVariablesOperator per-client mode: {LATENCY_CLIENTS:,} clients from a CSV file, "
        f"{LATENCY * 1000:g} ms added to every request "
        f"({os.cpu_count()} cores, Python {sys.version.split()[0]})",
        header_row,
        rows,
    )
    for refusal in refusals:
        print(f"  refused ({refusal})")
    a4, b4 = cases["a-4"], cases["b-4"]
    fewer = cases["a-loop"]["requests"] / max(a4["requests"], 1)
    target(
        "(a) at least 100x fewer requests than the plain loop, max_workers=4", f"{fewer:,.0f}x", fewer >= 100
    )
    faster = cases["a-loop"]["seconds"] / a4["seconds"]
    target("(a) at least 50x faster than the plain loop, max_workers=4", f"{faster:,.0f}x", faster >= 50)
    faster = loop_b["seconds"] / b4["seconds"]
    target("(b) at least 3x faster than the plain loop, max_workers=4", f"{faster:.1f}x", faster >= 3)
    print()


def save_variables_million(work: Path) -> None:
    """1,000,000 rows from a file, no added latency: wall time, requests and peak memory."""
    rng = random.Random(SEED + 1)
    big = work / "million.csv"
    unique = set(rng.sample(range(BIG_ROWS), BIG_ROWS // 100))
    write_csv(
        big,
        ["client_id", "client.tier", "client.score", "client.note"],
        (
            [FIRST_ID + i, f"tier-{k}", k, f"unique-{i}" if i in unique else ""]
            for i, k in enumerate(rng.randrange(BIG_SETS) for _ in range(BIG_ROWS))
        ),
    )
    seeding = time.perf_counter()
    with Emulator(BIG_ROWS) as emulator:
        seeding = time.perf_counter() - seeding
        case = measure(emulator, "save_variables", kind="save_variables", csv=str(big), max_workers=4)
        probe = FIRST_ID + min(unique)
        if emulator.variables(probe).get("note") != f"unique-{min(unique)}":
            raise RuntimeError(f"client {probe} does not hold its unique value")
    if "error" in case:
        raise RuntimeError(case["error"])
    table(
        f"SaveVariablesOperator per-client mode: {BIG_ROWS:,} CSV rows ({big.stat().st_size / 2**20:.0f} MB; "
        f"{BIG_SETS:,} value sets, a random 1% of rows unique), no added latency, max_workers=4 "
        f"(the emulator took {seeding:.0f} s to start with {BIG_ROWS:,} clients)",
        ["", "clients", "requests", "wall s", "rows/s", "peak MB", "over imports"],
        [
            [
                "SaveVariablesOperator",
                f"{case['result']['clients']:,}",
                f"{case['requests']:,}",
                f"{case['seconds']:.1f}",
                f"{BIG_ROWS / case['seconds']:,.0f}",
                *memory(case),
            ]
        ],
    )
    target(f"{BIG_ROWS:,} rows under 300 MB peak", f"{case['peak_mb']:.0f} MB", case["peak_mb"] < 300)
    print()


# ------------------------------------------------------------------------------- 2. export, 3. broadcast


def export_and_broadcast(work: Path, parts: set[str]) -> None:
    out = work / "clients.jsonl"
    seeded = EXPORT_SIZES[0]
    plain: dict[int, dict[str, Any]] = {}
    with_variables: dict[int, dict[str, Any]] = {}
    with Emulator(seeded) as emulator:

        def grow(to: int) -> None:
            nonlocal seeded
            if to > seeded:
                emulator.call("POST", "/seed", {"clients": to - seeded})
                seeded = to

        if "export" in parts:
            for size in sorted({*EXPORT_SIZES, *EXPORT_WITH_VARIABLES}):
                grow(size)
                for flag, results in ((False, plain), (True, with_variables)):
                    if size in (EXPORT_WITH_VARIABLES if flag else EXPORT_SIZES):
                        action = "get_variables" if flag else "get_clients"
                        result = measure(emulator, action, kind="export", path=str(out), with_variables=flag)
                        if "error" in result:
                            raise RuntimeError(result["error"])
                        if result["result"]["clients"] != size:
                            raise RuntimeError(f"exported {result['result']['clients']} of {size} clients")
                        results[size] = result
                        out.unlink()
        broadcasts: dict[int, dict[str, Any]] = {}
        if "broadcast" in parts:
            grow(max(BROADCAST_RECIPIENTS))
            for size in BROADCAST_RECIPIENTS:
                ids = work / "recipients.txt"
                ids.write_text("".join(f"{FIRST_ID + i}\n" for i in range(size)))
                outbox = emulator.call("GET", "/state")["outbox"]
                broadcasts[size] = measure(emulator, "broadcast", kind="broadcast", ids=str(ids))
                broadcasts[size]["outbox"] = emulator.call("GET", "/state")["outbox"] - outbox

    if "export" in parts:
        rows = []
        for results, how in ((plain, ""), (with_variables, ", with_variables=True")):
            first = results[min(results)]
            for size, result in sorted(results.items()):
                rows.append(
                    [
                        f"{size:,} clients{how}",
                        f"{result['requests']:,}",
                        f"{result['bytes'] / 2**20:.1f}",
                        f"{result['seconds']:.2f}",
                        f"{size / result['seconds']:,.0f}",
                        *memory(result),
                        f"{result['peak_mb'] - first['peak_mb']:+.1f}",
                    ]
                )
        table(
            "ExportClientsOperator to a JSON Lines file (requests: get_clients pages, or get_variables with "
            "variables)",
            ["", "requests", "file MB", "wall s", "clients/s", "peak MB", "over imports", "peak vs smallest"],
            rows,
        )
        small, large = plain[EXPORT_SIZES[0]], plain[EXPORT_SIZES[-1]]
        grown = large["peak_mb"] - small["peak_mb"]
        target(
            f"peak at {EXPORT_SIZES[-1]:,} clients within 30 MB of the {EXPORT_SIZES[0]:,}-client run",
            f"{grown:+.1f} MB",
            grown <= 30,
        )
        print()
    if broadcasts:
        rows = []
        small = broadcasts[min(broadcasts)]
        for size, broadcast in sorted(broadcasts.items()):
            if "error" in broadcast:
                raise RuntimeError(broadcast["error"])
            rows.append(
                [
                    f"{size:,} recipients",
                    f"{broadcast['requests']:,}",
                    f"{broadcast['outbox']:,}",
                    f"{broadcast['store_writes']:,}",
                    f"{broadcast['seconds']:.2f}",
                    f"{broadcast['seconds'] / small['seconds']:.0f}x",
                    *memory(broadcast),
                    f"{broadcast['peak_mb'] - small['peak_mb']:+.1f}",
                ]
            )
        table(
            "BroadcastOperator to client ids from a file (one per line; chunks of 500; progress record in "
            "an in-memory task_state_store)",
            [
                "",
                "requests",
                "queued",
                "record writes",
                "wall s",
                "vs smallest",
                "peak MB",
                "over imports",
                "vs smallest",
            ],
            rows,
        )
        print("  (no target: requests, wall time and peak memory reported)")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        action="append",
        choices=("save_variables", "million", "export", "broadcast"),
        help="run only this part",
    )
    parts = set(parser.parse_args().only or ("save_variables", "million", "export", "broadcast"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="salebot-bench-") as folder:
        work = Path(folder)
        if "save_variables" in parts:
            save_variables(work)
        if "million" in parts:
            save_variables_million(work)
        if parts & {"export", "broadcast"}:
            export_and_broadcast(work, parts)
    if INHERITED:
        print(f"* ru_maxrss above the child's own peak (VmHWM), inherited: {'; '.join(INHERITED)}")
    else:
        print("ru_maxrss equals each child's own peak (VmHWM) within 2 MB: none inherited from this process")
    print(f"(all measured in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        main()
