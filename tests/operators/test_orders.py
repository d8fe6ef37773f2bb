from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError, SalebotNotFoundError, SalebotValidationError
from salebot_provider.operators.orders import (
    CreateOrderOperator,
    GetOrderVariablesOperator,
    SetOrderStateOperator,
    SetOrderVariablesOperator,
)
from tests.operators.conftest import StateStore, sends


def deals_of(emulator: Any, client_id: int) -> list[Any]:
    with emulator.state.lock:
        return [emulator.deal(i) for i in emulator.state.deals_by_client.get(client_id, [])]


def client_with_deal(emulator: Any, **variables: Any) -> tuple[int, int]:
    client = emulator.add_client("111")
    with emulator.state.lock:
        deal = emulator.state.add_deal(client, 101, variables=dict(variables))
    return client, deal.id


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("make", "kwargs", "named"),
    [
        (CreateOrderOperator, {}, "give at least one of client_id, phone, email"),
        (CreateOrderOperator, {"client_id": "x1"}, "parameter 'client_id' must be an integer id"),
        (CreateOrderOperator, {"email": " "}, "parameter 'email' must not be empty"),
        (
            CreateOrderOperator,
            {"client_id": 1, "budget": "lots"},
            "parameter 'budget' must be a finite number",
        ),
        (CreateOrderOperator, {"client_id": 1, "budget": float("nan")}, "'budget' must be a finite number"),
        (
            CreateOrderOperator,
            {"client_id": 1, "state_id": -3},
            "parameter 'state_id' must be a non-negative",
        ),
        (SetOrderStateOperator, {"client_id": 1, "state_id": None}, "parameter 'state_id' is required"),
        (SetOrderStateOperator, {"client_id": None, "state_id": 104}, "parameter 'client_id' is required"),
        (SetOrderStateOperator, {"client_id": 1, "state_id": "paid"}, "'state_id' must be an integer id"),
        (SetOrderVariablesOperator, {"client_id": 1, "variables": {}}, "parameter 'variables' must not be"),
        (SetOrderVariablesOperator, {"client_id": 1, "variables": [1]}, "'variables' must be a mapping"),
        (SetOrderVariablesOperator, {"client_id": 1, "variables": {"": 1}}, "key that is not a non-empty"),
        (
            SetOrderVariablesOperator,
            {"client_id": 1, "variables": {"a": 1}, "order_id": "x"},
            "parameter 'order_id' must be an integer id",
        ),
        (
            GetOrderVariablesOperator,
            {"client_id": 1, "variables": []},
            "parameter 'variables' must not be empty",
        ),
        (
            GetOrderVariablesOperator,
            {"client_id": 1, "variables": ["a", 2]},
            "'variables[1]' must be a variable",
        ),
        (GetOrderVariablesOperator, {"client_id": None, "variables": ["a"]}, "'client_id' is required"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    salebot_emulator: Any, make: Any, kwargs: Any, named: str
) -> None:
    with pytest.raises(SalebotValidationError, match=r"Salebot [a-z_]*order") as raised:
        make(task_id="t", **kwargs).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="give at least one of"):
        CreateOrderOperator(task_id="c", name="deal")
    with pytest.raises(SalebotValidationError, match="state_id"):
        SetOrderStateOperator(task_id="s", client_id=1, state_id="paid")
    # Unknown until the task runs: checked then.
    CreateOrderOperator(task_id="c", client_id="{{ params.client }}", budget="{{ params.total }}")
    SetOrderVariablesOperator(
        task_id="v", client_id="{{ params.client }}", order_id="{{ ti.xcom_pull('c') }}", variables={"a": 1}
    )
    GetOrderVariablesOperator(task_id="g", client_id=1, variables="{{ params.names }}")


def test_templated_arguments_are_checked_when_the_task_runs(salebot_emulator: Any) -> None:
    op = SetOrderStateOperator(task_id="s", client_id="{{ params.client }}", state_id="{{ params.state }}")
    op.client_id, op.state_id = "5", "next"  # as rendered
    with pytest.raises(SalebotValidationError, match="'state_id' must be an integer id"):
        op.execute({})
    assert salebot_emulator.requests == []


# ------------------------------------------------------------------------------ create_order


