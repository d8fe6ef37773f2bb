"""SalebotEmulator: the Salebot API as a real local HTTP server, with state and injectable faults."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from salebot_provider.api import ACTIONS, DEFAULT_TIMEZONE, PERMISSIONS
from salebot_provider.testing.faults import HTML_ERROR_PAGE, Decision, Fault, Faults, finite_number
from salebot_provider.testing.handlers import HANDLERS, Fail, Params, Reply
from salebot_provider.testing.state import MAX_TIME, AutoAdvance, Client, Deal, OutboxItem, State
from salebot_provider.testing.webhook import Delivery, WebhookPoster

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

#: Actions the vendor documents as answering both GET and POST.
BOTH_METHODS = frozenset(
    {
        "callback",
        "vk_callback",
        "ok_callback",
        "whatsapp_callback",
        "message",
        "whatsapp_message",
        "check_whatsapp",
    }
)
_API_PATH = re.compile(r"^/api/([^/]+)/([^/]+)/?$")
#: The largest request body read; the hook sends at most a few hundred kilobytes.
MAX_BODY = 32 * 1024 * 1024
#: The deepest nesting of a JSON body: Salebot's parameters are a few levels deep, and a value
#: nested near Python's recursion limit would break copying the state and the request log later.
MAX_DEPTH = 64
#: The largest id the admin API takes (a client, a deal, a list): ids are 64-bit numbers.
MAX_ID = 2**63 - 1
#: The shortest period of ``auto_advance``, in seconds: shorter ones only make a busy loop.
MIN_PERIOD = 0.001
#: The reply instead of one that would hold NaN or infinity, which JSON does not have.
_NAN_REPLY = b'{"status": "error", "message": "emulator error: the reply would hold NaN or infinity"}'
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestRecord:
    """
    One call the emulator received. The key is not kept, only whether it was a known one.

    :param action: the action segment of the path.
    :param method: ``GET`` or ``POST``.
    :param params: the query-string parameters.
    :param body: the decoded JSON body (the raw text when it was not JSON; None for none).
    :param status: the HTTP status answered (0 when the connection was reset).
    :param time: when it arrived (the emulator's clock).
    :param known_key: whether the key in the path was one of the project's.
    """

    action: str
    method: str
    params: dict[str, str]
    body: Any
    status: int
    time: float
    known_key: bool


class _NotFound(Exception):
    """An admin route named something that does not exist."""


class _BadBody(Exception):
    """A request body that cannot be read: answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _DeadlineReader(io.RawIOBase):
    """
    The reading side of a connection, where reading one whole request has a deadline.

    A socket timeout bounds each read only: a client sending a byte a second would never meet it.
    So before each read the timeout is set to what is left of the request's time.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__()
        self.sock, self.timeout = sock, timeout
        self.deadline = time.monotonic() + timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive whole within read_timeout")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        finally:
            # Writing the reply has the full timeout again.
            self.sock.settimeout(self.timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a timeout, a reset test) is not the emulator's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_open_sockets(self) -> None:
        with self.sockets_lock:
            for sock in self.open_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.open_sockets.clear()


class SalebotEmulator:
    """
    A Salebot project on ``127.0.0.1``: all 41 API actions over real HTTP, in-memory state, faults.

    .. code-block:: python

        with SalebotEmulator(clients=1000, seed=1) as emulator:
            os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"] = emulator.connection_json()
            ...  # run the DAG or the hook
            assert [m.client_id for m in emulator.outbox] == [...]

    :param port: the port to bind; 0 picks a free one.
    :param host: the address to bind (an IPv6 address such as ``::1`` works too).
    :param clients: how many seeded clients the project starts (and resets) with.
    :param seed: the seed of the seeded clients and of every fault decision.
    :param api_key: the default key (every permission); a random one when None.
    :param clock: the time source, seconds since the epoch; tests may pass a fake one.
    :param timezone: the project's time zone (``send_time`` and history dates are read in it).
    :param read_timeout: seconds a whole request (request line, headers and body) may take to
        arrive, counted from when the emulator starts waiting for it (the connection opened, or
        the previous reply sent); past it the emulator closes the connection (HTTP 400 first when
        only the body is missing), so that a slow, stuck or trickling client cannot hold a server
        thread for good.
    :raises ValueError: for an unknown time zone.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        clients: int = 0,
        seed: int = 0,
        api_key: str | None = None,
        clock: Callable[[], float] = time.time,
        timezone: str = DEFAULT_TIMEZONE,
        read_timeout: float = 10.0,
    ) -> None:
        try:
            ZoneInfo(timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as Europe/Moscow)") from None
        if not finite_number(read_timeout) or read_timeout <= 0:
            raise ValueError(f"read_timeout must be a number of seconds more than 0; got {read_timeout!r}")
        self._host, self._port = host, port
        self.read_timeout = read_timeout
        self._initial = (clients, seed, clock)
        self.clock = clock
        self.timezone = timezone
        self._offset = 0.0
        self.state = State.default(api_key, self._now, timezone)
        self.api_key = self.state.default_key
        self.faults = Faults(seed, self._now)
        self._records: list[RequestRecord] = []
        self._records_lock = threading.Lock()
        #: Counts the resets: a request that waited (an injected latency) across one is from before it.
        self._generation = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if clients:
            self.state.seed_clients(clients, seed)

    def _now(self) -> float:
        return self.clock() + self._offset

    # ------------------------------------------------------------------ life cycle

    def start(self) -> SalebotEmulator:
        """Start serving in a background thread; returns self."""
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="salebot-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the connections clients keep open, and free the port."""
        if self._server is None:
            return
        if self.state.webhook is not None:
            self.state.webhook.stop()
        self._server.shutdown()
        self._server.close_open_sockets()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> SalebotEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port served on (the one picked, when 0 was asked)."""
        if self._server is None:
            raise RuntimeError("the emulator is not started: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The URL to put in the connection's host, e.g. ``http://127.0.0.1:8799`` or ``http://[::1]:8799``."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def connection_json(self, **extra: Any) -> str:
        """
        The connection as JSON, ready for ``AIRFLOW_CONN_SALEBOT_DEFAULT``.

        :param extra: connection extras to add (``timeout``, ``max_retries`` ...); the emulator's
            time zone is added when it is not the default one.
        """
        if self.timezone != DEFAULT_TIMEZONE:
            extra = {"timezone": self.timezone, **extra}
        conn: dict[str, Any] = {"conn_type": "salebot", "host": self.base_url, "password": self.api_key}
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)

    def connection_uri(self) -> str:
        """The connection as an Airflow URI, ready for ``AIRFLOW_CONN_SALEBOT_DEFAULT``."""
        host = quote(f"http://{self._url_host}", safe="")
        uri = f"salebot://:{quote(self.api_key, safe='')}@{host}:{self.port}"
        return uri if self.timezone == DEFAULT_TIMEZONE else f"{uri}?timezone={quote(self.timezone, safe='')}"

    # ------------------------------------------------------------------ set-up

    def add_key(self, permissions: Iterable[str]) -> str:
        """
        Make another API key with only these permissions.

        :param permissions: names from ``clients_read``, ``clients_write``, ``clients_delete``,
            ``crm_read``, ``crm_write``.
        :return: the new key.
        """
        wanted = frozenset(permissions)
        unknown = wanted - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permission(s) {sorted(unknown)}; known: {sorted(PERMISSIONS)}")
        key = secrets.token_hex(20)
        with self.state.lock:
            self.state.keys[key] = wanted
        return key

    def seed_clients(self, n: int, seed: int | None = None, *, with_deals: bool = True) -> list[int]:
        """
        Add ``n`` realistic clients, deterministically (see :meth:`State.seed_clients`).

        :param n: how many.
        :param seed: the seed; the emulator's when None.
        :param with_deals: also make deals and list memberships.
        """
        with self.state.lock:
            return self.state.seed_clients(
                n, self.faults.seed if seed is None else seed, with_deals=with_deals
            )

    def add_client(
        self,
        platform_id: str | int,
        client_type: int = 1,
        group: str = "shop_bot",
        *,
        name: str | None = None,
        tag: str | None = None,
        variables: dict[str, Any] | None = None,
    ) -> int:
        """
        Add one client with the fields you choose; by default a Telegram client of ``shop_bot``.

        :param platform_id: the messenger id (the phone for WhatsApp).
        :param client_type: the messenger type (0 VK, 1 Telegram, 6 WhatsApp, 13 telephony ...).
        :param group: the bot's group_id.
        :param name: the client's name.
        :param tag: the client's tag.
        :param variables: profile variables.
        :return: the client's id.
        """
        _whole("client_type", client_type)
        if variables is not None and not isinstance(variables, dict):
            raise ValueError(f"variables must be an object of names and values; got {variables!r:.40}")
        with self.state.lock:
            client = self.state.add_client(
                str(platform_id), client_type, group, name=name, tag=tag, variables=dict(variables or {})
            )
            return client.id

    def add_list(self, list_id: int | None = None, clients: Iterable[int] = ()) -> int:
        """
        Make a client list (Salebot's lists are made in its UI), optionally with members.

        :param list_id: the list's id (1 to 2**63 - 1); the next free one when None.
        :param clients: client ids to put in it.
        :return: the list's id.
        :raises ValueError: for an id that is not a whole number in that range.
        """
        if list_id is not None:
            _whole("list_id", list_id, 1)
        if isinstance(clients, str | bytes | dict):
            raise ValueError(f"clients must be a list of client ids; got {clients!r:.40}")
        ids = [_whole("a client id in clients", client_id, 1) for client_id in clients]
        with self.state.lock:
            new_id = list_id if list_id is not None else max(self.state.lists, default=1170281) + 1
            members = self.state.lists.setdefault(new_id, {})
            members.update(dict.fromkeys(ids))
            return new_id

    def add_message(self, client_id: int, text: str) -> None:
        """
        Record a message the client wrote to the bot (it shows in ``get_history``): :meth:`client_says`.

        :param client_id: the client.
        :param text: what the client wrote.
        """
        self.client_says(client_id, text)

    def client_says(self, client_id: int, text: str, *, attachments: list[Any] | None = None) -> int:
        """
        A client writes to the bot: the message joins its history, and goes to the webhook.

        With :meth:`webhook` set, it is posted as Salebot posts it (``is_input`` 1).

        :param client_id: the client.
        :param text: what the client wrote.
        :param attachments: file URLs (or dicts with ``url``) sent with it.
        :return: the message's id.
        """
        with self.state.lock:
            if client_id not in self.state.clients:
                raise KeyError(f"no client {client_id}")
            return self.state.client_says(client_id, text, attachments)

    def webhook(self, urls: str | list[str] | None) -> None:
        """
        Post every message from now on to Salebot's webhook URL(s), once each, never again.

        That is every message the project delivers (``message``, ``broadcast`` recipients, callbacks'
        replies), at the moment it is accepted (a scheduled one too), and every message a client
        writes (:meth:`client_says`). With several URLs they take turns, as behind a load balancer.
        A failed post is not repeated, as Salebot does not; :attr:`webhook_deliveries` tells.

        :param urls: one URL, several, or None to stop posting.
        """
        targets = [urls] if isinstance(urls, str) else list(urls or [])
        for url in targets:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook: {url!r:.60} is not an http(s) URL")
        with self.state.lock:
            if self.state.webhook is None:
                self.state.webhook = WebhookPoster()
            self.state.webhook.urls = targets

    @property
    def webhook_deliveries(self) -> list[Delivery]:
        """Every POST made to the webhook, in order: the message id, the URL and the answer."""
        return list(self.state.webhook.deliveries) if self.state.webhook is not None else []

    def wait_webhook(self, timeout: float = 30.0) -> bool:
        """Wait until every message so far was posted to the webhook; False when ``timeout`` passed."""
        return self.state.webhook is None or bool(self.state.webhook.wait(timeout))

    def inject(self, action: str | None = None, **fault: Any) -> Fault:
        """
        Add a fault rule; see :class:`~salebot_provider.testing.faults.Fault` for the fields.

        .. code-block:: python

            emulator.inject("message", status=502, processed=True, times=1)  # sent, then a 502
            emulator.inject(latency=(0.05, 0.2))  # every action slower
            emulator.inject("get_clients", status=503, rate=0.3)

        :param action: the action it applies to; None for every action.
        :param fault: the fields of the rule.
        """
        _known_action(action)
        return self.faults.add(Fault.from_fields(action=action, **fault))

    def rate_limit(self, per_second: float | None, action: str | None = None) -> None:
        """
        Answer 429 with ``Retry-After`` beyond this many requests per second (bursts of that many pass).

        :param per_second: the allowed rate; None removes the limit.
        :param action: one action, or None for all together.
        """
        _known_action(action)
        self.faults.rate_limit(per_second, action)

    def auto_advance_new_deals(self, every: float | None) -> None:
        """
        Make every deal created from now on (``create_order``) move along the funnel on its own.

        For a pipeline that creates a deal and then waits for it to be paid, as the demo's does.

        :param every: seconds between moves, at least :data:`MIN_PERIOD`; None stops it for new deals.
        """
        if every is not None and (not finite_number(every) or every < MIN_PERIOD):
            raise ValueError(
                f"auto_advance_new_deals: 'every' must be a number of seconds, at least {MIN_PERIOD}, "
                f"or None; got {every!r:.40}"
            )
        with self.state.lock:
            self.state.advance_new_deals = every

    def auto_advance(self, order_id: int, every: float) -> None:
        """
        Make a deal move to the next funnel state every ``every`` seconds, so sensors have work.

        A won or lost deal stays where it is.

        :param order_id: the deal.
        :param every: seconds between moves, at least :data:`MIN_PERIOD`.
        """
        if not finite_number(every) or every < MIN_PERIOD:
            raise ValueError(
                f"auto_advance: 'every' must be a number of seconds, at least {MIN_PERIOD}; got {every!r:.40}"
            )
        with self.state.lock:
            if order_id not in self.state.deals:
                raise KeyError(f"no deal {order_id}")
            self.state.auto_advance[order_id] = AutoAdvance(every, self._now())

    def advance(self, seconds: float) -> None:
        """
        Move the emulator's time forward: scheduled sends fall due, deals move, rate limits refill.

        :param seconds: how far, at least 0; the emulator's time may not pass the year 9000
            (:data:`~salebot_provider.testing.state.MAX_TIME`).
        """
        if not finite_number(seconds) or seconds < 0:
            raise ValueError(
                f"advance: time moves forward by a number of seconds (>= 0); got {seconds!r:.40}"
            )
        with self.state.lock:
            if self._now() + seconds > MAX_TIME:
                raise ValueError(
                    f"advance: {seconds:g} seconds would take the emulator's time past the year 9000"
                )
            self._offset += seconds

    def reset(self) -> None:
        """
        Back to the starting project: same key, clock and seeded clients; faults, time and logs cleared.

        A request held by an injected latency when the reset comes is answered 503 when its wait ends,
        and neither acts on the fresh project nor shows in its request log.
        """
        clients, seed, self.clock = self._initial
        with self.state.lock:
            self._offset = 0.0
            fresh = State.default(self.api_key, self._now, self.timezone)
            if clients:
                fresh.seed_clients(clients, seed)
            for f in fields(State):
                if f.name not in ("lock", "webhook"):
                    setattr(self.state, f.name, getattr(fresh, f.name))
        self.faults.clear()
        with self._records_lock:
            self._records.clear()
            self._generation += 1

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RequestRecord]:
        """Every call received, in order (a copy)."""
        with self._records_lock:
            return list(self._records)

    @property
    def outbox(self) -> list[OutboxItem]:
        """Every message, callback and broadcast recipient, with the moment it is due (a copy)."""
        with self.state.lock:
            return copy.deepcopy(self.state.outbox)

    def client(self, client_id: int) -> Client:
        """A copy of a client of the project, by id."""
        with self.state.lock:
            return copy.deepcopy(self.state.clients[client_id])

    def deal(self, order_id: int) -> Deal:
        """A copy of a deal, by id, with the automatic funnel moves that are due applied."""
        with self.state.lock:
            self.state.tick()
            return copy.deepcopy(self.state.deals[order_id])

    # ------------------------------------------------------------------ serving

    def handle_api(
        self, method: str, key: str, action: str, query: dict[str, str], raw: bytes
    ) -> tuple[Decision, Reply]:
        """
        Answer one API call: faults, key, action, method, permission, then the action itself.

        An injected latency is waited out before anything else, so a slow failure is not processed.

        :return: the fault decision (the server applies resets) and ``(status, body)``.
        """
        arrived = self._now()
        generation = self._generation
        decision = self.faults.decide(action)
        if decision.latency:
            time.sleep(decision.latency)
            if generation != self._generation:
                # Reset while it waited (the test that sent it is over): it must not act on, nor
                # show in, the fresh project.
                return Decision(), (503, {"status": "error", "message": "the emulator was reset"})
        known = key in self.state.keys
        body: Any = None
        unreadable = None
        status, reply = 0, None
        try:
            body = _decode_json(raw, None)
        except ValueError as exc:
            body, unreadable = raw.decode("utf-8", "replace"), str(exc)
        try:
            failure = decision.failure
            if decision.retry_after is not None:
                status, reply = 429, {"status": "error", "message": "Too many requests"}
            elif failure is not None and not failure.processed:
                status, reply = _failure_reply(failure)
            else:
                status, reply = self._serve(method, key, action, query, body, unreadable)
                if failure is not None:
                    status, reply = _failure_reply(failure)
            return decision, (status, reply)
        finally:
            with self._records_lock:
                self._records.append(RequestRecord(action, method, dict(query), body, status, arrived, known))

    def _serve(
        self, method: str, key: str, action: str, query: dict[str, str], body: Any, unreadable: str | None
    ) -> Reply:
        permissions = self.state.keys.get(key)
        if permissions is None:
            return 401, {"status": "error", "message": "Invalid API key"}
        spec = ACTIONS.get(action)
        handler = HANDLERS.get(action)
        if spec is None or handler is None:
            return 404, {"status": "error", "message": f"Unknown action {action}"}
        allowed = {"GET", "POST"} if action in BOTH_METHODS else {spec.method}
        if method not in allowed:
            return 405, {"status": "error", "message": f"{action} answers {' or '.join(sorted(allowed))}"}
        if spec.permission not in permissions:
            return 403, {"status": "error", "message": "WRONG_ACTION"}
        if method == "POST" and unreadable is not None:
            return 400, {"status": "fail", "message": f"Error in parameter format: {unreadable}"}
        data = dict(query)
        if isinstance(body, dict):
            data.update(body)
        params = Params(data, body if isinstance(body, list) else None)
        with self.state.lock:
            self.state.tick()
            try:
                return handler(self.state, params)
            except Fail as fail:
                return fail.status, fail.body
            except Exception as exc:
                # A bug of the emulator's: say so in a reply rather than dropping the connection.
                return 500, {
                    "status": "error",
                    "message": f"emulator error in {action}: {type(exc).__name__}: {exc}",
                }

    def handle_admin(self, method: str, path: str, raw: bytes) -> Reply:
        """Answer a call to the admin API under ``/_emulator/``; see docs/testing.md."""
        try:
            body = _decode_json(raw, {})
        except ValueError as exc:
            return 400, {"error": f"the body must be JSON: {exc}"}
        if not isinstance(body, dict):
            return 400, {"error": "the body must be a JSON object"}
        parts = [p for p in path.split("/") if p][1:]
        try:
            return self._admin(method, parts, body)
        except (_NotFound, KeyError) as exc:
            return 404, {"error": f"not found: {exc}"}
        except (ValueError, TypeError, OverflowError) as exc:
            return 400, {"error": str(exc)}

    def _admin(self, method: str, parts: list[str], body: dict[str, Any]) -> Reply:
        route = (method, *parts[:1], len(parts))
        if route == ("GET", "state", 1):
            with self.state.lock:
                return 200, {**self.state.summary(), "base_url": self.base_url, "time": self._now()}
        if route == ("GET", "requests", 1):
            return 200, [asdict(r) for r in self.requests]
        if route == ("GET", "outbox", 1):
            return 200, [item.as_dict() for item in self.outbox]
        if route == ("GET", "clients", 2):
            client = self.client(_path_id(parts[1]))
            with self.state.lock:
                self.state.tick()
                deals = [asdict(d) for d in self.state.client_deals(client.id)]
            return 200, {**asdict(client), "deals": deals}
        if route == ("POST", "clients", 1):
            return 200, {"id": self.add_client(**body)}
        if route == ("POST", "clients", 3) and parts[2] in ("messages", "says"):
            return 200, {"added": True, "id": self.client_says(_path_id(parts[1]), str(body["text"]))}
        if route == ("POST", "webhook", 1):
            self.webhook(body.get("urls", body.get("url")))
            return 200, {"webhook": body.get("urls", body.get("url"))}
        if route == ("GET", "webhook", 1):
            return 200, [asdict(d) for d in self.webhook_deliveries]
        if route == ("GET", "deals", 2):
            return 200, asdict(self.deal(_path_id(parts[1])))
        if route == ("POST", "deals", 3) and parts[2] == "auto_advance":
            self.auto_advance(_path_id(parts[1]), body["every"])
            return 200, {"auto_advance": _path_id(parts[1])}
        if route == ("POST", "lists", 1):
            return 200, {"list_id": self.add_list(body.get("list_id"), body.get("clients", ()))}
        if route == ("POST", "reset", 1):
            self.reset()
            return 200, {"reset": True}
        if route == ("POST", "faults", 1):
            return 200, self.inject(**body).as_dict()
        if route == ("GET", "faults", 1):
            return 200, [f.as_dict() for f in self.faults.rules]
        if route == ("DELETE", "faults", 1):
            self.faults.clear()
            return 200, {"faults": []}
        if route == ("POST", "rate_limit", 1):
            self.rate_limit(body.get("per_second"), body.get("action"))
            return 200, {"rate_limit": body.get("per_second")}
        if route == ("POST", "keys", 1):
            return 200, {"key": self.add_key(body.get("permissions", []))}
        if route == ("POST", "seed", 1):
            seed = body.get("seed")
            if seed is not None:
                _whole("seed", seed, -MAX_ID)
            ids = self.seed_clients(body.get("clients", 0), seed)
            return 200, {"seeded": len(ids)}
        if route == ("POST", "clock", 1):
            self.advance(body.get("advance", 0))
            return 200, {"time": self._now()}
        raise _NotFound(f"no admin route {method} /_emulator/{'/'.join(parts)}")


def _shown_path(path: str) -> str:
    """A path for the log: the key masked, and nothing else from a path that is not one of ours."""
    if path.startswith("/_emulator/"):
        return path
    match = _API_PATH.match(path)
    if match is None:
        return "(unknown path)"
    # A client that builds the URL wrongly may put its key where the action goes.
    return f"/api/***/{match[2] if match[2] in ACTIONS else '(unknown action)'}"


def _decode_json(raw: bytes, empty: Any) -> Any:
    """
    The JSON in a request body (``empty`` for none).

    :raises ValueError: when it is not JSON, is nested deeper than :data:`MAX_DEPTH`, or holds
        ``NaN``, ``Infinity`` or a number too large for a float (``1e400``): Python's json reads
        them, but they are not JSON (RFC 8259), and a reply that held one would not be either.
    """
    if not raw.strip():
        return empty
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    # Each value goes with where it sits at the top (a parameter, or an item of an array body),
    # so that the error names the parameter that holds a bad number.
    stack: list[tuple[Any, int, str]]
    if isinstance(value, dict):
        stack = [(child, 2, f'"{name[:40]}"') for name, child in value.items()]
    elif isinstance(value, list):
        stack = [(child, 2, f"item {index}") for index, child in enumerate(value)]
    else:
        stack = [(value, 1, "the body")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where} holds NaN, Infinity or a number too large, which JSON does not have")
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1, where) for child in item)
    return value


def _whole(name: str, value: Any, low: int = 0, high: int = MAX_ID) -> int:
    """``value`` if it is a whole number (not a bool or a float) from ``low`` to ``high``, else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r:.40}")
    return value


