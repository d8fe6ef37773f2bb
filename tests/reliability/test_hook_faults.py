"""
The hook's fault matrix: every failure a call can meet, for a read and for a send, held to DESIGN.md.

Each row of ``MATRIX`` is one fault. Its columns say what the error and retry policy of DESIGN.md
requires of a read (``get_variables``, or ``get_clients`` where only it can be refused), a send to
one client (``message``) and a send to several (``broadcast``), made through ``SalebotHook``
against the emulator (a real local HTTP server):

- ``answered``: what the server answered each attempt, in order (so how many attempts the hook
  made, and that the emulator received exactly those): reads retry timeouts, connection errors,
  429 and 5xx; sends retry only when the request surely was not processed (the connection never
  opened, or 429 with ``Retry-After``, which is waited out), never after a read timeout, a reset
  or a 5xx;
- the error class (exactly that class, from ``salebot_provider.exceptions``), the phrases its
  message must hold, and whether it is ``in_doubt``; a send's in-doubt error also says so in words
  (``IN_DOUBT_NOTE``), and no other error does;
- ``delivered``: how many times each recipient is in the emulator's outbox afterwards: at most
  once always, exactly once where the emulator processed the request (a timeout, a reset or an
  invalid body after processing, "processed, then 502", a 429 waited out), never where it refused.

The emulator produces every fault but two, which ``SCRIPTED`` plays on the ``ScriptedServer`` of
``tests/conftest.py`` (a real local server too): a reply cut half-way through its body (the
emulator's ``reset`` closes before any byte of the reply), and HTTP 404 ``client_not_found`` for a
read (the emulator answers a read about an unknown client with HTTP 200 ``client_not_found``, as
the vendor documents; only ``message`` answers 404).

Every error, its repr and traceback, and every log line are checked to hold no API key.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from salebot_provider.api import IN_DOUBT_NOTE, PERMISSIONS
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotError,
    SalebotNotFoundError,
    SalebotPermissionError,
)
from salebot_provider.hooks import SalebotHook
from tests.conftest import API_KEY, Reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from salebot_provider.testing import SalebotEmulator
    from tests.conftest import ScriptedServer

#: Retries after the first attempt; a read that keeps failing is tried ATTEMPTS times.
MAX_RETRIES = 2
ATTEMPTS = MAX_RETRIES + 1
#: The connection's timeout, and the latency that outlasts it (the emulator then still processes).
TIMEOUT = 2.0
LATENCY = 3.0
#: The connection of every emulator case: quick timeouts, no backoff (429 waits only Retry-After).
EXTRAS = {"backoff_factor": 0, "max_retries": MAX_RETRIES, "timeout": TIMEOUT}

#: What the server "answered" an attempt that it closed without a reply (the emulator logs 0).
RESET = 0
#: An attempt that never reached a server: the connection was refused.
REFUSED = -1

READ, SEND, BROADCAST = "read", "send", "broadcast"
OPS = (READ, SEND, BROADCAST)

#: Which call the case makes: to known clients, about an unknown client, or one the service
#: refuses with HTTP 200 and ``status: fail`` (an unknown list, an unknown bot block).
KNOWN, UNKNOWN_CLIENT, REFUSED_PARAMS = "known", "unknown client", "refused params"
MISSING_CLIENT = 987_654_321
MISSING_LIST = 999_999
MISSING_BLOCK = 999


@dataclass(frozen=True)
class Policy:
    """What DESIGN.md requires of one call meeting one fault."""

    answered: tuple[int, ...]
    error: type[SalebotError] | None = None
    says: tuple[str, ...] = ()
    in_doubt: bool | None = None
    delivered: int = 0


@dataclass(frozen=True)
class Rig:
    """What a case's set-up works with: the emulator, the action under test, the connection."""

    emulator: SalebotEmulator
    monkeypatch: pytest.MonkeyPatch
    action: str

    def connect(self, *, host: str | None = None, key: str | None = None) -> None:
        conn = json.loads(self.emulator.connection_json(**EXTRAS))
        conn["host"] = host or conn["host"]
        conn["password"] = key or conn["password"]
        self.monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", json.dumps(conn))