def test_create_an_order_for_a_client(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    op = CreateOrderOperator(
        task_id="c",
        client_id=str(client),
        name="Order 7",
        description="2 items",
        budget="1500.5",
        state_id=102,
    )
    order_id = op.execute({})
    assert isinstance(order_id, int)
    deal = salebot_emulator.deal(order_id)
    assert (deal.client_id, deal.name, deal.description, deal.budget, deal.state_id) == (
        client,
        "Order 7",
        "2 items",
        1500.5,
        102,
    )


@pytest.mark.parametrize(("by", "value"), [("phone", "+7 999 000-11-22"), ("email", "new@example.com")])
def test_create_an_order_by_phone_or_email_creates_the_client(
    salebot_emulator: Any, by: str, value: str
) -> None:
    order_id = CreateOrderOperator(task_id="c", **{by: value}).execute({})
    deal = salebot_emulator.deal(order_id)
    assert deal.state_id == 101  # the funnel's first state
    assert salebot_emulator.client(deal.client_id).platform_id in ("79990001122", "new@example.com")


def test_create_in_doubt_without_task_state_fails_for_good(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("create_order", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException) as raised:
        CreateOrderOperator(task_id="c", client_id=client).execute({})
    assert f"the new deal for client_id {client} may have gone out" in str(raised.value)
    assert len(deals_of(salebot_emulator, client)) == 1
    assert len(sends(salebot_emulator, "create_order")) == 1


def test_create_in_doubt_with_task_state_never_makes_a_second_deal(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("create_order", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException, match=r"may have gone out \(in doubt\); it is not resent"):
        CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    with pytest.raises(
        AirflowFailException,
        match="may or may not have gone out in an earlier try of this task; it is not resent",
    ):
        CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    assert len(deals_of(salebot_emulator, client)) == 1
    assert len(sends(salebot_emulator, "create_order")) == 1


def test_a_retry_after_success_returns_the_same_order_id(salebot_emulator: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    first = CreateOrderOperator(task_id="c", client_id=client, name="A").execute({"task_state_store": store})
    again = CreateOrderOperator(task_id="c", client_id=client, name="A").execute({"task_state_store": store})
    assert first == again
    assert store.data["salebot_create_order"]["result"] == first
    assert len(deals_of(salebot_emulator, client)) == 1
    assert len(sends(salebot_emulator, "create_order")) == 1


def test_a_definite_refusal_is_an_ordinary_error_and_a_retry_creates(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("create_order", status=400, times=1)
    with pytest.raises(SalebotError, match="HTTP 400") as raised:
        CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert deals_of(salebot_emulator, client) == []
    order_id = CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    assert [deal.id for deal in deals_of(salebot_emulator, client)] == [order_id]


def test_a_success_without_an_order_id_is_in_doubt(salebot_emulator: Any) -> None:
    op = CreateOrderOperator(task_id="c", client_id=salebot_emulator.add_client("111"))
    op.hook.create_order = lambda **kwargs: {"status": "success"}  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match="without a deal id"):
        op.execute({})


def test_an_unknown_client_is_an_ordinary_error(salebot_emulator: Any) -> None:
    with pytest.raises(SalebotNotFoundError) as raised:
        CreateOrderOperator(task_id="c", client_id=999).execute({})
    assert not isinstance(raised.value, AirflowFailException)


# ------------------------------------------------------------------------------ set_order_state


def test_set_the_state_of_the_current_deal(salebot_emulator: Any) -> None:
    client, order_id = client_with_deal(salebot_emulator)
    result = SetOrderStateOperator(task_id="s", client_id=str(client), state_id="104").execute({})
    assert result == {"client_id": client, "state_id": 104}
    assert salebot_emulator.deal(order_id).state_id == 104


def test_set_state_in_doubt_is_never_resent(salebot_emulator: Any, store: StateStore) -> None:
    client, order_id = client_with_deal(salebot_emulator)
    salebot_emulator.inject("set_order_state", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException, match=r"may have gone out \(in doubt\); it is not resent"):
        SetOrderStateOperator(task_id="s", client_id=client, state_id=103).execute(
            {"task_state_store": store}
        )
    with pytest.raises(AirflowFailException, match=f"the move of client {client}'s deal to state 103"):
        SetOrderStateOperator(task_id="s", client_id=client, state_id=103).execute(
            {"task_state_store": store}
        )
    salebot_emulator.inject("set_order_state", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException, match=r"may have gone out \(in doubt\)"):
        SetOrderStateOperator(task_id="s", client_id=client, state_id=104).execute({})
    assert len(sends(salebot_emulator, "set_order_state")) == 2
    assert salebot_emulator.deal(order_id).state_id == 104


def test_set_state_retry_after_success_and_after_a_refusal(salebot_emulator: Any, store: StateStore) -> None:
    client, order_id = client_with_deal(salebot_emulator)
    salebot_emulator.inject("set_order_state", status=400, times=1)
    with pytest.raises(SalebotError, match="HTTP 400") as raised:
        SetOrderStateOperator(task_id="s", client_id=client, state_id=102).execute(
            {"task_state_store": store}
        )
    assert not isinstance(raised.value, AirflowFailException)
    first = SetOrderStateOperator(task_id="s", client_id=client, state_id=102).execute(
        {"task_state_store": store}
    )
    again = SetOrderStateOperator(task_id="s", client_id=client, state_id=102).execute(
        {"task_state_store": store}
    )
    assert first == again == {"client_id": client, "state_id": 102}
    assert salebot_emulator.deal(order_id).state_id == 102
    assert [r.status for r in sends(salebot_emulator, "set_order_state")] == [400, 200]


# ------------------------------------------------------------------------------ deal variables


def test_set_variables_of_the_current_deal_or_a_given_one(salebot_emulator: Any) -> None:
    client, older = client_with_deal(salebot_emulator)
    with salebot_emulator.state.lock:
        newer = salebot_emulator.state.add_deal(client, 101).id
    result = SetOrderVariablesOperator(task_id="v", client_id=client, variables={"a": "1", "b": 2}).execute(
        {}
    )
    assert result == {"client_id": client, "order_id": None, "variables": 2}
    assert salebot_emulator.deal(newer).variables == {"a": "1", "b": 2}
    op = SetOrderVariablesOperator(
        task_id="v", client_id=client, order_id=str(older), variables='{"c": true}'
    )
    assert op.execute({}) == {"client_id": client, "order_id": older, "variables": 1}
    assert salebot_emulator.deal(older).variables == {"c": True}


def test_set_variables_is_idempotent_so_a_5xx_is_retried(salebot_emulator: Any) -> None:
    client, order_id = client_with_deal(salebot_emulator)
    salebot_emulator.inject("set_order_vars", status=502, processed=True, times=1)
    SetOrderVariablesOperator(task_id="v", client_id=client, order_id=order_id, variables={"a": 1}).execute(
        {}
    )
    assert salebot_emulator.deal(order_id).variables == {"a": 1}
    assert [r.status for r in sends(salebot_emulator, "set_order_vars")] == [502, 200]


def test_get_variables(salebot_emulator: Any) -> None:
    client, order_id = client_with_deal(salebot_emulator, amount=1500, ref="A7")
    op = GetOrderVariablesOperator(task_id="g", client_id=client, variables=["amount", "ref", "none"])
    assert op.execute({}) == {"amount": 1500, "ref": "A7", "none": None}
    one = GetOrderVariablesOperator(task_id="g", client_id=client, order_id=order_id, variables="ref")
    assert one.execute({}) == {"ref": "A7"}
    rendered = GetOrderVariablesOperator(task_id="g", client_id=client, variables="{{ params.names }}")
    rendered.variables = "['amount', 'ref']"  # a list a plain template renders
    assert rendered.execute({}) == {"amount": 1500, "ref": "A7"}


def test_get_variables_of_a_client_without_a_deal(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    with pytest.raises(SalebotNotFoundError, match="order not found"):
        GetOrderVariablesOperator(task_id="g", client_id=client, variables=["a"]).execute({})


def test_arguments_are_stored_as_given_and_templated() -> None:
    op = SetOrderVariablesOperator(
        task_id="v", client_id="{{ c }}", order_id="{{ o }}", variables={"a": "{{ x }}"}
    )
    assert (op.client_id, op.order_id, op.variables) == ("{{ c }}", "{{ o }}", {"a": "{{ x }}"})
    assert CreateOrderOperator.template_fields == (
        "client_id",
        "phone",
        "email",
        "name",
        "description",
        "budget",
        "state_id",
    )
    assert SetOrderStateOperator.template_fields == ("client_id", "state_id")
    assert SetOrderVariablesOperator.template_fields == GetOrderVariablesOperator.template_fields
    assert GetOrderVariablesOperator.template_fields_renderers == {"variables": "json"}


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("create_order", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException) as first:
        CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    with pytest.raises(AirflowFailException) as second:
        CreateOrderOperator(task_id="c", client_id=client).execute({"task_state_store": store})
    out, err = capfd.readouterr()
    for text in (
        out,
        err,
        caplog.text,
        str(first.value),
        repr(first.value),
        str(second.value),
        str(store.data),
    ):
        assert salebot_emulator.api_key not in text
