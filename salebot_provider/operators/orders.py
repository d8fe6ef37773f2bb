"""Deal (order) operators for SalebotCRM: create a deal, set its state, write and read its variables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import is_id, reply_field, validate
from salebot_provider.exceptions import SalebotAPIError
from salebot_provider.operators._base import SalebotOperator
from salebot_provider.operators._once import arguments, send_once

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context

#: Valid stand-ins for arguments that come from a template or an XCom, while the DAG file is parsed.
_PLACEHOLDERS: dict[str, Any] = {
    "client_id": 1,
    "phone": "79990000000",
    "email": "client@example.com",
    "name": "deal",
    "description": "text",
    "budget": 0,
    "state_id": 1,
    "order_id": 1,
    "variables": {"name": "value"},
}
#: Each operator's arguments (all of them templated).
_CREATE = ("client_id", "phone", "email", "name", "description", "budget", "state_id")
_SET_STATE = ("client_id", "state_id")
_SET_VARS = ("client_id", "variables", "order_id")


def _given(operator: SalebotOperator, action: str, names: Sequence[str], parsing: bool) -> dict[str, Any]:
    """The operator's arguments ``names`` that are given, checked against the action's table row."""
    params = arguments(action, operator, {name: _PLACEHOLDERS[name] for name in names}, parsing=parsing)
    validate(action, params)
    return params


class CreateOrderOperator(SalebotOperator):
    """
    Create a deal in SalebotCRM for a client, found by id, phone or email; return the deal's id.

    By ``phone`` or ``email`` Salebot creates the client when there is none; given several, Salebot
    uses ``client_id`` first, then ``phone``, then ``email``. The deal is never created twice: on
    Airflow 3.3+ the send and the new deal's id are recorded in the task's ``task_state_store``, so
    a retry or a clear after a success returns the same id without a request, and a try that meets
    a creation that may have gone through (a timeout or a 5xx after sending) fails without
    repeating it.

    .. code-block:: python

        create = CreateOrderOperator(
            task_id="create_order",
            client_id="{{ params.client_id }}",
            name="Order {{ params.ref }}",
            budget="{{ params.total }}",
            state_id=101,
        )

    :param client_id: the client's id in Salebot. (templated)
    :param phone: find the client by phone, or create it. (templated)
    :param email: find the client by email, or create it. (templated)
    :param name: the deal's name. (templated)
    :param description: the deal's description. (templated)
    :param budget: the deal's value, a number. (templated)
    :param state_id: the funnel state to put it in; the funnel's first when None. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: the new deal's id (an integer), e.g. ``70001``.
    """

    template_fields: Sequence[str] = _CREATE

    def __init__(
        self,
        *,
        client_id: int | str | None = None,
        phone: str | int | None = None,
        email: str | None = None,
        name: str | None = None,
        description: str | None = None,
        budget: float | str | None = None,
        state_id: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.phone = phone
        self.email = email
        self.name = name
        self.description = description
        self.budget = budget
        self.state_id = state_id
        _given(self, "create_order", _CREATE, parsing=True)

    def execute(self, context: Context) -> int:
        """Check everything, then create the deal once; see the class docstring."""
        params = _given(self, "create_order", _CREATE, parsing=False)
        who = next(f"{name} {params[name]}" for name in ("client_id", "phone", "email") if name in params)

        def once() -> int:
            reply = self.hook.create_order(**params)
            order_id = reply_field("create_order", reply, "order_id")
            if not is_id(order_id):
                raise SalebotAPIError(
                    "Salebot create_order replied with success but without a deal id ('order_id'): the "
                    "deal was probably created",
                    action="create_order",
                    in_doubt=True,
                )
            return int(order_id)

        order_id: int = send_once(self, context, "create_order", f"the new deal for {who}", [params], once)
        self.log.info("Salebot create_order: deal %s for %s", order_id, who)
        return order_id


class SetOrderStateOperator(SalebotOperator):
    """
    Put a client's current deal into a funnel state (action ``set_order_state``).

    Salebot moves the client's current deal only (the newest active one). The move is never sent
    twice: on Airflow 3.3+ it is recorded in the task's ``task_state_store``, so a retry or a clear
    after a success returns the same result without a request, and a try that meets a move that may
    have gone through fails without repeating it.

    .. code-block:: python

        SetOrderStateOperator(task_id="mark_paid", client_id="{{ params.client_id }}", state_id=104)

    :param client_id: the client's id in Salebot. (templated)
    :param state_id: the funnel state. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"client_id": 42, "state_id": 104}``.
    """

    template_fields: Sequence[str] = _SET_STATE

    def __init__(self, *, client_id: int | str, state_id: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.state_id = state_id
        _given(self, "set_order_state", _SET_STATE, parsing=True)

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then send once; see the class docstring."""
        params = _given(self, "set_order_state", _SET_STATE, parsing=False)
        summary = {"client_id": int(params["client_id"]), "state_id": int(params["state_id"])}

        def once() -> dict[str, Any]:
            self.hook.set_order_state(**params)
            return summary

        what = f"the move of client {summary['client_id']}'s deal to state {summary['state_id']}"
        result: dict[str, Any] = send_once(self, context, "set_order_state", what, [params], once)
        return result