def _path_id(text: str) -> int:
    """An id from an admin path: ASCII digits only (``int`` would take ``٤٢``, ``1_000`` and spaces)."""
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > MAX_ID:
        raise ValueError(f"an id in the path must be a whole number from 0 to {MAX_ID}; got {text[:40]!r}")
    return int(text)


def _known_action(action: str | None) -> None:
    if action is not None and action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")


def _failure_reply(fault: Fault) -> Reply:
    if fault.reset:
        return 0, None
    if fault.invalid_json:
        return 200, b'{"status": "success", "result": [{"id": 1'
    if fault.html:
        return fault.status or 502, HTML_ERROR_PAGE.encode()
    return fault.status or 500, {"status": "error", "message": "Internal server error"}


def _handler_for(emulator: SalebotEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "SalebotEmulator"
        disable_nagle_algorithm = True
        # StreamRequestHandler sets it on the socket, so each write of a reply waits at most this
        # long; reading is bounded per request by the _DeadlineReader, and http.server closes a
        # connection whose request line or headers time out.
        timeout = emulator.read_timeout
        server: _Server

        def setup(self) -> None:
            super().setup()
            self.rfile.close()
            self.reader = _DeadlineReader(self.connection, emulator.read_timeout)
            self.rfile = io.BufferedReader(self.reader)
            with self.server.sockets_lock:
                self.server.open_sockets.add(self.connection)

        def handle_one_request(self) -> None:
            self.reader.deadline = time.monotonic() + emulator.read_timeout
            super().handle_one_request()

        def finish(self) -> None:
            with self.server.sockets_lock:
                self.server.open_sockets.discard(self.connection)
            with contextlib.suppress(ConnectionError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: the emulator keeps its own request log."""

        def _answer(self) -> None:
            started = time.perf_counter()
            parts = urlsplit(self.path)
            try:
                raw = self._read_body()
            except _BadBody as bad:
                status = bad.status
                # The rest of what the client sent cannot be told apart from a next request.
                self._send(status, {"status": "error", "message": str(bad)}, {"Connection": "close"})
            else:
                status = self._route(parts.path, parts.query, raw)
            elapsed = (time.perf_counter() - started) * 1000
            _log.debug("%s %s %s %.1f ms", self.command, _shown_path(parts.path), status or "reset", elapsed)

        def _read_body(self) -> bytes:
            announced = self.headers.get("Content-Length")
            if announced is None:
                return b""
            # Not str.isdigit: int() would also take the digits of other scripts.
            if not re.fullmatch(r"[0-9]+", announced.strip()):
                raise _BadBody(400, f"Content-Length must be a whole number of bytes; got {announced[:40]!r}")
            length = int(announced)
            if length > MAX_BODY:
                raise _BadBody(413, f"the body is over {MAX_BODY} bytes")
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                raw = b""
            if len(raw) < length:
                raise _BadBody(
                    400, f"the body is shorter than its Content-Length of {length} bytes (or came too slowly)"
                )
            return raw

        def _route(self, path: str, query_string: str, raw: bytes) -> int:
            """Answer the request; the HTTP status answered, 0 for a reset connection."""
            if path.startswith("/_emulator/"):
                return self._send(*emulator.handle_admin(self.command, path, raw))
            match = _API_PATH.match(path)
            if match is None:
                return self._send(404, {"status": "error", "message": "Not found"})
            query = dict(parse_qsl(query_string, keep_blank_values=True))
            key, action = unquote(match[1]), match[2]
            decision, (status, body) = emulator.handle_api(self.command, key, action, query, raw)
            if decision.failure is not None and decision.failure.reset:
                self.close_connection = True
                return 0
            headers = (
                {"Retry-After": str(decision.retry_after)} if status == 429 and decision.retry_after else {}
            )
            return self._send(status, body, headers)

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> int:
            """Send a reply; the HTTP status sent."""
            if isinstance(body, bytes):
                data, kind = body, "text/html" if body.startswith(b"<") else "application/json"
            else:
                kind = "application/json"
                try:
                    data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
                except ValueError:
                    # Requests holding NaN or infinity are refused: only state set from Python can.
                    status, data = 500, _NAN_REPLY
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            return status

        do_GET = do_POST = do_DELETE = _answer

    return Handler
