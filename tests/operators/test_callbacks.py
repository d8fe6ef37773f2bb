from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators.callbacks import CallbackOperator
from tests.operators.conftest import StateStore, sends


def callback(**kwargs: Any) -> CallbackOperator:
    return CallbackOperator(task_id="callback", **kwargs)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"channel": "sms", "client_id": 1}, "'channel' must be one of client, vk, tg, ok, whatsapp, email"),
        ({}, "give exactly one of client_id, client_phone, client_email; got none"),
        ({"client_id": 1, "client_email": "a@b.c"}, "got client_id, client_email"),
        ({"client_id": 1, "user_id": "5"}, "channel 'client' does not take user_id"),
        ({"channel": "vk", "user_id": "5"}, "channel 'vk' lacks group_id"),
        ({"channel": "tg", "group_id": "shop_bot"}, "channel 'tg' lacks user_id"),
        (
            {"channel": "tg", "user_id": "5", "group_id": "shop_bot", "client_id": 1, "name": "A"},
            "channel 'tg' does not take client_id, name",
        ),
        ({"channel": "ok", "group_id": "1", "phone": "7999"}, "lacks user_id and does not take phone"),
        ({"channel": "whatsapp", "email": "a@b.c"}, "channel 'whatsapp' lacks phone and does not take email"),
        ({"channel": "email", "bot_id": "41"}, "channel 'email' lacks email and does not take bot_id"),
        ({"channel": "email", "email": ""}, "parameter 'email' must not be empty"),
        ({"client_id": "x", "message": "go"}, "parameter 'client_id' must be an integer id"),
        ({"client_id": 1, "variables": ["a"]}, "'variables' must be a mapping of names to values"),
        ({"client_id": 1, "variables": {"message": "x"}}, "'extra' field 'message' collides"),
        ({"client_id": 1, "variables": {"a": float("inf")}}, "must be a finite number"),
        ({"client_id": 1, "resume_bot": "maybe"}, "'resume_bot' must be True or False"),
        ({"client_id": 1, "time_shift": 5, "send_time": "2030-01-01 10:00:00"}, "not both"),
        ({"client_id": 1, "send_time": "soon"}, "parameter 'send_time' must be"),
    ],
)
def test_bad_input_is_refused_before_any_request(salebot_emulator: Any, kwargs: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match=r"Salebot [a-z_]*callback") as raised:
        callback(**kwargs).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="channel 'vk' lacks group_id"):
        CallbackOperator(task_id="c", channel="vk", user_id="{{ params.user }}")
    # Unknown until the task runs: checked then.
    CallbackOperator(
        task_id="c",
        channel="tg",
        user_id="{{ params.user }}",
        group_id="shop_bot",
        variables={"plan": "{{ params.plan }}"},
        resume_bot="{{ params.resume }}",
    )
    CallbackOperator(task_id="c", channel="{{ params.channel }}", user_id="1")


def test_a_templated_channel_is_checked_when_the_task_runs(salebot_emulator: Any) -> None:
    op = callback(channel="{{ params.channel }}", user_id="5")
    op.channel = "vk"  # as rendered
    with pytest.raises(SalebotValidationError, match="channel 'vk' lacks group_id"):
        op.execute({})
    assert salebot_emulator.requests == []


# ------------------------------------------------------------------------------ channels


@pytest.mark.parametrize(
    ("by", "value"),
    [("client_id", None), ("client_phone", "+7 (999) 000-11-22"), ("client_email", "Ann@Example.com")],
)
def test_the_client_channel_finds_the_client_by_id_phone_or_email(
    salebot_emulator: Any, by: str, value: Any
) -> None:
    client = salebot_emulator.add_client(
        "111", variables={"phone": "79990001122", "email": "ann@example.com"}
    )
    given = client if value is None else value
    result = callback(**{by: given}, message="paid", variables={"plan": "gold", "seats": 3}).execute({})
    assert result == {"channel": "client", by: given, "sent": True}
    (item,) = salebot_emulator.outbox
    assert (item.kind, item.action, item.client_id, item.text) == ("callback", "callback", client, "paid")
    assert salebot_emulator.client(client).variables.items() >= {"plan": "gold", "seats": 3}.items()


@pytest.mark.parametrize(
    ("channel", "client_type", "group"), [("vk", 0, "143414131"), ("tg", 1, "shop_bot"), ("ok", 8, "560001")]
)
def test_messenger_channels(salebot_emulator: Any, channel: str, client_type: int, group: str) -> None:
    client = salebot_emulator.add_client("146467928", client_type=client_type, group=group)
    result = callback(channel=channel, user_id="146467928", group_id=group, message="start").execute({})
    assert result == {"channel": channel, "user_id": "146467928", "group_id": group, "sent": True}
    (item,) = salebot_emulator.outbox
    assert (item.action, item.client_id, item.text) == (f"{channel}_callback", client, "start")


