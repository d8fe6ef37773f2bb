"""The pytest plugin (entry point ``pytest11``): the ``salebot_emulator`` fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing.emulator import SalebotEmulator


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``salebot_emulator`` marker."""
    config.addinivalue_line(
        "markers",
        "salebot_emulator(clients=0, seed=0, timezone=None): seed the salebot_emulator fixture's project "
        "with this many clients from this seed (and set its time zone) before the test",
    )


@pytest.fixture(scope="session")
def _salebot_emulator_server() -> Iterator[SalebotEmulator]:
    """One emulator server for the test session; the per-test fixture resets it."""
    from salebot_provider.testing.emulator import SalebotEmulator

    with SalebotEmulator(seed=0) as emulator:
        yield emulator


@pytest.fixture
def salebot_emulator(
    _salebot_emulator_server: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[SalebotEmulator]:
    """
    A started Salebot emulator with fresh state, and ``salebot_default`` pointing at it.

    ``AIRFLOW_CONN_SALEBOT_DEFAULT`` is set for the test (with no retry backoff, so that injected
    faults do not slow the test down) and removed afterwards. Mark a test with
    ``@pytest.mark.salebot_emulator(clients=500, seed=1)`` to start it with seeded clients.
    """
    emulator = _salebot_emulator_server
    emulator.reset()
    marker = request.node.get_closest_marker("salebot_emulator")
    options = dict(marker.kwargs) if marker else {}
    timezone = options.pop("timezone", None)
    if timezone:
        monkeypatch.setattr(emulator, "timezone", timezone)
        monkeypatch.setattr(emulator.state, "timezone", timezone)
    if options.get("clients"):
        emulator.seed_clients(int(options["clients"]), int(options.get("seed", 0)))
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json(backoff_factor=0))
    yield emulator
    emulator.reset()
