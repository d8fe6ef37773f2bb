"""A small simulation of a deployment: several worker processes on one Salebot project and its quota.

Run with ``make bench`` (or ``.venv/bin/python bench/scaling.py``); about a minute. The emulator runs
as its own process (``salebot-emulator``) and enforces a quota for the whole project, as Salebot
does (10 requests per second here, to keep the run short; Salebot's is about 1). Each scenario
starts ``P`` worker processes, as Celery or the local executor would, each with its own hook (its
own keep-alive session and its own rate limiter, as the connection's ``rate_limit`` gives today),
each reading client variables as fast as its limiter lets it for a few seconds. The table shows
what the emulator saw: the combined rate of requests it served, against the quota, and how many it
refused with 429 (each one waited out by the hook, per ``Retry-After``, and retried). It is the
figure behind docs/scaling.md: ``rate_limit`` holds per process, so a deployment stays within the
quota only when the per-process limits add up to it (or an Airflow pool keeps to one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from _emulator import Emulator  # bench/, first on sys.path when a script here runs

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

#: The project's quota the emulator enforces, requests per second.
QUOTA = 10.0
#: How long each worker reads, in seconds.
SECONDS = 8.0
CLIENTS = 100
#: (worker processes, each one's rate_limit)
SCENARIOS = [
    (1, QUOTA),
    (2, QUOTA),
    (2, QUOTA / 2),
    (4, QUOTA),
    (4, QUOTA / 4),
]


def worker(connection: str, rate: float, seconds: float, start_at: float) -> None:
    """One worker process: read variables as fast as the hook's limiter allows, then print the count."""
    os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = connection
    from salebot_provider.hooks import SalebotHook

    calls = 0
    with SalebotHook() as hook:
        ids = [int(c["id"]) for c in hook.get_clients(limit=CLIENTS)["clients"]]
        time.sleep(max(start_at - time.time(), 0))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            hook.get_variables(ids[calls % len(ids)])
            calls += 1
    print(json.dumps({"calls": calls, "rate": rate}))


def scenario(emulator: Emulator, processes: int, rate: float) -> dict[str, Any]:
    emulator.call("POST", "/reset")
    emulator.call("POST", "/seed", {"clients": CLIENTS, "seed": 1})
    emulator.call("POST", "/rate_limit", {"per_second": QUOTA})
    connection = json.dumps({**emulator.connection, "extra": {"rate_limit": rate, "max_retries": 10}})
    start_at = time.time() + 3.0  # every worker has imported Airflow and connected by then
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", connection, str(rate), str(SECONDS), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    calls = sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["calls"] for p in procs)
    served = [r for r in emulator.call("GET", "/requests") if r["action"] == "get_variables"]
    ok = [r["time"] for r in served if r["status"] == 200]
    refused = sum(1 for r in served if r["status"] == 429)
    span = max(ok) - min(ok) if len(ok) > 1 else SECONDS
    return {"calls": calls, "served": len(ok), "rate": (len(ok) - 1) / span, "429": refused}


def main() -> None:
    with Emulator(CLIENTS) as emulator:
        rows = [(p, r, scenario(emulator, p, r)) for p, r in SCENARIOS]
    print(
        f"Worker processes on one project, the emulator enforcing {QUOTA:g} requests/s; each worker reads "
        f"for {SECONDS:g} s ({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    header = ["processes", "rate_limit each", "sum of limits", "served/s", "vs quota", "429s"]
    header.append("429s per call")
    print("  " + "".join(f"{h:>17}" for h in header))
    for processes, rate, seen in rows:
        cells = [
            f"{processes}",
            f"{rate:g}/s",
            f"{processes * rate:g}/s",
            f"{seen['rate']:.1f}",
            f"{seen['rate'] / QUOTA:.2f}x",
            f"{seen['429']:,}",
            f"{seen['429'] / max(seen['calls'], 1):.2f}",
        ]
        print("  " + "".join(f"{c:>17}" for c in cells))
    print(
        "  A limiter per process keeps the deployment within the quota only when the limits add up to it;\n"
        "  above it, the quota still holds (the hook waits out every 429), at the cost of refused requests."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