@dataclass(frozen=True)
class Case:
    """One fault, and the policy for each kind of call (None: the case does not apply to it)."""

    name: str
    arrange: Callable[[Rig], None]
    target: str
    read: Policy
    send: Policy
    broadcast: Policy | None

    def policy(self, op: str) -> Policy | None:
        return {READ: self.read, SEND: self.send, BROADCAST: self.broadcast}[op]


def fault(**spec: Any) -> Callable[[Rig], None]:
    """Inject an emulator fault on the action under test (every request, unless ``times`` says)."""

    def arrange(rig: Rig) -> None:
        rig.emulator.inject(rig.action, **spec)

    return arrange


def refused(rig: Rig) -> None:
    """Point the connection at a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rig.connect(host=f"http://127.0.0.1:{port}")


def key_without_permission(rig: Rig) -> None:
    """A key that may only read the CRM: neither clients_read nor clients_write."""
    rig.connect(key=rig.emulator.add_key(["crm_read"]))


def server_error(status: int, *, html: bool = False) -> Case:
    says = (f"HTTP {status}", "a server error", *(("502 Bad Gateway",) if html else ()))
    fails_once = Policy((status,), SalebotAPIError, says, in_doubt=True)
    return Case(
        f"{'HTML error page ' if html else ''}{status}",
        fault(status=status, html=True) if html else fault(status=status),
        KNOWN,
        read=Policy((status,) * ATTEMPTS, SalebotAPIError, says, in_doubt=True),
        send=fails_once,
        broadcast=fails_once,
    )


def _in_doubt(answer: int, *says: str, error: type[SalebotError], delivered: int = 1) -> Policy:
    """A send that failed after the request went out: one attempt, in doubt."""
    return Policy((answer,), error, says, in_doubt=True, delivered=delivered)


def _refusal(answer: int, error: type[SalebotError], *says: str) -> Policy:
    """A definite "no" from the service: one attempt, not in doubt, nothing delivered."""
    return Policy((answer,), error, says, in_doubt=False)


NO_PERMISSION = ("HTTP 403", "WRONG_ACTION", "lacks the permission")
# fmt: off
MATRIX = [
    Case("429 with Retry-After", fault(status=429, retry_after=1, times=1), KNOWN,
         read=Policy((429, 200)),
         send=Policy((429, 200), delivered=1),
         broadcast=Policy((429, 200), delivered=1)),
    *(server_error(status) for status in (500, 502, 503, 504)),
    Case("read timeout", fault(latency=LATENCY), KNOWN,
         read=Policy((200,) * ATTEMPTS, SalebotConnectionError, (f"no whole reply within {TIMEOUT:g}s",),
                     in_doubt=True),
         send=_in_doubt(200, f"no whole reply within {TIMEOUT:g}s after sending",
                        error=SalebotConnectionError),
         broadcast=_in_doubt(200, "after sending", error=SalebotConnectionError)),
    Case("refused connection", refused, KNOWN,
         read=Policy((REFUSED,) * ATTEMPTS, SalebotConnectionError, ("no reply (nothing was sent)",),
                     in_doubt=False),
         send=Policy((REFUSED,) * ATTEMPTS, SalebotConnectionError, ("no reply (nothing was sent)",),
                     in_doubt=False),
         broadcast=Policy((REFUSED,) * ATTEMPTS, SalebotConnectionError, ("nothing was sent",),
                          in_doubt=False)),
    Case("reset mid-reply", fault(reset=True, processed=True), KNOWN,
         read=Policy((RESET,) * ATTEMPTS, SalebotConnectionError, ("the connection broke after sending",),
                     in_doubt=True),
         send=_in_doubt(RESET, "no reply:", error=SalebotConnectionError),
         broadcast=_in_doubt(RESET, "no reply:", error=SalebotConnectionError)),
    server_error(502, html=True),
    Case("invalid JSON", fault(invalid_json=True, processed=True), KNOWN,
         read=Policy((200,) * ATTEMPTS, SalebotAPIError, ("HTTP 200", "the reply is not JSON"),
                     in_doubt=True),
         send=_in_doubt(200, "HTTP 200", "the reply is not JSON", error=SalebotAPIError),
         broadcast=_in_doubt(200, "the reply is not JSON", error=SalebotAPIError)),
    Case("HTTP 200 with status fail", lambda rig: None, REFUSED_PARAMS,
         read=_refusal(200, SalebotAPIError, "HTTP 200", "status 'fail'", f"List {MISSING_LIST} not found"),
         send=_refusal(200, SalebotAPIError, "HTTP 200", "status 'fail'", f"Block {MISSING_BLOCK} not found"),
         broadcast=_refusal(200, SalebotAPIError, "status 'fail'", f"List {MISSING_LIST} not found")),
    # The vendor answers client_not_found with HTTP 200, except message (observed: 404). A broadcast
    # to unknown ids skips them, so it has no such refusal.
    Case("404 client_not_found", lambda rig: None, UNKNOWN_CLIENT,
         read=_refusal(200, SalebotNotFoundError, "HTTP 200", "status 'client_not_found'"),
         send=_refusal(404, SalebotNotFoundError, "HTTP 404", "status 'client_not_found'"),
         broadcast=None),
    Case("403 WRONG_ACTION", key_without_permission, KNOWN,
         read=_refusal(403, SalebotPermissionError, *NO_PERMISSION, "'clients_read'",
                       PERMISSIONS["clients_read"]),
         send=_refusal(403, SalebotPermissionError, *NO_PERMISSION, "'clients_write'",
                       PERMISSIONS["clients_write"]),
         broadcast=_refusal(403, SalebotPermissionError, *NO_PERMISSION, "'clients_write'")),
    Case("processed, then 502", fault(status=502, processed=True, times=1), KNOWN,
         read=Policy((502, 200)),
         send=_in_doubt(502, "HTTP 502", "a server error", error=SalebotAPIError),
         broadcast=_in_doubt(502, "HTTP 502", error=SalebotAPIError)),
]
# fmt: on


def request_for(
    op: str, target: str, a: int, b: int
) -> tuple[str, Callable[[SalebotHook], Any], tuple[int, ...]]:
    """The action, the call and its recipients for one kind of call on one target."""
    if op == READ:
        if target == REFUSED_PARAMS:
            return "get_clients", lambda hook: hook.get_clients(list_id=MISSING_LIST), ()
        client = MISSING_CLIENT if target == UNKNOWN_CLIENT else a
        return "get_variables", lambda hook: hook.get_variables(client), ()
    if op == SEND:
        client = MISSING_CLIENT if target == UNKNOWN_CLIENT else a
        block = MISSING_BLOCK if target == REFUSED_PARAMS else None
        return "message", lambda hook: hook.message(client, message="hello", message_id=block), (client,)
    if target == REFUSED_PARAMS:
        return "broadcast", lambda hook: hook.broadcast(list_id=MISSING_LIST, message="hello"), ()
    return "broadcast", lambda hook: hook.broadcast(clients=[a, b], message="hello"), (a, b)


def count_requests(hook: SalebotHook, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when each HTTP request the hook's session makes starts (refused ones included)."""
    session = hook.session
    real = session.request
    started: list[float] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        started.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(session, "request", counted)
    return started


