"""OrderStateSensor: wait until a Salebot deal reaches a funnel state."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from salebot_provider import exceptions
from salebot_provider.api import get_action, is_id, is_retryable
from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators._base import is_literal
from salebot_provider.triggers.order_state import ACTION, MAX_POLL_INTERVAL, OrderStateTrigger, OrderWait

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from salebot_provider.hooks.salebot import SalebotHook


class OrderStateSensor(BaseSensorOperator):
    """
    Wait until a Salebot deal (order) reaches one of the target funnel states.

    Polls ``get_order_state``. A target state ends the task with success and the state id as its
    XCom; a failure state fails it at once, without retries. No such client or deal, or a refused
    key, fails the task. Timeouts, connection errors, 429 and 5xx are logged and polled through
    until the sensor's ``timeout``.

    With ``deferrable=True`` the sensor checks once and then waits in the triggerer
    (:class:`~salebot_provider.triggers.OrderStateTrigger`), where all the waits on one connection
    share one HTTP client and one rate limiter (the connection's ``rate_limit`` extra, 1 request per
    second when unset).

    .. code-block:: python

        OrderStateSensor(
            task_id="wait_for_payment",
            client_id="{{ params.client_id }}",
            target_states=[104],  # "Paid"
            failure_states=[105],  # "Lost"
            poke_interval=300,
            timeout=3 * 24 * 3600,
            deferrable=True,
        )

    Literal ids are checked when the DAG file is parsed; templated ones when the task runs.

    :param client_id: the client's id in Salebot. (templated)
    :param target_states: the funnel state id, or a list of them, that ends the wait with success:
        integers or strings of digits, e.g. from an XCom. (templated)
    :param order_id: the deal; None (the default) for the client's current deal, which the API
        looks up itself. (templated)
    :param failure_states: the state id(s) that fail the task at once, e.g. a "lost" state.
        (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :param deferrable: wait in the triggerer instead of a worker slot; by default the
        ``[operators] default_deferrable`` setting.
    :param kwargs: the arguments of ``BaseSensorOperator``: ``poke_interval`` (seconds between
        polls, also the trigger's), ``timeout``, ``mode`` (``poke`` or ``reschedule``) and the rest.
    :raises SalebotValidationError: for a bad id, naming the parameter.
    """

    template_fields: Sequence[str] = ("client_id", "order_id", "target_states", "failure_states")
    ui_color = "#d7ecf7"

    def __init__(
        self,
        *,
        client_id: int | str,
        target_states: int | str | Sequence[int | str],
        order_id: int | str | None = None,
        failure_states: int | str | Sequence[int | str] = (),
        salebot_conn_id: str = "salebot_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.target_states = target_states
        self.order_id = order_id
        self.failure_states = failure_states
        self.salebot_conn_id = salebot_conn_id
        self.deferrable = deferrable
        if deferrable and not 0 <= self.poke_interval <= MAX_POLL_INTERVAL:
            raise SalebotValidationError(
                f"Salebot {ACTION}: 'poke_interval' of a deferrable sensor must be from 0 to "
                f"{MAX_POLL_INTERVAL:g} seconds; got {self.poke_interval:g}",
                action=ACTION,
            )
        # Each literal argument is checked when the DAG file is parsed; a templated one, in the task.
        OrderWait.checked(
            client_id if is_literal(client_id) else 1,
            order_id if is_literal(order_id) else None,
            target_states if is_literal(target_states) else [],
            failure_states if is_literal(failure_states) else [],
            partial=not (is_literal(target_states) and is_literal(failure_states)),
        )

    @cached_property
    def hook(self) -> SalebotHook:
        """The hook, built on first use."""
        from salebot_provider.hooks.salebot import SalebotHook

        return SalebotHook(salebot_conn_id=self.salebot_conn_id)

    def _wait(self) -> OrderWait:
        return OrderWait.checked(self.client_id, self.order_id, self.target_states, self.failure_states)

    def execute(self, context: Context) -> Any:
        """Poll (or reschedule) until a target state; with ``deferrable``, check once, then defer."""
        wait = self._wait()
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done.is_done:
            return done.xcom_value
        self.defer(
            trigger=OrderStateTrigger(
                client_id=wait.client_id,
                target_states=wait.target_states,
                order_id=wait.order_id,
                failure_states=wait.failure_states,
                poll_interval=self.poke_interval,
                salebot_conn_id=self.salebot_conn_id,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the deal's state once; a transient error only means "not yet"."""
        wait = self._wait()
        try:
            outcome = wait.outcome(self.hook.get_order_state(wait.client_id, order_id=wait.order_id))
        except SalebotError as error:
            if not is_retryable(get_action(ACTION), error):
                raise
            self.log.warning("Could not read the state of %s, polling again: %s", wait.deal, error)
            return PokeReturnValue(is_done=False)
        if outcome is None:
            targets = ", ".join(map(str, wait.target_states))
            self.log.info("Salebot %s is not in state %s yet", wait.deal, targets)
            return PokeReturnValue(is_done=False)
        status, state_id = outcome
        if status == "failure":
            raise AirflowFailException(f"Salebot {wait.deal} reached the failure state {state_id}")
        self.log.info("Salebot %s reached state %s", wait.deal, state_id)
        return PokeReturnValue(is_done=True, xcom_value=state_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> int:
        """
        Turn the trigger's event into the task's outcome.

        :param context: the task's context.
        :param event: the trigger's payload: ``status``, and ``state_id`` or ``message``.
        :return: the state id reached, the task's XCom.
        :raises AirflowFailException: for a failure state (no retries).
        :raises AirflowException: for an error (not found, a refused key ...).
        """
        if not isinstance(event, dict):
            raise AirflowException(
                f"Salebot OrderStateTrigger sent an event that is not a dict: {event!r:.200}"
            )
        status, state_id = event.get("status"), event.get("state_id")
        if status == "success" and is_id(state_id):
            self.log.info("%s", event.get("message"))
            return int(str(state_id))
        if status == "failure":
            raise AirflowFailException(event.get("message") or f"failure state {state_id}")
        if status == "error":
            # The class the poke would have raised, so that callbacks see the same one in every mode.
            error = getattr(exceptions, str(event.get("error")), None)
            message = str(event.get("message") or "Salebot OrderStateTrigger failed")
            if isinstance(error, type) and issubclass(error, exceptions.SalebotError):
                raise error(message, action=ACTION)
            raise AirflowException(message)
        raise AirflowException(f"Salebot OrderStateTrigger sent an unexpected event: {event!r:.200}")
