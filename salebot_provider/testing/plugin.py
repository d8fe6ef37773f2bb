"""The pytest plugin (entry point ``pytest11``): the ``salebot_emulator`` fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing.emulator import SalebotEmulator


@pytest.fixture(scope="session")
def _salebot_emulator_server() -> Iterator[SalebotEmulator]:
    """One emulator server for the test session; the per-test fixture resets it."""
    from salebot_provider.testing.emulator import SalebotEmulator

    with SalebotEmulator(seed=0) as emulator:
        yield emulator


@pytest.fixture
def salebot_emulator(
    _salebot_emulator_server: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SalebotEmulator]:
    """
    A started Salebot emulator with fresh state, and ``salebot_default`` pointing at it.

    ``AIRFLOW_CONN_SALEBOT_DEFAULT`` is set for the test (with no retry backoff, so that injected
    faults do not slow the test down) and removed afterwards.
    """
    emulator = _salebot_emulator_server
    emulator.reset()
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json(backoff_factor=0))
    yield emulator
    emulator.reset()
