"""What every Salebot operator shares: the connection id and a hook built only when the task runs."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from salebot_provider.exceptions import SalebotValidationError

if TYPE_CHECKING:
    from salebot_provider.hooks.salebot import SalebotHook


class SalebotOperator(BaseOperator):
    """
    Base of the Salebot operators: stores the connection id; the hook is made on first use.

    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    """

    ui_color = "#e3f1ff"

    def __init__(self, *, salebot_conn_id: str = "salebot_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.salebot_conn_id = salebot_conn_id

    @cached_property
    def hook(self) -> SalebotHook:
        """The hook, made when the task runs (never while the DAG file is parsed)."""
        from salebot_provider.hooks.salebot import SalebotHook

        return SalebotHook(salebot_conn_id=self.salebot_conn_id)


#: The largest chunk_size accepted where Salebot documents no limit: a bigger request body gains
#: nothing and puts more in doubt when a request fails.
MAX_CHUNK_SIZE = 5000


def check_chunk_size(action: str, value: Any, default: int, limit: int = MAX_CHUNK_SIZE) -> int:
    """
    Check an operator's ``chunk_size`` (a template renders a number as text, which is accepted).

    :param action: the action, for the error message.
    :param value: the argument; None for ``default``.
    :param default: the size used when none is given.
    :param limit: the largest size allowed.
    """
    size = default if value is None else value
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= limit:
        raise SalebotValidationError(
            f"Salebot {action}: 'chunk_size' must be a whole number from 1 to {limit}; got {size!r:.60}",
            action=action,
        )
    return size


def is_literal(value: Any) -> bool:
    """
    Whether an argument is known when the DAG file is parsed: no template, no XCom, anywhere inside.

    Such arguments are checked in ``__init__``, so that a mistake shows as an import error of the
    DAG file instead of a failed run; the others are checked when the task runs.
    """
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if hasattr(value, "resolve") and hasattr(value, "iter_references"):
        return False  # an XComArg, or a mapped argument
    if isinstance(value, dict):
        return all(is_literal(k) and is_literal(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return all(is_literal(v) for v in value)
    return True
