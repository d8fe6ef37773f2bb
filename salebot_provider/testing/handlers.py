"""What each of the 41 Salebot actions does to the emulator's state, and what it answers."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import TYPE_CHECKING, Any

import pendulum

from salebot_provider.api import (
    ACTIONS,
    ATTACHMENT_TYPES,
    HISTORY_DATE_FORMAT,
    SEND_TIME_FORMAT,
)
from salebot_provider.testing.state import (
    EMAIL,
    ONLINE_CHAT,
    TELEPHONY,
    WHATSAPP,
    Client,
    Deal,
    State,
    clients_by_ids,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

Reply = tuple[int, Any]
_SUCCESS: Reply = (200, {"status": "success"})
_DIGITS = re.compile(r"\D+")
#: An id or a count given as text: ASCII digits, as many as a 64-bit number has at most
#: (``str.isdigit`` takes "²", which ``int`` refuses).
_ID_TEXT = re.compile(r"[0-9]{1,19}")
#: A number in a query string: decimal, so "inf", "nan" and "1_000" are not numbers.
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: How far ahead a send may be scheduled, in seconds (ten years): further, the emulator's dates
#: would leave the calendar.
MAX_AHEAD = 3653 * 24 * 3600


class Fail(Exception):
    """A documented failure reply: raise it anywhere in a handler."""

    def __init__(self, body: Any, status: int = 200) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def fail(message: str, status: int = 200) -> Fail:
    """``{"status": "fail", "message": ...}``, the vendor's reply to bad parameters."""
    return Fail({"status": "fail", "message": message}, status)


def _client_not_found(status: int = 200) -> Fail:
    return Fail({"status": "client_not_found"}, status)


