"""The webhook message model: the documented shape, every quirk Salebot is seen to send, and bad payloads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from salebot_provider.webhook.model import (
    Attachment,
    SalebotMessage,
    WebhookPayloadError,
    decode_body,
    parse_body,
    parse_message,
)


def documented(**changes: Any) -> dict[str, Any]:
    """A message with every field of the vendor's document."""
    payload: dict[str, Any] = {
        "id": 9001,
        "client": {
            "id": 40000007,
            "recepient": "123456789",
            "client_type": 1,
            "name": "Анна",
            "avatar": "https://cdn.example/a.png",
            "created_at": "2026-11-30 10:00:00",
            "tag": "promo",
            "group": "shop_bot",
        },
        "message": "Здравствуйте, где мой заказ?",
        "attachments": [],
        "message_id": 55,
        "project_id": 1,
        "is_input": 1,
        "delivered": 1,
        "error_message": "",
    }
    payload.update(changes)
    return payload


def test_the_documented_payload_becomes_a_typed_message() -> None:
    message = parse_message(documented())
    assert message == SalebotMessage(
        id="9001",
        client_id=40000007,
        is_input=True,
        text="Здравствуйте, где мой заказ?",
        message_id=55,
        project_id=1,
        delivered=True,
        recepient="123456789",
        client_type=1,
        name="Анна",
        avatar="https://cdn.example/a.png",
        created_at="2026-11-30 10:00:00",
        tag="promo",
        group="shop_bot",
    )
    assert SalebotMessage.from_dict(json.loads(json.dumps(message.as_dict()))) == message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (9001, "9001"),
        ("9001", "9001"),
        (" 9001 ", "9001"),
        (9001.0, "9001"),
        ("0009001", "9001"),
        ("a-17", "a-17"),
    ],
)
def test_message_ids_as_numbers_or_text_are_one_id(given: Any, expected: str) -> None:
    assert parse_message(documented(id=given)).id == expected


def test_client_and_block_ids_in_text_are_numbers() -> None:
    message = parse_message(
        documented(client={"id": "40000007", "client_type": "6"}, message_id="55", project_id="1")
    )
    assert (message.client_id, message.client_type, message.message_id, message.project_id) == (
        40000007,
        6,
        55,
        1,
    )


@pytest.mark.parametrize(
    ("flag", "expected"),
    [(1, True), (0, False), ("1", True), ("0", False), (True, True), ("true", True), (1.0, True)],
)
def test_is_input_as_number_text_or_boolean(flag: Any, expected: bool) -> None:
    assert parse_message(documented(is_input=flag)).is_input is expected


@pytest.mark.parametrize(
    ("attachments", "urls"),
    [
        (["https://f/1.jpg", "https://f/2.pdf"], ["https://f/1.jpg", "https://f/2.pdf"]),
        ([{"url": "https://f/1.jpg", "type": "image"}], ["https://f/1.jpg"]),
        ([{"link": "https://f/1.jpg", "name": "1.jpg"}], ["https://f/1.jpg"]),
        ("['https://f/1.jpg', 'https://f/2.pdf']", ["https://f/1.jpg", "https://f/2.pdf"]),
        ('["https://f/1.jpg"]', ["https://f/1.jpg"]),
        ("https://f/only.jpg", ["https://f/only.jpg"]),
        ({"url": "https://f/1.jpg"}, ["https://f/1.jpg"]),
        ({"photo": {"url": "https://f/1.jpg"}}, ["https://f/1.jpg"]),
        (None, []),
        ("", []),
        ({}, []),
    ],
)
def test_attachments_in_every_shape_seen(attachments: Any, urls: list[str]) -> None:
    message = parse_message(documented(attachments=attachments))
    assert [a.url for a in message.attachments] == urls


def test_attachment_details_are_kept() -> None:
    message = parse_message(
        documented(attachments=[{"url": "https://f/1.jpg", "type": "image", "file_name": "1.jpg"}])
    )
    assert message.attachments == (Attachment("https://f/1.jpg", "image", "1.jpg"),)


def test_a_system_notice_is_a_notice_not_client_text() -> None:
    message = parse_message(documented(message="new_chat_member"))
    assert (message.text, message.notice) == (None, "new_chat_member")
    assert parse_message(documented(message="")).text is None
    assert parse_message(documented(message=None, attachments=["https://f/1.jpg"])).text is None


def test_observed_fields_are_kept_client_variables_and_internal_ids() -> None:
    payload = documented(internal_id=77)
    payload["client"] = {**payload["client"], "variables": {"tier": "gold"}, "internal_id": 5}
    message = parse_message(payload)
    assert message.variables == {"tier": "gold"}
    assert message.extra == {"internal_id": 77, "client.internal_id": 5}


def test_an_outgoing_message_that_failed_says_why() -> None:
    message = parse_message(documented(is_input=0, delivered=0, error_message="bot was blocked by the user"))
    assert (message.is_input, message.delivered, message.error_message) == (
        False,
        False,
        "bot was blocked by the user",
    )


def test_the_vendor_documents_the_payload_as_a_python_literal_and_that_is_read_too() -> None:
    body = repr(documented(avatar=None)).encode()  # single quotes, None
    assert parse_body(body).id == "9001"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "a JSON array, not an object"),
        (b'"text"', "a JSON string, not an object"),
        (b"null", "a JSON null, not an object"),
        (b'{"status": "ok"}', "no 'client' object"),
        (b'{"client": "x", "id": 1, "is_input": 1}', "no 'client' object"),
        (b'{"client": {"id": 1}, "is_input": 1}', "no message 'id'"),
        (b'{"client": {}, "id": 1, "is_input": 1}', "no 'client.id'"),
        (b'{"client": {"id": 1}, "id": 1}', "no 'is_input'"),
        (b'{"client": {"id": "x"}, "id": 1, "is_input": 1}', "'client.id' is string 'x', not a whole number"),
        (b'{"client": {"id": -4}, "id": 1, "is_input": 1}', "'client.id'"),
        (b'{"client": {"id": 1}, "id": [1], "is_input": 1}', "'id' is array"),
        (b'{"client": {"id": 1}, "id": 1, "is_input": 7}', "'is_input' is 7, not 1 or 0"),
        (
            b'{"client": {"id": 1}, "id": 1, "is_input": 1, "message": {"a": 1}}',
            "'message' is a JSON object, not text",
        ),
        (
            b'{"client": {"id": 1}, "id": 1, "is_input": 1, "attachments": 5}',
            "'attachments' is a JSON number",
        ),
        (
            b'{"client": {"id": 1}, "id": 1, "is_input": 1, "attachments": "[broken"}',
            "'attachments' is text, not a list",
        ),
        (b'{"client": {"id": 1}, "id": 1, "is_input": 1, "attachments": [7]}', "'attachments' item 0"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_a_payload_that_is_not_a_message_is_a_clear_error(body: bytes, says: str) -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        parse_body(body)
    assert says in str(raised.value)


def test_decode_body_keeps_the_payload_as_posted() -> None:
    payload = documented(attachments="['https://f/1.jpg']")
    assert decode_body(json.dumps(payload).encode()) == payload
