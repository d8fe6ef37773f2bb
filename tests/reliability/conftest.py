"""The reliability suite's fixtures: the DAG-run fixtures of ``tests/dags`` and the task-state stand-in.

The suite proves the policies of DESIGN.md against the emulator (a real local HTTP server): faults
on every path, reruns of a part-sent task, a long run under random faults, bad input that never
reaches the server, and the key in no output. See docs/reliability.md for the table it backs.
"""

from __future__ import annotations

from tests.dags.conftest import FILES, airflow_db, no_key, run_dag, task_instances
from tests.operators.conftest import StateStore, fault_on_call, sends, store

__all__ = [
    "FILES",
    "StateStore",
    "airflow_db",
    "fault_on_call",
    "no_key",
    "run_dag",
    "sends",
    "store",
    "task_instances",
]