class Params:
    """The parameters of one request: the query string of a GET, the JSON body of a POST."""

    def __init__(self, data: Mapping[str, Any], body: Any = None) -> None:
        self.data = data
        self.body = body

    def get(self, name: str) -> Any:
        value = self.data.get(name)
        return None if value == "" else value

    def required(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise fail(f'Parameter "{name}" required')
        return value

    def int(self, name: str, *, required: bool = False) -> int | None:
        value = self.required(name) if required else self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and _ID_TEXT.fullmatch(value))
        ):
            raise fail(f'Error in parameter format: "{name}" must be a number')
        return int(value)

    def number(self, name: str, *, ahead: bool = False) -> float | None:
        """
        A finite number, at least 0, as a float; None when not given.

        With ``ahead`` it is a time into the future, in seconds, and at most :data:`MAX_AHEAD`.

        :raises Fail: a format error for anything else: a bool, "inf", NaN, 1e400 ...
        """
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
            number = float(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
        else:
            raise fail(f'Error in parameter format: "{name}" must be a number')
        if not math.isfinite(number):
            raise fail(f'Error in parameter format: "{name}" must be a finite number')
        if number < 0:
            raise fail(f'Error in parameter format: "{name}" must not be negative')
        if ahead and number > MAX_AHEAD:
            raise fail(f'Error in parameter format: "{name}" must be at most {MAX_AHEAD} seconds (ten years)')
        return number

    def list(self, name: str, *, required: bool = False) -> list[Any]:
        value = self.required(name) if required else self.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise fail(f'Error in parameter format: "{name}" must be an array')
        return value

    def mapping(self, name: str, *, required: bool = False) -> dict[str, Any]:
        value = self.required(name) if required else self.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise fail(f'Error in parameter format: "{name}" must be an object')
        return value

    def flag(self, name: str) -> bool:
        value = self.get(name)
        return value is True or (isinstance(value, str) and value.lower() in ("true", "1")) or value == 1

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return None if value is None else str(value)


# ------------------------------------------------------------------------------------- shared pieces


def _client(state: State, p: Params, name: str = "client_id", status: int = 200) -> Client:
    client_id = p.int(name, required=True)
    client = state.clients.get(client_id or 0)
    if client is None:
        raise _client_not_found(status)
    return client


def _digits(phone: Any) -> str:
    return _DIGITS.sub("", str(phone).split("@", 1)[0])


def _by_phone(state: State, phone: Any) -> Client | None:
    digits = _digits(phone)
    if not digits:
        return None
    for client in state.clients.values():
        if client.client_type in (WHATSAPP, TELEPHONY) and _digits(client.platform_id) == digits:
            return client
    for client in state.clients.values():
        if any(_digits(client.variables.get(k, "")) == digits for k in ("phone", "client.phone")):
            return client
    return None


def _by_email(state: State, email: Any) -> Client | None:
    wanted = str(email).strip().lower()
    for client in state.clients.values():
        found = client.platform_id if client.client_type == EMAIL else client.variables.get("email")
        if str(found or "").lower() == wanted:
            return client
    return None


def _due(state: State, p: Params) -> float:
    """When a send is due: time_shift wins over send_time, as the vendor documents."""
    now = state.clock()
    shift = p.number("time_shift", ahead=True)
    if shift is not None:
        return now + shift
    send_time = p.get("send_time")
    if send_time is None:
        return now
    try:
        moment = pendulum.from_format(str(send_time), "YYYY-MM-DD HH:mm:ss", tz=state.timezone)
    except ValueError:
        raise fail(f'Error in parameter format: "send_time" must look like {SEND_TIME_FORMAT}') from None
    return max(now, moment.timestamp())  # a moment in the past means now


def _content(state: State, p: Params, *, block_alone: bool = False) -> dict[str, Any]:
    """
    Check and collect what a message carries: text (a block's, for message_id), attachment.

    The vendor requires ``message`` unless a file is sent; ``block_alone`` is for ``broadcast``,
    the one action documented to take ``message_id`` instead.
    """
    url, kind = p.get("attachment_url"), p.get("attachment_type")
    if url is not None and kind is None:
        raise fail('Parameter "attachment_type" required with "attachment_url"')
    if kind is not None and kind not in ATTACHMENT_TYPES:
        raise fail(
            f'Error in parameter format: "attachment_type" must be one of {", ".join(ATTACHMENT_TYPES)}'
        )
    text = p.text("message")
    if text is not None and not text.strip():
        text = None  # the emulator's choice: blank text is no text (the hook never sends it)
    if text is None and url is None:
        if not block_alone:
            raise fail('Parameter "message" required (or an attachment)')
        if p.get("message_id") is None:
            raise fail('Parameter "message" required (or an attachment, or "message_id")')
    message_id = p.int("message_id")
    if message_id is not None:
        block = next((b for b in state.blocks if b["id"] == message_id), None)
        if block is None:
            raise fail(f"Block {message_id} not found in the bot's scheme")
        text = block["text"] if text is None else text
    return {
        "text": text,
        "message_id": message_id,
        "attachment": {"type": kind, "url": url} if url is not None else None,
    }


def _extra_variables(action: str, p: Params) -> dict[str, Any]:
    named = ACTIONS[action].param_map
    return {k: v for k, v in p.data.items() if k not in named and not k.startswith(("value_", "delimiter"))}


def _start_bot(state: State, action: str, client: Client, p: Params) -> Reply:
    client.variables.update(_extra_variables(action, p))
    if "name" in ACTIONS[action].param_map and p.get("name") is not None:
        client.name = p.text("name")
    if p.flag("resume_bot"):
        client.paused = False
    client.updated_at = state.now()
    state.record("callback", action, client.id, p.text("message"), _due(state, p))
    return _SUCCESS


def _messenger_client(state: State, p: Params, client_type: int) -> Client:
    client = state.find_client(str(p.required("user_id")), client_type, str(p.required("group_id")))
    if client is None:
        raise _client_not_found()
    return client


def _deal(state: State, client: Client, p: Params, *, numbered: bool = True) -> Deal:
    order_id = p.int("order_id")
    deal = state.deals.get(order_id) if order_id is not None else state.current_deal(client.id)
    if deal is None or deal.client_id != client.id:
        named = numbered and order_id is not None
        raise Fail({"status": f"order {order_id} not found" if named else "order not found"})
    return deal


def _state_id(state: State, p: Params, *, required: bool) -> int | None:
    state_id = p.int("state_id", required=required)
    if state_id is not None and state.state_status(state_id) is None:
        raise fail(f"State {state_id} not found in the funnel")
    return state_id


def _limit(p: Params, maximum: int) -> int:
    """The ``limit`` parameter: ``maximum`` when not given, refused (HTTP 400) above it."""
    value = p.int("limit")
    if value is not None and value > maximum:
        raise fail(f'"limit" must be at most {maximum}', status=400)
    return maximum if value is None else value


def _over_limit(p: Params, name: str, limit: int) -> list[Any]:
    items = p.list(name, required=True)
    if len(items) > limit:
        raise fail(f'Too many items in "{name}": {len(items)}, at most {limit} per request', status=400)
    return items


def _client_ids(clients: list[Client]) -> Reply:
    return 200, {"status": "success", "client_ids": [c.id for c in clients]}


def _check_condition(condition: Any) -> None:
    if isinstance(condition, dict):
        if not condition or set(condition) - {"_in", "_not_in", "_not"}:
            raise fail("Error in parameter format")
        for key in ("_in", "_not_in"):
            if key in condition and not isinstance(condition[key], list):
                raise fail("Error in parameter format")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_only(sources: list[tuple[int, dict[str, Any]]], query: dict[str, Any]) -> None:
    """The vendor: comparing numbers works only if every client's variable holds a number."""
    for name, condition in query.items():
        wanted = condition.get("_not") if isinstance(condition, dict) else condition
        if _is_number(wanted) and any(name in v and not _is_number(v[name]) for _, v in sources):
            raise fail("Something went wrong")


def _matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict):
        if "_in" in condition and not any(_equal(value, c) for c in condition["_in"]):
            return False
        if "_not_in" in condition and any(_equal(value, c) for c in condition["_not_in"]):
            return False
        return not ("_not" in condition and _equal(value, condition["_not"]))
    return _equal(value, condition)


