"""SalebotHook: one Salebot connection, one HTTP session, one method per API action."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import requests
import tenacity
from airflow.providers.common.compat.sdk import BaseHook
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from salebot_provider import __version__
from salebot_provider.api import (
    ACTIONS,
    DEFAULT_CHUNK_SIZE,
    HISTORY_DATE_FORMAT,
    IN_DOUBT_NOTE,
    Action,
    ConnectionSettings,
    Request,
    audience_of,
    batched,
    build_request,
    check_ca_bundle,
    connection_settings,
    encode_request,
    get_action,
    install_log_redaction,
    is_id,
    is_retryable,
    key_travels_in_clear,
    parse_reply,
    redact,
    reply_field,
    validate,
)
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotNotFoundError,
    SalebotValidationError,
)
from salebot_provider.hooks.transport import Session, check_proxy, read_whole
from salebot_provider.quota import SharedLimiter

#: The longest a retry waits, even when Retry-After asks for more.
MAX_RETRY_WAIT = 300.0
#: Pages whose clients ``iter_clients`` remembers, to drop the repeats a shift of the pages causes.
SEEN_PAGES = 4
#: The longest ``test_connection`` (the UI's Test button) waits for its one attempt, in seconds.
TEST_TIMEOUT = 10.0
#: How often long work logs its progress, in seconds.
PROGRESS_EVERY = 10.0
_LOGGERS_TO_REDACT = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "requests")


_T = TypeVar("_T")


class _Once(Generic[_T]):
    """
    Compute an attribute once per instance, like ``functools.cached_property``, but under a lock.

    Since Python 3.12 ``cached_property`` no longer locks, and threads making a hook's first calls
    together must still share one session and one rate limiter.
    """

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]
        cache = obj.__dict__
        if self.name not in cache:
            with obj._lazy_lock:
                if self.name not in cache:
                    cache[self.name] = self.func(obj)
        return cache[self.name]  # type: ignore[no-any-return]


class _RateLimiter:
    """Space calls at least ``1 / rate`` seconds apart, across the threads that share one hook."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


class Progress:
    """Log ``done/total`` of long work at a steady pace, not once per request."""

    def __init__(self, log: Any, what: str, total: int | None = None) -> None:
        self._log, self._what, self._total = log, what, total
        self.done = 0
        self._last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        if time.monotonic() - self._last >= PROGRESS_EVERY:
            self._last = time.monotonic()
            total = f"/{self._total}" if self._total is not None else ""
            self._log.info("%s: %d%s done", self._what, self.done, total)


@dataclass(frozen=True)
class ChunkResult:
    """
    The outcome of one chunk sent by :meth:`SalebotHook.iter_chunked`.

    :param index: the chunk's number, from 0.
    :param items: the items this chunk carried.
    :param reply: the decoded reply to it.
    """

    index: int
    items: list[Any]
    reply: Any