def test_ok_takes_a_name(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("7", client_type=8, group="560001")
    callback(channel="ok", user_id=7, group_id=560001, name="Anna").execute({})
    assert salebot_emulator.client(client).name == "Anna"


def test_whatsapp_finds_or_creates_the_client_by_phone(salebot_emulator: Any) -> None:
    result = callback(
        channel="whatsapp", phone="79990001122", bot_id="41", name="Ivan", variables={"source": "form"}
    ).execute({})
    assert result == {"channel": "whatsapp", "phone": "79990001122", "sent": True}
    (item,) = salebot_emulator.outbox
    client = salebot_emulator.client(item.client_id)
    assert (item.action, client.platform_id, client.name) == ("whatsapp_callback", "79990001122", "Ivan")
    assert client.variables["source"] == "form"


def test_email_finds_or_creates_the_client_by_email(salebot_emulator: Any) -> None:
    result = callback(channel="email", email="lead@example.com", email_id_bot="bot@example.com").execute({})
    assert result == {"channel": "email", "email": "lead@example.com", "sent": True}
    (item,) = salebot_emulator.outbox
    assert salebot_emulator.client(item.client_id).platform_id == "lead@example.com"
    assert sends(salebot_emulator, "email_callback")[0].body["email_id_bot"] == "bot@example.com"


def test_resume_bot_and_variables_rendered_as_text(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    with salebot_emulator.state.lock:
        salebot_emulator.state.clients[client].paused = True
    op = callback(client_id=client, resume_bot="{{ params.resume }}", variables="{{ params.vars }}")
    op.resume_bot, op.variables = "True", str({"tier": "gold"})  # what plain templates render
    op.execute({})
    assert sends(salebot_emulator, "callback")[0].body["resume_bot"] is True
    after = salebot_emulator.client(client)
    assert (after.paused, after.variables["tier"]) == (False, "gold")


def test_time_shift_schedules_the_callback(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    callback(client_id=client, message="later", time_shift=120).execute({})
    (item,) = salebot_emulator.outbox
    assert item.due_at - item.created_at == pytest.approx(120, abs=1)


def test_arguments_are_stored_as_given_and_templated() -> None:
    op = callback(channel="tg", user_id="{{ params.user }}", group_id="shop_bot", variables={"a": "{{ x }}"})
    assert (op.channel, op.user_id, op.variables) == ("tg", "{{ params.user }}", {"a": "{{ x }}"})
    assert set(CallbackOperator.template_fields) == {
        "channel",
        "client_id",
        "client_phone",
        "client_email",
        "user_id",
        "group_id",
        "phone",
        "bot_id",
        "email",
        "email_id_bot",
        "name",
        "message",
        "resume_bot",
        "time_shift",
        "send_time",
        "variables",
    }


# ------------------------------------------------------------------------------ never twice


def test_in_doubt_without_task_state_fails_for_good(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("5", client_type=0, group="143414131")
    salebot_emulator.inject("vk_callback", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException) as raised:
        callback(channel="vk", user_id="5", group_id="143414131", message="go").execute({})
    assert "the vk_callback to user_id 5, group_id 143414131 may have gone out" in str(raised.value)
    assert [item.client_id for item in salebot_emulator.outbox] == [client]
    assert len(sends(salebot_emulator, "vk_callback")) == 1


def test_in_doubt_with_task_state_is_never_resent(salebot_emulator: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("callback", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException, match=r"may have gone out \(in doubt\); it is not resent"):
        callback(client_id=client, message="go").execute({"task_state_store": store})
    with pytest.raises(
        AirflowFailException,
        match="may or may not have gone out in an earlier try of this task; it is not resent",
    ):
        callback(client_id=client, message="go").execute({"task_state_store": store})
    assert len(salebot_emulator.outbox) == 1
    assert len(sends(salebot_emulator, "callback")) == 1


def test_a_retry_after_success_returns_the_same_result_without_a_request(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    first = callback(client_id=client, variables={"a": 1}).execute({"task_state_store": store})
    again = callback(client_id=client, variables={"a": 1}).execute({"task_state_store": store})
    assert first == again == {"channel": "client", "client_id": client, "sent": True}
    assert len(sends(salebot_emulator, "callback")) == 1


def test_a_definite_refusal_is_an_ordinary_error_and_a_retry_sends(
    salebot_emulator: Any, store: StateStore
) -> None:
    salebot_emulator.inject("email_callback", status=400, times=1)
    with pytest.raises(SalebotError, match="HTTP 400") as raised:
        callback(channel="email", email="a@example.com").execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert callback(channel="email", email="a@example.com").execute({"task_state_store": store})["sent"]
    assert len(salebot_emulator.outbox) == 1


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any) -> None:
    salebot_emulator.inject("tg_callback", status=502, processed=True, times=1)
    salebot_emulator.add_client("5", client_type=1, group="shop_bot")
    with pytest.raises(AirflowFailException) as raised:
        callback(channel="tg", user_id=5, group_id="shop_bot").execute({})
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, str(raised.value), repr(raised.value)):
        assert salebot_emulator.api_key not in text