def _equal(value: Any, wanted: Any) -> bool:
    if value is None:
        return False
    return str(value) == str(wanted)


# ------------------------------------------------------------------------------------- callbacks


def callback(state: State, p: Params) -> Reply:
    if p.get("client_id") is not None:
        client = _client(state, p)
    elif p.get("client_phone") is not None:
        client = _by_phone(state, p.get("client_phone")) or _raise(_client_not_found())
    elif p.get("client_email") is not None:
        client = _by_email(state, p.get("client_email")) or _raise(_client_not_found())
    else:
        raise fail('Parameter "client_id" required (or "client_phone", or "client_email")')
    return _start_bot(state, "callback", client, p)


def _raise(error: Exception) -> Any:
    raise error


def vk_callback(state: State, p: Params) -> Reply:
    return _start_bot(state, "vk_callback", _messenger_client(state, p, 0), p)


def ok_callback(state: State, p: Params) -> Reply:
    return _start_bot(state, "ok_callback", _messenger_client(state, p, 8), p)


def tg_callback(state: State, p: Params) -> Reply:
    return _start_bot(state, "tg_callback", _messenger_client(state, p, 1), p)


def _whatsapp_client(state: State, phone: Any, bot: str | None) -> Client:
    """The WhatsApp client with this number (of this bot, when given), created when missing."""
    if not state.has_whatsapp():
        raise fail("WhatsApp is not connected to the project")
    bots = {str(ch["id"]): str(ch["group_id"]) for ch in state.channels["whatsapp"]}
    bots.update({g: g for g in bots.values()})
    if bot is not None and bot not in bots:
        raise fail(f"WhatsApp bot {bot} not found")
    group = bots[bot] if bot is not None else str(state.channels["whatsapp"][0]["group_id"])
    digits = _digits(phone)
    if not digits:
        raise fail('Error in parameter format: "phone"')
    existing = state.find_client(digits, WHATSAPP, group if bot is not None else None)
    return existing or state.add_client(digits, WHATSAPP, group)


def whatsapp_callback(state: State, p: Params) -> Reply:
    client = _whatsapp_client(state, p.required("phone"), p.text("bot_id"))
    return _start_bot(state, "whatsapp_callback", client, p)