def settle(emulator: SalebotEmulator, action: str, count: int) -> list[Any]:
    """
    The emulator's records of ``action`` once ``count`` of them are in (or after 10 s).

    The emulator logs a request when it has answered it, and it answers a timed-out request after
    the hook gave up: waiting here keeps the counts exact and the next test's log clean.
    """
    deadline = time.monotonic() + 10.0
    while True:
        records = [r for r in emulator.requests if r.action == action]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def check_error(error: BaseException | None, expected: Policy, op: str, action: str, key: str) -> None:
    """The error is exactly the expected class, says what it must, and holds no key."""
    if expected.error is None:
        assert error is None, f"expected success, got {error!r}"
        return
    assert type(error) is expected.error, f"expected {expected.error.__name__}, got {error!r}"
    assert isinstance(error, SalebotError)
    text = str(error)
    for phrase in expected.says:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    assert f"Salebot {action}" in text  # the error names the action
    assert error.action == action
    assert error.in_doubt is expected.in_doubt
    # A send that may have gone through says so in words; nothing else does.
    assert (IN_DOUBT_NOTE in text) == (op != READ and bool(expected.in_doubt)), text
    shown = "".join((text, repr(error), *traceback.format_exception(error)))
    assert key not in shown


def matrix_params() -> list[Any]:
    return [
        pytest.param(case, op, id=f"{case.name}-{op}")
        for case in MATRIX
        for op in OPS
        if case.policy(op) is not None
    ]


