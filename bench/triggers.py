"""Benchmark of OrderStateTrigger: 1,000 deferred sensors in one triggerer-like event loop.

Run with ``make bench`` (or ``.venv/bin/python bench/triggers.py``); about 80 seconds.
The emulator runs as its own process (the ``salebot-emulator`` console script), and each rate limit
is measured in a fresh child process, so that the peak memory measured is the triggers' own. The
deals start moving a few seconds after the triggers start; the table shows how long the triggers
take to notice, the requests they make and the memory they hold, side by side with ratios.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# A line per deal and per trigger otherwise; warnings still show.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

TRIGGERS = 1000
RATE_LIMITS = (20, 100)
#: Each trigger would poll every 5 s (200 requests/s in all): the connection's rate limit decides.
POLL_INTERVAL = 5.0
#: Deals move on from state 101 this long after the triggers are set up.
MOVE_AFTER = 5.0
TARGETS = [102, 103, 104]


def start_emulator() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The console script, so that the server's work is not in the measured process."""
    script = Path(sys.executable).with_name("salebot-emulator")
    proc = subprocess.Popen([str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if line.startswith("Connection JSON: "):
            return proc, json.loads(line.split(": ", 1)[1])
        if not line:
            raise RuntimeError("salebot-emulator ended early")


def make_deals(connection: dict[str, Any], count: int) -> list[tuple[int, int]]:
    """``count`` clients, each with a deal in state 101: (client id, order id)."""
    import httpx

    from salebot_provider.hooks import SalebotHook

    httpx.post(f"{connection['host']}/_emulator/seed", json={"clients": count}).raise_for_status()
    os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = json.dumps(connection)
    first = 40_000_001  # the emulator's first client id
    with SalebotHook() as hook:
        return [
            (client_id, hook.create_order(client_id=client_id, state_id=101)["order_id"])
            for client_id in range(first, first + count)
        ]


def polls_so_far(connection: dict[str, Any]) -> int:
    import httpx

    records = httpx.get(f"{connection['host']}/_emulator/requests", timeout=60).json()
    return sum(1 for r in records if r["action"] == "get_order_state")


def peak_mb() -> float:
    # Linux reports kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """The memory the process holds now (Linux): the peak alone hides what imports used and freed."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child() -> None:
    """One measured run: the triggers of one connection in one event loop, as in a triggerer."""
    import asyncio

    import httpx

    from salebot_provider.triggers import OrderStateTrigger

    spec = json.loads(sys.stdin.read())
    connection = {**spec["connection"], "extra": {"rate_limit": spec["rate_limit"], "backoff_factor": 0}}
    os.environ["AIRFLOW_CONN_SALEBOT_BENCH"] = json.dumps(connection)
    baseline = rss_mb()
    triggers = [
        OrderStateTrigger(
            client_id,
            TARGETS,
            order_id=order_id,
            poll_interval=POLL_INTERVAL,
            salebot_conn_id="salebot_bench",
        )
        for client_id, order_id in spec["deals"]
    ]
    moves: dict[int, float] = {}
    with httpx.Client(base_url=connection["host"]) as admin:
        for _, order_id in spec["deals"]:
            admin.post(f"/_emulator/deals/{order_id}/auto_advance", json={"every": MOVE_AFTER})
            moves[order_id] = time.time() + MOVE_AFTER

    async def fire(trigger: OrderStateTrigger) -> tuple[int, str, float]:
        (event,) = [e.payload async for e in trigger.run()]
        return int(trigger.wait.order_id or 0), event["status"], time.time()

    held = [baseline]

    async def sample() -> None:
        while True:
            held.append(rss_mb())
            await asyncio.sleep(0.25)

    async def run_all() -> list[tuple[int, str, float]]:
        sampler = asyncio.ensure_future(sample())
        try:
            return await asyncio.gather(*map(fire, triggers))
        finally:
            sampler.cancel()

    started = time.time()
    fired = asyncio.run(run_all())
    late = [at - moves[order_id] for order_id, _, at in fired]
    print(
        json.dumps(
            {
                "statuses": sorted({status for _, status, _ in fired}),
                "all_fired_after_moves": max(at for _, _, at in fired) - max(moves.values()),
                "median_notice": statistics.median(late),
                "run_seconds": time.time() - started,
                "held_mb": max(held) - baseline,
                "peak_mb": peak_mb(),
            }
        )
    )


def measure(connection: dict[str, Any], rate: int, deals: list[tuple[int, int]]) -> dict[str, Any]:
    before = polls_so_far(connection)
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps({"connection": connection, "rate_limit": rate, "deals": deals}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the run at {rate} requests/s failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["statuses"] != ["success"]:
        raise RuntimeError(f"the run at {rate} requests/s ended with {result['statuses']}")
    result["polls"] = polls_so_far(connection) - before
    return result


def main() -> None:
    proc, connection = start_emulator()
    try:
        deals = make_deals(connection, TRIGGERS * len(RATE_LIMITS))
        results = {
            rate: measure(connection, rate, deals[i * TRIGGERS : (i + 1) * TRIGGERS])
            for i, rate in enumerate(RATE_LIMITS)
        }
    finally:
        proc.terminate()
        proc.wait()

    first = results[RATE_LIMITS[0]]
    rows = [
        ("all fired, after the last deal moved (s)", "all_fired_after_moves", "{:.1f}"),
        ("median time to notice a move (s)", "median_notice", "{:.1f}"),
        ("get_order_state requests", "polls", "{:,.0f}"),
        ("requests per second while they waited", "rate", "{:.1f}"),
        ("peak memory of the process (MB)", "peak_mb", "{:.0f}"),
        (f"memory held by {TRIGGERS:,} waiting triggers (MB)", "held_mb", "{:.1f}"),
    ]
    for result in results.values():
        result["rate"] = result["polls"] / result["run_seconds"]
    print(
        f"OrderStateTrigger benchmark: {TRIGGERS:,} triggers in one event loop, poll_interval "
        f"{POLL_INTERVAL:g} s, deals move {MOVE_AFTER:g} s after set-up "
        f"({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    width = max(len(name) for name, _, _ in rows)
    header = "".join(f"{f'rate_limit {rate}/s':>18}" for rate in RATE_LIMITS)
    ratio = f"{RATE_LIMITS[-1]} vs {RATE_LIMITS[0]}"
    print(f"  {'':<{width}}{header}{ratio:>12}")
    for name, key, shape in rows:
        values = [shape.format(results[rate][key]) for rate in RATE_LIMITS]
        last = results[RATE_LIMITS[-1]][key]
        ratio = f"{last / first[key]:.2f}x" if first[key] else "-"
        print(f"  {name:<{width}}" + "".join(f"{v:>18}" for v in values) + f"{ratio:>12}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        main()
