"""Operators: Salebot steps for DAGs (import them from here)."""

from salebot_provider.operators.broadcast import BroadcastOperator
from salebot_provider.operators.callbacks import CallbackOperator
from salebot_provider.operators.clients import LoadClientsOperator
from salebot_provider.operators.export import ExportClientsOperator
from salebot_provider.operators.find import FindClientsOperator
from salebot_provider.operators.lists import AddToListOperator, RemoveFromListOperator
from salebot_provider.operators.messages import SendMessageOperator
from salebot_provider.operators.orders import (
    CreateOrderOperator,
    GetOrderVariablesOperator,
    SetOrderStateOperator,
    SetOrderVariablesOperator,
)
from salebot_provider.operators.variables import SaveVariablesOperator

__all__ = [
    "AddToListOperator",
    "BroadcastOperator",
    "CallbackOperator",
    "CreateOrderOperator",
    "ExportClientsOperator",
    "FindClientsOperator",
    "GetOrderVariablesOperator",
    "LoadClientsOperator",
    "RemoveFromListOperator",
    "SaveVariablesOperator",
    "SendMessageOperator",
    "SetOrderStateOperator",
    "SetOrderVariablesOperator",
]
