"""Benchmark of the emulator: seeding, paging, and requests per second with 1 and 8 client threads.

Run with ``make bench`` (or ``.venv/bin/python bench/emulator.py``). Everything is measured in one
run, side by side, and printed with ratios; nothing here is a pass/fail test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from salebot_provider.hooks import SalebotHook
from salebot_provider.testing import SalebotEmulator

SEED_CLIENTS = 100_000
SECONDS_PER_RUN = 3.0


def seconds(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def requests_per_second(connection: str, threads: int, client_ids: list[int]) -> float:
    """Each thread has its own hook (its own keep-alive session) and reads variables for a while."""
    os.environ["AIRFLOW_CONN_SALEBOT_BENCH"] = connection
    counts = [0] * threads
    stop = threading.Event()

    def work(n: int) -> None:
        with SalebotHook("salebot_bench") as hook:
            i = n
            while not stop.is_set():
                hook.get_variables(client_ids[i % len(client_ids)])
                counts[n] += 1
                i += threads

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(SECONDS_PER_RUN)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def out_of_process_server() -> tuple[subprocess.Popen[str], str]:
    """The console script, so that the server has a process (and a GIL) of its own."""
    script = Path(sys.executable).with_name("salebot-emulator")
    proc = subprocess.Popen(
        [str(script), "--port", "0", "--clients", "1000", "--seed", "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if line.startswith("Connection JSON: "):
            return proc, line.split(": ", 1)[1].strip()
        if not line:
            raise RuntimeError("salebot-emulator ended early")


def main() -> None:
    rows: list[tuple[str, str]] = []
    seed_time, emulator = seconds(lambda: SalebotEmulator(clients=SEED_CLIENTS, seed=1))
    rows.append(
        (f"seed {SEED_CLIENTS:,} clients", f"{seed_time:.2f} s ({SEED_CLIENTS / seed_time:,.0f} clients/s)")
    )

    with emulator:
        os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = emulator.connection_json()
        with SalebotHook() as hook:
            page_time, count = seconds(lambda: sum(1 for _ in hook.iter_clients()))
        rows.append(
            (
                f"page {count:,} clients (hook.iter_clients, 500 a page)",
                f"{page_time:.2f} s ({count / page_time:,.0f} clients/s)",
            )
        )
        ids = list(emulator.state.clients)[:1000]
        in_one = requests_per_second(emulator.connection_json(), 1, ids)
        in_eight = requests_per_second(emulator.connection_json(), 8, ids)

    proc, connection = out_of_process_server()
    try:
        ids = list(range(40_000_001, 40_001_001))
        out_one = requests_per_second(connection, 1, ids)
        out_eight = requests_per_second(connection, 8, ids)
    finally:
        proc.terminate()
        proc.wait()

    rows += [
        ("get_variables, in-process server, 1 client thread", f"{in_one:,.0f} req/s"),
        (
            "get_variables, in-process server, 8 client threads",
            f"{in_eight:,.0f} req/s ({in_eight / in_one:.2f}x of 1)",
        ),
        ("get_variables, console-script server, 1 client thread", f"{out_one:,.0f} req/s"),
        (
            "get_variables, console-script server, 8 client threads",
            f"{out_eight:,.0f} req/s ({out_eight / out_one:.2f}x of 1)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"Salebot emulator benchmark ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
