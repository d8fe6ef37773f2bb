"""What the Salebot API is: the action table, request building and reply judging, with no I/O."""

from __future__ import annotations

import ast
import datetime as dt
import ipaddress
import json
import logging
import math
import os
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from numbers import Integral, Real
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pendulum

from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotNotFoundError,
    SalebotPermissionError,
    SalebotValidationError,
)

DEFAULT_BASE_URL = "https://chatter.salebot.pro"
DEFAULT_TIMEZONE = "Europe/Moscow"
SEND_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
HISTORY_DATE_FORMAT = "%d.%m.%Y"
#: Chunk size for list parameters whose per-request limit the vendor does not document.
DEFAULT_CHUNK_SIZE = 500

#: The five permissions a key can hold, with the label of the key settings screen (Интеграции).
PERMISSIONS: Mapping[str, str] = {
    "clients_read": "Разрешение на чтение информации о клиентах",
    "clients_write": "Разрешение на изменение/удаление информации о клиентах",
    "clients_delete": "Разрешение на удаление клиентов",
    "crm_read": "Разрешение на чтение информации из CRM",
    "crm_write": "Разрешение на изменение/удаление информации из CRM",
}
PERMISSION_TEXT: Mapping[str, str] = {
    "clients_read": "read client information",
    "clients_write": "change client information",
    "clients_delete": "delete clients",
    "crm_read": "read CRM information",
    "crm_write": "change CRM information",
}

ATTACHMENT_TYPES = ("image", "video", "link", "file", "audio")
#: The ``client_type`` of telephony clients, the one kind loaded without a ``group_id``.
TELEPHONY = 13
#: The shortest key the provider accepts: shorter ones cannot be hidden safely (Airflow's masker
#: skips secrets under 5 characters, and a short key would also match ordinary text). Salebot's are 40+.
MIN_KEY_LENGTH = 8
#: The most characters of a header's value (e.g. ``Retry-After``) that go into a message.
MAX_HEADER_TEXT = 40
# Patterns are used with fullmatch and [0-9], never $ and \d: $ matches before a trailing newline,
# and \d matches Arabic-Indic or full-width digits, which Salebot would not read as a number.
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_SEND_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_DATE_SHAPE = re.compile(r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}")
_ORDER_NOT_FOUND = re.compile(r"order( [0-9]+)? not found")
_KEY_IN_PATH = re.compile(r"/api/[^/\s?#\"']+/")
_PATH_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
#: Python names of API parameters that are Python keywords or builtins: the hook's name -> the API's.
ALIASES: Mapping[str, str] = {"list_id": "list"}


@dataclass(frozen=True)
class Param:
    """
    One parameter of an action, named as the vendor names it.

    :param name: the API's name of the parameter.
    :param kind: the shape of the value (a key of ``_CHECKS``).
    :param required: whether the action needs it.
    :param doc: a short description.
    :param choices: the allowed values, if the API has a fixed set.
    :param minimum: the smallest allowed number.
    :param maximum: the largest allowed number.
    :param max_items: the most items one request may carry (documented per-request limit).
    :param unique: a list whose repeated items are dropped (first kept), so that one request never
        names a recipient twice.
    """

    name: str
    kind: str
    required: bool = False
    doc: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    unique: bool = False


Rule = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Action:
    """
    One Salebot API action: how to call it and how to treat a failure.

    :param name: the action, the last segment of ``/api/{key}/{action}``.
    :param method: ``GET`` (parameters in the query string) or ``POST`` (a JSON body).
    :param permission: the key permission the action needs (a key of ``PERMISSIONS``).
    :param idempotent: whether doing it twice leaves the same result as once and messages nobody;
        only such actions are retried after a timeout or a 5xx.
    :param group: the vendor's section the action belongs to.
    :param summary: one line saying what it does.
    :param params: the parameters, in the vendor's order.
    :param rules: checks across parameters, run after each parameter is checked on its own.
    :param extra: whether additional body fields are accepted and saved as client variables.
    :param body_param: the parameter whose value is the whole body (a JSON array) or query string.
    :param chunk_param: the list parameter that the chunked helper splits.
    """

    name: str
    method: str
    permission: str
    idempotent: bool
    group: str
    summary: str
    params: tuple[Param, ...] = ()
    rules: tuple[Rule, ...] = ()
    extra: bool = False
    body_param: str | None = None
    chunk_param: str | None = None
    param_map: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_map", {p.name: p for p in self.params})

    @property
    def chunk_limit(self) -> int | None:
        """The documented per-request limit of ``chunk_param``, if the vendor gives one."""
        return self.param_map[self.chunk_param].max_items if self.chunk_param else None


@dataclass(frozen=True)
class Request:
    """
    A request ready to send, without the key: the transports add it to the path.

    :param action: the action name.
    :param method: ``GET`` or ``POST``.
    :param query: query-string parameters (GET).
    :param body: the JSON body, already encoded (POST).
    """

    action: str
    method: str
    query: dict[str, str] | None = None
    body: bytes | None = None

    @property
    def display_path(self) -> str:
        """The path as it may be shown anywhere: the key is always ``***``."""
        return f"/api/***/{self.action}"

    def url(self, base_url: str, api_key: str) -> str:
        """
        The real URL. It holds the key: never log or show it.

        :param base_url: the service's base URL, without a trailing slash.
        :param api_key: the API key.
        """
        return f"{base_url}/api/{quote(api_key, safe='')}/{self.action}"


# ---------------------------------------------------------------------------------- value checks


def _label(name: str) -> str:
    """Name a parameter as the API and the hook both know it: ``list`` is ``list (list_id)``."""
    python = {api: py for py, api in ALIASES.items()}.get(name)
    return f"{name} ({python})" if python else name


def _fail(action: str, message: str) -> SalebotValidationError:
    return SalebotValidationError(f"Salebot {action}: {message}", action=action)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    """An integer of any type (numpy, pandas ...), but never ``True`` or ``False``."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """Whether a number is finite and fits a float (the JSON number Salebot reads)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


#: Ids are 64-bit integers on Salebot's side.
_MAX_ID = 2**63 - 1


def _check_id(action: str, name: str, value: Any) -> Any:
    if _is_int(value) or (isinstance(value, str) and _DIGITS.fullmatch(value)):
        if int(value) < 0:
            raise _fail(action, f"parameter '{name}' must be a non-negative id; got {value}")
        if int(value) > _MAX_ID:
            raise _fail(action, f"parameter '{name}' is too large for an id; got {_shown(value)}")
        return int(value) if _is_int(value) else value
    raise _fail(
        action,
        f"parameter '{name}' must be an integer id (or a string of ASCII digits 0-9); got {_shown(value)}",
    )


def is_id(value: Any) -> bool:
    """
    Whether a value is an id as Salebot takes one: a non-negative 64-bit integer, or its ASCII digits.

    :param value: the value, e.g. an id a reply carries.
    """
    try:
        _check_id("", "", value)
    except SalebotValidationError:
        return False
    return True


