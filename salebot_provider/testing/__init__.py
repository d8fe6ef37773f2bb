"""Test Salebot DAGs offline: an emulator of the Salebot API and its pytest fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salebot_provider.testing.emulator import RequestRecord, SalebotEmulator
    from salebot_provider.testing.faults import Fault

__all__ = ["Fault", "RequestRecord", "SalebotEmulator"]


def __getattr__(name: str) -> Any:
    # Imported on first use: pytest loads the plugin of this package before a project's conftest,
    # which must still be able to set AIRFLOW_HOME before anything imports Airflow.
    if name == "Fault":
        from salebot_provider.testing.faults import Fault

        return Fault
    if name in ("RequestRecord", "SalebotEmulator"):
        from salebot_provider.testing import emulator

        return getattr(emulator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