class SetOrderVariablesOperator(SalebotOperator):
    """
    Write variables of a deal (action ``set_order_vars``): the client's current deal by default.

    ``set_order_vars`` is idempotent: a failed request is retried by the hook, and a retry of the
    task writes the same values again, harmlessly. Without ``order_id`` the current deal is looked
    up first (``get_current_order_id``); a client without one fails the task.

    .. code-block:: python

        SetOrderVariablesOperator(
            task_id="note_payment",
            client_id="{{ params.client_id }}",
            order_id=create.output,
            variables={"paid_at": "{{ ts }}", "amount": 1500},
        )

    :param client_id: the client's id in Salebot. (templated)
    :param variables: name -> value. (templated)
    :param order_id: the deal; the client's current deal when None. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"client_id": 42, "order_id": 70001, "variables": 2}``, with ``order_id`` None for
        the current deal and ``variables`` the number written.
    """

    template_fields: Sequence[str] = _SET_VARS
    template_fields_renderers: ClassVar[dict[str, str]] = {"variables": "json"}

    def __init__(
        self,
        *,
        client_id: int | str,
        variables: Mapping[str, Any] | str,
        order_id: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.variables = variables
        self.order_id = order_id
        _given(self, "set_order_vars", _SET_VARS, parsing=True)

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then write; see the class docstring."""
        params = _given(self, "set_order_vars", _SET_VARS, parsing=False)
        self.hook.set_order_vars(**params)
        order_id = params.get("order_id")
        return {
            "client_id": int(params["client_id"]),
            "order_id": None if order_id is None else int(order_id),
            "variables": len(params["variables"]),
        }


class GetOrderVariablesOperator(SalebotOperator):
    """
    Read variables of a deal (action ``get_order_vars``): the client's current deal by default.

    A read, retried by the hook on timeouts, 429 and 5xx. A variable the deal does not have comes
    back as None.

    .. code-block:: python

        GetOrderVariablesOperator(
            task_id="read_deal",
            client_id="{{ params.client_id }}",
            order_id=create.output,
            variables=["amount", "paid_at"],
        )

    :param client_id: the client's id in Salebot. (templated)
    :param variables: the names to read: a list, or one name. (templated)
    :param order_id: the deal; the client's current deal when None. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: the deal's variables, name -> value, e.g. ``{"amount": 1500, "paid_at": None}``.
    """

    template_fields: Sequence[str] = ("client_id", "variables", "order_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"variables": "json"}

    def __init__(
        self,
        *,
        client_id: int | str,
        variables: Sequence[str] | str,
        order_id: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self.variables = variables
        self.order_id = order_id
        self._check(parsing=True)

    def _check(self, *, parsing: bool = False) -> dict[str, Any]:
        params = arguments(
            "get_order_vars",
            self,
            {"client_id": 1, "order_id": 1, "variables": ["name"]},
            parsing=parsing,
        )
        if isinstance(params.get("variables"), str):
            params["variables"] = [params["variables"]]  # one name
        validate("get_order_vars", params)
        return params

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then read; see the class docstring."""
        params = self._check()
        result = reply_field("get_order_vars", self.hook.get_order_vars(**params), "result")
        if not isinstance(result, dict):
            raise SalebotAPIError(
                f"Salebot get_order_vars replied with a 'result' that is not an object: "
                f"{type(result).__name__}",
                action="get_order_vars",
            )
        return result
