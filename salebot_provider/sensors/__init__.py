"""Sensors of the Salebot provider."""

from __future__ import annotations

from salebot_provider.sensors.order_state import OrderStateSensor

__all__ = ["OrderStateSensor"]
