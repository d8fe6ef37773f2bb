"""Benchmark of SalebotHook's per-call overhead: the hook vs a bare requests.Session vs Airflow's HttpHook.

Run with ``make bench`` (or ``.venv/bin/python bench/hook_overhead.py``); about half a minute. Needs
``apache-airflow-providers-http`` (the project's ``bench`` extra).

The same small read, ``get_variables`` of one client (a GET on loopback), is made 2,000 times by
each of four clients, in 10 rounds of 200 calls whose order rotates from round to round, so that
machine noise falls on all four alike:

- **SalebotHook**: ``hook.get_variables(client_id)``, one hook for the whole run (one keep-alive
  session, as the hook keeps). Its connection sets ``rate_limit`` to 86,400 requests/s, the most
  it takes: the hook has no limit unless the connection sets one, but the limiter of a connection
  that does is part of the per-call path, and at this rate it never sleeps, so it costs its
  bookkeeping and never throttles (Salebot's own quota, about 1 request/s, would make it the
  bottleneck).
- **bare requests.Session**: the floor for a requests client, and the target's yardstick. The
  same URL, method, query string and headers on one keep-alive session; the reply's status is
  checked and its JSON decoded, as any client must. Like the hook's session it has
  ``trust_env = False``: the environment's proxy and netrc settings are not looked up on every
  call (the hook reads them once, when it opens its session).
- **bare requests.Session, defaults**: the same with requests' defaults (``trust_env = True``),
  shown for reference: what a plain ``requests.Session()`` costs.
- **HttpHook** of apache-airflow-providers-http, used as its docs show:
  ``HttpHook(method="GET", http_conn_id=...)`` and ``hook.run(endpoint, data=params).json()``,
  with a connection of its own (``AIRFLOW_CONN_HTTP_BENCH``). Its ``run`` builds a new session
  (and reads the connection) on every call, so it keeps no connection open between calls.

The emulator runs as its own process (the ``salebot-emulator`` console script), so the measured
process holds only the clients. Each call is timed on its own; the table shows the median and the
90th percentile per call in microseconds, with the ratios. When SalebotHook misses its target
against the bare session, a cProfile of 2,000 of its calls is printed under the table.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import requests
from airflow.providers.http.hooks.http import HttpHook

from salebot_provider import __version__
from salebot_provider.hooks import SalebotHook

if TYPE_CHECKING:
    from collections.abc import Callable

ROUNDS = 10
CALLS_PER_ROUND = 200
WARM_UP = 50
CLIENTS = 100
#: Requests per second: high enough that the limiter never sleeps.
RATE_LIMIT = 86_400
#: SalebotHook's time per call at most this many times the bare session's.
MAX_OVER_BARE = 1.10
#: HttpHook's time per call at least this many times SalebotHook's.
MIN_HTTPHOOK_OVER_HOOK = 1.2
BARE = "bare requests.Session"


def start_emulator() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The console script, so that the server's work is not in the measured process."""
    script = Path(sys.executable).with_name("salebot-emulator")
    proc = subprocess.Popen(
        [str(script), "--port", "0", "--clients", str(CLIENTS), "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if line.startswith("Connection JSON: "):
            return proc, json.loads(line.split(": ", 1)[1])
        if not line:
            raise RuntimeError("salebot-emulator ended early")


def make_clients(connection: dict[str, Any]) -> dict[str, Callable[[int], Any]]:
    """The four clients, each a function of a client id that returns the decoded reply."""
    os.environ["AIRFLOW_CONN_SALEBOT_BENCH"] = json.dumps(
        {**connection, "extra": {"rate_limit": RATE_LIMIT, "backoff_factor": 0}}
    )
    hook = SalebotHook("salebot_bench")

    base, key = connection["host"], connection["password"]
    url = f"{base}/api/{key}/get_variables"
    session = requests.Session()
    # The headers SalebotHook's session sends.
    session.headers.update(
        {"Accept": "application/json", "User-Agent": f"airflow-provider-salebot/{__version__}"}
    )

    plain = requests.Session()
    plain.headers.update(session.headers)
    session.trust_env = False

    def bare(client_id: int) -> Any:
        response = session.get(url, params={"client_id": str(client_id)}, timeout=30)
        response.raise_for_status()
        return response.json()

    def bare_defaults(client_id: int) -> Any:
        response = plain.get(url, params={"client_id": str(client_id)}, timeout=30)
        response.raise_for_status()
        return response.json()

    os.environ["AIRFLOW_CONN_HTTP_BENCH"] = json.dumps({"conn_type": "http", "host": base})
    http_hook = HttpHook(method="GET", http_conn_id="http_bench")
    endpoint = f"api/{key}/get_variables"

    def generic(client_id: int) -> Any:
        return http_hook.run(endpoint, data={"client_id": client_id}).json()

    return {
        "SalebotHook": hook.get_variables,
        BARE: bare,
        "bare requests.Session, defaults": bare_defaults,
        "HttpHook": generic,
    }


def measure(clients: dict[str, Callable[[int], Any]], ids: list[int]) -> dict[str, list[float]]:
    """Seconds per call of each client, over ``ROUNDS`` rounds whose order rotates."""
    names = list(clients)
    for name in names:
        for i in range(WARM_UP):
            clients[name](ids[i % len(ids)])
    timings: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for round_no in range(ROUNDS):
        shift = round_no % len(names)
        order = names[shift:] + names[:shift]
        if round_no % 2:
            order.reverse()
        for name in order:
            call, out = clients[name], timings[name]
            for i in range(CALLS_PER_ROUND):
                client_id = ids[i % len(ids)]
                start = clock()
                call(client_id)
                out.append(clock() - start)
    return timings


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


#: The layers of a SalebotHook call, as (label, minuend, subtrahends): the cumulative time of the
#: first function less that of the others. A function is (file name ending, function name).
LAYERS: list[tuple[str, tuple[str, str], list[tuple[str, str]]]] = [
    ("whole call: SalebotHook.get_variables", ("hooks/salebot.py", "get_variables"), []),
    (
        "  build the request: _run less _execute (get_action, build_request, audience_of)",
        ("hooks/salebot.py", "_run"),
        [("hooks/salebot.py", "_execute")],
    ),
    (
        "    of which api.build_request (checks and encoding)",
        ("salebot_provider/api.py", "build_request"),
        [],
    ),
    ("    of which api.audience_of", ("salebot_provider/api.py", "audience_of"), []),
    (
        "  retry policy: _execute less _attempt (tenacity.Retrying built and run)",
        ("hooks/salebot.py", "_execute"),
        [("hooks/salebot.py", "_attempt")],
    ),
    (
        "  _attempt less the HTTP exchange, read_whole and parse_reply",
        ("hooks/salebot.py", "_attempt"),
        [
            ("requests/sessions.py", "request"),
            ("hooks/transport.py", "read_whole"),
            ("salebot_provider/api.py", "parse_reply"),
        ],
    ),
    ("    of which _RateLimiter.wait", ("hooks/salebot.py", "wait"), []),
    ("  HTTP exchange: requests Session.request (stream=True)", ("requests/sessions.py", "request"), []),
    (
        "    of which the headers' deadline (watchdog arm/disarm)",
        ("hooks/transport.py", "getresponse"),
        [("urllib3/connection.py", "getresponse")],
    ),
    ("  read the body: transport.read_whole", ("hooks/transport.py", "read_whole"), []),
    ("  judge the reply: api.parse_reply", ("salebot_provider/api.py", "parse_reply"), []),
]


def profiled(call: Callable[[int], Any], ids: list[int]) -> pstats.Stats:
    """cProfile of ``ROUNDS * CALLS_PER_ROUND`` calls."""
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(ROUNDS * CALLS_PER_ROUND):
        call(ids[i % len(ids)])
    profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


def cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    """Seconds spent in a function and its callees, over every function of that name in that file."""
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(
        float(row[3])
        for (file, _, name), row in table.items()
        if file.replace("\\", "/").endswith(where[0]) and name == where[1]
    )


def profile_report(clients: dict[str, Callable[[int], Any]], ids: list[int]) -> str:
    """Where a SalebotHook call's time goes, under cProfile, next to the bare session's profiled time."""
    calls = ROUNDS * CALLS_PER_ROUND
    hook, bare = profiled(clients["SalebotHook"], ids), profiled(clients[BARE], ids)
    whole = cumulative(hook, LAYERS[0][1])
    hook_total: float = hook.total_tt  # type: ignore[attr-defined]
    bare_total: float = bare.total_tt  # type: ignore[attr-defined]
    lines = [
        f"cProfile of {calls:,} calls each (the profiler inflates every Python call): "
        f"SalebotHook {hook_total / calls * 1e6:.0f} us per call, bare session "
        f"{bare_total / calls * 1e6:.0f} us ({hook_total / bare_total:.2f}x). SalebotHook's time, by layer:"
    ]
    width = max(len(label) for label, _, _ in LAYERS)
    for label, minuend, subtrahends in LAYERS:
        spent = cumulative(hook, minuend) - sum(cumulative(hook, s) for s in subtrahends)
        lines.append(f"  {label:<{width}}{spent / calls * 1e6:>9.1f} us{spent / whole:>8.1%}")
    out = io.StringIO()
    hook.stream = out  # type: ignore[attr-defined]
    hook.sort_stats("tottime").print_stats(r"salebot_provider|tenacity", 15)
    lines.append("Own time (tottime) of the provider's and tenacity's functions:")
    lines += [f"  {line}" for line in out.getvalue().splitlines() if "/" in line or "ncalls" in line]
    return "\n".join(lines)


def main() -> None:
    proc, connection = start_emulator()
    try:
        ids = list(range(40_000_001, 40_000_001 + CLIENTS))  # the emulator's client ids
        clients = make_clients(connection)
        replies = {name: call(ids[0]) for name, call in clients.items()}
        if len({json.dumps(reply, sort_keys=True) for reply in replies.values()}) != 1:
            raise RuntimeError(f"the clients got different replies: {replies}")
        timings = measure(clients, ids)
        hook_median = statistics.median(timings["SalebotHook"])
        bare_median = statistics.median(timings[BARE])
        generic_median = statistics.median(timings["HttpHook"])
        over_bare = hook_median / bare_median
        generic_over_hook = generic_median / hook_median
        profile = profile_report(clients, ids) if over_bare > MAX_OVER_BARE else ""
    finally:
        proc.terminate()
        proc.wait()

    print(
        f"SalebotHook per-call overhead: get_variables on loopback, {ROUNDS} rounds x {CALLS_PER_ROUND} "
        f"calls per client, order rotating ({os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"requests {requests.__version__})"
    )
    width = max(len(name) for name in timings)
    print(f"  {'':<{width}}{'median (us)':>14}{'p90 (us)':>12}{'vs bare':>10}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(
            f"  {name:<{width}}{median * 1e6:>14.0f}{p90(values) * 1e6:>12.0f}{median / bare_median:>9.2f}x"
        )
    print(f"  SalebotHook / bare session (median): {over_bare:.2f}x")
    print(f"  HttpHook / SalebotHook (median): {generic_over_hook:.2f}x")
    print("Targets:")
    print(
        f"  SalebotHook at most {MAX_OVER_BARE:.2f}x the bare session's time per call: "
        f"{over_bare:.2f}x {'met' if over_bare <= MAX_OVER_BARE else 'MISSED'}"
    )
    print(
        f"  SalebotHook at least {MIN_HTTPHOOK_OVER_HOOK:.1f}x faster than HttpHook: "
        f"{generic_over_hook:.2f}x {'met' if generic_over_hook >= MIN_HTTPHOOK_OVER_HOOK else 'MISSED'}"
    )
    if profile:
        print()
        print(profile)


if __name__ == "__main__":
    main()