@pytest.mark.parametrize(("case", "op"), matrix_params())
def test_fault_matrix_against_the_emulator(
    case: Case,
    op: str,
    salebot_emulator: SalebotEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = salebot_emulator
    expected = case.policy(op)
    assert expected is not None
    a, b = emulator.add_client("100001"), emulator.add_client("100002")
    assert MISSING_CLIENT not in emulator.state.clients
    action, call, recipients = request_for(op, case.target, a, b)
    rig = Rig(emulator, monkeypatch, action)
    rig.connect()
    case.arrange(rig)
    caplog.set_level(logging.DEBUG)

    error: BaseException | None = None
    with SalebotHook() as hook:
        started = count_requests(hook, monkeypatch)
        try:
            reply = call(hook)
        except SalebotError as exc:
            error = exc
        else:
            assert reply["status"] == "success"

    # Retried or not: the hook's attempts, and what the emulator received and answered to each.
    assert len(started) == len(expected.answered)
    reached = [status for status in expected.answered if status != REFUSED]
    # Wait for every request the hook made, even one too many, so that none lands in the next test.
    records = settle(emulator, action, len(started) if reached else 0)
    assert [r.status for r in records] == reached
    # A 429 is waited out for its Retry-After (1 s here; the backoff is 0), then tried again.
    for refused_one, next_one in itertools.pairwise(records):
        if refused_one.status == 429:
            assert next_one.time - refused_one.time >= 0.9

    check_error(error, expected, op, action, emulator.api_key)

    # Nobody messaged twice: each recipient is in the outbox exactly `delivered` times, nobody else.
    outbox = Counter(item.client_id for item in emulator.outbox)
    assert outbox == Counter(dict.fromkeys(recipients, expected.delivered) if expected.delivered else {})
    assert emulator.api_key not in caplog.text


@dataclass(frozen=True)
class ScriptedCase:
    """A fault the emulator cannot produce, played by the ScriptedServer on every request."""

    name: str
    reply: Reply
    read: Policy
    send: Policy
    broadcast: Policy | None

    def policy(self, op: str) -> Policy | None:
        return {READ: self.read, SEND: self.send, BROADCAST: self.broadcast}[op]


HALF = {"status": "success", "variables": {"client.name": "Анна"}, "order_variables": {}}
# fmt: off
SCRIPTED = [
    ScriptedCase("reset mid-reply, body cut half-way", Reply(body=HALF, truncate=True),
         read=Policy((200,) * ATTEMPTS, SalebotConnectionError, ("the connection broke after sending",),
                     in_doubt=True),
         send=Policy((200,), SalebotConnectionError, ("no reply:",), in_doubt=True),
         broadcast=Policy((200,), SalebotConnectionError, ("no reply:",), in_doubt=True)),
    ScriptedCase("HTTP 404 client_not_found", Reply(404, {"status": "client_not_found"}),
         read=_refusal(404, SalebotNotFoundError, "HTTP 404", "status 'client_not_found'"),
         send=_refusal(404, SalebotNotFoundError, "HTTP 404", "status 'client_not_found'"),
         broadcast=None),
]
# fmt: on


@pytest.mark.parametrize(
    ("case", "op"),
    [
        pytest.param(case, op, id=f"{case.name}-{op}")
        for case in SCRIPTED
        for op in OPS
        if case.policy(op) is not None
    ],
)
def test_fault_matrix_against_a_scripted_server(
    case: ScriptedCase, op: str, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    expected = case.policy(op)
    assert expected is not None
    server.default = case.reply
    action, call, _ = request_for(op, KNOWN, 42, 43)
    caplog.set_level(logging.DEBUG)

    with SalebotHook() as hook, pytest.raises(SalebotError) as info:
        call(hook)

    # Each attempt reached the server; a send that may have been processed was not sent again.
    assert [seen.action for seen in server.seen] == [action] * len(expected.answered)
    check_error(info.value, expected, op, action, API_KEY)
    assert API_KEY not in caplog.text
