"""Hooks of the Salebot provider."""

from __future__ import annotations

from salebot_provider.hooks.salebot import SalebotHook

__all__ = ["SalebotHook"]
