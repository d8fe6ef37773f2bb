from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError, SalebotNotFoundError, SalebotValidationError
from salebot_provider.operators.messages import SendMessageOperator
from tests.operators.conftest import StateStore, sends


def send(**kwargs: Any) -> SendMessageOperator:
    return SendMessageOperator(task_id="send", **kwargs)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"message": "Hi"}, "give exactly one recipient: 'client_id' (a Salebot client) or 'phone'"),
        ({"client_id": 1, "phone": "79990001122", "message": "Hi"}, "got client_id, phone"),
        ({"client_id": 1, "whatsapp_bot_id": "41", "message": "Hi"}, "'whatsapp_bot_id' applies only with"),
        ({"phone": "79990001122", "message": "Hi", "buttons": []}, "'buttons' apply only with 'client_id'"),
        ({"client_id": 1}, "parameter 'message' is required unless a file is sent"),
        ({"client_id": 1, "message_id": 390}, "'message_id' alone is not enough"),
        ({"client_id": "x7", "message": "Hi"}, "parameter 'client_id' must be an integer id"),
        ({"client_id": 1, "message": "  "}, "parameter 'message' must not be empty"),
        (
            {"client_id": 1, "attachment_url": "https://x.test/a.png"},
            "'attachment_url' and 'attachment_type'",
        ),
        (
            {"client_id": 1, "attachment_url": "u", "attachment_type": "gif"},
            "'attachment_type' must be one of",
        ),
        ({"client_id": 1, "message": "Hi", "buttons": 5}, "parameter 'buttons' must be a dict"),
        ({"client_id": 1, "message": "Hi", "buttons": "[1, "}, "'buttons' is text that is neither JSON"),
        ({"client_id": 1, "message": "Hi", "time_shift": 5, "send_time": "2030-01-01 10:00:00"}, "not both"),
        ({"client_id": 1, "message": "Hi", "send_time": "tomorrow"}, "parameter 'send_time' must be"),
        (
            {"client_id": 1, "message": "Hi", "time_shift": -1},
            "parameter 'time_shift' must be a non-negative",
        ),
        ({"phone": "", "message": "Hi"}, "parameter 'phone' must be a non-empty string"),
    ],
)
def test_bad_input_is_refused_before_any_request(salebot_emulator: Any, kwargs: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match=r"Salebot (whatsapp_)?message") as raised:
        send(**kwargs).execute({})
    assert named in str(raised.value)
    assert salebot_emulator.requests == []


def test_literal_mistakes_show_when_the_dag_file_is_parsed() -> None:
    with pytest.raises(SalebotValidationError, match="'message' is required"):
        SendMessageOperator(task_id="m", client_id=1)
    with pytest.raises(SalebotValidationError, match="got none"):
        SendMessageOperator(task_id="m", message="Hi")
    # Unknown until the task runs: checked then.
    SendMessageOperator(
        task_id="m",
        client_id="{{ params.client }}",
        message="{{ params.text }}",
        attachment_type="{{ params.kind }}",
        attachment_url="{{ params.url }}",
        buttons="{{ params.buttons }}",
        send_time="{{ data_interval_end }}",
    )


def test_templated_arguments_are_checked_when_the_task_runs(salebot_emulator: Any) -> None:
    op = send(client_id="{{ params.client }}", message="{{ params.text }}")
    op.client_id, op.message = "12a", "Hi"  # as rendered
    with pytest.raises(SalebotValidationError, match="'client_id' must be an integer id"):
        op.execute({})
    assert salebot_emulator.requests == []


def test_arguments_are_stored_as_given() -> None:
    op = send(client_id="{{ params.client }}", message="Hi", buttons=[{"text": "A"}], time_shift="{{ x }}")
    assert (op.client_id, op.message, op.buttons, op.time_shift) == (
        "{{ params.client }}",
        "Hi",
        [{"text": "A"}],
        "{{ x }}",
    )
    assert set(SendMessageOperator.template_fields) >= {
        "client_id",
        "phone",
        "message",
        "buttons",
        "send_time",
    }
    assert SendMessageOperator.template_fields_renderers == {"buttons": "json"}


# ------------------------------------------------------------------------------ sending


