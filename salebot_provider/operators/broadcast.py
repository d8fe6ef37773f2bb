"""BroadcastOperator: a mass mailing to a list, or to any number of client or messenger ids, in chunks."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

from salebot_provider.api import SEND_TIME_FORMAT, validate
from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators._base import SalebotOperator, check_count, is_literal, moment
from salebot_provider.operators._chunked import ChunkedIds
from salebot_provider.operators._ledger import Fingerprint, Ledger
from salebot_provider.operators._once import send_once
from salebot_provider.operators._sources import Rows

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context

#: Recipients per request. Salebot documents no limit for broadcast; 500 client ids is the limit it
#: documents for its other id lists (delete_clients), and 300 the limit for messenger ids
#: (send_callback_by_platform_id). At the vendor's ~1 request/second that is 30,000 clients a minute,
#: while a failed request leaves at most one chunk in doubt.
DEFAULT_CHUNK_SIZE = {"clients": 500, "platform_ids": 300}
#: Salebot's own pause between two messages of a broadcast, in seconds, when ``shift`` is not given.
SALEBOT_SHIFT = 0.2
#: Valid stand-ins for arguments that come from a template or an XCom, while the DAG file is parsed.
_PLACEHOLDERS: dict[str, Any] = {
    "message": "text",
    "message_id": 1,
    "attachment_url": "https://example.com/file",
    "attachment_type": "file",
    "buttons": [],
    "shift": 0,
    "time_shift": 0,
    "send_time": "2000-01-01 00:00:00",
    "group_id": "bot",
}


class BroadcastOperator(SalebotOperator):
    """
    Send one message to a Salebot list, or to client ids or messenger ids of any number, in chunks.

    Exactly one audience: ``list_id`` (one request), ``clients``, or ``platform_ids`` with
    ``group_id``. ``clients`` and ``platform_ids`` take a list (or an XCom), or the path or URI of a
    file read as a stream: one id per line, or JSON Lines / CSV with a ``client_id`` (for
    ``platform_ids``: ``platform_id``) column. Every id is checked before the first request; a
    repeated id is dropped (the first kept), so each recipient is messaged once, in the order given.

    With ``shift``, chunk after chunk is scheduled to begin when the previous one's sequence ends, so
    the pace asked for holds across chunks. A 429 is waited out. If a request fails part-way the task
    fails saying how many recipients were sent, are in doubt and were not sent; on Airflow 3.3+ the
    progress is kept in the task's ``task_state_store``, so a retry (or a clear) of the task sends
    only the rest and never a chunk that went out or may have. A try that ends with some recipients
    in doubt fails naming them.

    .. code-block:: python

        BroadcastOperator(
            task_id="announce",
            clients="s3://crm/segments/{{ ds }}/vip.csv",
            message="Our summer sale starts today",
            shift=0.5,
            send_time="{{ data_interval_end.add(hours=10) }}",
        )

    :param message: the text. (templated)
    :param message_id: a bot block to send instead of a text. (templated)
    :param list_id: the Salebot list to mail. (templated)
    :param clients: client ids: a list, a JSON list, or a file's path or URI. (templated)
    :param platform_ids: messenger ids of one bot, with ``group_id``: as for ``clients``. (templated)
    :param group_id: the bot of ``platform_ids``. (templated)
    :param attachment_url: a file's URL, with ``attachment_type``. (templated)
    :param attachment_type: image, video, link, file or audio. (templated)
    :param buttons: buttons, with or without a hint, as the API takes them. (templated)
    :param shift: seconds between two messages (Salebot's default is 0.2). (templated)
    :param time_shift: send this many seconds from now. (templated)
    :param send_time: send at this moment: a datetime (an aware one is converted to the connection's
        time zone), a ``%Y-%m-%d %H:%M:%S`` string in that zone, or an ISO 8601 string with an offset
        (what ``{{ data_interval_end }}`` renders). (templated)
    :param chunk_size: recipients per request; 500 client ids, 300 messenger ids by default.
        (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"audience": "list" | "clients" | "platform_ids", "recipients": N, "requests": k}``,
        with ``recipients`` None for a list.
    """

    template_fields: Sequence[str] = (
        "message",
        "message_id",
        "list_id",
        "clients",
        "platform_ids",
        "group_id",
        "attachment_url",
        "attachment_type",
        "buttons",
        "shift",
        "time_shift",
        "send_time",
        "chunk_size",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "buttons": "json",
        "clients": "py",
        "platform_ids": "py",
    }

    def __init__(
        self,
        *,
        message: str | None = None,
        message_id: int | str | None = None,
        list_id: int | str | None = None,
        clients: Any = None,
        platform_ids: Any = None,
        group_id: str | int | None = None,
        attachment_url: str | None = None,
        attachment_type: str | None = None,
        buttons: Any = None,
        shift: float | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.message_id = message_id
        self.list_id = list_id
        self.clients = clients
        self.platform_ids = platform_ids
        self.group_id = group_id
        self.attachment_url = attachment_url
        self.attachment_type = attachment_type
        self.buttons = buttons
        self.shift = shift
        self.time_shift = time_shift
        self.send_time = send_time
        self.chunk_size = chunk_size
        self._check(parsing=True)

    def _check(self, *, parsing: bool = False) -> tuple[str, dict[str, Any]]:
        """
        Check the arguments: which are given, and their values; return the audience and the content.

        While the DAG file is parsed, a value from a template or an XCom (unknown yet) stands in
        as a valid placeholder, and files are not read; the task checks everything again.
        """
        audiences = [n for n in ("list_id", "clients", "platform_ids") if getattr(self, n) is not None]
        if len(audiences) != 1:
            raise SalebotValidationError(
                f"Salebot broadcast: give exactly one of list_id, clients, platform_ids (with group_id); "
                f"got {', '.join(audiences) or 'none'}",
                action="broadcast",
            )
        name = audiences[0]
        content = {}
        for field, placeholder in _PLACEHOLDERS.items():
            value = getattr(self, field)
            if value is not None:
                content[field] = placeholder if parsing and not is_literal(value) else value
        if "send_time" in content:
            content["send_time"] = moment(content["send_time"])
        audience = getattr(self, name)
        if name == "list_id":
            audience = audience if is_literal(audience) else 1
        elif not (parsing and isinstance(audience, list | tuple) and audience and is_literal(audience)):
            audience = ["1"]  # ids from a file, a template or an XCom are checked as they are read
        validate("broadcast", {name: audience, **content})
        if not parsing or is_literal(self.chunk_size):
            check_count("broadcast", "chunk_size", self.chunk_size, DEFAULT_CHUNK_SIZE.get(name, 1))
        return name, content

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then send; see the class docstring."""
        name, content = self._check()
        # The schedule is left out: a retry may render a "now"-relative template differently.
        what = {k: v for k, v in content.items() if k not in ("shift", "time_shift", "send_time")}
        if name == "list_id":
            return self._to_list(context, content, what)
        size = check_count("broadcast", "chunk_size", self.chunk_size, DEFAULT_CHUNK_SIZE[name])
        column = "client_id" if name == "clients" else "platform_id"
        ids = ChunkedIds(
            "broadcast",
            Rows("broadcast", name, getattr(self, name), column=column),
            kind="id" if name == "clients" else "key",
            noun="client id" if name == "clients" else "messenger id",
            items="recipients",
        )
        ledger = ids.ledger(context, Fingerprint("broadcast", name, what))
        if ledger.total == 0:
            self.log.warning("Salebot broadcast: '%s' holds no ids; nothing is sent", name)
        else:
            gap = float(content.get("shift", SALEBOT_SHIFT))

            def send(chunk: list[Any]) -> None:
                schedule, latest = self._schedule(ledger, content)
                # Recorded before the request, at the latest it can begin (its reply comes within the
                # timeout), so that a process killed mid-request leaves the next chunk after it.
                ledger.set("next_start", latest(time.time() + self.hook.settings.timeout) + len(chunk) * gap)
                ledger.save()
                may_have_gone_out = True
                try:
                    self.hook.broadcast(**{**content, **schedule, name: chunk})
                except SalebotError as exc:
                    may_have_gone_out = exc.in_doubt
                    raise
                finally:
                    if may_have_gone_out:
                        # Salebot had (or may have had) the request by now, so the chunk began by
                        # ``latest(now)`` at the latest; the next one begins after its sequence, even
                        # when this one is in doubt, so that two sequences never overlap.
                        ledger.set("next_start", latest(time.time()) + len(chunk) * gap)

            ids.send(self.log, ledger, size, send, self.hook.settings.api_key, lambda: self.stop_asked)
        if ledger.in_doubt:
            raise ids.in_doubt(self.log, ledger)
        return {"audience": name, "recipients": ledger.total, "requests": ledger.requests}

    def _to_list(self, context: Context, content: dict[str, Any], what: dict[str, Any]) -> dict[str, Any]:
        def send() -> dict[str, Any]:
            self.hook.broadcast(list_id=self.list_id, **content)
            return {"audience": "list", "recipients": None, "requests": 1}

        result: dict[str, Any] = send_once(
            self,
            context,
            "broadcast",
            f"the broadcast to list {self.list_id}",
            ["list", self.list_id, what],
            send,
        )
        return result

    def _schedule(
        self, ledger: Ledger, content: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Callable[[float], float]]:
        """
        When the next chunk starts: where the previous chunk's sequence ends.

        The first chunk starts when the user asked (``send_time``, ``time_shift`` or at once);
        each next one where the previous one's sequence ends, or at once if that moment has
        passed (a retry that comes late). Later moments are whole seconds, rounded up, so that
        sequences never overlap. Returns the schedule to send and a function giving, from when
        the reply came, the latest moment the chunk can have begun.
        """
        now = time.time()
        planned = ledger.get("next_start")
        if planned is None:
            schedule = {k: content[k] for k in ("time_shift", "send_time") if k in content}
            if "send_time" in content:
                planned = _epoch(content["send_time"], self.hook.settings.timezone)
                return schedule, lambda replied: max(planned, replied)
            delay = float(content.get("time_shift", 0))
            return schedule, lambda replied: replied + delay
        if "send_time" in content:
            begins = float(math.ceil(max(planned, now)))
            moment = dt.datetime.fromtimestamp(begins, dt.timezone.utc)
            return {"send_time": moment}, lambda replied: max(begins, replied)
        wait = math.ceil(max(planned - now, 0.0))
        schedule = {"time_shift": wait} if wait or "time_shift" in content else {}
        return schedule, lambda replied: replied + wait


def _epoch(value: str | dt.datetime, timezone: str) -> float:
    """A checked ``send_time`` as seconds since the epoch: a naive one is in the connection's zone."""
    if isinstance(value, str):
        value = dt.datetime.strptime(value, SEND_TIME_FORMAT)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value.timestamp()