def email_callback(state: State, p: Params) -> Reply:
    email = str(p.required("email")).strip().lower()
    client = state.find_client(email, EMAIL) or state.add_client(
        email, EMAIL, p.text("email_id_bot") or "email"
    )
    return _start_bot(state, "email_callback", client, p)


def send_callback_by_platform_id(state: State, p: Params) -> Reply:
    platform_ids = _over_limit(p, "platform_ids", 300)
    text = str(p.required("callback_text"))
    group, due = p.text("group_id"), _due(state, p)
    for platform_id in platform_ids:
        for client in state.clients_with(str(platform_id), group=group):
            action = "send_callback_by_platform_id"
            state.record("callback", action, client.id, text, due, platform_id=str(platform_id))
    return _SUCCESS


# ------------------------------------------------------------------------------------- messages


def message(state: State, p: Params) -> Reply:
    client = _client(state, p, status=404)
    content = _content(state, p)
    state.record(
        "message",
        "message",
        client.id,
        content["text"],
        _due(state, p),
        message_id=content["message_id"],
        attachment=content["attachment"],
        buttons=p.get("buttons"),
    )
    return _SUCCESS


def whatsapp_message(state: State, p: Params) -> Reply:
    phone = p.required("phone")
    content = _content(state, p)
    client = _whatsapp_client(state, phone, p.text("whatsapp_bot_id"))
    state.record(
        "message",
        "whatsapp_message",
        client.id,
        content["text"],
        _due(state, p),
        phone=client.platform_id,
        message_id=content["message_id"],
        attachment=content["attachment"],
    )
    return _SUCCESS


def broadcast(state: State, p: Params) -> Reply:
    audiences = [n for n in ("list", "clients", "platform_ids") if p.get(n) is not None]
    if len(audiences) != 1:
        raise fail('Give exactly one of "list", "clients", "platform_ids" (with "group_id")')
    content = _content(state, p, block_alone=True)
    if audiences == ["list"]:
        members = state.lists.get(p.int("list") or 0)
        if members is None:
            raise fail(f"List {p.get('list')} not found")
        recipients = clients_by_ids(state, members)
    elif audiences == ["clients"]:
        recipients = clients_by_ids(state, p.list("clients"))
    else:
        group = p.text("group_id") or _raise(fail('Parameter "group_id" required with "platform_ids"'))
        found = (state.find_client(str(pid), group=group) for pid in p.list("platform_ids"))
        recipients = [c for c in found if c is not None]
    shift = p.number("shift", ahead=True)
    gap = 0.2 if shift is None else shift
    if len(recipients) > 1 and (len(recipients) - 1) * gap > MAX_AHEAD:
        raise fail(
            f'Error in parameter format: "shift" of {gap:g} s would make the last of {len(recipients)} '
            "recipients due more than ten years after the first"
        )
    start = _due(state, p)
    for i, client in enumerate(recipients):
        state.record(
            "broadcast",
            "broadcast",
            client.id,
            content["text"],
            start + i * gap,
            message_id=content["message_id"],
            attachment=content["attachment"],
            buttons=p.get("buttons"),
        )
    return _SUCCESS


def _day(state: State, stamp: int) -> dt.date:
    return pendulum.from_timestamp(stamp, tz=state.timezone).date()


def get_history(state: State, p: Params) -> Reply:
    client = _client(state, p)
    limit = _limit(p, 2000)
    start, stop = p.get("start_date"), p.get("stop_date")
    if (start is None) != (stop is None):
        raise fail('Parameters "start_date" and "stop_date" go together')
    now = state.now()
    items = [m for m in state.history.get(client.id, []) if m["created_at"] <= now]  # scheduled: not yet
    if start is not None:
        try:
            first = dt.datetime.strptime(str(start), HISTORY_DATE_FORMAT).date()
            last = dt.datetime.strptime(str(stop), HISTORY_DATE_FORMAT).date()
        except ValueError:
            raise fail("Error in parameter format: dates are dd.mm.yyyy") from None
        items = [m for m in items if first <= _day(state, m["created_at"]) <= last]
    return 200, {"status": "success", "result": items[-limit:] if limit else []}


def clear_history(state: State, p: Params) -> Reply:
    state.history.pop(_client(state, p).id, None)
    return _SUCCESS


