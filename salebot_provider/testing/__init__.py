"""Test Salebot DAGs offline: an emulator of the Salebot API and its pytest fixture."""

from __future__ import annotations

from salebot_provider.testing.emulator import RequestRecord, SalebotEmulator
from salebot_provider.testing.faults import Fault

__all__ = ["Fault", "RequestRecord", "SalebotEmulator"]