def _check_text(action: str, name: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail(action, f"parameter '{name}' must be a string; got {_shown(value)}")
    if not value.strip():
        raise _fail(action, f"parameter '{name}' must not be empty; leave it out (None) instead")
    return value


def _check_key(action: str, name: str, value: Any) -> Any:
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and value.strip():
        return value
    raise _fail(action, f"parameter '{name}' must be a non-empty string or an integer; got {_shown(value)}")


def _check_value(action: str, name: str, value: Any) -> Any:
    """A value saved as is (a variable, an ``extra`` field): any JSON, but no NaN or infinity."""
    if _is_number(value) and not _finite(value):
        raise _fail(action, f"parameter '{name}' must be a finite number; got {_shown(value)}")
    if isinstance(value, Mapping):
        return {k: _check_value(action, f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_check_value(action, f"{name}[{i}]", v) for i, v in enumerate(value)]
    if _is_int(value):
        return int(value)
    return float(value) if _is_number(value) else value


def _check_scalar(action: str, name: str, value: Any) -> Any:
    if isinstance(value, str | bool) or _is_number(value):
        return _check_value(action, name, value)
    raise _fail(action, f"parameter '{name}' must be a string or a number; got {_shown(value)}")


def _check_number(action: str, name: str, value: Any) -> Any:
    if not _is_number(value) or not _finite(value):
        raise _fail(action, f"parameter '{name}' must be a finite number; got {_shown(value)}")
    return int(value) if _is_int(value) else float(value)


def _check_seconds(action: str, name: str, value: Any) -> Any:
    number = _check_number(action, name, value)
    if number < 0:
        raise _fail(action, f"parameter '{name}' must be a non-negative number of seconds; got {number}")
    return number


def _check_bool(action: str, name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise _fail(action, f"parameter '{name}' must be True or False; got {_shown(value)}")
    return value


def _in_format(value: Any, shape: re.Pattern[str], fmt: str) -> bool:
    """Whether a string has exactly this shape and is a real moment in ``fmt`` (no 31.02)."""
    if not isinstance(value, str) or not shape.fullmatch(value):
        return False
    try:
        dt.datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _check_send_time(action: str, name: str, value: Any) -> Any:
    if isinstance(value, dt.datetime) or _in_format(value, _SEND_TIME_SHAPE, SEND_TIME_FORMAT):
        return value
    raise _fail(
        action,
        f"parameter '{name}' must be a datetime or a string like '2024-10-16 13:15:59' "
        f"(format {SEND_TIME_FORMAT}); got {_shown(value)}",
    )


def _check_date(action: str, name: str, value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.strftime(HISTORY_DATE_FORMAT)
    if _in_format(value, _DATE_SHAPE, HISTORY_DATE_FORMAT):
        return value
    raise _fail(action, f"parameter '{name}' must be a date or a 'dd.mm.yyyy' string; got {_shown(value)}")


def _as_list(action: str, name: str, value: Any) -> list[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | set | frozenset):
        raise _fail(action, f"parameter '{name}' must be a list; got {_shown(value)}")
    if not value:
        raise _fail(action, f"parameter '{name}' must not be empty")
    return list(value)


def _check_ids(action: str, name: str, value: Any, start: int = 0) -> Any:
    return [
        _check_id(action, f"{name}[{i}]", item) for i, item in enumerate(_as_list(action, name, value), start)
    ]


def _check_keys(action: str, name: str, value: Any, start: int = 0) -> Any:
    return [
        _check_key(action, f"{name}[{i}]", item)
        for i, item in enumerate(_as_list(action, name, value), start)
    ]


def _check_names(action: str, name: str, value: Any, start: int = 0) -> Any:
    items = _as_list(action, name, value)
    for i, item in enumerate(items, start):
        if not isinstance(item, str) or not item.strip():
            raise _fail(
                action, f"parameter '{name}[{i}]' must be a variable name (a string); got {_shown(item)}"
            )
    return items


def _check_mapping(action: str, name: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise _fail(action, f"parameter '{name}' must be a mapping of names to values; got {_shown(value)}")
    if not value:
        raise _fail(action, f"parameter '{name}' must not be empty")
    for key in value:
        if not isinstance(key, str) or not key.strip():
            raise _fail(action, f"parameter '{name}' has a key that is not a non-empty string: {_shown(key)}")
    return _check_value(action, name, value)


def _check_buttons(action: str, name: str, value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return _check_value(action, name, value)
    raise _fail(
        action, f"parameter '{name}' must be a dict with 'buttons' or a list of buttons; got {_shown(value)}"
    )


def check_client_item(action: str, name: str, item: Any) -> dict[str, Any]:
    """
    Check one item of ``load_clients``: ``platform_id``, ``group_id`` and ``client_type``.

    :param action: the action, for the error message.
    :param name: how to name the item in the error, e.g. ``clients[3]``.
    :param item: the item.
    :return: the item as a plain dict.
    :raises SalebotValidationError: naming the item and the field.
    """
    if not isinstance(item, Mapping):
        raise _fail(action, f"parameter '{name}' must be a dict with platform_id, group_id, client_type")
    for key in ("platform_id", "group_id", "client_type"):
        if item.get(key) is None:
            raise _fail(
                action, f"parameter '{name}' lacks '{key}' (platform_id, group_id, client_type are required)"
            )
    _check_key(action, f"{name}.platform_id", item["platform_id"])
    if not (isinstance(item["group_id"], str) or _is_int(item["group_id"])):
        raise _fail(
            action,
            f"parameter '{name}.group_id' must be a string or an integer; got {_shown(item['group_id'])}",
        )
    _check_id(action, f"{name}.client_type", item["client_type"])
    blank = isinstance(item["group_id"], str) and not item["group_id"].strip()
    if blank and int(item["client_type"]) != TELEPHONY:
        raise _fail(
            action,
            f"parameter '{name}.group_id' may be empty only for client_type {TELEPHONY} (telephony); "
            "take the bot's group_id from connected_channels",
        )
    return {k: _check_value(action, f"{name}.{k}", v) for k, v in item.items()}


def _check_items(action: str, name: str, value: Any, start: int = 0) -> Any:
    return [
        check_client_item(action, f"{name}[{i}]", item)
        for i, item in enumerate(_as_list(action, name, value), start)
    ]


_CHECKS: Mapping[str, Callable[..., Any]] = {
    "id": _check_id,
    "text": _check_text,
    "key": _check_key,
    "scalar": _check_scalar,
    "number": _check_number,
    "seconds": _check_seconds,
    "bool": _check_bool,
    "send_time": _check_send_time,
    "date": _check_date,
    "ids": _check_ids,
    "keys": _check_keys,
    "names": _check_names,
    "mapping": _check_mapping,
    "buttons": _check_buttons,
    "items": _check_items,
}


def check_param(action: str, kind: str, name: str, value: Any) -> Any:
    """
    Check one value as the table checks a parameter of this kind, e.g. one id read from a file.

    :param action: the action, for the error message.
    :param kind: the parameter's kind: ``"id"``, ``"key"``, ``"scalar"`` ...
    :param name: how to name the value in the error, e.g. ``clients[3]``.
    :param value: the value.
    :return: the cleaned value (an id as ``int`` or its digits, as given).
    :raises SalebotValidationError: naming the value and the rule broken.
    """
    return _CHECKS[kind](action, name, value)


# ---------------------------------------------------------------------------------- cross-field rules


def _exactly_one(*names: str) -> Rule:
    def rule(action: str, params: dict[str, Any]) -> None:
        given = [_label(n) for n in names if n in params]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise _fail(action, f"give exactly one of {', '.join(map(_label, names))}; {found}")

    return rule


def _at_least_one(*names: str) -> Rule:
    def rule(action: str, params: dict[str, Any]) -> None:
        if not any(n in params for n in names):
            raise _fail(action, f"give at least one of {', '.join(map(_label, names))}")

    return rule


def _attachment(action: str, params: dict[str, Any]) -> None:
    if ("attachment_url" in params) != ("attachment_type" in params):
        raise _fail(
            action, "parameters 'attachment_url' and 'attachment_type' go together: give both or neither"
        )


def _content(action: str, params: dict[str, Any]) -> None:
    if not any(n in params for n in ("message", "attachment_url", "message_id")):
        raise _fail(
            action, "give 'message', an attachment (attachment_type + attachment_url), or 'message_id'"
        )


def _text_or_file(action: str, params: dict[str, Any]) -> None:
    # The vendor documents message_id as an alternative to the text for broadcast only.
    if "message" not in params and "attachment_url" not in params:
        raise _fail(
            action,
            "parameter 'message' is required unless a file is sent (attachment_type + attachment_url); "
            "'message_id' alone is not enough",
        )


def _schedule(action: str, params: dict[str, Any]) -> None:
    if "time_shift" in params and "send_time" in params:
        raise _fail(
            action, "give 'time_shift' or 'send_time', not both (Salebot would silently use time_shift)"
        )


def _broadcast_audience(action: str, params: dict[str, Any]) -> None:
    _exactly_one("list", "clients", "platform_ids")(action, params)
    if "platform_ids" in params and "group_id" not in params:
        raise _fail(action, "parameter 'group_id' is required with 'platform_ids'")
    if "group_id" in params and "platform_ids" not in params:
        raise _fail(action, "parameter 'group_id' applies only with 'platform_ids'; Salebot would ignore it")


def _history_dates(action: str, params: dict[str, Any]) -> None:
    start, stop = params.get("start_date"), params.get("stop_date")
    if (start is None) != (stop is None):
        raise _fail(action, "parameters 'start_date' and 'stop_date' go together: give both or neither")
    if start is not None and stop is not None and _parse_date(start) > _parse_date(stop):
        raise _fail(action, f"'start_date' {start} is after 'stop_date' {stop}")


def _reverse_without_list(action: str, params: dict[str, Any]) -> None:
    if params.get("reverse") and "list" in params:
        raise _fail(action, "parameter 'reverse' works only without list (list_id); Salebot would ignore it")


def _one_to_three_variables(action: str, params: dict[str, Any]) -> None:
    variables = params["variables"]
    if len(variables) > 3:
        raise _fail(action, f"parameter 'variables' takes at most 3 name=value pairs; got {len(variables)}")
    for name, value in variables.items():
        if value is None:
            raise _fail(action, f"parameter 'variables' has no value for {name!r}")
        _check_scalar(action, f"variables[{name!r}]", value)


def _parse_date(text: str) -> dt.date:
    return dt.datetime.strptime(text, HISTORY_DATE_FORMAT).date()


# ---------------------------------------------------------------------------------- the table

_CALLBACKS = "Starting bots (callbacks)"
_MESSAGES = "Messages"
_CLIENTS = "Clients"
_VARIABLES = "Variables"
_FIND = "Finding a client id"
_ORDERS = "Deals (orders) in SalebotCRM"
_OTHER = "Other"

_SCHEDULE = (
    Param("time_shift", "seconds", doc="send after this many seconds from now"),
    Param("send_time", "send_time", doc="send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime)"),
)
_RESUME = Param("resume_bot", "bool", doc="True takes a paused bot off pause")
_ATTACHMENT = (
    Param("attachment_type", "text", choices=ATTACHMENT_TYPES, doc="how to show the file"),
    Param("attachment_url", "text", doc="the file's URL"),
)
_MESSAGE_RULES: tuple[Rule, ...] = (_text_or_file, _attachment, _schedule)
_CLIENT_ID = Param("client_id", "id", required=True, doc="the client's id in Salebot")
_ORDER_ID = Param("order_id", "id", doc="the deal; the hook looks up the current deal when omitted")
_VAR_VAL = (
    Param("var", "text", required=True, doc="variable name"),
    Param("val", "scalar", required=True, doc="variable value"),
)


def _callback(name: str, summary: str, *params: Param, rules: tuple[Rule, ...] = ()) -> Action:
    return Action(
        name,
        "POST",
        "clients_write",
        False,
        _CALLBACKS,
        summary,
        params=(*params, _RESUME, *_SCHEDULE),
        rules=(*rules, _schedule),
        extra=True,
    )


def _read(name: str, group: str, summary: str, *params: Param, method: str = "GET", **kw: Any) -> Action:
    return Action(
        name, method, kw.pop("permission", "clients_read"), True, group, summary, params=params, **kw
    )


ACTIONS: Mapping[str, Action] = {
    a.name: a
    for a in (
        # ------------------------------------------------------------ starting bots (callbacks)
        _callback(
            "callback",
            "Start a funnel for a client, or confirm an action on another site; the client does not see it.",
            Param("client_id", "id", doc="the client's id in Salebot"),
            Param("client_phone", "key", doc="find the client by phone"),
            Param("client_email", "text", doc="find the client by email"),
            Param("message", "text", doc="the callback text"),
            rules=(_exactly_one("client_id", "client_phone", "client_email"),),
        ),
        _callback(
            "vk_callback",
            "Start a funnel for a VKontakte user.",
            Param("message", "text", doc="the callback text"),
            Param("user_id", "key", required=True, doc="VK user id"),
            Param("group_id", "key", required=True, doc="VK group id"),
        ),
        _callback(
            "whatsapp_callback",
            "Start a WhatsApp bot for a phone number (after a sign-up or a lead form).",
            Param("name", "text", doc="the client's name"),
            Param("message", "text", doc="the callback text"),
            Param("phone", "key", required=True, doc="the client's phone"),
            Param("bot_id", "key", doc="the bot's identifier"),
        ),
        _callback(
            "ok_callback",
            "Start a funnel for an Odnoklassniki user.",
            Param("name", "text", doc="the client's name"),
            Param("message", "text", doc="the callback text"),
            Param("user_id", "key", required=True, doc="Odnoklassniki user id"),
            Param("group_id", "key", required=True, doc="Odnoklassniki group id"),
        ),
        _callback(
            "tg_callback",
            "Start a funnel for a Telegram user.",
            Param("message", "text", doc="the callback text"),
            Param("user_id", "key", required=True, doc="Telegram user id"),
            Param("group_id", "key", required=True, doc="the bot's name (ends with 'bot')"),
        ),
        Action(
            "send_callback_by_platform_id",
            "POST",
            "clients_write",
            False,
            _CALLBACKS,
            "Send a callback to every client of the project whose platform_id is in the list.",
            params=(
                Param("platform_ids", "keys", required=True, max_items=300, unique=True, doc="messenger ids"),
                Param("callback_text", "text", required=True, doc="the callback text"),
                Param("group_id", "key", doc="the bot's identifier"),
                *_SCHEDULE,
            ),
            rules=(_schedule,),
            chunk_param="platform_ids",
        ),
        _callback(
            "email_callback",
            "Start an email bot; finds the email client or creates it.",
            Param("name", "text", doc="the client's name"),
            Param("message", "text", doc="the callback text"),
            Param("email", "text", required=True, doc="the client's email address"),
            Param("email_id_bot", "text", doc="the bot's email address"),
        ),
        # ------------------------------------------------------------ messages
        Action(
            "message",
            "POST",
            "clients_write",
            False,
            _MESSAGES,
            "Send a message to one client.",
            params=(
                _CLIENT_ID,
                Param("message", "text", doc="the text; optional when a file is sent"),
                Param("message_id", "id", doc="a bot block to send"),
                *_ATTACHMENT,
                Param("buttons", "buttons", doc="buttons, with or without a hint"),
                *_SCHEDULE,
            ),
            rules=_MESSAGE_RULES,
        ),
        Action(
            "whatsapp_message",
            "POST",
            "clients_write",
            False,
            _MESSAGES,
            "Send a message from a connected WhatsApp bot to a phone number.",
            params=(
                Param("phone", "key", required=True, doc="the recipient's phone"),
                Param("whatsapp_bot_id", "key", doc="the bot, from 'messengers and chats'"),
                Param("message", "text", doc="the text; optional when a file is sent"),
                Param("message_id", "id", doc="a bot block to send"),
                *_ATTACHMENT,
                *_SCHEDULE,
            ),
            rules=_MESSAGE_RULES,
        ),
        Action(
            "broadcast",
            "POST",
            "clients_write",
            False,
            _MESSAGES,
            "Start a mass mailing to a list, to client ids, or to messenger ids of one bot.",
            params=(
                Param("list", "id", doc="the list to mail"),
                Param("clients", "ids", unique=True, doc="client ids; repeats are dropped"),
                Param(
                    "platform_ids", "keys", unique=True, doc="messenger ids, needs group_id; repeats dropped"
                ),
                Param("group_id", "key", doc="the bot, required with platform_ids"),
                Param("message", "text", doc="the text"),
                Param("message_id", "id", doc="a bot block to send"),
                *_ATTACHMENT,
                Param("buttons", "buttons", doc="buttons, with or without a hint"),
                Param("shift", "seconds", doc="seconds between messages (Salebot's default 0.2)"),
                *_SCHEDULE,
            ),
            rules=(_broadcast_audience, _content, _attachment, _schedule),
        ),
        _read(
            "get_history",
            _MESSAGES,
            "Read a client's message history, optionally between two dates.",
            _CLIENT_ID,
            Param("limit", "id", minimum=1, maximum=2000, doc="at most 2000 (the default)"),
            Param("start_date", "date", doc="first day (dd.mm.yyyy), with stop_date"),
            Param("stop_date", "date", doc="last day (dd.mm.yyyy), with start_date"),
            rules=(_history_dates,),
        ),
        Action(
            "clear_history",
            "GET",
            "clients_write",
            True,
            _MESSAGES,
            "Delete a client's message history.",
            params=(_CLIENT_ID,),
        ),
        # ------------------------------------------------------------ clients
        Action(
            "assign_to_user",
            "POST",
            "clients_write",
            False,
            _CLIENTS,
            "Assign a client to an employee; without email Salebot picks one.",
            params=(_CLIENT_ID, Param("email", "text", doc="the employee's email")),
        ),
        Action(
            "load_clients",
            "POST",
            "clients_write",
            False,
            _CLIENTS,
            "Import clients; each item gets its own status and id.",
            params=(
                Param("clients", "items", required=True, doc="items with platform_id, group_id, client_type"),
            ),
            body_param="clients",
            chunk_param="clients",
        ),
        Action(
            "add_to_list",
            "POST",
            "clients_write",
            False,
            _CLIENTS,
            "Add clients to a list.",
            params=(
                Param("list_id", "id", required=True, doc="the list"),
                Param("clients", "ids", required=True, doc="client ids"),
            ),
            chunk_param="clients",
        ),
        Action(
            "remove_from_list",
            "POST",
            "clients_write",
            False,
            _CLIENTS,
            "Remove clients from a list.",
            params=(
                Param("list_id", "id", required=True, doc="the list"),
                Param("clients", "ids", required=True, doc="client ids"),
            ),
            chunk_param="clients",
        ),
        _read(
            "get_clients",
            _CLIENTS,
            "Read one page of the project's clients (or of a list's).",
            Param("offset", "id", doc="how many to skip"),
            Param("limit", "id", minimum=1, maximum=500, doc="page size, at most 500 (the default)"),
            Param("list", "id", doc="only the clients of this list"),
            Param("reverse", "bool", doc="oldest first; only without list"),
            rules=(_reverse_without_list,),
        ),
        Action(
            "delete_clients",
            "POST",
            "clients_delete",
            False,
            _CLIENTS,
            "Delete clients.",
            params=(Param("client_ids", "ids", required=True, max_items=500, doc="client ids, at most 500"),),
            chunk_param="client_ids",
        ),
        # ------------------------------------------------------------ variables
        Action(
            "save_variables",
            "POST",
            "clients_write",
            True,
            _VARIABLES,
            "Save variables into the client's current deal, or into the profile with a 'client.' prefix.",
            params=(
                Param("client_id", "id", doc="one client"),
                Param("clients", "ids", doc="several clients, the same variables for each"),
                Param("variables", "mapping", required=True, doc="name -> value"),
            ),
            rules=(_exactly_one("client_id", "clients"),),
        ),
        _read("get_variables", _VARIABLES, "Read a client's variables.", _CLIENT_ID),
        # ------------------------------------------------------------ finding client ids
        _read(
            "find_client_id_by_platform_id",
            _FIND,
            "Find clients (with their variables) by messenger ids.",
            Param("platform_ids", "keys", required=True, doc="messenger ids"),
            Param("group_id", "key", doc="the bot's identifier"),
            method="POST",
            chunk_param="platform_ids",
        ),
        _read(
            "online_chat_client_id",
            _FIND,
            "Client id of a site's online-chat visitor (SaleBotPro.recipient_id).",
            Param("recipient", "key", required=True, doc="the dialogue id on the site"),
            Param("tag", "text", doc="the client's tag"),
            Param("name", "text", doc="the client's name"),
            permission="clients_write",
        ),
        _read(
            "whatsapp_client_id",
            _FIND,
            "Client id for a WhatsApp number (HTTP 404 when there is none).",
            Param("phone", "key", required=True, doc="the phone"),
            Param("group_id", "key", doc="the bot's identifier"),
        ),
        _read(
            "find_client_id_by_phone",
            _FIND,
            "Client id by phone; searches WhatsApp clients and variables.",
            Param("phone", "key", required=True, doc="the phone"),
        ),
        _read(
            "find_client_id_by_email",
            _FIND,
            "Client id by email; searches variables.",
            Param("email", "text", required=True, doc="the email address"),
        ),
        _read(
            "find_client_id_by_var",
            _FIND,
            "Client id by the value of a variable.",
            *_VAR_VAL,
            Param("group_id", "key", doc="the bot's identifier"),
            Param("search_in", "text", choices=("order",), doc="'order' to search deal variables"),
        ),
        _read(
            "find_latest_client_id_by_var",
            _FIND,
            "Id of the most recently created client with var=val (client and deal variables).",
            *_VAR_VAL,
        ),
        _read("find_all_client_id_by_var", _FIND, "Ids of every client with var=val.", *_VAR_VAL),
        _read(
            "find_all_client_id_by_several_vars",
            _FIND,
            "Ids of the clients that have all of up to 3 name=value pairs.",
            Param("variables", "mapping", required=True, doc="up to 3 name -> value pairs"),
            body_param="variables",
            rules=(_one_to_three_variables,),
        ),
        _read(
            "find_clients",
            _FIND,
            "Ids of the clients whose variables match conditions (_in, _not_in, _not).",
            Param("q", "mapping", required=True, doc="the conditions"),
            Param("search_in", "text", choices=("order",), doc="'order' to search deal variables"),
            Param("include_all", "bool", doc="True (default): all conditions; False: any one"),
            method="POST",
        ),
        # ------------------------------------------------------------ deals (orders)
        _read(
            "get_current_order_id",
            _ORDERS,
            "The id of the client's current deal.",
            _CLIENT_ID,
            permission="crm_read",
        ),
        _read(
            "get_orders",
            _ORDERS,
            "The ids of the client's deals, optionally by status.",
            _CLIENT_ID,
            Param("order_status", "id", choices=(0, 1, 2), doc="0 active, 1 won, 2 lost"),
            permission="crm_read",
        ),
        Action(
            "move_order_to_next_state",
            "POST",
            "crm_write",
            False,
            _ORDERS,
            "Move a deal to the next state of its funnel.",
            params=(_CLIENT_ID, _ORDER_ID),
        ),
        _read(
            "get_order_vars",
            _ORDERS,
            "Read variables of a deal.",
            _CLIENT_ID,
            _ORDER_ID,
            Param("variables", "names", required=True, doc="variable names"),
            method="POST",
            permission="crm_read",
        ),
        Action(
            "set_order_vars",
            "POST",
            "crm_write",
            True,
            _ORDERS,
            "Write variables of a deal.",
            params=(_CLIENT_ID, _ORDER_ID, Param("variables", "mapping", required=True, doc="name -> value")),
        ),
        Action(
            "create_order",
            "POST",
            "crm_write",
            False,
            _ORDERS,
            "Create a deal; a client missing by phone or email is created (client_id > phone > email).",
            params=(
                Param("client_id", "id", doc="the client"),
                Param("phone", "key", doc="find or create the client by phone"),
                Param("email", "text", doc="find or create the client by email"),
                Param("name", "text", doc="the deal's name"),
                Param("description", "text", doc="the deal's description"),
                Param("budget", "number", doc="the deal's value"),
                Param("state_id", "id", doc="the funnel state to put it in"),
            ),
            rules=(_at_least_one("client_id", "phone", "email"),),
        ),
        Action(
            "set_order_state",
            "POST",
            "crm_write",
            False,
            _ORDERS,
            "Put the client's deal into a funnel state.",
            params=(_CLIENT_ID, Param("state_id", "id", required=True, doc="the funnel state")),
        ),
        _read(
            "get_order_state",
            _ORDERS,
            "The funnel state of a deal (the current deal by default).",
            _CLIENT_ID,
            _ORDER_ID,
            permission="crm_read",
        ),
        # ------------------------------------------------------------ other
        _read(
            "check_whatsapp",
            _OTHER,
            "Whether a phone number has WhatsApp (needs WhatsApp connected).",
            Param("phone", "key", required=True, doc="the phone, any format"),
        ),
        _read("connected_channels", _OTHER, "The messengers connected to the project, with their group_id."),
        _read("get_messages", _OTHER, "The blocks of the bot's scheme."),
    )
}


def get_action(name: str) -> Action:
    """
    Look an action up in the table.

    :param name: the action's name.
    :raises SalebotValidationError: if the table does not know it.
    """
    try:
        return ACTIONS[name]
    except KeyError:
        raise SalebotValidationError(
            f"Salebot has no action {name!r} in this provider's table; hook.call() sends any action",
            action=name,
        ) from None


# ---------------------------------------------------------------------------------- requests


def validate(
    action: str | Action,
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    *,
    omit: str | None = None,
    first_index: int = 0,
) -> dict[str, Any]:
    """
    Check an action's parameters against the table, before anything is sent.

    ``None`` values count as not given. Integers of other types (numpy, pandas) become ``int``;
    dates become ``dd.mm.yyyy``. A datetime ``send_time`` is kept for :func:`build_request`.

    :param action: the action or its name.
    :param params: the parameters by their API names (the hook's Python names, e.g. ``list_id``, too).
    :param extra: additional body fields of the callback family (saved as client variables).
    :param omit: a required parameter to leave out of the check (the list a chunked helper fills in).
    :param first_index: the index of the first item of a chunk, so errors name the item's place in
        the whole input.
    :return: the cleaned parameters, with ``extra`` merged in.
    :raises SalebotValidationError: naming the parameter and the rule broken.
    """
    spec = action if isinstance(action, Action) else get_action(action)
    params = _api_names(spec, params)
    unknown = sorted(k for k, v in params.items() if k not in spec.param_map and v is not None)
    if unknown:
        known = ", ".join(map(_label, spec.param_map)) or "none"
        raise _fail(spec.name, f"unknown parameter(s) {', '.join(unknown)}; it takes {known}")
    clean: dict[str, Any] = {}
    for p in spec.params:
        value = params.get(p.name)
        label = _label(p.name)
        if value is None:
            if p.required and p.name != omit:
                raise _fail(spec.name, f"parameter '{label}' is required ({p.doc})")
            continue
        if p.name == spec.chunk_param:
            value = _CHECKS[p.kind](spec.name, label, value, first_index)
        else:
            value = _CHECKS[p.kind](spec.name, label, value)
        if p.unique:
            value = _unique(value)
        _check_bounds(spec.name, p, value)
        clean[p.name] = value
    for rule in spec.rules:
        rule(spec.name, clean)
    if extra:
        if not spec.extra:
            raise _fail(spec.name, "takes no 'extra' fields")
        for key, value in extra.items():
            if not isinstance(key, str) or not key:
                raise _fail(spec.name, f"'extra' has a key that is not a non-empty string: {_shown(key)}")
            if key in spec.param_map:
                raise _fail(spec.name, f"'extra' field {key!r} collides with the parameter of that name")
            clean[key] = _check_value(spec.name, f"extra[{key!r}]", value)
    return clean


def _api_names(spec: Action, params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the hook's Python names (``list_id``) for the API's (``list``)."""
    out = dict(params)
    for py, api in ALIASES.items():
        if py not in out or py in spec.param_map or api not in spec.param_map:
            continue
        value = out.pop(py)
        if value is None:
            continue
        if out.get(api) is not None:
            raise _fail(spec.name, f"give '{api}' or '{py}', not both: they are the same parameter")
        out[api] = value
    return out


def _unique(items: list[Any]) -> list[Any]:
    """Drop repeated ids, keeping the first of each in place; ``101`` and ``"101"`` are one id."""
    kept: dict[str, Any] = {}
    for item in items:
        kept.setdefault(str(item), item)
    return list(kept.values())


def _check_bounds(action: str, p: Param, value: Any) -> None:
    number = int(value) if p.kind == "id" else value
    label = _label(p.name)
    if p.choices and number not in p.choices:
        choices = ", ".join(map(str, p.choices))
        raise _fail(action, f"parameter '{label}' must be one of {choices}; got {_shown(value)}")
    if p.minimum is not None and number < p.minimum:
        raise _fail(action, f"parameter '{label}' must be at least {p.minimum:g}; got {number}")
    if p.maximum is not None and number > p.maximum:
        raise _fail(action, f"parameter '{label}' must be at most {p.maximum:g}; got {number}")
    if p.max_items is not None and len(value) > p.max_items:
        raise _fail(
            action,
            f"parameter '{label}' has {len(value)} items; Salebot takes at most {p.max_items} per request. "
            f"Use hook.iter_chunked({action!r}, ...) to send them in chunks",
        )


def to_send_time(value: str | dt.datetime, timezone: str) -> str:
    """
    Render ``send_time`` as Salebot reads it: ``%Y-%m-%d %H:%M:%S`` in the project's time zone.

    :param value: a checked string (returned as is) or a datetime; an aware one is converted to
        ``timezone``, a naive one is taken as already in it.
    :param timezone: the connection's ``timezone`` extra.
    """
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = pendulum.instance(value).in_timezone(timezone)
    return value.strftime(SEND_TIME_FORMAT)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def build_request(
    action: str | Action,
    params: Mapping[str, Any] | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    method: str | None = None,
    timezone: str | Callable[[], str] = DEFAULT_TIMEZONE,
    query: Mapping[str, Any] | None = None,
    first_index: int = 0,
) -> Request:
    """
    Validate the parameters and build the request for a known action.

    :param action: the action or its name.
    :param params: the parameters by their API names (or the hook's, e.g. ``list_id``).
    :param extra: additional body fields of the callback family.
    :param method: overrides the table's method (the vendor accepts both for some actions).
    :param timezone: the zone an aware ``send_time`` is converted to, or a function giving it (called
        only when a datetime needs it, so that bad input is found before the connection is read).
    :param query: query-string parameters added for any method (the vendor's ``value_<name>`` and
        ``delimiter`` parameters of the universal webhook go there, on POSTs too).
    :param first_index: the place of a chunk's first item in the whole input, for error messages.
    :raises SalebotValidationError: on bad input; nothing has been sent.
    """
    spec = action if isinstance(action, Action) else get_action(action)
    clean = validate(spec, params or {}, extra, first_index=first_index)
    if isinstance(clean.get("send_time"), dt.datetime):
        zone = timezone if isinstance(timezone, str) else timezone()
        clean["send_time"] = to_send_time(clean["send_time"], zone)
    payload: Any = clean[spec.body_param] if spec.body_param else clean
    return encode_request(spec.name, method or spec.method, payload, query=query)


def encode_request(
    action: str, method: str, payload: Any, *, query: Mapping[str, Any] | None = None
) -> Request:
    """
    Encode a payload: GET puts a mapping into the query string, POST sends any JSON value as the body.

    :param action: the action name (checked to be a plain name, so it cannot change the path).
    :param method: ``GET`` or ``POST``.
    :param payload: the parameters.
    :param query: query-string parameters added for either method; ``None`` values are left out.
    :raises SalebotValidationError: on a bad action name, method or payload.
    """
    if not _ACTION_NAME.fullmatch(action):
        raise SalebotValidationError(
            f"Salebot action name {action!r} is not a plain lower-case name", action=action
        )
    added = _query(action, "query", query or {})
    if method == "GET":
        if not isinstance(payload, Mapping):
            raise _fail(action, f"GET parameters must be a mapping; got {type(payload).__name__}")
        params = _query(action, "params", payload)
        both = sorted(set(params) & set(added))
        if both:
            raise _fail(action, f"'query' repeats the parameter(s) {', '.join(both)}")
        return Request(action, "GET", query={**params, **added})
    if method != "POST":
        raise _fail(action, f"method must be GET or POST; got {method!r}")
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail(action, f"the parameters cannot be sent as JSON: {type(exc).__name__}: {exc}") from None
    return Request(action, "POST", query=added or None, body=body)


def _query(action: str, name: str, values: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(values, Mapping):
        raise _fail(action, f"'{name}' must be a mapping; got {_shown(values)}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise _fail(action, f"'{name}' has a key that is not a non-empty string: {_shown(key)}")
        if value is not None:
            out[key] = _query_value(_check_value(action, f"{name}[{key!r}]", value))
    return out


# ---------------------------------------------------------------------------------- replies


def _secret_forms(secret: str) -> list[str]:
    """The key as sent and as a server may echo it: plain, URL-encoded, JSON-escaped; longest first."""
    escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secret: str | None = None) -> str:
    """
    Hide the API key in a text: the key in each form a server may echo it, and any ``/api/<x>/`` path.

    :param text: the text to clean.
    :param secret: the key, if known.
    """
    if secret:
        for form in _secret_forms(secret):
            text = text.replace(form, "***")
    return _KEY_IN_PATH.sub("/api/***/", text)


def _excerpt(body: bytes, secret: str | None) -> str:
    # The whole body is redacted and folded before it is cut: a cut made first could leave part of
    # a key at the cut, and white space folded after a cut could pull a key's start into view.
    text = redact(body.decode("utf-8", "replace"), secret)
    return " ".join(text.split())[:200]


def header_text(value: str | None, secret: str | None = None) -> str:
    """
    A header's value as it may go into a message: redacted, on one line, and short.

    :param value: the header's value.
    :param secret: the API key, so that no part of it is shown.
    """
    text = " ".join(redact(value or "", secret).split())
    return text if len(text) <= MAX_HEADER_TEXT else text[: MAX_HEADER_TEXT - 3] + "..."


def parse_retry_after(value: str | None) -> float | None:
    """
    Read ``Retry-After``: seconds, or an HTTP date (one without a zone, or ``-0000``, is UTC).

    :param value: the header's value.
    :return: seconds to wait from now (0 for a past date), or None when absent or unreadable.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        seconds = (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def permission_hint(action: str) -> str:
    """
    Explain which key permission an action needs, in English and with the settings screen's label.

    :param action: the action name.
    """
    spec = ACTIONS.get(action)
    if spec is None:
        return "The API key lacks the permission this action needs."
    return (
        f"The API key lacks the permission '{spec.permission}' ({PERMISSION_TEXT[spec.permission]}; "
        f"«{PERMISSIONS[spec.permission]}» in Salebot's project settings, Integrations, API keys)."
    )


#: What an in-doubt failure of a send says, so that the log tells it without reading ``in_doubt``.
IN_DOUBT_NOTE = "It may have been processed; not retried so that nobody gets it twice."


def is_send(action: str) -> bool:
    """
    Whether an action may message someone or change state when repeated (not idempotent).

    :param action: the action name; one the table does not know counts as a send.
    """
    spec = ACTIONS.get(action)
    return spec is None or not spec.idempotent


def parse_reply(
    action: str,
    http_status: int,
    body: bytes,
    *,
    retry_after: str | None = None,
    secret: str | None = None,
    send: bool | None = None,
) -> Any:
    """
    Judge a reply: return the decoded JSON of a success, raise for anything else.

    A success is HTTP 2xx with a JSON body whose ``status``, where present, is ``"success"``. The
    failure is classified on the reply as received; only what is shown is redacted.

    :param action: the action the reply answers.
    :param http_status: the HTTP status code.
    :param body: the raw body.
    :param retry_after: the ``Retry-After`` header, if any.
    :param secret: the API key, so that no excerpt can carry it.
    :param send: whether the request was a send (its in-doubt failures say so); from the table
        when None.
    :raises SalebotPermissionError: the key was refused or lacks the permission.
    :raises SalebotNotFoundError: the client or order does not exist.
    :raises SalebotAPIError: any other failure; ``in_doubt`` for a 3xx, a 5xx or a malformed 2xx.
    """
    try:
        data: Any = json.loads(body) if body.strip() else None
        decoded = True
    except (ValueError, RecursionError):
        # RecursionError: a deeply nested body; either way it is not the JSON the API promises.
        data, decoded = None, False
    raw_status = data.get("status") if isinstance(data, dict) else None
    raw_message = data.get("message") if isinstance(data, dict) else None
    ok = 200 <= http_status < 300
    if ok and decoded and data is not None and raw_status in (None, "success"):
        return data

    excerpt = _excerpt(body, secret)
    text_status = redact(str(raw_status), secret) if raw_status is not None else None
    text_message = redact(str(raw_message), secret) if raw_message is not None else None
    where = f"Salebot {action} failed (/api/***/{action}): HTTP {http_status}"
    detail = "".join(
        (
            f", status {_shown(text_status)}" if text_status is not None else "",
            f", message {_shown(text_message)}" if text_message is not None else "",
        )
    )
    common: dict[str, Any] = {
        "action": action,
        "http_status": http_status,
        "api_status": text_status,
        "api_message": text_message,
        "excerpt": excerpt,
    }
    doubt = f" {IN_DOUBT_NOTE}" if (is_send(action) if send is None else send) else ""
    if 300 <= http_status < 400:
        raise SalebotAPIError(
            f"{where}: a redirect, which is never followed (it could turn a send into a bodiless GET or "
            f"carry the key to another host): check the connection's Base URL.{doubt}",
            in_doubt=True,
            **common,
        )
    if http_status >= 500:
        raise SalebotAPIError(
            f"{where}{detail}: a server error.{doubt} Body: {excerpt}", in_doubt=True, **common
        )
    if http_status == 429:
        wait = parse_retry_after(retry_after)
        raise SalebotAPIError(
            f"{where}: rate limited (Retry-After {header_text(retry_after, secret)!r}). Body: {excerpt}",
            retry_after=wait,
            **common,
        )
    status_text = raw_status if isinstance(raw_status, str) else ""
    wrong_action = "WRONG_ACTION" in body.decode("utf-8", "replace")
    if wrong_action or http_status in (401, 403):
        hint = (
            permission_hint(action)
            if wrong_action
            else "The API key was not accepted: check the connection's password."
        )
        raise SalebotPermissionError(f"{where}{detail}. {hint} Body: {excerpt}", **common)
    if http_status == 404 or status_text == "client_not_found" or _ORDER_NOT_FOUND.fullmatch(status_text):
        hint = "" if raw_status else " No such client or order, or no such URL: check the connection's host."
        raise SalebotNotFoundError(f"{where}{detail}.{hint} Body: {excerpt}", **common)
    if ok and not decoded:
        raise SalebotAPIError(
            f"{where}: the reply is not JSON.{doubt} Body: {excerpt}", in_doubt=True, **common
        )
    if ok and data is None:
        raise SalebotAPIError(f"{where}: the reply is empty.{doubt}", in_doubt=True, **common)
    raise SalebotAPIError(f"{where}{detail}. Body: {excerpt}", **common)


def reply_field(action: str, reply: Any, name: str) -> Any:
    """
    Read one field of a reply that must be a JSON object, as the helpers do.

    :param action: the action the reply answers.
    :param reply: the decoded reply.
    :param name: the field.
    :return: the field's value, or None when the object lacks it.
    :raises SalebotAPIError: when the reply is not a JSON object.
    """
    if not isinstance(reply, dict):
        raise SalebotAPIError(
            f"Salebot {action} replied with a JSON {type(reply).__name__} where an object with "
            f"{name!r} was expected",
            action=action,
        )
    return reply.get(name)


def is_retryable(action: Action | None, error: SalebotError) -> bool:
    """
    Decide whether a failed attempt may be tried again.

    Reads (and other idempotent actions) retry connection errors, timeouts, 429, 5xx and malformed
    replies. Sends retry only when the request surely was not processed: the connection never
    opened, or the service answered 429. Never after a read timeout or a 5xx; no action after a
    redirect, which would only repeat.

    :param action: the action, or None for one the table does not know (then treated as a send
        unless it was a GET).
    :param error: what the attempt raised.
    """
    idempotent = action.idempotent if action is not None else False
    if isinstance(error, SalebotConnectionError):
        return idempotent or not error.in_doubt
    if isinstance(error, SalebotAPIError) and not isinstance(
        error, SalebotPermissionError | SalebotNotFoundError
    ):
        redirect = 300 <= (error.http_status or 0) < 400
        return error.http_status == 429 or (idempotent and error.in_doubt and not redirect)
    return False


# ---------------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class ConnectionSettings:
    """
    What a Salebot connection says, checked.

    :param base_url: the service's base URL, without a trailing slash.
    :param api_key: the API key (never shown in the repr).
    :param timeout: seconds to wait for a connection and for a reply.
    :param max_retries: how many times a retryable failure is tried again.
    :param backoff_factor: the first retry waits about this many seconds, then doubling.
    :param rate_limit: requests per second for all calls of one hook; None for no limit.
    :param verify: TLS verification: True, False, or a CA bundle path.
    :param timezone: the zone datetimes given as ``send_time`` are converted to.
    :param rate_limit_redis: a Redis URL or Redis connection id: ``rate_limit`` then holds for every
        process on the project together (``salebot_provider.quota``); never shown in the repr.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = 30.0
    max_retries: int = 3
    backoff_factor: float = 1.0
    rate_limit: float | None = None
    verify: bool | str = True
    timezone: str = DEFAULT_TIMEZONE
    rate_limit_redis: str | None = field(default=None, repr=False)


def _extra_value(extra: Mapping[str, Any], name: str) -> Any:
    value = extra.get(name, extra.get(f"extra__salebot__{name}"))
    return None if value in (None, "") else value


_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def _extra_number(
    extra: Mapping[str, Any], name: str, default: Any, *, integer: bool = False, maximum: float = 86400
) -> Any:
    value = _extra_value(extra, name)
    if value is None:
        return default
    text = value.strip() if isinstance(value, str) else None
    number: float | None = None
    if text is not None and (_DIGITS.fullmatch(text) if integer else _DECIMAL.fullmatch(text)):
        number = int(text) if integer else float(text)
    elif _is_int(value) or (not integer and _is_number(value) and _finite(value)):
        number = int(value) if _is_int(value) else float(value)
    if number is None or not 0 <= number <= maximum:
        kind = "a whole number" if integer else "a number"
        raise SalebotValidationError(
            f"Salebot connection extra '{name}' must be {kind} from 0 to {maximum:g} "
            f"(plain ASCII digits); got {_shown(value)}"
        )
    return number


def _extra_verify(extra: Mapping[str, Any]) -> bool | str:
    value = _extra_value(extra, "verify")
    if value is None or isinstance(value, bool):
        return True if value is None else value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, str):
        path = os.path.expanduser(value.strip())
        if not os.path.exists(path):
            raise SalebotValidationError(
                f"Salebot connection extra 'verify' names a CA bundle that does not exist: {path!r}; "
                "give true, false, or the path of a PEM file (or folder) of CA certificates"
            )
        check_ca_bundle(path, "the connection's 'verify' extra")
        return path
    raise SalebotValidationError(
        f"Salebot connection extra 'verify' must be true, false or a CA bundle path; got {_shown(value)}"
    )


def check_ca_bundle(path: str, source: str) -> None:
    """
    Refuse a CA bundle that is not there or holds no usable certificates, naming where it was set.

    :param path: a PEM file or a folder of CA certificates.
    :param source: where the path came from, for the message.
    :raises SalebotValidationError: naming the source and why.
    """
    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = "does not exist" if not os.path.exists(path) else f"cannot be used ({type(exc).__name__})"
        raise SalebotValidationError(
            f"Salebot: the CA bundle {path!r} from {source} {reason}; give a PEM file (or folder) of CA "
            "certificates, or true / false"
        ) from None


def base_url_of(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """
    The base URL a connection's host (and port) name.

    :param host: empty for the default, a host name, or a URL with scheme, port and an optional path
        prefix (e.g. a proxy's ``https://gateway.example.com/salebot``).
    :param port: the connection's port, if the host does not carry one.
    :param schema: ``http`` or ``https`` when the host has no scheme (the URI form).
    :raises SalebotValidationError: when the host holds anything else: a query, a fragment (even an
        empty ``#``, which would send every call to ``/``), credentials, or an ``/api/<key>`` path.
    """
    if not host or not host.strip():
        return DEFAULT_BASE_URL
    text = host.strip().rstrip("/")
    if "://" not in text:
        scheme = schema if schema in ("http", "https") else "https"
        text = f"{scheme}://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SalebotValidationError(
            f"Salebot connection host must be an http(s) URL or a host name; got {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise SalebotValidationError(
            "Salebot connection host has a port that is not a number 0-65535"
        ) from None
    segments = parts.path.split("/")
    if any(c in text for c in "?#@ \t\r\n\\") or not _PATH_PREFIX.fullmatch(parts.path) or "api" in segments:
        raise SalebotValidationError(
            "Salebot connection host must be only the base URL, optionally with a path prefix "
            "(e.g. https://chatter.salebot.pro): no query, fragment ('#'), credentials or /api/ path; "
            "put the API key in the password, not in the host"
        )
    if port and parts.port is None:
        text = f"{parts.scheme}://{parts.netloc}:{port}{parts.path}"
    return text


def key_travels_in_clear(base_url: str) -> bool:
    """
    Whether the key would cross a network unencrypted: ``http://`` to a host other than loopback.

    :param base_url: a checked base URL.
    """
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def connection_settings(conn: Any) -> ConnectionSettings:
    """
    Read an Airflow connection: register its key with the secret masker, then check its fields.

    :param conn: the ``Connection`` (its host, password, extras, port and schema are read).
    :raises SalebotValidationError: naming the field that is wrong.
    """
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # common-compat before 1.21, the last ones for Python 3.10
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # Airflow 3.0
            from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

    if conn.password:
        mask_secret(conn.password)
        mask_secret(conn.password.strip())
    return settings_from_connection(
        host=conn.host, password=conn.password, extra=conn.extra_dejson, port=conn.port, schema=conn.schema
    )


class RedactKeyFilter(logging.Filter):
    """Rewrite ``/api/<key>/`` in a library's log records: requests, urllib3 and httpx log URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's message; never drop it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(loggers: Iterable[str]) -> None:
    """
    Add :class:`RedactKeyFilter` to these loggers, once each.

    :param loggers: the loggers' names, e.g. ``("httpx",)``.
    """
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeyFilter) for f in logger.filters):
            logger.addFilter(RedactKeyFilter())


def settings_from_connection(
    *,
    host: str | None,
    password: str | None,
    extra: Mapping[str, Any],
    port: int | None = None,
    schema: str | None = None,
) -> ConnectionSettings:
    """
    Read and check a connection's fields.

    :param host: the connection's host (optional base URL).
    :param password: the API key.
    :param extra: the connection's extras.
    :param port: the connection's port.
    :param schema: the connection's schema (``http``/``https`` when the host has no scheme).
    :raises SalebotValidationError: naming the field that is wrong.
    """
    # A key pasted with a newline or spaces around it: Salebot's keys never hold white space.
    key = (password or "").strip()
    if not key:
        raise SalebotValidationError("Salebot connection has no API key: put it in the password field")
    if len(key) < MIN_KEY_LENGTH:
        raise SalebotValidationError(
            f"Salebot connection's API key is {len(key)} characters; keys shorter than {MIN_KEY_LENGTH} "
            "are refused because they cannot be hidden safely in logs (Airflow's secret masker skips "
            "short secrets). Salebot's keys are 40 or more characters: check the password field"
        )
    tz = _extra_value(extra, "timezone") or DEFAULT_TIMEZONE
    try:
        pendulum.timezone(tz)
    except Exception:
        raise SalebotValidationError(
            f"Salebot connection extra 'timezone' is not a known time zone: {tz!r}"
        ) from None
    rate = _extra_number(extra, "rate_limit", None)
    from salebot_provider.quota import check_redis_setting

    timeout = _extra_number(extra, "timeout", 30.0)
    if timeout == 0:
        raise SalebotValidationError("Salebot connection extra 'timeout' must be more than 0 seconds")
    return ConnectionSettings(
        base_url=base_url_of(host, port, schema),
        api_key=key,
        timeout=timeout,
        max_retries=_extra_number(extra, "max_retries", 3, integer=True, maximum=100),
        backoff_factor=_extra_number(extra, "backoff_factor", 1.0),
        rate_limit=rate or None,
        verify=_extra_verify(extra),
        timezone=tz,
        rate_limit_redis=check_redis_setting(_extra_value(extra, "rate_limit_redis")),
    )


# ---------------------------------------------------------------------------------- helpers


def audience_of(params: Any) -> str:
    """
    Who a request is for, as a send's log line names it: ``client 5``, ``120 clients``, ``list 7``.

    Phones and emails are shown only in part, so a log is an audit trail without being a contact list.

    :param params: the parameters by their API names (or a list body, e.g. ``load_clients`` items).
    """
    if not isinstance(params, Mapping):
        return f"{len(params)} items" if isinstance(params, Sequence) and not isinstance(params, str) else "-"
    for name, what in (("clients", "clients"), ("client_ids", "clients"), ("platform_ids", "platform ids")):
        value = params.get(name)
        if isinstance(value, Sequence) and not isinstance(value, str):
            return f"{len(value)} {what}"
    for name in ("list", "list_id", "client_id", "user_id", "recipient", "order_id"):
        if params.get(name) is not None:
            return f"{'list' if name == 'list_id' else name.removesuffix('_id')} {params[name]}"
    for name in ("phone", "client_phone"):
        if params.get(name) is not None:
            return f"phone ending {str(params[name])[-4:]}"
    for name in ("email", "client_email"):
        if params.get(name) is not None:
            return f"email at {str(params[name]).rpartition('@')[2]}"
    return "the project"


def parse_rendered(text: str) -> Any:
    """
    A list or a mapping that a template rendered as text: JSON, or the Python literal Jinja renders.

    ``{{ ti.xcom_pull('find') }}`` without native rendering gives ``"['101', '102']"``; this reads it
    back (never evaluating code).

    :param text: the rendered text.
    :raises ValueError: when it is neither.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("neither JSON nor a Python literal") from None


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """
    Split an iterable into lists of ``size`` items, lazily (the last may be shorter).

    :param items: any iterable; it is read once, chunk by chunk.
    :param size: the chunk size, at least 1.
    """
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def coverage_table() -> str:
    """The docs' table of every action: method, permission, retries, limits and chunking."""
    rows = [
        "| action | group | method | permission | retried when in doubt | limits, chunking |",
        "|---|---|---|---|---|---|",
    ]
    for a in ACTIONS.values():
        limits = [f"{p.name} <= {p.maximum:g}" for p in a.params if p.maximum is not None]
        if a.chunk_param:
            size = (
                f"<= {a.chunk_limit} a request"
                if a.chunk_limit
                else f"{DEFAULT_CHUNK_SIZE} a request by default"
            )
            limits.append(f"`iter_chunked` splits {a.chunk_param}, {size}")
        retried = "yes" if a.idempotent else "no"
        rows.append(
            f"| `{a.name}` | {a.group} | {a.method} | `{a.permission}` | {retried} | {'; '.join(limits)} |"
        )
    return "\n".join(rows)