# ------------------------------------------------------------------------------------- clients


def assign_to_user(state: State, p: Params) -> Reply:
    client = _client(state, p)
    email = p.text("email")
    if email is not None and email not in state.employees:
        raise fail(f"Employee {email} not found")
    if email is None:
        email = state.employees[state.assign_cursor % len(state.employees)]
        state.assign_cursor += 1
    client.assigned_to = email
    return _SUCCESS


def _load_item(state: State, item: Any, channels: dict[str, int]) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"item": item, "status": "error", "message": "item must be an object"}
    missing = [k for k in ("platform_id", "group_id", "client_type") if item.get(k) is None]
    if missing:
        return {**item, "status": "error", "message": f'Parameter "{missing[0]}" required'}
    try:
        client_type = int(item["client_type"])
    except (TypeError, ValueError):
        return {**item, "status": "error", "message": 'Error in parameter format: "client_type"'}
    group = str(item["group_id"])
    if client_type == TELEPHONY:
        group = ""
    elif channels.get(group) != client_type:
        return {
            **item,
            "status": "error",
            "message": f"No connected channel with group_id {group} and this client_type",
        }
    platform_id = _digits(item["platform_id"]) if client_type == WHATSAPP else str(item["platform_id"])
    if not platform_id:
        return {**item, "status": "error", "message": 'Error in parameter format: "platform_id"'}
    client = state.find_client(platform_id, client_type, group) or state.add_client(
        platform_id, client_type, group
    )
    return {**item, "status": "success", "id": client.id}


def load_clients(state: State, p: Params) -> Reply:
    items = p.body
    if not isinstance(items, list):
        raise fail("Error in parameter format: the body must be an array of clients")
    channels = state.group_ids()
    return 200, {"status": "success", "items": [_load_item(state, item, channels) for item in items]}


def _list(state: State, p: Params) -> dict[int, None]:
    list_id = p.int("list_id", required=True)
    members = state.lists.get(list_id or 0)
    if members is None:
        raise fail(f"List {list_id} not found")
    return members


def add_to_list(state: State, p: Params) -> Reply:
    members = _list(state, p)
    for client in clients_by_ids(state, p.list("clients", required=True)):
        members[client.id] = None
    return _SUCCESS


def remove_from_list(state: State, p: Params) -> Reply:
    members = _list(state, p)
    for client in clients_by_ids(state, p.list("clients", required=True)):
        members.pop(client.id, None)
    return _SUCCESS


def get_clients(state: State, p: Params) -> Reply:
    offset = p.int("offset") or 0
    limit = _limit(p, 500)
    list_id = p.int("list")
    if list_id is not None:
        members = state.lists.get(list_id)
        if members is None:
            raise fail(f"List {list_id} not found")
        ids = sorted(members, reverse=True)
    else:
        ids = list(state.clients)
        if not p.flag("reverse"):
            ids.reverse()
    page = ids[offset : offset + limit]
    return 200, {"status": "success", "clients": [state.clients[i].public(state.project_id) for i in page]}


def delete_clients(state: State, p: Params) -> Reply:
    for raw in _over_limit(p, "client_ids", 500):
        if (isinstance(raw, int) and not isinstance(raw, bool)) or (
            isinstance(raw, str) and _ID_TEXT.fullmatch(raw)
        ):
            state.delete_client(int(raw))
    return _SUCCESS


# ------------------------------------------------------------------------------------- variables


def save_variables(state: State, p: Params) -> Reply:
    variables = p.mapping("variables", required=True)
    if p.get("client_id") is not None:
        targets = [_client(state, p)]
    elif p.get("clients") is not None:
        targets = clients_by_ids(state, p.list("clients"))
    else:
        raise fail('Parameter "client_id" required (or "clients")')
    profile = {k.removeprefix("client."): v for k, v in variables.items() if k.startswith("client.")}
    deal_vars = {k: v for k, v in variables.items() if not k.startswith("client.")}
    for client in targets:
        client.variables.update(profile)
        client.updated_at = state.now()
        if deal_vars:
            (state.current_deal(client.id) or state.add_deal(client.id)).variables.update(deal_vars)
    return _SUCCESS


