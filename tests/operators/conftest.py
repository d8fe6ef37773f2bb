"""Operator test helpers: a stand-in for Airflow 3.3's task_state_store, and a way to run a task."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest


class StateStore:
    """Airflow 3.3's ``task_state_store`` as a task sees it: JSON values by key, kept across tries."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(key, default))

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.data[key] = json.loads(json.dumps(value))  # what the store keeps is JSON
        self.writes += 1


@pytest.fixture
def store() -> StateStore:
    return StateStore()


def sends(emulator: Any, action: str) -> list[Any]:
    """The requests the emulator received for one action."""
    return [r for r in emulator.requests if r.action == action]


def fault_on_call(hook: Any, method: str, emulator: Any, call: int, **fault: Any) -> None:
    """Make the ``call``-th call of ``hook.<method>`` meet an emulator fault (``inject`` arguments)."""
    real = getattr(hook, method)
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == call:
            emulator.inject(action=method, times=1, **fault)
        return real(*args, **kwargs)

    setattr(hook, method, counted)
