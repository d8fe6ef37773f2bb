"""OrderStateTrigger: wait for a deal's funnel state in the triggerer, polling Salebot asynchronously."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import random
import ssl
from collections import deque
from collections.abc import Sequence, Set
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

import httpx
from airflow.providers.common.compat.sdk import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from salebot_provider import __version__
from salebot_provider.api import (
    ConnectionSettings,
    Request,
    build_request,
    connection_settings,
    get_action,
    install_log_redaction,
    is_id,
    is_retryable,
    parse_rendered,
    parse_reply,
    redact,
    reply_field,
    validate,
)
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotValidationError,
)
from salebot_provider.quota import AsyncSharedLimiter, aget_connection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


ACTION = "get_order_state"
#: Requests per second of all the triggers on one connection in one triggerer when the connection
#: sets no ``rate_limit``: Salebot's quota is about one request per second per project.
DEFAULT_RATE_LIMIT = 1.0
#: The longest poll interval a trigger takes, in seconds (a day).
MAX_POLL_INTERVAL = 86400.0
#: The longest wait after failed polls, even when ``Retry-After`` asks for more.
MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class OrderWait:
    """
    What a sensor or a trigger waits for, checked: a deal, and the states that end the wait.

    :param client_id: the client's id in Salebot.
    :param order_id: the deal; None for the client's current deal.
    :param target_states: the states that end the wait with success.
    :param failure_states: the states that end it with a failure.
    """

    client_id: int | str
    order_id: int | str | None
    target_states: tuple[int, ...]
    failure_states: tuple[int, ...]

    @classmethod
    def checked(
        cls, client_id: Any, order_id: Any, target_states: Any, failure_states: Any, *, partial: bool = False
    ) -> OrderWait:
        """
        Check and normalise the input, before any request.

        :param client_id: the client's id: an integer or a string of digits.
        :param order_id: the deal's id, or None for the current deal.
        :param target_states: one state id or several (integers or strings of digits).
        :param failure_states: one state id or several; may be empty.
        :param partial: some states are not known yet (a template): an empty ``target_states`` is
            not an error.
        :raises SalebotValidationError: naming the parameter and the rule broken.
        """
        ids = validate(ACTION, {"client_id": client_id, "order_id": order_id})
        targets = _states("target_states", target_states)
        if not targets and not partial:
            raise _invalid("parameter 'target_states' must name at least one state id")
        failures = _states("failure_states", failure_states)
        both = sorted(set(targets) & set(failures))
        if both:
            raise _invalid(
                f"state(s) {', '.join(map(str, both))} are in both 'target_states' and 'failure_states'"
            )
        return cls(ids["client_id"], ids.get("order_id"), targets, failures)

    @property
    def deal(self) -> str:
        """The deal as messages name it."""
        if self.order_id is None:
            return f"the current deal of client {self.client_id}"
        return f"deal {self.order_id} of client {self.client_id}"

    def outcome(self, reply: Any) -> tuple[str, int] | None:
        """
        Judge a ``get_order_state`` reply.

        :param reply: the decoded reply.
        :return: ``("success", state_id)``, ``("failure", state_id)``, or None to keep waiting.
        :raises SalebotAPIError: when the reply holds no state id.
        """
        state = reply_field(ACTION, reply, "state_id")
        if not is_id(state):
            raise SalebotAPIError(
                f"Salebot {ACTION} replied without a state id for {self.deal}: {str(state)[:40]!r}",
                action=ACTION,
            )
        state_id = int(state)
        if state_id in self.target_states:
            return "success", state_id
        if state_id in self.failure_states:
            return "failure", state_id
        return None


def _invalid(message: str) -> SalebotValidationError:
    return SalebotValidationError(f"Salebot {ACTION}: {message}", action=ACTION)


def _states(name: str, value: Any) -> tuple[int, ...]:
    """One state id or several, as a DAG, a template or an XCom gives them, as a tuple of ints."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith(("[", "(")):
            # A list rendered by a template (without render_template_as_native_obj) arrives as text.
            with contextlib.suppress(ValueError):
                value = parse_rendered(value)
    items = value if isinstance(value, Sequence | Set) and not isinstance(value, str | bytes) else [value]
    states: list[int] = []
    for index, item in enumerate(items):
        if not is_id(item):
            where = name if items is not value else f"{name}[{index}]"
            raise _invalid(
                f"parameter '{where}' must be a state id (an integer or a string of ASCII digits 0-9), "
                f"or a list of them; got {str(item)[:40]!r}"
            )
        states.append(int(item))
    return tuple(dict.fromkeys(states))


class _RateLimiter:
    """
    Let requests go one at a time, ``1 / rate`` seconds apart, in the order they asked.

    A waiter cancelled in the queue (the triggerer cancels a trigger when its task times out or is
    cleared) leaves no gap behind it. ``pause`` holds back every waiter (a 429).
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._last: float = -math.inf
        self._resume: float = -math.inf
        self._queue: deque[asyncio.Future[None]] = deque()
        self._turns: asyncio.Task[None] | None = None

    def _next_turn(self) -> float:
        return max(self._last + self.interval, self._resume)

    async def acquire(self) -> None:
        """Wait for this request's turn."""
        loop = asyncio.get_running_loop()
        if not self._queue and loop.time() >= self._next_turn():
            self._last = loop.time()
            return
        turn: asyncio.Future[None] = loop.create_future()
        self._queue.append(turn)
        if self._turns is None:
            self._turns = loop.create_task(self._hand_out())
        await turn

    async def _hand_out(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                wait = self._next_turn() - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # a pause may have come meanwhile
                due = self._next_turn()
                turn = self._queue.popleft()
                if not turn.done():  # a cancelled waiter takes no turn
                    turn.set_result(None)
                    self._last = self._taken(due, loop.time())
        finally:
            self._turns = None

    def _taken(self, due: float, now: float) -> float:
        """
        The moment a turn due at ``due`` and handed out at ``now`` counts as taken.

        A busy loop hands turns out late: the schedule is kept, making up at most a tenth of a turn
        each time, so that the rate holds and the next turn never comes closer than 0.9 of one.
        """
        return max(due, now - self.interval / 10)

    @property
    def backlog(self) -> float:
        """Seconds until a request that asks now gets its turn (at least, with nobody cancelled)."""
        return len(self._queue) * self.interval

    def pause(self, seconds: float) -> None:
        """Let no request go for ``seconds``, whoever waits."""
        self._resume = max(self._resume, asyncio.get_running_loop().time() + seconds)

    def close(self) -> None:
        """Stop handing out turns (the last trigger left)."""
        if self._turns is not None:
            self._turns.cancel()


def _new_client(settings: ConnectionSettings) -> httpx.AsyncClient:
    """Build a client; in a thread, since loading CA certificates reads files."""
    install_log_redaction(("httpx", "httpcore"))  # httpx logs every request's URL at INFO
    verify: bool | ssl.SSLContext = settings.verify if isinstance(settings.verify, bool) else True
    if isinstance(settings.verify, str):
        # A context, not the path: httpx 0.28 deprecates a path.
        folder = os.path.isdir(settings.verify)
        verify = ssl.create_default_context(
            cafile=None if folder else settings.verify, capath=settings.verify if folder else None
        )
    # No timeout here: each request is bounded as a whole by its own connection's timeout.
    return httpx.AsyncClient(
        verify=verify,
        timeout=None,
        follow_redirects=False,
        headers={"Accept": "application/json", "User-Agent": f"airflow-provider-salebot/{__version__}"},
    )


class _Shared:
    """One connection's HTTP client and rate limiter, shared by the triggers of one event loop."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.limiter = _RateLimiter(settings.rate_limit or DEFAULT_RATE_LIMIT)
        #: The project's bucket in Redis, shared with every other process (``rate_limit_redis``).
        self.quota: AsyncSharedLimiter | None = None
        if settings.rate_limit_redis:
            self.quota = AsyncSharedLimiter(settings, aget_connection)
        self.users = 0
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> httpx.AsyncClient:
        """The client, built on first use."""
        async with self._lock:
            if self._client is None:
                self._client = await asyncio.to_thread(_new_client, self.settings)
        return self._client

    async def close(self) -> None:
        """Close the client's connections."""
        self.limiter.close()
        if self.quota is not None:
            await self.quota.close()
        if self._client is not None:
            await self._client.aclose()


#: (connection id, event loop, settings) -> what the triggers on that connection in that loop share.
#: The loop is part of the key because an httpx client and a limiter's clock belong to one loop; the
#: settings, so that a trigger that read an edited connection (a new key, rate or CA) uses it.
_SHARED: dict[tuple[str, asyncio.AbstractEventLoop, ConnectionSettings], _Shared] = {}


@contextlib.asynccontextmanager
async def _shared(conn_id: str, settings: ConnectionSettings) -> AsyncIterator[_Shared]:
    """Join the connection's shared client and limiter; the last trigger to leave closes them."""
    key = (conn_id, asyncio.get_running_loop(), settings)
    shared = _SHARED.get(key)
    if shared is None:
        shared = _SHARED[key] = _Shared(settings)
    shared.users += 1
    try:
        yield shared
    finally:
        shared.users -= 1
        if not shared.users:
            del _SHARED[key]
            await shared.close()


#: The connection reads under way, by connection id and event loop.
_READS: dict[tuple[str, asyncio.AbstractEventLoop], asyncio.Future[ConnectionSettings]] = {}


def _read_done(key: tuple[str, asyncio.AbstractEventLoop], read: asyncio.Future[ConnectionSettings]) -> None:
    """Forget a finished read, so that the next one reads afresh (an edited connection)."""
    if _READS.get(key) is read:
        del _READS[key]
    if not read.cancelled():
        read.exception()  # retrieved here, so an error nobody waited for is not logged as lost


async def _fetch(shared: _Shared, request: Request, settings: ConnectionSettings) -> Any:
    """Make one rate-limited request and judge the reply as the hook does."""
    client = await shared.client()
    await shared.limiter.acquire()
    if shared.quota is not None:
        await shared.quota.acquire()  # this loop's turn, then the project's, across processes
    failure: SalebotError | None = None
    where = f"Salebot {request.action} ({request.method} {request.display_path})"
    try:
        response = await asyncio.wait_for(
            client.request(
                request.method, request.url(settings.base_url, settings.api_key), params=request.query
            ),
            settings.timeout,
        )
    except (asyncio.TimeoutError, httpx.TimeoutException):
        failure = SalebotConnectionError(
            f"{where}: no whole reply within {settings.timeout:g}s", action=request.action, in_doubt=True
        )
    except httpx.HTTPError as exc:
        reason = redact(f"{type(exc).__name__}: {exc}", settings.api_key)
        failure = SalebotConnectionError(f"{where}: no reply: {reason}", action=request.action, in_doubt=True)
    if failure is not None:
        # Raised outside the except block, so that httpx's error (it may hold the URL, key
        # included) is neither the cause nor the context of ours.
        raise failure
    return parse_reply(
        request.action,
        response.status_code,
        response.content,
        retry_after=response.headers.get("Retry-After"),
        secret=settings.api_key,
        send=False,
    )


class OrderStateTrigger(BaseTrigger):
    """
    Poll a Salebot deal's funnel state until it reaches a target or a failure state.

    Yields one event: ``{"status": "success", "state_id": ...}``, ``{"status": "failure",
    "state_id": ...}`` (a failure state), or ``{"status": "error", "message": ...}`` (no such
    client or deal, a refused key, or another error that polling again would not fix). Timeouts,
    connection errors, 429 and 5xx are logged and polled through, backing off exponentially with
    jitter and honouring ``Retry-After``.

    All triggers on one connection in one triggerer share one HTTP client and one rate limiter: the
    connection's ``rate_limit`` extra, or 1 request per second when it is unset. A 429 pauses them all.

    :param client_id: the client's id in Salebot.
    :param target_states: the state id(s) that end the wait with success.
    :param order_id: the deal; None for the client's current deal (the API looks it up).
    :param failure_states: the state id(s) that end the wait with a failure.
    :param poll_interval: seconds between two polls of this deal, on average (spread by jitter).
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :raises SalebotValidationError: on bad ids, before any request.
    """

    def __init__(
        self,
        client_id: int | str,
        target_states: int | str | Sequence[int | str],
        order_id: int | str | None = None,
        failure_states: int | str | Sequence[int | str] = (),
        poll_interval: float = 60.0,
        salebot_conn_id: str = "salebot_default",
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wait = OrderWait.checked(client_id, order_id, target_states, failure_states)
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, Integral | float):
            raise _invalid(f"poll_interval must be a number of seconds; got {poll_interval!r}")
        if not 0 <= poll_interval <= MAX_POLL_INTERVAL:
            raise _invalid(
                f"poll_interval must be from 0 to {MAX_POLL_INTERVAL:g} seconds; got {poll_interval!r}"
            )
        self.poll_interval = float(poll_interval)
        self.salebot_conn_id = salebot_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the arguments: ids and the connection's id, never its key."""
        return (
            "salebot_provider.triggers.order_state.OrderStateTrigger",
            {
                "client_id": self.wait.client_id,
                "target_states": list(self.wait.target_states),
                "order_id": self.wait.order_id,
                "failure_states": list(self.wait.failure_states),
                "poll_interval": self.poll_interval,
                "salebot_conn_id": self.salebot_conn_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the deal's state settles the wait, then yield one event."""
        yield TriggerEvent(await self._poll())  # type: ignore[no-untyped-call]

    async def _settings(self) -> ConnectionSettings:
        """
        The connection's settings, read once for every trigger that asks while a read is under way.

        A triggerer that starts (or restarts) with a thousand triggers would otherwise make a
        thousand reads of the same connection at once, each a round trip to the API server and two
        to the supervisor (masking the key), and the first polls would wait for all of them.
        """
        key = (self.salebot_conn_id, asyncio.get_running_loop())
        read = _READS.get(key)
        if read is None:
            read = _READS[key] = asyncio.ensure_future(self._read_settings())
            read.add_done_callback(functools.partial(_read_done, key))
        return await asyncio.shield(read)  # one trigger cancelled does not cancel the others' read

    async def _read_settings(self) -> ConnectionSettings:
        conn = await aget_connection(self.salebot_conn_id)
        # In a thread: the secret masker talks to the supervisor, and a CA bundle is read from disk.
        return await asyncio.to_thread(connection_settings, conn)

    async def _connection(self) -> ConnectionSettings | dict[str, Any]:
        """
        The connection's settings, or an error event when there is no such connection or it is wrong.

        Any other failure to read it (the API server or the supervisor busy, as when a triggerer
        restarts with a thousand triggers) is waited out like a failed poll.
        """
        failures = 0
        while True:
            try:
                return await self._settings()
            except (AirflowNotFoundException, SalebotValidationError) as exc:
                return {"status": "error", "message": str(exc), "error": type(exc).__name__}
            except Exception as exc:
                failures += 1
                delay = min(max(self.poll_interval, 1.0) * 2 ** (failures - 1), MAX_BACKOFF)
                self.log.warning(
                    "Reading connection %r failed (%d in a row), trying again in %.0fs: %s: %s",
                    self.salebot_conn_id,
                    failures,
                    delay,
                    type(exc).__name__,
                    redact(str(exc)),
                )
                await asyncio.sleep(random.uniform(delay / 2, delay))

    def _backoff(self, failures: int, settings: ConnectionSettings, error: SalebotError) -> float:
        """Exponential, with jitter, from the poll interval (or the connection's backoff factor)."""
        ceiling = max(self.poll_interval, settings.backoff_factor) * 2 ** (failures - 1)
        delay = random.uniform(ceiling / 2, ceiling)
        return min(max(delay, getattr(error, "retry_after", None) or 0.0), MAX_BACKOFF)

    async def _poll(self) -> dict[str, Any]:
        settings = await self._connection()
        while isinstance(settings, ConnectionSettings):
            # A new ConnectionSettings back: the connection was edited; poll again with it.
            settings = await self._watch(settings)
        return settings

    async def _watch(self, settings: ConnectionSettings) -> ConnectionSettings | dict[str, Any]:
        wait = self.wait
        request = build_request(ACTION, {"client_id": wait.client_id, "order_id": wait.order_id})
        async with _shared(self.salebot_conn_id, settings) as shared:
            self.log.info(
                "Waiting for %s to reach state %s (failure states: %s), polling %s every %gs; "
                "connection %r: at most %g requests/s from this triggerer",
                wait.deal,
                ", ".join(map(str, wait.target_states)),
                ", ".join(map(str, wait.failure_states)) or "none",
                request.display_path,
                self.poll_interval,
                self.salebot_conn_id,
                1 / shared.limiter.interval,
            )
            # Triggers that start together (a triggerer restart, a mapped task) do not poll together.
            await asyncio.sleep(random.uniform(0, self.poll_interval))
            failures = 0
            while True:
                try:
                    outcome = wait.outcome(await _fetch(shared, request, settings))
                except SalebotError as error:
                    if not is_retryable(get_action(ACTION), error):
                        return await self._given_up(settings, error)
                    failures += 1
                    delay = self._backoff(failures, settings, error)
                    if getattr(error, "http_status", None) == 429:
                        # The quota is the project's: every trigger on this connection waits.
                        pause = getattr(error, "retry_after", None) or delay
                        shared.limiter.pause(min(pause, MAX_BACKOFF))
                        if shared.quota is not None:  # and every process's, through Redis
                            await shared.quota.hold(min(pause, MAX_BACKOFF))
                    self.log.warning(
                        "Polling %s failed (%d in a row), polling again in %.1fs: %s",
                        wait.deal,
                        failures,
                        delay,
                        error,
                    )
                    await asyncio.sleep(delay)
                    continue
                if outcome is not None:
                    status, state_id = outcome
                    reached = "reached" if status == "success" else "reached the failure state"
                    message = f"Salebot {wait.deal} {reached} {state_id}"
                    self.log.info("%s", message)
                    return {"status": status, "state_id": state_id, "message": message}
                failures = 0
                # The wait in the limiter's queue counts towards the interval: with many sensors
                # the queue alone spaces the polls, and sleeping first would add to every sweep.
                pause = self.poll_interval * random.uniform(0.8, 1.2) - shared.limiter.backlog
                await asyncio.sleep(max(pause, 0.0))

    async def _given_up(
        self, settings: ConnectionSettings, error: SalebotError
    ) -> ConnectionSettings | dict[str, Any]:
        """
        An error polling would not fix; unless the connection changed meanwhile (a new key).

        Returns the new settings to poll with, or the error event, naming the error's class so that
        the sensor raises the same one.
        """
        fresh = await self._connection()
        if isinstance(fresh, ConnectionSettings) and fresh != settings:
            self.log.warning(
                "Polling %s failed, but connection %r has changed since it was read: polling with "
                "the new one. The failure: %s",
                self.wait.deal,
                self.salebot_conn_id,
                error,
            )
            return fresh
        message = redact(str(error), settings.api_key)
        return {"status": "error", "message": message, "error": type(error).__name__}