def test_a_text_with_buttons_to_a_client(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    buttons = [{"text": "Yes", "type": "inline"}]
    assert send(client_id=str(client), message="Ready?", buttons=buttons).execute({}) == {
        "client_id": client,
        "sent": True,
    }
    (item,) = salebot_emulator.outbox
    assert (item.action, item.client_id, item.text, item.buttons) == ("message", client, "Ready?", buttons)


def test_a_file_and_a_bot_block(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    send(
        client_id=client, attachment_url="https://x.test/a.png", attachment_type="image", message_id=391
    ).execute({})
    (item,) = salebot_emulator.outbox
    assert item.attachment == {"type": "image", "url": "https://x.test/a.png"}
    assert (item.message_id, item.text) == (391, "Вот наш каталог")


def test_a_whatsapp_message_to_a_phone(salebot_emulator: Any) -> None:
    result = send(phone="+7 999 000-11-22", whatsapp_bot_id="41", message="Hello").execute({})
    assert result == {"phone": "+7 999 000-11-22", "sent": True}
    (item,) = salebot_emulator.outbox
    assert (item.action, item.phone, item.text) == ("whatsapp_message", "79990001122", "Hello")
    assert sends(salebot_emulator, "whatsapp_message")[0].body["whatsapp_bot_id"] == "41"


def test_a_buttons_list_rendered_as_text_is_read(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    op = send(client_id=client, message="Hi", buttons="{{ params.buttons }}")
    op.buttons = str([{"text": "A"}])  # what a plain template renders
    op.execute({})
    assert salebot_emulator.outbox[0].buttons == [{"text": "A"}]


def test_time_shift_rendered_as_text(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    op = send(client_id=client, message="Later", time_shift="{{ params.delay }}")
    op.time_shift = "90"
    op.execute({})
    (item,) = salebot_emulator.outbox
    assert item.due_at - item.created_at == pytest.approx(90, abs=1)
    assert sends(salebot_emulator, "message")[0].body["time_shift"] == 90


@pytest.mark.salebot_emulator(timezone="Europe/Moscow")
@pytest.mark.parametrize(
    "send_time",
    [
        "2031-03-01 10:00:00",
        dt.datetime(2031, 3, 1, 10, 0, 0),
        pendulum.datetime(2031, 3, 1, 7, 0, 0, tz="UTC"),
        "2031-03-01T07:00:00+00:00",
    ],
)
def test_send_time_forms(salebot_emulator: Any, send_time: Any) -> None:
    client = salebot_emulator.add_client("111")
    send(client_id=client, message="Then", send_time=send_time).execute({})
    assert sends(salebot_emulator, "message")[0].body["send_time"] == "2031-03-01 10:00:00"
    due = pendulum.datetime(2031, 3, 1, 10, 0, 0, tz="Europe/Moscow").timestamp()
    assert salebot_emulator.outbox[0].due_at == due


def test_a_client_that_does_not_exist_is_an_ordinary_error(salebot_emulator: Any) -> None:
    with pytest.raises(SalebotNotFoundError) as raised:
        send(client_id=999, message="Hi").execute({})
    assert not isinstance(raised.value, AirflowFailException)


# ------------------------------------------------------------------------------ never twice


def test_in_doubt_without_task_state_fails_for_good(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("message", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException) as raised:
        send(client_id=client, message="Once").execute({})
    text = str(raised.value)
    assert f"the message to client {client} may have gone out (in doubt); it is not resent" in text
    assert len(salebot_emulator.outbox) == 1
    assert len(sends(salebot_emulator, "message")) == 1


def test_in_doubt_with_task_state_is_never_resent(salebot_emulator: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("message", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException, match=r"may have gone out \(in doubt\); it is not resent"):
        send(client_id=client, message="Once").execute({"task_state_store": store})
    with pytest.raises(
        AirflowFailException,
        match="may or may not have gone out in an earlier try of this task; it is not resent",
    ):
        send(client_id=client, message="Once").execute({"task_state_store": store})
    assert len(salebot_emulator.outbox) == 1
    assert len(sends(salebot_emulator, "message")) == 1


def test_a_retry_after_success_returns_the_same_result_without_a_request(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    first = send(client_id=client, message="Once", time_shift=10).execute({"task_state_store": store})
    # A "now"-relative schedule may render differently on a retry: it is not part of the input.
    again = send(client_id=client, message="Once", time_shift=11).execute({"task_state_store": store})
    assert first == again == {"client_id": client, "sent": True}
    assert len(sends(salebot_emulator, "message")) == 1


def test_a_definite_refusal_is_an_ordinary_error_and_a_retry_sends(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("message", status=400, times=1)
    with pytest.raises(SalebotError, match="HTTP 400") as raised:
        send(client_id=client, message="Hi").execute({"task_state_store": store})
    assert not isinstance(raised.value, AirflowFailException)
    assert salebot_emulator.outbox == []
    assert send(client_id=client, message="Hi").execute({"task_state_store": store})["sent"] is True
    assert len(salebot_emulator.outbox) == 1
    salebot_emulator.inject("message", status=400, times=1)
    with pytest.raises(SalebotError, match="HTTP 400") as plain:
        send(client_id=client, message="Hi").execute({})  # without task state: the API's error itself
    assert not isinstance(plain.value, AirflowFailException)


def test_a_worker_that_died_after_sending_leaves_it_in_doubt(
    salebot_emulator: Any, store: StateStore
) -> None:
    client = salebot_emulator.add_client("111")
    op = send(client_id=client, message="Once")
    real = op.hook.message

    def killed(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise SystemExit("killed")  # after sending, before recording

    op.hook.message = killed  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        op.execute({"task_state_store": store})
    with pytest.raises(AirflowFailException, match="not resent"):
        send(client_id=client, message="Once").execute({"task_state_store": store})
    assert len(salebot_emulator.outbox) == 1


def test_an_interruption_that_is_not_a_salebot_error_counts_as_in_doubt(salebot_emulator: Any) -> None:
    client = salebot_emulator.add_client("111")
    op = send(client_id=client, message="Once")
    real = op.hook.message

    def timed_out(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise TimeoutError("execution_timeout")

    op.hook.message = timed_out  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match="interrupted by TimeoutError"):
        op.execute({})


def test_a_retry_with_different_input_is_refused(salebot_emulator: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    send(client_id=client, message="One").execute({"task_state_store": store})
    with pytest.raises(SalebotValidationError, match="different input"):
        send(client_id=client, message="Two").execute({"task_state_store": store})
    assert len(sends(salebot_emulator, "message")) == 1


def test_the_key_is_in_no_output(salebot_emulator: Any, capfd: Any, caplog: Any, store: StateStore) -> None:
    client = salebot_emulator.add_client("111")
    salebot_emulator.inject("message", status=502, processed=True, times=1)
    with pytest.raises(AirflowFailException) as first:
        send(client_id=client, message="Hi").execute({"task_state_store": store})
    with pytest.raises(AirflowFailException) as second:
        send(client_id=client, message="Hi").execute({"task_state_store": store})
    out, err = capfd.readouterr()
    texts = (out, err, caplog.text, str(first.value), repr(first.value), str(second.value), str(store.data))
    for text in texts:
        assert salebot_emulator.api_key not in text
