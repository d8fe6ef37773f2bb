"""Every operator and the sensor under four faults: the error and retry policy of DESIGN.md, case by case.

The matrix below is the whole test: 15 subjects (the 13 operators, ``OrderStateSensor`` poking, and the
sensor deferred to its ``OrderStateTrigger``) times 4 faults injected into the emulator (a 429; a 502
before the request is processed; a 502 after it was processed; a read timeout: the reply
comes 2.5 s after the request, the connection's ``timeout`` is 1 s). Operators run with a
``task_state_store`` (Airflow 3.3's, as the conftest's ``StateStore``), and an Airflow retry is a
fresh operator run with the same store.

Each cell is one of three policies, and each case proves it from what the emulator saw and did:

- ``RETRIED``: the hook retries the failed request (a read, an idempotent write, or a send answered
  429, which surely was not processed); the task completes and everything is applied once.
- ``PART_SENT``: a chunked send is never repeated once it may have been processed. The try fails
  part-way with an ordinary ``SalebotError`` naming what was sent, what is in doubt and what was not
  sent; the retry sends only the rest and fails for good (``AirflowFailException``) naming the ones
  in doubt; a further clear sends nothing.
- ``IN_DOUBT``: a single send in doubt fails for good at once (``AirflowFailException``), and a retry
  never sends it again.

From the emulator's state and request log: no recipient is messaged (or changed) twice, the ones in
doubt were applied exactly once when the fault came after processing and never when it came before,
no request carried an id that an earlier request had carried (429s aside), and every row of
``LoadClientsOperator`` ends loaded, failed with a reason, in doubt, or not tried.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from salebot_provider.exceptions import SalebotError
from salebot_provider.operators import (
    AddToListOperator,
    BroadcastOperator,
    CallbackOperator,
    CreateOrderOperator,
    ExportClientsOperator,
    FindClientsOperator,
    GetOrderVariablesOperator,
    LoadClientsOperator,
    RemoveFromListOperator,
    SaveVariablesOperator,
    SendMessageOperator,
    SetOrderStateOperator,
    SetOrderVariablesOperator,
)
from salebot_provider.sensors import OrderStateSensor
from salebot_provider.triggers import order_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from salebot_provider.testing import SalebotEmulator
    from salebot_provider.testing.emulator import RequestRecord
    from tests.operators.conftest import StateStore

# ------------------------------------------------------------------------------ the faults

#: The connection's timeout in the read-timeout case, and the reply's injected delay.
TIMEOUT, LATENCY = 1.0, 2.5
FAULTS: dict[str, dict[str, Any]] = {
    "429": {"status": 429},
    "502": {"status": 502},
    "processed-502": {"status": 502, "processed": True},
    "read-timeout": {"latency": LATENCY},
}
#: Whether the emulator applied the faulted request (a late reply is still processed).
PROCESSED = {"429": False, "502": False, "processed-502": True, "read-timeout": True}
#: The HTTP status the emulator logs for the faulted request (the late reply is a 200 nobody read).
LOGGED = {"429": 429, "502": 502, "processed-502": 502, "read-timeout": 200}
#: What the error names as the cause of a send in doubt.
CAUSE = {
    "502": r"HTTP 502",
    "processed-502": r"HTTP 502",
    "read-timeout": rf"no whole reply within {TIMEOUT:g}s after sending",
}

# ------------------------------------------------------------------------------ the policies

RETRIED = "retried by the hook; completes, everything applied once"
PART_SENT = "not retried; SalebotError with sent / in doubt / not sent; the retry sends the rest, then fails"
IN_DOUBT = "not retried; AirflowFailException at once; a retry sends nothing"

MATRIX: dict[str, tuple[str, str, str, str]] = {
    # subject: (429, 502 before processing, processed then 502, read timeout)
    "BroadcastOperator": (RETRIED, PART_SENT, PART_SENT, PART_SENT),
    "AddToListOperator": (RETRIED, PART_SENT, PART_SENT, PART_SENT),
    "RemoveFromListOperator": (RETRIED, PART_SENT, PART_SENT, PART_SENT),
    "LoadClientsOperator": (RETRIED, PART_SENT, PART_SENT, PART_SENT),
    "SendMessageOperator": (RETRIED, IN_DOUBT, IN_DOUBT, IN_DOUBT),
    "CallbackOperator": (RETRIED, IN_DOUBT, IN_DOUBT, IN_DOUBT),
    "CreateOrderOperator": (RETRIED, IN_DOUBT, IN_DOUBT, IN_DOUBT),
    "SetOrderStateOperator": (RETRIED, IN_DOUBT, IN_DOUBT, IN_DOUBT),
    "SaveVariablesOperator": (RETRIED, RETRIED, RETRIED, RETRIED),
    "SetOrderVariablesOperator": (RETRIED, RETRIED, RETRIED, RETRIED),
    "FindClientsOperator": (RETRIED, RETRIED, RETRIED, RETRIED),
    "ExportClientsOperator": (RETRIED, RETRIED, RETRIED, RETRIED),
    "GetOrderVariablesOperator": (RETRIED, RETRIED, RETRIED, RETRIED),
    "OrderStateSensor(poke)": (RETRIED, RETRIED, RETRIED, RETRIED),
    "OrderStateSensor(deferrable)": (RETRIED, RETRIED, RETRIED, RETRIED),
}

# ------------------------------------------------------------------------------ the subjects


@dataclass
class Prepared:
    """One subject made ready against a fresh emulator project."""

    #: A fresh operator, as Airflow builds one for each try.
    make: Callable[[], Any]
    #: Checks the return value of a run that completed.
    done: Callable[[Any], None]
    #: What is sent, in input order: client ids, order ids, or the rows' platform ids ([] for reads).
    units: list[Any] = field(default_factory=list)
    #: How many times the emulator applied each unit (a message in the outbox, a list membership ...).
    effects: Callable[[], Counter[Any]] = Counter
    #: The units one request carried; None where repeating a request is harmless (idempotent).
    carried: Callable[[RequestRecord], list[Any]] | None = None
    #: Units that are never applied, as they fail on their own (a bad row).
    never: frozenset[Any] = frozenset()
    #: Runs a try: ``op.execute(context)`` unless the subject needs more.
    run: Callable[[Any, dict[str, Any]], Any] = lambda op, context: op.execute(context)
    #: Extra checks at a stage: "done", "stopped" (a part-sent try), "ended" (its retry).
    check: Callable[[str], None] = lambda stage: None


@dataclass(frozen=True)
class Subject:
    """An operator (or the sensor), how to run it, and the words its errors must say."""

    name: str
    #: The action the fault is injected on.
    action: str
    #: Requests of that action in a run without faults.
    requests: int
    #: Requests of that action let through before the faulted one (1: mid-way).
    after: int
    prepare: Callable[[SalebotEmulator, Path], Prepared]
    #: PART_SENT: the part-sent try's message (a template over the units ``u``).
    stopped: str = ""
    #: PART_SENT: the retry's message, naming the ones in doubt.
    ended: str = ""
    #: IN_DOUBT: the send in words.
    what: str = ""


def expect(value: Any) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert result == value

    return check


def params(record: RequestRecord) -> dict[str, Any]:
    """A request's parameters: the query string and a JSON object body together."""
    return {**record.params, **(record.body if isinstance(record.body, dict) else {})}


