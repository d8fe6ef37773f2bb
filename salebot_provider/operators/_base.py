"""What every Salebot operator shares: the connection id and a hook built only when the task runs."""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from salebot_provider.api import SEND_TIME_FORMAT, redact
from salebot_provider.exceptions import SalebotError, SalebotValidationError

if TYPE_CHECKING:
    from salebot_provider.hooks.salebot import SalebotHook


class SalebotOperator(BaseOperator):
    """
    Base of the Salebot operators: stores the connection id; the hook is made on first use.

    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    """

    ui_color = "#e3f1ff"
    #: Set by :meth:`on_kill`: a chunked send stops before its next chunk.
    stop_asked = False

    def __init__(self, *, salebot_conn_id: str = "salebot_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.salebot_conn_id = salebot_conn_id

    @cached_property
    def hook(self) -> SalebotHook:
        """The hook, made when the task runs (never while the DAG file is parsed)."""
        from salebot_provider.hooks.salebot import SalebotHook

        return SalebotHook(salebot_conn_id=self.salebot_conn_id)

    def on_kill(self) -> None:
        """
        Stop before the next chunk: Airflow calls this when the task is told to stop (SIGTERM).

        The request under way finishes and is recorded; no new one starts. A chunked send then fails
        with an ordinary error naming what was sent and what was not, so that a retry sends the rest.
        (Airflow kills the task for good a few seconds later; a chunk cut off then is in doubt.)
        """
        self.stop_asked = True


def asked_to_stop(action: str) -> SalebotError:
    """The error that ends a chunked send between two chunks because the task was told to stop."""
    return SalebotError(
        f"Salebot {action}: the task was told to stop (SIGTERM: a worker shutting down, a task marked "
        "failed or cleared), so no further request was started",
        action=action,
    )


#: The largest chunk_size accepted where Salebot documents no limit: a bigger request body gains
#: nothing and puts more in doubt when a request fails.
MAX_CHUNK_SIZE = 5000


def check_count(action: str, name: str, value: Any, default: int, limit: int = MAX_CHUNK_SIZE) -> int:
    """
    Check a whole-number argument such as ``chunk_size`` (a template renders it as text: accepted).

    :param action: the action, for the error message.
    :param name: the argument's name.
    :param value: the argument; None for ``default``.
    :param default: the number used when none is given.
    :param limit: the largest number allowed.
    """
    number = default if value is None else value
    if isinstance(number, str) and number.strip().isdigit():
        number = int(number)
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= limit:
        raise SalebotValidationError(
            f"Salebot {action}: '{name}' must be a whole number from 1 to {limit}; got {number!r:.60}",
            action=action,
        )
    return number


def check_flag(action: str, name: str, value: Any) -> bool:
    """
    Check a true/false argument; a template renders it as text, so ``"True"`` / ``"false"`` count.

    :param action: the action, for the error message.
    :param name: the argument's name.
    :param value: the argument.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SalebotValidationError(
        f"Salebot {action}: '{name}' must be True or False; got {value!r:.60}", action=action
    )


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


def interrupted(action: str, error: BaseException, secret: str | None) -> SalebotError:
    """
    A failed send as a SalebotError; anything else (a task timeout, a kill, a bug) as one in doubt.

    A request interrupted by something other than a Salebot error may have gone out: only the
    hook knows when it surely did not, and then it raises a SalebotError saying so.

    :param action: the action that was being sent.
    :param error: what was raised.
    :param secret: the API key, removed from the text.
    """
    if isinstance(error, SalebotError):
        return error
    return SalebotError(
        f"Salebot {action}: the request was interrupted by {type(error).__name__}: "
        f"{redact(str(error), secret)}",
        action=action,
        in_doubt=True,
    )


def moment(value: Any) -> Any:
    """
    A ``send_time`` as given, but ISO 8601 text (what a template renders for a datetime) as a datetime.

    :param value: the argument.
    """
    if isinstance(value, str):
        try:
            dt.datetime.strptime(value, SEND_TIME_FORMAT)
        except ValueError:
            try:
                return dt.datetime.fromisoformat(value.strip())
            except ValueError:
                return value  # validate() names it
    return value