#: requests errors raised before anything goes on the wire.
_NOT_SENT = (
    # A TLS failure comes in the handshake, before the request is written.
    requests.exceptions.SSLError,
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _client_key(client: Any) -> Any:
    """A client's id as a set member: an id of an unexpected type (a list, a dict) is its JSON text."""
    key = client.get("id") if isinstance(client, dict) else None
    return key if isinstance(key, int | str | None) else json.dumps(key, sort_keys=True, default=str)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection did not open, so the request cannot have been sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


class SalebotHook(BaseHook):
    """
    Talk to the Salebot API: every action as a method, plus streaming and chunked helpers.

    The connection is read once, lazily, and one HTTP session is kept for the hook's life. Replies
    are checked (a ``status`` other than ``"success"`` raises even with HTTP 200); reads are retried
    on timeouts, 429 and 5xx, sends only when they surely were not processed. The API key never
    appears in a log line or an error.

    .. code-block:: python

        hook = SalebotHook()
        hook.save_variables(client_id=49177759, variables={"client.phone": "88888888888"})
        for client in hook.iter_clients(list_id=1170282):
            ...

    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    """

    conn_name_attr = "salebot_conn_id"
    default_conn_name = "salebot_default"
    conn_type = "salebot"
    hook_name = "Salebot"

    def __init__(self, salebot_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.salebot_conn_id = salebot_conn_id
        self._lazy_lock = threading.RLock()

    # ------------------------------------------------------------------------- connection & session

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel and hide the connection form's fields (Airflow 3.0-3.1; later ones read provider info)."""
        return {
            "hidden_fields": ["login", "schema", "port", "extra"],
            "relabeling": {"password": "API key", "host": "Base URL"},
            "placeholders": {
                "host": "https://chatter.salebot.pro",
                "password": "Project settings -> Integrations -> API keys",
            },
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Form fields for the connection's extras (Airflow 3.0-3.1; later ones read provider info)."""
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        return {
            "timeout": StringField("Timeout (seconds)", default="30"),
            "max_retries": IntegerField(
                "Max retries", validators=[Optional(), NumberRange(min=0)], default=3
            ),
            "backoff_factor": StringField("Backoff factor (seconds)", default="1"),
            "rate_limit": StringField("Rate limit (requests per second)"),
            "rate_limit_redis": StringField("Shared rate limit: Redis URL or connection id"),
            # A text field, not a checkbox: it also takes the path of a CA bundle.
            "verify": StringField("Verify TLS (true, false, or a CA bundle path)", default="true"),
            "timezone": StringField("Time zone", default="Europe/Moscow"),
        }

    @_Once
    def settings(self) -> ConnectionSettings:
        """The connection's settings, read once; the key is registered with Airflow's secret masker."""
        settings = connection_settings(self.get_connection(self.salebot_conn_id))
        if key_travels_in_clear(settings.base_url):
            self.log.warning(
                "Salebot connection %r uses http:// to %s: the API key travels in clear text. "
                "Use https:// (http:// is for a local emulator).",
                self.salebot_conn_id,
                redact(settings.base_url, settings.api_key),
            )
        return settings

    @_Once
    def session(self) -> requests.Session:
        """
        The HTTP session (keep-alive) all calls of this hook share.

        The environment's proxy and CA bundle settings (``HTTPS_PROXY``, ``NO_PROXY``,
        ``REQUESTS_CA_BUNDLE`` ...) are read once here, not on every call as requests would.
        Redirects are never followed (see :meth:`_attempt`).

        :raises SalebotValidationError: for a malformed proxy setting or a CA bundle that is not there.
        """
        install_log_redaction(_LOGGERS_TO_REDACT)
        settings = self.settings
        session = Session()
        environment = session.merge_environment_settings(settings.base_url, {}, None, settings.verify, None)
        for scheme, proxy in environment["proxies"].items():
            check_proxy(scheme, proxy)
        verify = environment["verify"]
        if isinstance(verify, str) and not isinstance(settings.verify, str):
            # The connection's own path was checked when it was read; this one is the environment's.
            check_ca_bundle(verify, "REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE")
        session.trust_env = False
        session.proxies.update(environment["proxies"])
        session.verify = verify
        session.headers.update(
            {"Accept": "application/json", "User-Agent": f"airflow-provider-salebot/{__version__}"}
        )
        return session

    @_Once
    def _limiter(self) -> _RateLimiter | SharedLimiter | None:
        settings = self.settings
        if settings.rate_limit_redis:
            # Every process on the project shares one bucket in Redis; this one's own limit stands
            # in while Redis cannot be reached.
            own = _RateLimiter(settings.rate_limit or 1.0)
            return SharedLimiter(settings, own, self.get_connection)
        return _RateLimiter(settings.rate_limit) if settings.rate_limit else None

    def get_conn(self) -> requests.Session:
        """Return the HTTP session, as Airflow hooks do."""
        return self.session

    def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> SalebotHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """
        Call ``connected_channels`` once, with a short timeout, and report the project's channels.

        This is the connection form's Test button and ``airflow connections test``: one attempt,
        at most ``TEST_TIMEOUT`` seconds, no retries, and the key is never shown.
        """
        try:
            settings = self.settings
            spec = get_action("connected_channels")
            reply = self._execute(
                build_request(spec), spec, attempts=1, timeout=min(settings.timeout, TEST_TIMEOUT)
            )
            channels = (
                {k: len(v) for k, v in reply.items() if isinstance(v, list)}
                if isinstance(reply, dict)
                else {}
            )
            project = reply_field(spec.name, reply, "project_id")
        except Exception as exc:
            key = self.__dict__.get("settings")
            return False, redact(str(exc), key.api_key if key else None)
        listed = ", ".join(f"{k} {n}" for k, n in channels.items() if n) or "none connected"
        return True, f"Connected to Salebot project {project}: {sum(channels.values())} channels ({listed})"

    # ------------------------------------------------------------------------- calling

    def call(
        self,
        action: str,
        params: Mapping[str, Any] | Sequence[Any] | None = None,
        method: str | None = None,
        *,
        validate: bool = True,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Call any action, including one this provider's table does not know.

        A known action is checked against the table and uses its method unless ``method`` is given.
        An unknown one is sent as given (``POST`` by default); it is retried after a timeout or a
        5xx only if it is a ``GET``. Masking, error handling and 429 handling are the same as for
        every other call.

        .. code-block:: python

            hook.call("get_clients", {"list": 5, "limit": 100})
            # the universal webhook's parameters go in the query string, on a POST too:
            hook.call("message", {"data": {"id": 7}, "message": "hi"}, validate=False,
                      query={"delimiter": "1", "delimiter_value_client_id": "data 1 id"})

        :param action: the action name, e.g. ``"get_clients"``.
        :param params: the parameters by their API names: the query string of a GET, the JSON body
            of a POST (which may also be a list).
        :param method: ``"GET"`` or ``"POST"``.
        :param validate: False sends ``params`` exactly as given, even for a known action whose
            checks would refuse them (still masked, still under the action's retry policy).
        :param query: query-string parameters to add, for any method.
        :return: the decoded JSON reply.
        """
        spec = ACTIONS.get(action)
        http_method = (method or (spec.method if spec else "POST")).upper()
        if spec is None or not validate:
            if spec is None and http_method == "GET":
                spec = Action(action, "GET", "clients_read", True, "", "")
            payload = params if params is not None else {}
            request = encode_request(action, http_method, payload, query=query)
            return self._execute(request, spec, audience=audience_of(payload))
        if spec.body_param and not isinstance(params, Mapping | None):
            params = {spec.body_param: params}
        if not isinstance(params, Mapping | None):
            raise SalebotValidationError(
                f"Salebot {action}: 'params' must be a mapping of parameters", action=action
            )
        request = build_request(spec, params, method=http_method, timezone=self._timezone, query=query)
        return self._execute(request, spec, audience=audience_of(params or {}))

    def _run(
        self,
        action: str,
        params: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        *,
        first_index: int = 0,
    ) -> Any:
        spec = get_action(action)
        request = build_request(spec, params, extra=extra, timezone=self._timezone, first_index=first_index)
        return self._execute(request, spec, audience=audience_of(params))

    def _timezone(self) -> str:
        return self.settings.timezone

    def _execute(
        self,
        request: Request,
        spec: Action | None,
        *,
        audience: str | None = None,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        settings = self.settings
        send = spec is None or not spec.idempotent
        timeout = timeout or settings.timeout
        try:
            reply = self._retried(request, spec, timeout, send, attempts or settings.max_retries + 1)
        except SalebotError as exc:
            if send:
                doubt = "in doubt, it may have been processed" if exc.in_doubt else "not processed"
                self.log.info(
                    "Salebot %s to %s: failed (%s): %s", request.action, audience, doubt, type(exc).__name__
                )
            raise
        if send:
            self.log.info("Salebot %s to %s: done", request.action, audience)
        return reply

    def _retried(
        self, request: Request, spec: Action | None, timeout: float, send: bool, attempts: int
    ) -> Any:
        """
        Make the exchange, retried as the action's policy allows.

        The first attempt is made directly, so that a call that succeeds (most do) pays nothing for
        the retry machinery; tenacity takes over from its failure, counting it as attempt 1.
        """
        failed: list[SalebotError] = []
        try:
            return self._attempt(request, timeout, send)
        except SalebotError as exc:
            failed.append(exc)
        # Out of the except block, so that a later attempt's error does not chain the first one.

        def attempt() -> Any:
            if failed:
                raise failed.pop()
            return self._attempt(request, timeout, send)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, SalebotError) and is_retryable(spec, e)
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(attempt)

    @_Once
    def _backoff(self) -> tenacity.wait.wait_base:
        factor = self.settings.backoff_factor
        return tenacity.wait_exponential(multiplier=factor, max=60) + tenacity.wait_random(0, factor)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None) or 0.0
        return min(max(retry_after, self._backoff(state)), MAX_RETRY_WAIT)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "Salebot call failed (attempt %d of %d), retrying in %.1fs: %s",
            state.attempt_number,
            getattr(state.retry_object.stop, "max_attempt_number", 0),
            wait,
            error,
        )

    def _attempt(self, request: Request, timeout: float, send: bool) -> Any:
        """
        Make one HTTP exchange and judge the reply.

        ``timeout`` bounds connecting and the whole reply, however slowly it trickles in. A redirect
        is never followed (it could turn a POST into a bodiless GET, or carry the body and the key
        to another host), so a 3xx is judged as a failure.
        """
        settings = self.settings
        if self._limiter is not None:
            self._limiter.wait()
        failure: SalebotError | None = None
        started = time.monotonic()
        try:
            response = self.session.request(
                request.method,
                request.url(settings.base_url, settings.api_key),
                params=request.query,
                data=request.body,
                headers={"Content-Type": "application/json"} if request.body is not None else None,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            )
            content = read_whole(response, started + timeout)
        except requests.exceptions.ContentDecodingError:
            failure = SalebotAPIError(
                f"Salebot {request.action} failed ({request.display_path}): HTTP {response.status_code}, "
                f"the reply's Content-Encoding could not be decoded.{' ' + IN_DOUBT_NOTE if send else ''}",
                action=request.action,
                http_status=response.status_code,
                in_doubt=True,
            )
        except requests.exceptions.RequestException as exc:
            failure = self._no_reply(request, exc, timeout, send)
        if failure is not None:
            # Raised outside the except block, so that the requests error (its text holds the URL,
            # key included) is neither the cause nor the context of ours.
            raise failure
        self.log.debug(
            "Salebot %s %s -> HTTP %d in %.3fs",
            request.method,
            request.display_path,
            response.status_code,
            time.monotonic() - started,
        )
        return parse_reply(
            request.action,
            response.status_code,
            content,
            retry_after=response.headers.get("Retry-After"),
            secret=settings.api_key,
            send=send,
        )

    def _no_reply(
        self, request: Request, exc: requests.exceptions.RequestException, timeout: float, send: bool
    ) -> SalebotConnectionError:
        """Turn a requests error into ours, saying whether the request may have been processed."""
        settings = self.settings
        where = f"Salebot {request.action} ({request.method} {request.display_path})"
        if isinstance(exc, requests.exceptions.Timeout) and not isinstance(
            exc, requests.exceptions.ConnectTimeout
        ):
            doubt = f" after sending. {IN_DOUBT_NOTE}" if send else ""
            return SalebotConnectionError(
                f"{where}: no whole reply within {timeout:g}s{doubt}",
                action=request.action,
                in_doubt=True,
            )
        connected = not (isinstance(exc, requests.exceptions.ConnectionError) and _never_connected(exc))
        sent = connected and not isinstance(exc, _NOT_SENT)
        reason = redact(f"{type(exc).__name__}: {exc}", settings.api_key)
        if not sent:
            text = f"{where}: no reply (nothing was sent): {reason}"
        elif send:
            text = f"{where}: no reply: {reason}. {IN_DOUBT_NOTE}"
        else:
            text = f"{where}: no reply (the connection broke after sending): {reason}"
        return SalebotConnectionError(text, action=request.action, in_doubt=sent)

    # ------------------------------------------------------------------------- bulk helpers

    def iter_clients(
        self, list_id: int | str | None = None, page_size: int = 500, reverse: bool = False
    ) -> Iterator[dict[str, Any]]:
        """
        Yield every client of the project (or of one list), page by page, keeping memory flat.

        Pages are read with ``get_clients`` until a page comes back shorter than ``page_size``.
        A client that a page shift shows twice is yielded once: the clients of the last
        ``SEEN_PAGES`` pages are remembered (not every client, so memory stays flat), which catches
        the shift of up to three pages' worth of clients added or removed while paging. Progress is
        logged every few seconds.

        :param list_id: only the clients of this list.
        :param page_size: clients per request, 1 to 500.
        :param reverse: oldest first (only without ``list_id``).
        :raises SalebotValidationError: on bad arguments, before any request.
        """
        if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= 500:
            raise SalebotValidationError(
                f"Salebot iter_clients: 'page_size' must be a whole number from 1 to 500; got {page_size!r}"
            )
        validate(
            "get_clients", {"limit": page_size, "list": list_id, "reverse": reverse or None, "offset": 0}
        )
        return self._pages(list_id, page_size, reverse)

    def _pages(self, list_id: int | str | None, page_size: int, reverse: bool) -> Iterator[dict[str, Any]]:
        progress = Progress(self.log, "Salebot get_clients")
        recent: deque[set[Any]] = deque(maxlen=SEEN_PAGES)
        offset = 0
        while True:
            reply = self.get_clients(offset=offset, limit=page_size, list_id=list_id, reverse=reverse or None)
            page = reply_field("get_clients", reply, "clients")
            if not isinstance(page, list):
                raise SalebotAPIError(
                    f"Salebot get_clients replied without a 'clients' list at offset {offset}",
                    action="get_clients",
                )
            # A client added or removed while paging shifts the pages: drop the repeats it causes.
            fresh = [
                c for c in page if not isinstance(c, dict) or not any(_client_key(c) in s for s in recent)
            ]
            if page and not fresh:
                raise SalebotAPIError(
                    f"Salebot get_clients returned only clients already seen at offset {offset}: "
                    "the service seems to ignore 'offset'",
                    action="get_clients",
                )
            recent.append({_client_key(c) for c in page if isinstance(c, dict)})
            yield from fresh
            progress.add(len(fresh))
            if len(page) < page_size:
                return
            offset += len(page)

    def iter_history(
        self,
        client_id: int | str,
        start_date: str | dt.date | None = None,
        stop_date: str | dt.date | None = None,
        window_days: int = 31,
    ) -> Iterator[dict[str, Any]]:
        """
        Yield a client's message history, oldest window first, beyond the 2000-item cap of one call.

        Without dates this is one ``get_history`` call (at most 2000 messages). With dates, the
        period is read in windows of ``window_days``; a window that comes back full (2000 items)
        is split in two and read again, down to one day. A single day with 2000 or more messages
        cannot be read whole through the API: that is logged as a warning. Both dates count as
        inclusive.

        :param client_id: the client.
        :param start_date: first day (``dd.mm.yyyy`` or a date), with ``stop_date``.
        :param stop_date: last day (``dd.mm.yyyy`` or a date), with ``start_date``.
        :param window_days: days per request, at least 1.
        :raises SalebotValidationError: on bad arguments, before any request.
        """
        clean = validate(
            "get_history", {"client_id": client_id, "start_date": start_date, "stop_date": stop_date}
        )
        if not isinstance(window_days, int) or isinstance(window_days, bool) or window_days < 1:
            raise SalebotValidationError(
                f"Salebot iter_history: 'window_days' must be a whole number >= 1; got {window_days!r}"
            )
        return self._history(clean, window_days)

    def _history(self, clean: dict[str, Any], window_days: int) -> Iterator[dict[str, Any]]:
        cap = int(ACTIONS["get_history"].param_map["limit"].maximum or 0)
        if "start_date" not in clean:
            items = self._history_items(self.get_history(client_id=clean["client_id"], limit=cap))
            if len(items) >= cap:
                self.log.warning(
                    "Salebot get_history returned %d items, the cap: give dates to read all of it", cap
                )
            yield from items
            return
        first = dt.datetime.strptime(clean["start_date"], HISTORY_DATE_FORMAT).date()
        last = dt.datetime.strptime(clean["stop_date"], HISTORY_DATE_FORMAT).date()
        windows: list[tuple[dt.date, dt.date]] = []
        day = first
        while day <= last:
            end = min(day + dt.timedelta(days=window_days - 1), last)
            windows.append((day, end))
            day = end + dt.timedelta(days=1)
        windows.reverse()
        while windows:
            start, stop = windows.pop()
            reply = self.get_history(
                client_id=clean["client_id"], limit=cap, start_date=start, stop_date=stop
            )
            items = self._history_items(reply)
            if len(items) >= cap and start < stop:
                middle = start + (stop - start) // 2
                windows += [(middle + dt.timedelta(days=1), stop), (start, middle)]
                continue
            if len(items) >= cap:
                self.log.warning(
                    "Salebot history of %s on %s reached the %d cap: it may be incomplete",
                    clean["client_id"],
                    start,
                    cap,
                )
            yield from items

    @staticmethod
    def _history_items(reply: Any) -> list[Any]:
        items = reply_field("get_history", reply, "result") or []
        if not isinstance(items, list):
            raise SalebotAPIError(
                f"Salebot get_history replied with a 'result' that is not a list: {type(items).__name__}",
                action="get_history",
            )
        return items

    def iter_chunked(
        self, action: str, items: Iterable[Any], *, chunk_size: int | None = None, **params: Any
    ) -> Iterator[ChunkResult]:
        """
        Call a list-taking action in chunks, yielding each chunk's reply as it comes.

        Works for ``send_callback_by_platform_id`` (at most 300 per request), ``delete_clients``
        (500), ``add_to_list``, ``remove_from_list``, ``find_client_id_by_platform_id`` and
        ``load_clients`` (500 by default, any size you set). A list is checked whole before the
        first request; a lazy iterable is read and checked one chunk at a time, so memory stays flat.
        If a chunk fails, the error raised carries ``failed_chunk`` (its items) and ``items_done``
        (items completed by earlier chunks); later items were not tried.

        :param action: the action name.
        :param items: the values of the action's list parameter (e.g. client ids, or load_clients items).
        :param chunk_size: items per request; at most the documented limit.
        :param params: the action's other parameters, by their API names (e.g. ``list_id``).
        :raises SalebotValidationError: on bad arguments, before the first request.
        """
        spec = get_action(action)
        name = spec.chunk_param
        if name is None:
            raise SalebotValidationError(
                f"Salebot {action}: has no list parameter to send in chunks", action=action
            )
        if name in params:
            raise SalebotValidationError(
                f"Salebot {action}: pass the '{name}' values as 'items'", action=action
            )
        limit = spec.chunk_limit
        size = chunk_size if chunk_size is not None else (limit or DEFAULT_CHUNK_SIZE)
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 1
            or (limit is not None and size > limit)
        ):
            bound = f" and at most {limit}" if limit else ""
            raise SalebotValidationError(
                f"Salebot {action}: 'chunk_size' must be at least 1{bound}; got {size!r}", action=action
            )
        if isinstance(items, str | bytes | Mapping):
            raise SalebotValidationError(
                f"Salebot {action}: 'items' must be a list or an iterable of items", action=action
            )
        validate(spec, params, omit=name)
        total = None
        if isinstance(items, Sequence):
            total = len(items)
            for index, chunk in enumerate(batched(items, size)):
                validate(spec, {**params, name: chunk}, first_index=index * size)
        return self._chunks(spec, name, items, size, params, total)

    def _chunks(
        self,
        spec: Action,
        name: str,
        items: Iterable[Any],
        size: int,
        params: dict[str, Any],
        total: int | None,
    ) -> Iterator[ChunkResult]:
        progress = Progress(self.log, f"Salebot {spec.name}", total)
        for index, chunk in enumerate(batched(items, size)):
            try:
                reply = self._run(spec.name, {**params, name: chunk}, first_index=index * size)
            except SalebotError as exc:
                exc.failed_chunk, exc.items_done = chunk, progress.done
                raise
            yield ChunkResult(index, chunk, reply)
            progress.add(len(chunk))

    # ------------------------------------------------------------------------- Starting bots (callbacks)

    def callback(
        self,
        *,
        client_id: int | str | None = None,
        client_phone: str | int | None = None,
        client_email: str | None = None,
        message: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start a funnel for a client, or confirm an action on another site; the client does not see it.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param client_id: the client's id in Salebot.
        :param client_phone: find the client by phone.
        :param client_email: find the client by email.
        :param message: the callback text.
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "callback",
            {
                "client_id": client_id,
                "client_phone": client_phone,
                "client_email": client_email,
                "message": message,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    def vk_callback(
        self,
        user_id: str | int,
        group_id: str | int,
        *,
        message: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start a funnel for a VKontakte user.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param message: the callback text.
        :param user_id: VK user id.
        :param group_id: VK group id.
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "vk_callback",
            {
                "message": message,
                "user_id": user_id,
                "group_id": group_id,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    def whatsapp_callback(
        self,
        phone: str | int,
        *,
        name: str | None = None,
        message: str | None = None,
        bot_id: str | int | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start a WhatsApp bot for a phone number (after a sign-up or a lead form).

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param name: the client's name.
        :param message: the callback text.
        :param phone: the client's phone.
        :param bot_id: the bot's identifier.
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "whatsapp_callback",
            {
                "name": name,
                "message": message,
                "phone": phone,
                "bot_id": bot_id,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    def ok_callback(
        self,
        user_id: str | int,
        group_id: str | int,
        *,
        name: str | None = None,
        message: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start a funnel for an Odnoklassniki user.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param name: the client's name.
        :param message: the callback text.
        :param user_id: Odnoklassniki user id.
        :param group_id: Odnoklassniki group id.
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "ok_callback",
            {
                "name": name,
                "message": message,
                "user_id": user_id,
                "group_id": group_id,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    def tg_callback(
        self,
        user_id: str | int,
        group_id: str | int,
        *,
        message: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start a funnel for a Telegram user.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param message: the callback text.
        :param user_id: Telegram user id.
        :param group_id: the bot's name (ends with 'bot').
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "tg_callback",
            {
                "message": message,
                "user_id": user_id,
                "group_id": group_id,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    def send_callback_by_platform_id(
        self,
        platform_ids: Sequence[int | str],
        callback_text: str,
        *,
        group_id: str | int | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
    ) -> Any:
        """
        Send a callback to every client of the project whose platform_id is in the list.

        Needs the key permission ``clients_write``. At most 300 ``platform_ids`` per request: more is
        refused before sending; use :meth:`iter_chunked`. A send: retried only when surely not processed,
        never after a timeout or a 5xx.

        :param platform_ids: messenger ids; a repeated id is dropped (the first kept).
        :param callback_text: the callback text.
        :param group_id: the bot's identifier.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :return: the decoded JSON reply.
        """
        return self._run(
            "send_callback_by_platform_id",
            {
                "platform_ids": platform_ids,
                "callback_text": callback_text,
                "group_id": group_id,
                "time_shift": time_shift,
                "send_time": send_time,
            },
        )

    def email_callback(
        self,
        email: str,
        *,
        name: str | None = None,
        message: str | None = None,
        email_id_bot: str | None = None,
        resume_bot: bool | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """
        Start an email bot; finds the email client or creates it.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param name: the client's name.
        :param message: the callback text.
        :param email: the client's email address.
        :param email_id_bot: the bot's email address.
        :param resume_bot: True takes a paused bot off pause.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :param extra: additional fields, which Salebot saves as client variables.
        :return: the decoded JSON reply.
        """
        return self._run(
            "email_callback",
            {
                "name": name,
                "message": message,
                "email": email,
                "email_id_bot": email_id_bot,
                "resume_bot": resume_bot,
                "time_shift": time_shift,
                "send_time": send_time,
            },
            extra,
        )

    # ------------------------------------------------------------------------- Messages

    def message(
        self,
        client_id: int | str,
        *,
        message: str | None = None,
        message_id: int | str | None = None,
        attachment_type: str | None = None,
        attachment_url: str | None = None,
        buttons: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
    ) -> Any:
        """
        Send a message to one client.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param client_id: the client's id in Salebot.
        :param message: the text; required unless a file is sent (``message_id`` does not replace it).
        :param message_id: a bot block to send.
        :param attachment_type: how to show the file (one of image, video, link, file, audio).
        :param attachment_url: the file's URL.
        :param buttons: buttons, with or without a hint.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :return: the decoded JSON reply.
        """
        return self._run(
            "message",
            {
                "client_id": client_id,
                "message": message,
                "message_id": message_id,
                "attachment_type": attachment_type,
                "attachment_url": attachment_url,
                "buttons": buttons,
                "time_shift": time_shift,
                "send_time": send_time,
            },
        )

    def whatsapp_message(
        self,
        phone: str | int,
        *,
        whatsapp_bot_id: str | int | None = None,
        message: str | None = None,
        message_id: int | str | None = None,
        attachment_type: str | None = None,
        attachment_url: str | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
    ) -> Any:
        """
        Send a message from a connected WhatsApp bot to a phone number.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param phone: the recipient's phone.
        :param whatsapp_bot_id: the bot, from 'messengers and chats'.
        :param message: the text; required unless a file is sent (``message_id`` does not replace it).
        :param message_id: a bot block to send.
        :param attachment_type: how to show the file (one of image, video, link, file, audio).
        :param attachment_url: the file's URL.
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :return: the decoded JSON reply.
        """
        return self._run(
            "whatsapp_message",
            {
                "phone": phone,
                "whatsapp_bot_id": whatsapp_bot_id,
                "message": message,
                "message_id": message_id,
                "attachment_type": attachment_type,
                "attachment_url": attachment_url,
                "time_shift": time_shift,
                "send_time": send_time,
            },
        )

    def broadcast(
        self,
        *,
        list_id: int | str | None = None,
        clients: Sequence[int | str] | None = None,
        platform_ids: Sequence[int | str] | None = None,
        group_id: str | int | None = None,
        message: str | None = None,
        message_id: int | str | None = None,
        attachment_type: str | None = None,
        attachment_url: str | None = None,
        buttons: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        shift: float | None = None,
        time_shift: float | None = None,
        send_time: str | dt.datetime | None = None,
    ) -> Any:
        """
        Start a mass mailing to a list, to client ids, or to messenger ids of one bot.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param list_id: the list to mail.
        :param clients: client ids; a repeated id is dropped (the first kept), so nobody gets it twice.
        :param platform_ids: messenger ids, with group_id; a repeated id is dropped likewise.
        :param group_id: the bot, required with platform_ids.
        :param message: the text.
        :param message_id: a bot block to send.
        :param attachment_type: how to show the file (one of image, video, link, file, audio).
        :param attachment_url: the file's URL.
        :param buttons: buttons, with or without a hint.
        :param shift: seconds between messages (Salebot's default 0.2).
        :param time_shift: send after this many seconds from now.
        :param send_time: send at this moment ('%Y-%m-%d %H:%M:%S' or a datetime).
        :return: the decoded JSON reply.
        """
        return self._run(
            "broadcast",
            {
                "list": list_id,
                "clients": clients,
                "platform_ids": platform_ids,
                "group_id": group_id,
                "message": message,
                "message_id": message_id,
                "attachment_type": attachment_type,
                "attachment_url": attachment_url,
                "buttons": buttons,
                "shift": shift,
                "time_shift": time_shift,
                "send_time": send_time,
            },
        )

    def get_history(
        self,
        client_id: int | str,
        *,
        limit: int | str | None = None,
        start_date: str | dt.date | None = None,
        stop_date: str | dt.date | None = None,
    ) -> Any:
        """
        Read a client's message history, optionally between two dates.

        Needs the key permission ``clients_read``. ``limit`` is at most 2000. Retried on timeouts, 429 and
        5xx.

        :param client_id: the client's id in Salebot.
        :param limit: at most 2000 (the default).
        :param start_date: first day (dd.mm.yyyy), with stop_date.
        :param stop_date: last day (dd.mm.yyyy), with start_date.
        :return: the decoded JSON reply.
        """
        return self._run(
            "get_history",
            {"client_id": client_id, "limit": limit, "start_date": start_date, "stop_date": stop_date},
        )

    def clear_history(self, client_id: int | str) -> Any:
        """
        Delete a client's message history.

        Needs the key permission ``clients_write``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :return: the decoded JSON reply.
        """
        return self._run("clear_history", {"client_id": client_id})

    # ------------------------------------------------------------------------- Clients

    def assign_to_user(self, client_id: int | str, *, email: str | None = None) -> Any:
        """
        Assign a client to an employee; without email Salebot picks one.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param client_id: the client's id in Salebot.
        :param email: the employee's email.
        :return: the decoded JSON reply.
        """
        return self._run("assign_to_user", {"client_id": client_id, "email": email})

    def load_clients(self, clients: Sequence[Mapping[str, Any]]) -> Any:
        """
        Import clients; each item gets its own status and id.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param clients: items with platform_id, group_id, client_type.
        :return: the decoded JSON reply.
        """
        return self._run("load_clients", {"clients": clients})

    def add_to_list(self, list_id: int | str, clients: Sequence[int | str]) -> Any:
        """
        Add clients to a list.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param list_id: the list.
        :param clients: client ids.
        :return: the decoded JSON reply.
        """
        return self._run("add_to_list", {"list_id": list_id, "clients": clients})

    def remove_from_list(self, list_id: int | str, clients: Sequence[int | str]) -> Any:
        """
        Remove clients from a list.

        Needs the key permission ``clients_write``. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param list_id: the list.
        :param clients: client ids.
        :return: the decoded JSON reply.
        """
        return self._run("remove_from_list", {"list_id": list_id, "clients": clients})

    def get_clients(
        self,
        *,
        offset: int | str | None = None,
        limit: int | str | None = None,
        list_id: int | str | None = None,
        reverse: bool | None = None,
    ) -> Any:
        """
        Read one page of the project's clients (or of a list's).

        Needs the key permission ``clients_read``. ``limit`` is at most 500. Retried on timeouts, 429 and
        5xx.

        :param offset: how many to skip.
        :param limit: page size, at most 500 (the default).
        :param list_id: only the clients of this list.
        :param reverse: oldest first; only without list.
        :return: the decoded JSON reply.
        """
        return self._run(
            "get_clients", {"offset": offset, "limit": limit, "list": list_id, "reverse": reverse}
        )

    def delete_clients(self, client_ids: Sequence[int | str]) -> Any:
        """
        Delete clients.

        Needs the key permission ``clients_delete``. At most 500 ``client_ids`` per request: more is refused
        before sending; use :meth:`iter_chunked`. A send: retried only when surely not processed, never
        after a timeout or a 5xx.

        :param client_ids: client ids, at most 500.
        :return: the decoded JSON reply.
        """
        return self._run("delete_clients", {"client_ids": client_ids})

    # ------------------------------------------------------------------------- Variables

    def save_variables(
        self,
        variables: Mapping[str, Any],
        *,
        client_id: int | str | None = None,
        clients: Sequence[int | str] | None = None,
    ) -> Any:
        """
        Save variables into the client's current deal, or into the profile with a 'client.' prefix.

        Needs the key permission ``clients_write``. Retried on timeouts, 429 and 5xx.

        :param client_id: one client.
        :param clients: several clients, the same variables for each.
        :param variables: name -> value.
        :return: the decoded JSON reply.
        """
        return self._run(
            "save_variables", {"client_id": client_id, "clients": clients, "variables": variables}
        )

    def get_variables(self, client_id: int | str) -> Any:
        """
        Read a client's variables.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :return: the decoded JSON reply.
        """
        return self._run("get_variables", {"client_id": client_id})

    # ------------------------------------------------------------------------- Finding a client id

    def find_client_id_by_platform_id(
        self, platform_ids: Sequence[int | str], *, group_id: str | int | None = None
    ) -> Any:
        """
        Find clients (with their variables) by messenger ids.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param platform_ids: messenger ids.
        :param group_id: the bot's identifier.
        :return: the decoded JSON reply.
        """
        return self._run(
            "find_client_id_by_platform_id", {"platform_ids": platform_ids, "group_id": group_id}
        )

    def online_chat_client_id(
        self, recipient: str | int, *, tag: str | None = None, name: str | None = None
    ) -> Any:
        """
        Client id of a site's online-chat visitor (SaleBotPro.recipient_id).

        Needs the key permission ``clients_write``. Retried on timeouts, 429 and 5xx.

        :param recipient: the dialogue id on the site.
        :param tag: the client's tag.
        :param name: the client's name.
        :return: the decoded JSON reply.
        """
        return self._run("online_chat_client_id", {"recipient": recipient, "tag": tag, "name": name})

    def whatsapp_client_id(self, phone: str | int, *, group_id: str | int | None = None) -> Any:
        """
        Client id for a WhatsApp number (HTTP 404 when there is none).

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param phone: the phone.
        :param group_id: the bot's identifier.
        :return: the decoded JSON reply.
        """
        return self._run("whatsapp_client_id", {"phone": phone, "group_id": group_id})

    def find_client_id_by_phone(self, phone: str | int) -> Any:
        """
        Client id by phone; searches WhatsApp clients and variables.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param phone: the phone.
        :return: the decoded JSON reply.
        """
        return self._run("find_client_id_by_phone", {"phone": phone})

    def find_client_id_by_email(self, email: str) -> Any:
        """
        Client id by email; searches variables.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param email: the email address.
        :return: the decoded JSON reply.
        """
        return self._run("find_client_id_by_email", {"email": email})

    def find_client_id_by_var(
        self,
        var: str,
        val: str | int | float | bool,
        *,
        group_id: str | int | None = None,
        search_in: str | None = None,
    ) -> Any:
        """
        Client id by the value of a variable.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param var: variable name.
        :param val: variable value.
        :param group_id: the bot's identifier.
        :param search_in: 'order' to search deal variables (one of order).
        :return: the decoded JSON reply.
        """
        return self._run(
            "find_client_id_by_var", {"var": var, "val": val, "group_id": group_id, "search_in": search_in}
        )

    def find_latest_client_id_by_var(self, var: str, val: str | int | float | bool) -> Any:
        """
        Id of the most recently created client with var=val (client and deal variables).

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param var: variable name.
        :param val: variable value.
        :return: the decoded JSON reply.
        """
        return self._run("find_latest_client_id_by_var", {"var": var, "val": val})

    def find_all_client_id_by_var(self, var: str, val: str | int | float | bool) -> Any:
        """
        Ids of every client with var=val.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param var: variable name.
        :param val: variable value.
        :return: the decoded JSON reply.
        """
        return self._run("find_all_client_id_by_var", {"var": var, "val": val})

    def find_all_client_id_by_several_vars(self, variables: Mapping[str, Any]) -> Any:
        """
        Ids of the clients that have all of up to 3 name=value pairs.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param variables: up to 3 name -> value pairs.
        :return: the decoded JSON reply.
        """
        return self._run("find_all_client_id_by_several_vars", {"variables": variables})

    def find_clients(
        self, q: Mapping[str, Any], *, search_in: str | None = None, include_all: bool | None = None
    ) -> Any:
        """
        Ids of the clients whose variables match conditions (_in, _not_in, _not).

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param q: the conditions.
        :param search_in: 'order' to search deal variables (one of order).
        :param include_all: True (default): all conditions; False: any one.
        :return: the decoded JSON reply.
        """
        return self._run("find_clients", {"q": q, "search_in": search_in, "include_all": include_all})

    # ------------------------------------------------------------------------- Deals (orders) in SalebotCRM

    def get_current_order_id(self, client_id: int | str) -> Any:
        """
        The id of the client's current deal.

        Needs the key permission ``crm_read``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :return: the decoded JSON reply.
        """
        return self._run("get_current_order_id", {"client_id": client_id})

    def get_orders(self, client_id: int | str, *, order_status: int | str | None = None) -> Any:
        """
        The ids of the client's deals, optionally by status.

        Needs the key permission ``crm_read``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :param order_status: 0 active, 1 won, 2 lost (one of 0, 1, 2).
        :return: the decoded JSON reply.
        """
        return self._run("get_orders", {"client_id": client_id, "order_status": order_status})

    def move_order_to_next_state(self, client_id: int | str, *, order_id: int | str | None = None) -> Any:
        """
        Move a deal to the next state of its funnel.

        Needs the key permission ``crm_write``. A send: retried only when surely not processed, never after
        a timeout or a 5xx.

        :param client_id: the client's id in Salebot.
        :param order_id: the deal; when omitted, the client's current deal, looked up first with
            ``get_current_order_id`` and then sent explicitly (the vendor documents the fallback to
            the current deal only for ``get_order_state``).
        :return: the decoded JSON reply.
        """
        params = {"client_id": client_id, "order_id": order_id}
        validate("move_order_to_next_state", params)
        return self._run("move_order_to_next_state", self._with_order(params))

    def get_order_vars(
        self, client_id: int | str, variables: Sequence[str], *, order_id: int | str | None = None
    ) -> Any:
        """
        Read variables of a deal.

        Needs the key permission ``crm_read``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :param order_id: the deal; when omitted, the client's current deal, looked up first with
            ``get_current_order_id`` and then sent explicitly.
        :param variables: variable names.
        :return: the decoded JSON reply.
        """
        params = {"client_id": client_id, "order_id": order_id, "variables": variables}
        validate("get_order_vars", params)
        return self._run("get_order_vars", self._with_order(params))

    def set_order_vars(
        self, client_id: int | str, variables: Mapping[str, Any], *, order_id: int | str | None = None
    ) -> Any:
        """
        Write variables of a deal.

        Needs the key permission ``crm_write``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :param order_id: the deal; when omitted, the client's current deal, looked up first with
            ``get_current_order_id`` and then sent explicitly.
        :param variables: name -> value.
        :return: the decoded JSON reply.
        """
        params = {"client_id": client_id, "order_id": order_id, "variables": variables}
        validate("set_order_vars", params)
        return self._run("set_order_vars", self._with_order(params))

    def _with_order(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill in ``order_id`` with the client's current deal when it was not given."""
        if params["order_id"] is not None:
            return params
        client_id = params["client_id"]
        order_id = reply_field("get_current_order_id", self.get_current_order_id(client_id), "order_id")
        if order_id is None:
            raise SalebotNotFoundError(
                f"Salebot get_current_order_id: client {client_id} has no current deal; give 'order_id'",
                action="get_current_order_id",
            )
        if not is_id(order_id):
            raise SalebotAPIError(
                f"Salebot get_current_order_id replied with an order_id that is not an id: "
                f"a JSON {type(order_id).__name__}",
                action="get_current_order_id",
            )
        return {**params, "order_id": order_id}

    def create_order(
        self,
        *,
        client_id: int | str | None = None,
        phone: str | int | None = None,
        email: str | None = None,
        name: str | None = None,
        description: str | None = None,
        budget: float | None = None,
        state_id: int | str | None = None,
    ) -> Any:
        """
        Create a deal; by phone or email a missing client is created (priority client_id > phone > email).

        Needs the key permission ``crm_write``. A send: retried only when surely not processed, never after
        a timeout or a 5xx.

        :param client_id: the client.
        :param phone: find or create the client by phone.
        :param email: find or create the client by email.
        :param name: the deal's name.
        :param description: the deal's description.
        :param budget: the deal's value.
        :param state_id: the funnel state to put it in.
        :return: the decoded JSON reply.
        """
        return self._run(
            "create_order",
            {
                "client_id": client_id,
                "phone": phone,
                "email": email,
                "name": name,
                "description": description,
                "budget": budget,
                "state_id": state_id,
            },
        )

    def set_order_state(self, client_id: int | str, state_id: int | str) -> Any:
        """
        Put the client's deal into a funnel state.

        Needs the key permission ``crm_write``. A send: retried only when surely not processed, never after
        a timeout or a 5xx.

        :param client_id: the client's id in Salebot.
        :param state_id: the funnel state.
        :return: the decoded JSON reply.
        """
        return self._run("set_order_state", {"client_id": client_id, "state_id": state_id})

    def get_order_state(self, client_id: int | str, *, order_id: int | str | None = None) -> Any:
        """
        The funnel state of a deal (the current deal by default).

        Needs the key permission ``crm_read``. Retried on timeouts, 429 and 5xx.

        :param client_id: the client's id in Salebot.
        :param order_id: the deal; the client's current deal when omitted.
        :return: the decoded JSON reply.
        """
        return self._run("get_order_state", {"client_id": client_id, "order_id": order_id})

    # ------------------------------------------------------------------------- Other

    def check_whatsapp(self, phone: str | int) -> Any:
        """
        Whether a phone number has WhatsApp (needs WhatsApp connected).

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :param phone: the phone, any format.
        :return: the decoded JSON reply.
        """
        return self._run("check_whatsapp", {"phone": phone})

    def connected_channels(self) -> Any:
        """
        The messengers connected to the project, with their group_id.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :return: the decoded JSON reply.
        """
        return self._run("connected_channels", {})

    def get_messages(self) -> Any:
        """
        The blocks of the bot's scheme.

        Needs the key permission ``clients_read``. Retried on timeouts, 429 and 5xx.

        :return: the decoded JSON reply.
        """
        return self._run("get_messages", {})
