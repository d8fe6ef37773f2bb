"""Triggers of the Salebot provider: they run in Airflow's triggerer."""

from __future__ import annotations

from salebot_provider.triggers.order_state import OrderStateTrigger

__all__ = ["OrderStateTrigger"]