def get_variables(state: State, p: Params) -> Reply:
    client = _client(state, p)
    deal = state.current_deal(client.id)
    return 200, {
        "status": "success",
        "variables": dict(client.variables),
        "order_variables": dict(deal.variables) if deal else {},
    }


# ------------------------------------------------------------------------------------- finding client ids


def find_client_id_by_platform_id(state: State, p: Params) -> Reply:
    group = p.text("group_id")
    return 200, [
        {
            "id": c.id,
            "tag": c.tag,
            "created_at": c.created_at,
            "name": c.name,
            "avatar": None,
            "platform_id": c.platform_id,
            "group": c.group,
            "variables": dict(c.variables),
        }
        for platform_id in p.list("platform_ids", required=True)
        for c in state.clients_with(str(platform_id), group=group)
    ]


def online_chat_client_id(state: State, p: Params) -> Reply:
    recipient = str(p.required("recipient"))
    client = state.find_client(recipient, ONLINE_CHAT) or state.add_client(
        recipient, ONLINE_CHAT, "online_chat"
    )
    if p.get("tag") is not None:
        client.tag = p.text("tag")
    if p.get("name") is not None:
        client.name = p.text("name")
    return 200, {"client_id": client.id}


def whatsapp_client_id(state: State, p: Params) -> Reply:
    digits, group = _digits(p.required("phone")), p.text("group_id")
    for client in state.clients.values():
        if (
            client.client_type == WHATSAPP
            and _digits(client.platform_id) == digits
            and group in (None, client.group)
        ):
            return 200, {"status": "success", "client_id": client.id}
    raise _client_not_found(404)


def find_client_id_by_phone(state: State, p: Params) -> Reply:
    client = _by_phone(state, p.required("phone")) or _raise(_client_not_found())
    return 200, {"status": "success", "client_id": client.id}


def find_client_id_by_email(state: State, p: Params) -> Reply:
    client = _by_email(state, p.required("email")) or _raise(_client_not_found())
    return 200, {"status": "success", "client_id": client.id}


def _with_var(state: State, var: str, val: Any, *, deals: bool, clients: bool = True) -> list[Client]:
    found: dict[int, Client] = {}
    if clients:
        found.update((c.id, c) for c in state.clients.values() if _equal(c.variables.get(var), val))
    if deals:
        for deal in state.deals.values():
            if _equal(deal.variables.get(var), val) and deal.client_id in state.clients:
                found[deal.client_id] = state.clients[deal.client_id]
    return sorted(found.values(), key=lambda c: c.id)


def find_client_id_by_var(state: State, p: Params) -> Reply:
    search_in = p.text("search_in")
    if search_in not in (None, "order"):
        raise fail('Error in parameter format: "search_in" may only be "order"')
    order = search_in == "order"
    found = _with_var(state, str(p.required("var")), p.required("val"), deals=order, clients=not order)
    group = p.text("group_id")
    found = [c for c in found if group in (None, c.group)]
    if not found:
        raise _client_not_found()
    return 200, {"status": "success", "client_id": found[0].id}


def find_latest_client_id_by_var(state: State, p: Params) -> Reply:
    found = _with_var(state, str(p.required("var")), p.required("val"), deals=True)
    if not found:
        raise _client_not_found()
    return 200, {"status": "success", "client_id": max(found, key=lambda c: (c.created_at, c.id)).id}


def find_all_client_id_by_var(state: State, p: Params) -> Reply:
    return _client_ids(_with_var(state, str(p.required("var")), p.required("val"), deals=False))


def find_all_client_id_by_several_vars(state: State, p: Params) -> Reply:
    pairs = dict(p.data)
    if not pairs or len(pairs) > 3:
        raise fail(f"Give 1 to 3 variable=value pairs; got {len(pairs)}")
    return _client_ids(
        [c for c in state.clients.values() if all(_equal(c.variables.get(k), v) for k, v in pairs.items())]
    )


