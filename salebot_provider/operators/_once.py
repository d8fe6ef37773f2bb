"""Operators of one request: their arguments read as a template renders them, and a send made at most once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from salebot_provider.api import parse_rendered
from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.operators._base import check_flag, interrupted, is_literal, moment
from salebot_provider.operators._ledger import Fingerprint, Ledger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from salebot_provider.operators._base import SalebotOperator

#: Arguments that say when a send goes out, not what it is: left out of the fingerprint, since a
#: retry may render a "now"-relative template differently.
SCHEDULE = ("time_shift", "send_time")


def arguments(
    action: str, operator: SalebotOperator, placeholders: Mapping[str, Any], *, parsing: bool
) -> dict[str, Any]:
    """
    The arguments given (not None), by name, with text a template rendered read back.

    While the DAG file is parsed, a value from a template or an XCom (unknown yet) stands in as its
    valid placeholder; the task checks the real value again.

    :param action: the action, for error messages.
    :param operator: the operator, whose attributes are its arguments.
    :param placeholders: every argument's name and its stand-in.
    :param parsing: whether the DAG file is being parsed.
    """
    given = {}
    for name, placeholder in placeholders.items():
        value = getattr(operator, name)
        if value is None:
            continue
        given[name] = placeholder if parsing and not is_literal(value) else _read(action, name, value)
    return given


def _read(action: str, name: str, value: Any) -> Any:
    """One argument as a template rendered it: numbers, true/false, JSON or a Python literal as text."""
    if name == "send_time":
        return moment(value)
    if not isinstance(value, str):
        return value
    if name == "resume_bot":
        return check_flag(action, name, value)
    if name in ("time_shift", "budget"):
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
        return value  # validate() names it
    if name in ("buttons", "variables") and value.lstrip()[:1] in ("[", "{"):
        try:
            return parse_rendered(value)
        except ValueError:
            raise SalebotValidationError(
                f"Salebot {action}: '{name}' is text that is neither JSON nor a Python literal; "
                f"got {value!r:.60}",
                action=action,
            ) from None
    return value


def send_once(
    operator: SalebotOperator,
    context: Mapping[str, Any] | None,
    action: str,
    what: str,
    parts: Sequence[Any],
    send: Callable[[], Any],
) -> Any:
    """
    Make one send at most once across the tries of a task instance; return its result.

    The send is recorded in the task's ``task_state_store`` (Airflow 3.3+) as in flight before its
    request and as done after, with its result. A later try (a retry or a clear) of the same task
    instance then returns the kept result without a request after a success, and fails for good
    (``AirflowFailException``) after a send that may have gone out. A send in doubt fails for good
    at once (there is nothing left to retry); a definite refusal raises the hook's own error (e.g.
    ``SalebotNotFoundError``), which Airflow may retry.

    :param operator: the operator sending; its hook gives the key to keep out of error texts.
    :param context: the task's context.
    :param action: the action sent, which names the record.
    :param what: the send in words, for errors, e.g. ``"the message to client 42"``.
    :param parts: what is sent (JSON-able, the schedule left out); a later try with other
        values is refused.
    :param send: makes the request and returns a small JSON-able result.
    """
    ledger = Ledger(context, action, Fingerprint(action, *parts).digest, 1)
    if ledger.cursor == 0:
        secret = operator.hook.settings.api_key  # the connection is read before anything is sent
        ledger.begin(0, 1)
        try:
            result = send()
        except BaseException as exc:
            error = interrupted(action, exc, secret)
            ledger.failed(error.in_doubt)
            if not error.in_doubt or (ledger.durable and not isinstance(exc, Exception)):
                # A definite refusal as the hook raised it (Airflow may retry), or a task timeout or
                # a kill that the record already holds in doubt.
                raise
            from airflow.providers.common.compat.sdk import AirflowFailException

            raise AirflowFailException(
                f"Salebot {action}: {what} may have gone out (in doubt); it is not resent, so that "
                f"nobody gets it twice. Check it in Salebot. Cause: {str(error).rstrip('.')}"
            ) from None
        ledger.set("result", result)
        ledger.done(1, sent=1)
        return result
    if ledger.in_doubt:
        from airflow.providers.common.compat.sdk import AirflowFailException

        raise AirflowFailException(
            f"Salebot {action}: {what} may or may not have gone out in an earlier try of this task; it "
            "is not resent. Check it in Salebot."
        )
    return ledger.get("result")
