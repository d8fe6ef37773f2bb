"""Operators: Salebot steps for DAGs (import them from here)."""

from salebot_provider.operators.broadcast import BroadcastOperator
from salebot_provider.operators.clients import LoadClientsOperator
from salebot_provider.operators.variables import SaveVariablesOperator

__all__ = ["BroadcastOperator", "LoadClientsOperator", "SaveVariablesOperator"]
