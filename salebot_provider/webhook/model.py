"""One message of Salebot's outgoing webhook, parsed and normalized from what Salebot POSTs."""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import Any

#: The message texts Salebot uses for system notices rather than something a person wrote.
NOTICES = frozenset(
    {
        "new_chat_member",
        "left_chat_member",
        "new_chat_members",
        "user_blocked",
        "user_unblocked",
        "subscribe",
        "unsubscribe",
        "conversation_started",
        "message_allow",
        "message_deny",
        "group_join",
        "group_leave",
    }
)
#: The documented top-level fields and those of ``client``; everything else lands in ``extra``.
_TOP = frozenset(
    {"id", "client", "message", "attachments", "message_id", "project_id", "is_input", "delivered"}
    | {"error_message"}
)
_CLIENT = frozenset({"id", "recepient", "client_type", "name", "avatar", "created_at", "tag", "group"})
#: Integers beyond this are not ids (JSON numbers and strings alike).
_MAX_ID = 2**63 - 1


class WebhookPayloadError(ValueError):
    """A body that is not one Salebot webhook message: the message says what is wrong with it."""


@dataclass(frozen=True)
class Attachment:
    """
    One file attached to a message.

    :param url: where the file is.
    :param type: its kind when Salebot says it (``image``, ``file``, ``audio`` ...).
    :param name: its file name when Salebot says it.
    """

    url: str
    type: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The attachment as plain JSON."""
        return {"url": self.url, "type": self.type, "name": self.name}


@dataclass(frozen=True)
class SalebotMessage:
    """
    One incoming or outgoing message, as Salebot's webhook describes it.

    Build it with :func:`parse_message`. Ids come as strings or numbers: the message ``id`` is kept as
    text (it is what duplicates are recognised by), the client's and the project's ids as integers.

    :param id: the message's id in Salebot (text; ``"123"`` and ``123`` are the same message).
    :param client_id: the client's id in Salebot (``client.id``).
    :param is_input: True for a message from the client, False for one from the bot or an operator.
    :param text: what was written; None for a system notice and for attachments alone.
    :param notice: the system notice the message is (``new_chat_member`` ...), or None.
    :param attachments: the files, normalized whichever of Salebot's shapes they came in.
    :param message_id: the id of the bot's block that sent it (outgoing messages).
    :param project_id: the Salebot project.
    :param delivered: for outgoing messages, whether Salebot delivered it (None when not said).
    :param error_message: why delivery failed, when it did.
    :param recepient: the client's id in the messenger (Salebot's spelling).
    :param client_type: the messenger (Salebot's channel number).
    :param name: the client's name.
    :param avatar: the client's avatar URL.
    :param created_at: when the client was created, as Salebot gave it.
    :param tag: the subscription key.
    :param group: the bot the client belongs to.
    :param variables: the client's variables, when Salebot sends them (observed, not documented).
    :param extra: every other field, at the top level and under ``client`` (``client.<name>``).
    """

    id: str
    client_id: int
    is_input: bool
    text: str | None = None
    notice: str | None = None
    attachments: tuple[Attachment, ...] = ()
    message_id: int | None = None
    project_id: int | None = None
    delivered: bool | None = None
    error_message: str | None = None
    recepient: str | None = None
    client_type: int | None = None
    name: str | None = None
    avatar: str | None = None
    created_at: str | None = None
    tag: str | None = None
    group: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The normalized message as plain JSON (what the spool and the batch output hold)."""
        return {
            "id": self.id,
            "client_id": self.client_id,
            "is_input": self.is_input,
            "text": self.text,
            "notice": self.notice,
            "attachments": [a.as_dict() for a in self.attachments],
            "message_id": self.message_id,
            "project_id": self.project_id,
            "delivered": self.delivered,
            "error_message": self.error_message,
            "recepient": self.recepient,
            "client_type": self.client_type,
            "name": self.name,
            "avatar": self.avatar,
            "created_at": self.created_at,
            "tag": self.tag,
            "group": self.group,
            "variables": self.variables,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SalebotMessage:
        """Rebuild a message from :meth:`as_dict`."""
        fields = dict(data)
        fields["attachments"] = tuple(Attachment(**a) for a in fields.get("attachments") or ())
        return cls(**fields)


def parse_body(body: bytes) -> SalebotMessage:
    """
    Parse one webhook request's body (:func:`decode_body`, then :func:`parse_message`).

    :param body: the request's body.
    :raises WebhookPayloadError: the body is not one message.
    """
    return parse_message(decode_body(body))


def decode_body(body: bytes) -> Any:
    """
    Decode one webhook request's body into the payload it holds.

    The body is JSON; a body written as a Python literal (single quotes, ``None``), as the vendor's
    document shows the payload, is read too.

    :param body: the request's body.
    :raises WebhookPayloadError: the body is neither.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookPayloadError(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise WebhookPayloadError("the body is empty")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as json_error:
        try:
            payload = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise WebhookPayloadError(f"the body is not JSON ({json_error})") from None
    return payload


def parse_message(payload: Any) -> SalebotMessage:
    """
    Turn one decoded webhook payload into a :class:`SalebotMessage`.

    Tolerant of what Salebot is seen to send: ids as strings or numbers, ``is_input`` as ``1``,
    ``"1"`` or ``true``, attachments as a list of URLs, a list of dicts or a string that looks like
    a Python list, system notices (``new_chat_member``) in ``message``, and fields the document
    does not list (kept in ``extra``).

    :param payload: the decoded JSON.
    :raises WebhookPayloadError: the payload is not a message, naming what is missing or wrong.
    """
    if not isinstance(payload, dict):
        raise WebhookPayloadError(f"the payload is a JSON {_kind(payload)}, not an object")
    client = payload.get("client")
    if not isinstance(client, dict):
        raise WebhookPayloadError("the payload has no 'client' object: it is not a webhook message")
    message_id = _text_id(payload.get("id"), "id")
    if message_id is None:
        raise WebhookPayloadError("the payload has no message 'id'")
    client_id = _int_id(client.get("id"), "client.id")
    if client_id is None:
        raise WebhookPayloadError("the payload has no 'client.id'")
    if "is_input" not in payload:
        raise WebhookPayloadError("the payload has no 'is_input': it is not a webhook message")
    is_input = _flag(payload.get("is_input"), "is_input")
    text = _text(payload.get("message"), "message")
    notice = text if text is not None and text.strip() in NOTICES else None
    variables = client.get("variables")
    extra = {k: v for k, v in payload.items() if k not in _TOP}
    extra.update({f"client.{k}": v for k, v in client.items() if k not in _CLIENT and k != "variables"})
    return SalebotMessage(
        id=message_id,
        client_id=client_id,
        is_input=bool(is_input),
        text=None if notice is not None or not text else text,
        notice=notice.strip() if notice else None,
        attachments=_attachments(payload.get("attachments")),
        message_id=_int_id(payload.get("message_id"), "message_id"),
        project_id=_int_id(payload.get("project_id"), "project_id"),
        delivered=_flag(payload.get("delivered"), "delivered"),
        error_message=_text(payload.get("error_message"), "error_message") or None,
        recepient=_text(client.get("recepient"), "client.recepient"),
        client_type=_int_id(client.get("client_type"), "client.client_type"),
        name=_text(client.get("name"), "client.name"),
        avatar=_text(client.get("avatar"), "client.avatar") or None,
        created_at=_text(client.get("created_at"), "client.created_at"),
        tag=_text(client.get("tag"), "client.tag"),
        group=_text(client.get("group"), "client.group"),
        variables=variables if isinstance(variables, dict) else {},
        extra=extra,
    )


def _kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number" if isinstance(value, (int, float)) else type(value).__name__)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_id(value: Any, name: str) -> str | None:
    """An id kept as text: a whole number or a non-blank string (a number in text is canonical)."""
    if value is None or value == "":
        return None
    if _is_whole(value):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        stripped = value.strip()
        return str(int(stripped)) if stripped.isascii() and stripped.isdigit() else stripped
    raise WebhookPayloadError(f"'{name}' is {_kind(value)} {value!r:.40}, not an id")


def _int_id(value: Any, name: str) -> int | None:
    """A numeric id: a whole number, or one in text; None when absent."""
    if value is None or value == "":
        return None
    if _is_whole(value) and 0 <= value <= _MAX_ID:
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value <= _MAX_ID:
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
        if number <= _MAX_ID:
            return number
    raise WebhookPayloadError(f"'{name}' is {_kind(value)} {value!r:.40}, not a whole number")


def _flag(value: Any, name: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise WebhookPayloadError(f"'{name}' is {value!r:.40}, not 1 or 0")


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if _is_whole(value) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise WebhookPayloadError(f"'{name}' is a JSON {_kind(value)}, not text")


def _attachments(value: Any) -> tuple[Attachment, ...]:
    """Attachments from a list of URLs, a list of dicts, one dict, or a string holding a list."""
    if value in (None, "", [], {}):
        return ()
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "[{":
            try:
                value = json.loads(stripped)
            except ValueError:
                try:
                    value = ast.literal_eval(stripped)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    raise WebhookPayloadError(f"'attachments' is text, not a list: {value!r:.60}") from None
        else:
            value = [stripped]
    if isinstance(value, dict):
        value = [value] if _url_of(value) else list(value.values())
    if not isinstance(value, (list, tuple)):
        raise WebhookPayloadError(f"'attachments' is a JSON {_kind(value)}, not a list")
    found = []
    for place, item in enumerate(value):
        if isinstance(item, str) and item.strip():
            found.append(Attachment(url=item.strip()))
        elif isinstance(item, dict) and (url := _url_of(item)):
            kind, name = item.get("type"), item.get("name") or item.get("file_name")
            found.append(
                Attachment(
                    url=url,
                    type=kind if isinstance(kind, str) else None,
                    name=name if isinstance(name, str) else None,
                )
            )
        elif item not in (None, ""):
            raise WebhookPayloadError(f"'attachments' item {place} is {item!r:.60}, not a URL or a file")
    return tuple(found)


def _url_of(item: dict[str, Any]) -> str | None:
    for key in ("url", "link", "file", "src", "href"):
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