def find_clients(state: State, p: Params) -> Reply:
    query = p.required("q")
    if not isinstance(query, dict) or not query:
        raise fail("Error in parameter format")
    search_in = p.text("search_in")
    if search_in not in (None, "order"):
        raise fail("Error in parameter format")
    for condition in query.values():
        _check_condition(condition)
    include_all = p.get("include_all") is None or p.flag("include_all")
    check = all if include_all else any
    if search_in == "order":
        sources = [(d.client_id, d.variables) for d in state.deals.values() if d.client_id in state.clients]
    else:
        sources = [(c.id, c.variables) for c in state.clients.values()]
    _numbers_only(sources, query)
    ids = sorted(
        {cid for cid, variables in sources if check(_matches(variables.get(k), v) for k, v in query.items())}
    )
    return 200, {"status": "success", "client_ids": ids}


# ------------------------------------------------------------------------------------- deals


def get_current_order_id(state: State, p: Params) -> Reply:
    deal = state.current_deal(_client(state, p).id)
    if deal is None:
        raise Fail({"status": "order not found"})
    return 200, {"status": "success", "order_id": deal.id}


def get_orders(state: State, p: Params) -> Reply:
    client = _client(state, p)
    wanted = p.int("order_status")
    if wanted not in (None, 0, 1, 2):
        raise fail('Error in parameter format: "order_status" is 0, 1 or 2')
    ids = [d.id for d in state.client_deals(client.id) if wanted in (None, d.status)]
    return 200, {"status": "success", "order_id": ids}


def move_order_to_next_state(state: State, p: Params) -> Reply:
    deal = _deal(state, _client(state, p), p)
    state.move_deal(deal, state.next_state(deal.state_id))
    return 200, {"status": "success", "state_id": deal.state_id}


def get_order_vars(state: State, p: Params) -> Reply:
    deal = _deal(state, _client(state, p), p)
    names = p.list("variables", required=True)
    return 200, {"status": "success", "result": {str(n): deal.variables.get(str(n)) for n in names}}


def set_order_vars(state: State, p: Params) -> Reply:
    client = _client(state, p)
    variables = p.mapping("variables", required=True)
    _deal(state, client, p).variables.update(variables)
    return _SUCCESS


def create_order(state: State, p: Params) -> Reply:
    state_id = _state_id(state, p, required=False)
    if p.get("client_id") is not None:
        client = _client(state, p)
    elif p.get("phone") is not None:
        phone = _digits(p.get("phone"))
        client = _by_phone(state, phone) or state.add_client(phone, TELEPHONY, "")
    elif p.get("email") is not None:
        email = str(p.get("email"))
        client = _by_email(state, email) or state.add_client(email, EMAIL, "email")
    else:
        raise fail('Parameter "client_id" required (or "phone", or "email")')
    budget = p.number("budget")
    deal = state.add_deal(
        client.id, state_id, name=p.text("name"), description=p.text("description"), budget=budget
    )
    return 200, {"status": "success", "order_id": deal.id}


def set_order_state(state: State, p: Params) -> Reply:
    client = _client(state, p)
    state_id = _state_id(state, p, required=True)
    deal = state.current_deal(client.id)
    if deal is None:
        raise Fail({"status": "order not found"})
    state.move_deal(deal, state_id or 0)
    return _SUCCESS


def get_order_state(state: State, p: Params) -> Reply:
    deal = _deal(state, _client(state, p), p, numbered=False)  # the vendor documents 'order not found' here
    return 200, {"status": "success", "state_id": deal.state_id}


# ------------------------------------------------------------------------------------- other


def check_whatsapp(state: State, p: Params) -> Reply:
    digits = _digits(p.required("phone"))
    if not state.has_whatsapp():
        raise fail("WhatsApp is not connected to the project")
    return 200, {"status": "success", "exists": 10 <= len(digits) <= 15 and not digits.endswith("0")}


def connected_channels(state: State, p: Params) -> Reply:
    return 200, {
        "project_id": state.project_id,
        **{k: [dict(c) for c in v] for k, v in state.channels.items()},
    }


def get_messages(state: State, p: Params) -> Reply:
    return 200, {"status": "success", "messages": [dict(b) for b in state.blocks]}


HANDLERS: Mapping[str, Callable[[State, Params], Reply]] = {name: globals()[name] for name in ACTIONS}
