"""Benchmark of import cost: what importing the provider's operators, sensors and hooks adds to airflow.sdk.

Run with ``make bench`` (or ``.venv/bin/python bench/imports.py``); about two minutes.

Each statement (``import airflow.sdk``, ``import salebot_provider.operators``, ``...sensors``,
``...hooks``) runs in a fresh ``python -X importtime -c`` subprocess, 7 times, the statements
alternating from run to run, and the median is taken. One discarded warm-up run of each comes
first, so that the Airflow home and the bytecode caches exist: the subprocesses cache bytecode
(``PYTHONDONTWRITEBYTECODE`` unset, ``PYTHONPYCACHEPREFIX`` a temporary directory), as an
installed provider's modules are, rather than compile every source on every import. From the
``-X importtime`` output:

- **import (ms)**: the statement's import time, the sum of the cumulative times of what it imports
  at the top level (the interpreter's own start-up imports, those of ``python -c pass``, left
  out); **difference**: its median less airflow.sdk's.
- **own time of added modules (ms)**: the sum of the self times of the modules the statement
  imports that ``import airflow.sdk`` does not. Importing Airflow takes seconds and varies by
  hundreds of milliseconds from process to process, so the difference of two medians cannot
  resolve tens of milliseconds; this sum counts only the added modules.
- **after airflow.sdk, same process (ms)**: in a process that ran ``import airflow.sdk`` first (a
  DAG file's situation), the cumulative time of the statement's own top-level imports: what it
  adds, measured within one process, so the variance of Airflow's import does not enter it.
- **process (ms)**: the subprocess's run time, interpreter start-up included.

Under the table, for each provider module, the 10 modules it adds by what they bring that
``import airflow.sdk`` does not (a module's cumulative time also counts the Airflow modules it
happens to import first, which ``import airflow.sdk`` would import anyway).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

RUNS = 7
BASE = "airflow.sdk"
MODULES = ("salebot_provider.operators", "salebot_provider.sensors", "salebot_provider.hooks")
TOP = 10
#: The operators module adds less than this over airflow.sdk, in milliseconds.
MAX_OPERATORS_MS = 50.0


@dataclass
class Run:
    """
    One ``-X importtime`` run, times in microseconds.

    :param lines: (depth, module, self, cumulative) in the order printed: a module after what it imports.
    :param modules: each module's (self, cumulative), from its first line.
    :param wall: the process's run time, in seconds.
    """

    lines: list[tuple[int, str, int, int]] = field(default_factory=list)
    modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    wall: float = 0.0

    def added(self, known: set[str]) -> dict[str, int]:
        """Per module, the self times of the modules under it (itself included) that are not ``known``."""
        pending: dict[int, int] = {}
        result: dict[str, int] = {}
        for depth, module, own, _ in self.lines:
            subtree = (own if module not in known else 0) + pending.pop(depth + 1, 0)
            pending[depth] = pending.get(depth, 0) + subtree
            result.setdefault(module, subtree)
        return result


def import_run(statement: str, env: dict[str, str]) -> Run:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{statement!r} failed:\n{done.stderr[-3000:]}")
    run = Run(wall=wall)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].rstrip()
        module = name.strip()
        # A top-level import is printed with one space after the bar, and two more per level.
        depth = (len(name) - len(module) - 1) // 2
        run.lines.append((depth, module, int(parts[0]), int(parts[1])))
        # A module may show twice: ``import airflow.sdk`` runs airflow/__init__.py first, which
        # imports airflow.sdk; the first line is its own body's.
        run.modules.setdefault(module, (int(parts[0]), int(parts[1])))
    return run


def import_ms(run: Run, startup: set[str]) -> float:
    """The statement's import time: the top-level imports' cumulative times, start-up ones left out."""
    return sum(cum for depth, module, _, cum in run.lines if depth == 0 and module not in startup) / 1000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="salebot-bench-pycache-") as pycache:
        measure(pycache)


def measure(pycache: str) -> None:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="salebot-bench-"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # Bytecode cached, as for an installed provider, in a directory of the run's own.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    statements = {name: f"import {name}" for name in (BASE, *MODULES)}
    after = {name: f"import {BASE}; import {name}" for name in MODULES}
    startup = set(import_run("pass", env).modules)
    for statement in statements.values():
        import_run(statement, env)  # warm-up: .pyc files, airflow.cfg
    runs: dict[str, list[Run]] = {name: [] for name in statements}
    runs.update({f"{name} after": [] for name in MODULES})
    names = list(statements)
    for round_no in range(RUNS):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            runs[name].append(import_run(statements[name], env))
            if name in after:
                runs[f"{name} after"].append(import_run(after[name], env))

    medians = {name: statistics.median(import_ms(r, startup) for r in runs[name]) for name in statements}
    walls = {name: statistics.median(r.wall for r in runs[name]) * 1000 for name in statements}
    known = set().union(startup, *(r.modules for r in runs[BASE]))
    # The second statement's top-level imports are the only top-level lines not of airflow.sdk's run.
    same_process = {
        name: statistics.median(
            sum(cum for depth, m, _, cum in r.lines if depth == 0 and m not in known)
            for r in runs[f"{name} after"]
        )
        / 1000
        for name in MODULES
    }
    own = {
        name: statistics.median(sum(t for _, m, t, _ in r.lines if m not in known) for r in rs) / 1000
        for name, rs in runs.items()
        if name in statements
    }

    print(
        f"Import cost over {BASE}: python -X importtime, median of {RUNS} fresh processes each, "
        f"alternating ({os.cpu_count()} cores, Python {sys.version.split()[0]})"
    )
    width = max(len(f"import {name}") for name in statements)
    print(
        f"  {'':<{width}}{'import (ms)':>13}{'difference (ms)':>17}{'own time of added modules (ms)':>32}"
        f"{'after airflow.sdk, same process (ms)':>38}{'process (ms)':>14}"
    )
    for name in statements:
        over = "" if name == BASE else f"{medians[name] - medians[BASE]:+.1f}"
        same = "" if name == BASE else f"{same_process[name]:.1f}"
        print(
            f"  {'import ' + name:<{width}}{medians[name]:>13.1f}{over:>17}{own[name]:>32.1f}"
            f"{same:>38}{walls[name]:>14.0f}"
        )

    for name in MODULES:
        added: dict[str, list[int]] = {}
        for r in runs[name]:
            for module, subtree in r.added(known).items():
                if module not in known:
                    added.setdefault(module, []).append(subtree)
        top = sorted(((statistics.median(v) / 1000, m) for m, v in added.items()), reverse=True)[:TOP]
        print(
            f"\n  The {TOP} modules {name} adds ({len(added)} in all), by 'added': the median time (ms) of "
            f"what each imports, itself included, that {BASE} does not; with its self and cumulative times:"
        )
        print(f"    {'added':>9}  {'self':>9}  {'cumulative':>10}")
        for ms, module in top:
            times = [r.modules[module] for r in runs[name] if module in r.modules]
            own_ms = statistics.median(t[0] for t in times) / 1000
            cumulative = statistics.median(t[1] for t in times) / 1000
            print(f"    {ms:>9.1f}  {own_ms:>9.1f}  {cumulative:>10.1f}  {module}")

    added_ms = same_process[MODULES[0]]
    difference = medians[MODULES[0]] - medians[BASE]
    print("\nTargets:")
    print(
        f"  {MODULES[0]} adds under {MAX_OPERATORS_MS:.0f} ms over {BASE} (imported after it, in the same "
        f"process): {added_ms:.1f} ms {'met' if added_ms < MAX_OPERATORS_MS else 'MISSED'}"
    )
    print(
        f"    (the difference of the two processes' medians, {difference:+.1f} ms, "
        f"{'is' if difference < MAX_OPERATORS_MS else 'would miss it, but is'} within the noise of "
        f"Airflow's own import: see docs/performance.md)"
    )


if __name__ == "__main__":
    main()
