"""Apache Airflow provider for Salebot, the chatbot builder and CRM."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's provider discovery (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-salebot",
        "name": "Salebot",
        "description": "Salebot chatbot builder and CRM: the whole API as a hook, operators, a deferrable "
        "sensor, and an offline emulator.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Salebot",
                "external-doc-url": "https://docs.salebot.pro",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Salebot",
                "python-modules": [
                    "salebot_provider.operators.broadcast",
                    "salebot_provider.operators.callbacks",
                    "salebot_provider.operators.clients",
                    "salebot_provider.operators.export",
                    "salebot_provider.operators.find",
                    "salebot_provider.operators.lists",
                    "salebot_provider.operators.messages",
                    "salebot_provider.operators.orders",
                    "salebot_provider.operators.variables",
                    "salebot_provider.webhook.load",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "Salebot", "python-modules": ["salebot_provider.sensors.order_state"]}
        ],
        "triggers": [
            {
                "integration-name": "Salebot",
                "python-modules": [
                    "salebot_provider.triggers.order_state",
                    "salebot_provider.webhook.trigger",
                ],
            }
        ],
        "hooks": [{"integration-name": "Salebot", "python-modules": ["salebot_provider.hooks.salebot"]}],
        "connection-types": [
            {
                "connection-type": "salebot",
                "hook-class-name": "salebot_provider.hooks.salebot.SalebotHook",
                "hook-name": "Salebot",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "host": "https://chatter.salebot.pro",
                        "password": "Project settings -> Integrations -> API keys",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30},
                        "description": "Seconds to wait for a connection and for a reply.",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": 3},
                        "description": "Retries of a failed call; a send only when surely not processed.",
                    },
                    "backoff_factor": {
                        "label": "Backoff factor (seconds)",
                        "schema": {"type": ["number", "null"], "default": 1},
                        "description": "The first retry waits about this long, then doubling, with jitter.",
                    },
                    "rate_limit": {
                        "label": "Rate limit (requests per second)",
                        "schema": {"type": ["number", "null"]},
                        "description": "Shared by all calls of one hook; empty for no limit.",
                    },
                    "rate_limit_redis": {
                        "label": "Shared rate limit: Redis URL or connection id",
                        "schema": {"type": ["string", "null"]},
                        "description": "redis://host:6379/0 or the id of a Redis connection: then "
                        "rate_limit holds for every worker and triggerer on this project together.",
                    },
                    "verify": {
                        "label": "Verify TLS (true, false, or a CA bundle path)",
                        "schema": {"type": ["string", "null"], "default": "true"},
                        "description": "true checks the server's TLS certificate against the system's "
                        "CAs; a path checks it against that PEM bundle; false does not check.",
                    },
                    "timezone": {
                        "label": "Time zone",
                        "schema": {"type": ["string", "null"], "default": "Europe/Moscow"},
                        "description": "The zone datetimes given as send_time are converted to.",
                    },
                },
            }
        ],
    }
