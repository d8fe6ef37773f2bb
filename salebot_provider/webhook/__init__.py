"""
Salebot's outgoing webhook into Airflow: the message model, the durable receiver, the event trigger.

Names are imported lazily, so that ``import salebot_provider.webhook`` stays cheap for a DAG file.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "SalebotMessage": "salebot_provider.webhook.model",
    "Attachment": "salebot_provider.webhook.model",
    "WebhookPayloadError": "salebot_provider.webhook.model",
    "parse_message": "salebot_provider.webhook.model",
    "parse_body": "salebot_provider.webhook.model",
    "ReceiverSettings": "salebot_provider.webhook.receiver",
    "create_app": "salebot_provider.webhook.receiver",
    "SalebotMessageTrigger": "salebot_provider.webhook.trigger",
    "LoadWebhookMessagesOperator": "salebot_provider.webhook.load",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