def ids_in(name: str) -> Callable[[RequestRecord], list[int]]:
    return lambda record: [int(i) for i in params(record)[name]]


def new_clients(emulator: SalebotEmulator, n: int, **kwargs: Any) -> list[int]:
    return [emulator.add_client(f"fault-{i}", **kwargs) for i in range(n)]


def new_deal(emulator: SalebotEmulator, client_id: int, state_id: int = 101, **variables: Any) -> int:
    with emulator.state.lock:
        deal = emulator.state.add_deal(client_id, state_id)
        deal.variables.update(variables)
        return deal.id


def in_outbox(emulator: SalebotEmulator, action: str) -> Callable[[], Counter[Any]]:
    return lambda: Counter(item.client_id for item in emulator.outbox if item.action == action)


# Chunked sends: 5 units in chunks of 2, so the fault (after=1) hits the middle chunk [2:4].
CHUNK = 2


def prepare_broadcast(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    ids = new_clients(emulator, 5)
    return Prepared(
        make=lambda: BroadcastOperator(task_id="broadcast", clients=ids, message="Hi", chunk_size=CHUNK),
        done=expect({"audience": "clients", "recipients": 5, "requests": 3}),
        units=ids,
        effects=in_outbox(emulator, "broadcast"),
        carried=ids_in("clients"),
    )


def prepare_add_to_list(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    ids = new_clients(emulator, 5)
    list_id = emulator.add_list()

    def members() -> Counter[Any]:
        with emulator.state.lock:
            return Counter(set(emulator.state.lists[list_id]))

    return Prepared(
        make=lambda: AddToListOperator(task_id="add", list_id=list_id, clients=ids, chunk_size=CHUNK),
        done=expect({"list_id": list_id, "clients": 5, "requests": 3}),
        units=ids,
        effects=members,
        carried=ids_in("clients"),
    )


def prepare_remove_from_list(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    ids = new_clients(emulator, 5)
    list_id = emulator.add_list(clients=ids)

    def removed() -> Counter[Any]:
        with emulator.state.lock:
            return Counter(i for i in ids if i not in emulator.state.lists[list_id])

    return Prepared(
        make=lambda: RemoveFromListOperator(task_id="remove", list_id=list_id, clients=ids, chunk_size=CHUNK),
        done=expect({"list_id": list_id, "clients": 5, "requests": 3}),
        units=ids,
        effects=removed,
        carried=ids_in("clients"),
    )


#: Row 2 fails on its own: Salebot has no such channel.
BAD_ROW = {"platform_id": 7, "group_id": "nope", "client_type": 1}
BAD_REASON = "No connected channel with group_id nope and this client_type"


def prepare_load_clients(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    def row(platform_id: int) -> dict[str, Any]:
        return {"platform_id": platform_id, "group_id": "shop_bot", "client_type": 1}

    rows = [row(1000), BAD_ROW, row(1001), row(1002), row(1003)]
    out = tmp_path / "loaded.jsonl"

    def created() -> Counter[Any]:
        with emulator.state.lock:
            return Counter(c.platform_id for c in emulator.state.clients.values())

    def outcomes() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        # No row lost: one line per input row, in input order, each ending in one of four ways.
        assert [line["item"] for line in lines] == rows
        for line in lines:
            assert line["status"] in ("loaded", "failed", "in_doubt", "not_tried")
            if line["status"] == "loaded":
                assert emulator.client(line["id"]).platform_id == str(line["item"]["platform_id"])
            elif line["status"] == "failed":
                assert line["reason"] == BAD_REASON
            else:
                assert line["id"] is None
        assert emulator.api_key not in out.read_text()
        return lines

    statuses = {
        "done": ["loaded", "failed", "loaded", "loaded", "loaded"],
        "stopped": ["loaded", "failed", "in_doubt", "in_doubt", "not_tried"],
        "ended": ["loaded", "failed", "in_doubt", "in_doubt", "loaded"],
    }

    def check(stage: str) -> None:
        assert [line["status"] for line in outcomes()] == statuses[stage]

    def done(result: Any) -> None:
        assert {k: v for k, v in result.items() if k != "client_ids"} == {
            "loaded": 4,
            "failed": 1,
            "failures": [{"item": BAD_ROW, "reason": BAD_REASON}],
            "path": str(out),
        }
        assert [emulator.client(i).platform_id for i in result["client_ids"]] == [
            "1000",
            "1001",
            "1002",
            "1003",
        ]

    return Prepared(
        make=lambda: LoadClientsOperator(
            task_id="load", clients=rows, chunk_size=CHUNK, output_path=str(out), fail_on_item_error=False
        ),
        done=done,
        units=[str(r["platform_id"]) for r in rows],
        effects=created,
        carried=lambda record: [str(item["platform_id"]) for item in record.body],
        never=frozenset({"7"}),
        check=check,
    )


def prepare_send_message(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    return Prepared(
        make=lambda: SendMessageOperator(task_id="message", client_id=client, message="Hi"),
        done=expect({"client_id": client, "sent": True}),
        units=[client],
        effects=in_outbox(emulator, "message"),
        carried=lambda record: [int(params(record)["client_id"])],
    )


def prepare_callback(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    return Prepared(
        make=lambda: CallbackOperator(task_id="callback", client_id=client, message="start"),
        done=expect({"channel": "client", "client_id": client, "sent": True}),
        units=[client],
        effects=in_outbox(emulator, "callback"),
        carried=lambda record: [int(params(record)["client_id"])],
    )


def prepare_create_order(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)

    def deals() -> Counter[Any]:
        with emulator.state.lock:
            return Counter({client: len(emulator.state.client_deals(client))})

    def done(result: Any) -> None:
        with emulator.state.lock:
            assert [d.id for d in emulator.state.client_deals(client)] == [result]

    return Prepared(
        make=lambda: CreateOrderOperator(task_id="create", client_id=client, name="Order"),
        done=done,
        units=[client],
        effects=deals,
        carried=lambda record: [int(params(record)["client_id"])],
    )


def prepare_set_order_state(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    order = new_deal(emulator, client, 101)
    return Prepared(
        make=lambda: SetOrderStateOperator(task_id="state", client_id=client, state_id=103),
        done=expect({"client_id": client, "state_id": 103}),
        units=[client],
        effects=lambda: Counter({client: int(emulator.deal(order).state_id == 103)}),
        carried=lambda record: [int(params(record)["client_id"])],
    )


def prepare_save_variables(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    ids = new_clients(emulator, 5)
    return Prepared(
        make=lambda: SaveVariablesOperator(
            task_id="save", clients=ids, variables={"client.tier": "gold"}, chunk_size=CHUNK, max_workers=1
        ),
        done=expect({"clients": 5, "requests": 3}),
        units=ids,
        effects=lambda: Counter(i for i in ids if emulator.client(i).variables.get("tier") == "gold"),
    )


def prepare_set_order_variables(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    order = new_deal(emulator, client)
    return Prepared(
        make=lambda: SetOrderVariablesOperator(
            task_id="set_vars", client_id=client, order_id=order, variables={"paid": "yes"}
        ),
        done=expect({"client_id": client, "order_id": order, "variables": 1}),
        units=[order],
        effects=lambda: Counter({order: int(emulator.deal(order).variables.get("paid") == "yes")}),
    )


def prepare_find_clients(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    vip = new_clients(emulator, 3, variables={"segment": "vip"})
    new_clients(emulator, 2, variables={"segment": "new"})
    return Prepared(
        make=lambda: FindClientsOperator(task_id="find", q={"segment": "vip"}),
        done=expect(vip),
    )


def prepare_export_clients(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    ids = new_clients(emulator, 3)
    path = tmp_path / "clients.jsonl"

    def done(result: Any) -> None:
        assert result == {"clients": 3, "path": str(path)}
        assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ids[::-1]
        assert [p.name for p in tmp_path.iterdir()] == ["clients.jsonl"]  # no temporary file left

    return Prepared(make=lambda: ExportClientsOperator(task_id="export", path=str(path)), done=done)


def prepare_get_order_variables(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    order = new_deal(emulator, client, amount=1500)
    return Prepared(
        make=lambda: GetOrderVariablesOperator(
            task_id="get_vars", client_id=client, order_id=order, variables=["amount", "missing"]
        ),
        done=expect({"amount": 1500, "missing": None}),
    )


def sensor(client: int, order: int, **kwargs: Any) -> OrderStateSensor:
    return OrderStateSensor(
        task_id="wait",
        client_id=client,
        order_id=order,
        target_states=104,
        failure_states=105,
        poke_interval=0.05,
        timeout=30,
        **kwargs,
    )


def prepare_sensor_poke(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    order = new_deal(emulator, client, 104)
    return Prepared(make=lambda: sensor(client, order), done=expect(104))


def prepare_sensor_deferrable(emulator: SalebotEmulator, tmp_path: Path) -> Prepared:
    (client,) = new_clients(emulator, 1)
    order = new_deal(emulator, client, 101)

    def run(op: OrderStateSensor, context: dict[str, Any]) -> Any:
        # The first poke is in the worker; the deal moves on while the trigger waits.
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        with emulator.state.lock:
            emulator.state.move_deal(emulator.state.deals[order], 104)

        async def first_event() -> list[Any]:
            return [event.payload async for event in deferred.value.trigger.run()]

        (event,) = asyncio.run(asyncio.wait_for(first_event(), 30))
        assert order_state._SHARED == {}  # the trigger closed its shared client
        assert event["status"] == "success"
        return op.execute_complete(context, event)

    return Prepared(make=lambda: sensor(client, order, deferrable=True), done=expect(104), run=run)


def _listed(action: str, noun: str = "client id", items: str = "clients") -> tuple[str, str]:
    """The part-sent messages of the id senders, for 5 ids in chunks of 2 with the middle one failed."""
    stopped = (
        f"Salebot {action} stopped part-way: 2 {items} sent, 2 in doubt (it may have been processed; not "
        f"resent), 1 not sent; in doubt now: {{u[2]}}, {{u[3]}} (all in the log); the first not sent is "
        f"{noun} {{u[4]}}, number 5 of the input counting each id once. Cause: "
    )
    ended = (
        f"Salebot {action}: every {noun} was tried: 3 sent, 2 in doubt (a request failed after it may "
        f"have been processed; they were not resent). Check them in Salebot: {noun}s {{u[2]}}, {{u[3]}} "
        "(all listed in the task log)."
    )
    return stopped, ended


SUBJECTS = [
    Subject(
        "BroadcastOperator", "broadcast", 3, 1, prepare_broadcast, *_listed("broadcast", items="recipients")
    ),
    Subject("AddToListOperator", "add_to_list", 3, 1, prepare_add_to_list, *_listed("add_to_list")),
    Subject(
        "RemoveFromListOperator",
        "remove_from_list",
        3,
        1,
        prepare_remove_from_list,
        *_listed("remove_from_list"),
    ),
    Subject(
        "LoadClientsOperator",
        "load_clients",
        3,
        1,
        prepare_load_clients,
        stopped=(
            "Salebot load_clients stopped part-way: 1 rows loaded, 1 failed; rows 3-4 in doubt; row 5 not "
            "tried (rows counted from 1, in input order). Cause: "
        ),
        ended=(
            "Salebot load_clients: every row was tried: 2 loaded, 1 failed, 2 in doubt (rows 3, 4): a "
            "request or its reply failed after it may have been processed; not resent."
        ),
    ),
    Subject(
        "SendMessageOperator", "message", 1, 0, prepare_send_message, what="the message to client {u[0]}"
    ),
    Subject("CallbackOperator", "callback", 1, 0, prepare_callback, what="the callback to client_id {u[0]}"),
    Subject(
        "CreateOrderOperator",
        "create_order",
        1,
        0,
        prepare_create_order,
        what="the new deal for client_id {u[0]}",
    ),
    Subject(
        "SetOrderStateOperator",
        "set_order_state",
        1,
        0,
        prepare_set_order_state,
        what="the move of client {u[0]}'s deal to state 103",
    ),
    Subject("SaveVariablesOperator", "save_variables", 3, 1, prepare_save_variables),
    Subject("SetOrderVariablesOperator", "set_order_vars", 1, 0, prepare_set_order_variables),
    Subject("FindClientsOperator", "find_clients", 1, 0, prepare_find_clients),
    Subject("ExportClientsOperator", "get_clients", 1, 0, prepare_export_clients),
    Subject("GetOrderVariablesOperator", "get_order_vars", 1, 0, prepare_get_order_variables),
    Subject("OrderStateSensor(poke)", "get_order_state", 1, 0, prepare_sensor_poke),
    # The first request is the poke before deferring; the fault hits the trigger's first poll.
    Subject("OrderStateSensor(deferrable)", "get_order_state", 2, 1, prepare_sensor_deferrable),
]
CASES = [
    pytest.param(subject, fault, MATRIX[subject.name][column], id=f"{subject.name}-{fault}")
    for subject in SUBJECTS
    for column, fault in enumerate(FAULTS)
]

# ------------------------------------------------------------------------------ the harness


class Idle:
    """Counts the requests the emulator is still serving, so a test can wait for a late reply."""

    def __init__(self, emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
        self._busy = 0
        self._cond = threading.Condition()
        serve = emulator.handle_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._cond:
                self._busy += 1
            try:
                return serve(*args, **kwargs)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

        monkeypatch.setattr(emulator, "handle_api", counted)

    def wait(self) -> None:
        """Until no request is being served (a slow one is logged and applied when it ends)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._busy == 0, timeout=30)


@pytest.fixture
def idle(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Iterator[Idle]:
    waiter = Idle(salebot_emulator, monkeypatch)
    yield waiter
    waiter.wait()  # never leave a late request to land in the next test's project
    assert salebot_emulator.api_key not in "".join(capfd.readouterr())  # no log line holds the key


def statuses(emulator: SalebotEmulator, action: str) -> list[int]:
    """The HTTP statuses of the action's requests, in the order they arrived."""
    records = sorted((r for r in emulator.requests if r.action == action), key=lambda r: r.time)
    return [r.status for r in records]


def carried_once(emulator: SalebotEmulator, subject: Subject, prepared: Prepared) -> None:
    """Every unit went out in exactly one request that was not refused with a 429: never resent."""
    assert prepared.carried is not None
    carried = Counter(
        unit
        for record in emulator.requests
        if record.action == subject.action and record.status != 429
        for unit in prepared.carried(record)
    )
    assert carried == Counter(prepared.units)


def applied(prepared: Prepared, chunks: list[tuple[int, int, bool]]) -> Counter[Any]:
    """What the emulator's state must show: each unit of a chunk ``(start, end, applied)`` once, or never."""
    wanted: Counter[Any] = Counter()
    for start, end, done in chunks:
        for unit in prepared.units[start:end]:
            if done and unit not in prepared.never:
                wanted[unit] += 1
    return wanted


def no_key(emulator: SalebotEmulator, error: BaseException) -> None:
    assert emulator.api_key not in str(error)
    assert emulator.api_key not in repr(error)


# ------------------------------------------------------------------------------ the test


@pytest.mark.parametrize(("subject", "fault", "policy"), CASES)
def test_fault_follows_the_policy_of_the_matrix(
    salebot_emulator: SalebotEmulator,
    idle: Idle,
    store: StateStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    subject: Subject,
    fault: str,
    policy: str,
) -> None:
    emulator = salebot_emulator
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        emulator.connection_json(
            backoff_factor=0,
            max_retries=2,
            rate_limit=100,
            timeout=TIMEOUT if fault == "read-timeout" else 10,
        ),
    )
    prepared = subject.prepare(emulator, tmp_path)
    emulator.inject(subject.action, after=subject.after, times=1, **FAULTS[fault])
    context: dict[str, Any] = {"task_state_store": store}
    hit = LOGGED[fault]
    everything = [(0, len(prepared.units), True)]

    if policy is RETRIED:
        prepared.done(prepared.run(prepared.make(), context))
        idle.wait()
        # The faulted request, then its retry: one request more than without the fault.
        assert statuses(emulator, subject.action) == [200] * subject.after + [hit] + [200] * (
            subject.requests - subject.after
        )
        assert prepared.effects() == applied(prepared, everything)
        if prepared.carried is not None:
            carried_once(emulator, subject, prepared)
        prepared.check("done")
        return

    cause = CAUSE[fault]
    if policy is PART_SENT:
        middle = PROCESSED[fault]
        with pytest.raises(SalebotError) as stopped:
            prepared.run(prepared.make(), context)
        error = stopped.value
        assert not isinstance(error, AirflowFailException)  # Airflow's retry is safe: it sends only the rest
        assert error.in_doubt
        text = str(error)
        assert subject.stopped.format(u=prepared.units) in text
        assert re.search(cause, text.split(". Cause: ", 1)[1])
        assert text.endswith(
            "A retry of this task sends only what was not sent; nothing that went out or is in doubt is ever "
            "resent."
        )
        no_key(emulator, error)
        idle.wait()
        assert statuses(emulator, subject.action) == [200, hit]
        assert prepared.effects() == applied(prepared, [(0, CHUNK, True), (CHUNK, 2 * CHUNK, middle)])
        prepared.check("stopped")

        # Airflow's retry: a fresh operator, the same task_state_store.
        with pytest.raises(AirflowFailException) as ended:
            prepared.run(prepared.make(), context)
        assert subject.ended.format(u=prepared.units) in str(ended.value)
        no_key(emulator, ended.value)
        idle.wait()
        assert statuses(emulator, subject.action) == [200, hit, 200]
        chunks = [(0, CHUNK, True), (CHUNK, 2 * CHUNK, middle), (2 * CHUNK, len(prepared.units), True)]
        assert prepared.effects() == applied(prepared, chunks)
        carried_once(emulator, subject, prepared)
        prepared.check("ended")

        # A clear of the task: nothing more goes out.
        with pytest.raises(AirflowFailException):
            prepared.run(prepared.make(), context)
        assert statuses(emulator, subject.action) == [200, hit, 200]
        return

    assert policy is IN_DOUBT
    what = subject.what.format(u=prepared.units)
    with pytest.raises(AirflowFailException) as failed:
        prepared.run(prepared.make(), context)
    text = str(failed.value)
    assert text.startswith(
        f"Salebot {subject.action}: {what} may have gone out (in doubt); it is not resent, so that nobody "
        "gets it twice. Check it in Salebot. Cause: "
    )
    assert re.search(cause, text)
    no_key(emulator, failed.value)
    idle.wait()
    assert statuses(emulator, subject.action) == [hit]  # never retried
    assert prepared.effects() == applied(prepared, [(0, 1, PROCESSED[fault])])

    # Airflow's retry (or a clear): it never sends again.
    with pytest.raises(AirflowFailException) as again:
        prepared.run(prepared.make(), context)
    assert str(again.value) == (
        f"Salebot {subject.action}: {what} may or may not have gone out in an earlier try of this task; it "
        "is not resent. Check it in Salebot."
    )
    idle.wait()
    assert statuses(emulator, subject.action) == [hit]
    assert prepared.effects() == applied(prepared, [(0, 1, PROCESSED[fault])])
    carried_once(emulator, subject, prepared)


def test_the_matrix_covers_every_operator_and_the_sensor_under_every_fault() -> None:
    import salebot_provider.operators as operators

    names = {name.split("(")[0] for name in MATRIX}
    assert names == {*operators.__all__, "OrderStateSensor"}
    assert [s.name for s in SUBJECTS] == list(MATRIX)
    assert len(CASES) == 15 * 4


def test_a_rate_limit_is_waited_out_for_its_retry_after_and_every_chunk_goes_once(
    salebot_emulator: SalebotEmulator, idle: Idle, store: StateStore, tmp_path: Path
) -> None:
    """The emulator's rate limit answers 429 with Retry-After: 1; the hook waits at least that long."""
    emulator = salebot_emulator
    prepared = prepare_broadcast(emulator, tmp_path)
    emulator.rate_limit(1, "broadcast")  # a burst of one, then one a second
    prepared.done(prepared.run(prepared.make(), {"task_state_store": store}))
    records = sorted((r for r in emulator.requests if r.action == "broadcast"), key=lambda r: r.time)
    assert [r.status for r in records] == [200, 429, 200, 429, 200]
    for refused, retry in zip(records[1::2], records[2::2], strict=True):
        assert retry.time - refused.time >= 1.0  # Retry-After: 1 was honoured
    assert prepared.effects() == Counter(prepared.units)
    carried_once(emulator, SUBJECTS[0], prepared)
