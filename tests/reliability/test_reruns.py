"""Reruns of a part-sent chunked send: Airflow's retry, a clear, a timeout, a kill, older Airflow, mapping.

Each case runs ``BroadcastOperator`` or ``LoadClientsOperator`` for real against the emulator (a real
HTTP server with state), mostly in DAG runs with ``dag.test()``: the real task runner, the real
``task_state_store`` in the metadata DB and Airflow's own automatic retries. A user's clear is
Airflow's own ``clear_task_instances`` (what the UI's Clear calls) followed by the run loop of
``dag.test()`` in the same DagRun. What they prove (DESIGN.md, docs/operators.md "When a send fails
part-way"):

- a part-sent task fails with an ordinary error where ``task_state_store`` is there, so Airflow
  retries it; the retry, or a clear, sends only what surely never went out (never a chunk that went
  out or is in doubt) and the last try fails naming the in-doubt ids or rows;
- each chunk is in the record as in flight while its request is out, and as done after. SIGTERM
  mid-chunk reaches the task runner's handler (``on_kill``) and the chunk finishes and is recorded;
  a process killed mid-chunk (as by the SIGKILL the supervisor escalates to; here a child process
  with SIGTERM's default action) leaves it in doubt, never resent; ``execution_timeout`` mid-chunk
  leaves it in doubt too;
- the retry keeps a broadcast's pace across a chunk in doubt (it may have gone out);
- a rerun on different input (its fingerprint differs) is refused before any request;
- without ``task_state_store`` the task fails with AirflowFailException, and the documented resume
  path messages each recipient once;
- of a mapped task only the failing map index is retried, and nobody is messaged twice.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG

from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators import BroadcastOperator, LoadClientsOperator
from tests.reliability.conftest import no_key, sends, task_instances

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from airflow.models.dagrun import DagRun

#: Airflow's automatic retries, at once (dag.test() waits for nothing else either).
RETRY_AT_ONCE = dt.timedelta(seconds=0)


def make_dag(dag_id: str, **default_args: Any) -> DAG:
    """A DAG of its own id for one test (the metadata DB lives for the whole session)."""
    return DAG(
        dag_id,
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        default_args={"retry_delay": RETRY_AT_ONCE, **default_args},
    )


def recorded(dag_run: DagRun, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """The task instance's ``task_state_store`` as the metadata DB holds it: key -> value."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_run.dag_id,
                TaskStateStoreModel.run_id == dag_run.run_id,
                TaskStateStoreModel.task_id == task_id,
                TaskStateStoreModel.map_index == map_index,
            )
        ).all()
        return {row.key: json.loads(row.value) for row in rows}


def clear_and_rerun(dag: DAG, dag_run: DagRun, task_id: str) -> None:
    """
    A user's Clear of one finished task instance, then the run loop of ``dag.test()`` in the same DagRun.

    ``dag.test()`` itself cannot rerun: it deletes the DagRun of its logical date first, and the
    ``task_state_store`` rows with it (a cascade). So the task instance is cleared with Airflow's
    own ``clear_task_instances`` (what the UI's Clear calls), and the loop of ``dag.test()``
    (``airflow/sdk/definitions/dag.py``) runs what became schedulable: ``update_state``, the try
    number up by one, SCHEDULED, ``_run_task``.
    """
    from airflow.models.dagrun import DagRun as DagRunModel
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).all()
        assert tis, f"no task instance {task_id} in {dag_run.run_id}"
        clear_task_instances(list(tis), session, dag_run_state=DagRunState.QUEUED)

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with create_session() as session:
        dr = session.scalar(
            select(DagRunModel).where(
                DagRunModel.dag_id == dag_run.dag_id, DagRunModel.run_id == dag_run.run_id
            )
        )
        assert dr is not None
        dr.dag = scheduler_dag
        dr.state = DagRunState.RUNNING  # what the scheduler does with a queued run
        session.commit()
        for _ in range(20):  # a bound: a run that cannot finish fails the test instead of hanging
            if dr.state != DagRunState.RUNNING:
                break
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in dr.get_task_instances(session=session):
                if ti.state == TaskInstanceState.SCHEDULED:
                    try:
                        _run_task(ti=ti, task=dag.task_dict[ti.task_id])
                    except Exception:  # dag.test() logs it and goes on; the state says the rest
                        continue
        assert dr.state != DagRunState.RUNNING, "the cleared run did not finish"


def batches(emulator: Any, action: str) -> list[list[Any]]:
    """What each request of an action carried (client ids, or rows), in order."""
    out = []
    for request in sends(emulator, action):
        body = request.body
        out.append(body if isinstance(body, list) else body.get("clients"))
    return out


def outbox_ids(emulator: Any, text: str) -> list[int]:
    return [item.client_id for item in emulator.outbox if item.text == text]


def statuses(emulator: Any, action: str) -> list[int]:
    return [request.status for request in sends(emulator, action)]


def rows(n: int, base: int) -> list[dict[str, Any]]:
    """``n`` new Telegram clients of the emulator's ``shop_bot`` to load."""
    return [{"platform_id": str(base + i), "group_id": "shop_bot", "client_type": 1} for i in range(n)]


# ------------------------------------------------------------------------------ Airflow's retry


def test_broadcast_retries_in_a_dag_run_resend_nothing_that_went_out_or_is_in_doubt(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(450, seed=51, with_deals=False)
    # Chunks of 100: the 2nd is processed then answered 502, the 4th answered 503 unprocessed.
    # Both are in doubt: the sender cannot tell them apart.
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    salebot_emulator.inject("broadcast", status=503, after=3, times=1)
    with make_dag("salebot_rel_broadcast_retry", retries=3) as dag:
        BroadcastOperator(task_id="send", clients=ids, message="Retry me", chunk_size=100)
    dag_run = run_dag(dag)
    ti = task_instances(dag_run)["send"]
    # Try 1 stopped at the 502 and try 2 at the 503, each with an ordinary error (so Airflow
    # retried); try 3 sent the last chunk and failed for good naming the in-doubt ids, though a
    # 4th try was allowed.
    assert (ti.state, ti.try_number) == ("failed", 3)
    assert batches(salebot_emulator, "broadcast") == [ids[i : i + 100] for i in range(0, 450, 100)]
    assert statuses(salebot_emulator, "broadcast") == [200, 502, 200, 503, 200]
    # The unprocessed chunk never went out; every other recipient got it once.
    assert outbox_ids(salebot_emulator, "Retry me") == ids[:300] + ids[400:]
    record = recorded(dag_run, "send")["salebot_broadcast"]
    assert (record["cursor"], record["total"], record["in_flight"]) == (450, 450, None)
    assert record["in_doubt"] == [[100, 200], [300, 400]]
    assert record["counts"] == {"sent": 250}
    out, err = capfd.readouterr()
    assert "Salebot broadcast stopped part-way: 100 recipients sent, 100 in doubt" in out + err
    assert "A retry of this task sends only what was not sent" in out + err
    assert "200 recipients sent, 200 in doubt (it may have been processed; not resent), 50 not sent" in (
        out + err
    )
    assert "every client id was tried: 250 sent, 200 in doubt" in out + err
    assert f"client ids {ids[100]}, {ids[101]}," in out + err
    logged = re.findall(r"client ids in doubt: ([0-9, ]+)", out + err)
    assert [int(i) for i in logged[-1].split(", ")] == ids[100:200] + ids[300:400]
    no_key(salebot_emulator, out, err)


def test_load_clients_retry_in_a_dag_run_loads_only_rows_not_tried_and_reports_every_row(
    salebot_emulator: Any, run_dag: Any, tmp_path: Path, capfd: Any
) -> None:
    leads = rows(7, 7_000)
    output = tmp_path / "loaded.jsonl"
    salebot_emulator.inject("load_clients", status=504, processed=True, after=1, times=1)
    with make_dag("salebot_rel_load_retry", retries=2) as dag:
        LoadClientsOperator(task_id="load", clients=leads, chunk_size=2, output_path=str(output))
    dag_run = run_dag(dag)
    ti = task_instances(dag_run)["load"]
    assert (ti.state, ti.try_number) == ("failed", 2)
    assert batches(salebot_emulator, "load_clients") == [leads[0:2], leads[2:4], leads[4:6], leads[6:7]]
    # The retry's output covers the rows loaded by the first try too (their ids were kept).
    outcome = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["status"] for row in outcome] == ["loaded"] * 2 + ["in_doubt"] * 2 + ["loaded"] * 3
    loaded = [row["id"] for row in outcome if row["status"] == "loaded"]
    assert [salebot_emulator.client(i).platform_id for i in loaded] == [
        str(7_000 + i) for i in (0, 1, 4, 5, 6)
    ]
    out, err = capfd.readouterr()
    assert "rows 3-4 in doubt; rows 5-7 not tried" in out + err
    assert "every row was tried: 5 loaded, 0 failed, 2 in doubt (rows 3, 4)" in out + err
    no_key(salebot_emulator, out, err)


def test_the_retry_after_an_in_doubt_chunk_keeps_the_pace_across_the_whole_audience(
    salebot_emulator: Any, store: Any
) -> None:
    """
    A chunk in doubt may have gone out, so the retry must schedule the next chunk after its sequence.

    docs/operators.md (BroadcastOperator, "Pacing across chunks"): each chunk begins where the
    previous one's sequence ends, so the pace holds over the whole audience and sequences never
    overlap. Here the 2nd chunk was processed, then answered 502.
    """
    ids = salebot_emulator.seed_clients(300, seed=59, with_deals=False)
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)

    def task() -> BroadcastOperator:
        return BroadcastOperator(task_id="send", clients=ids, message="Paced", chunk_size=100, shift=1)

    with pytest.raises(SalebotError):
        task().execute({"task_state_store": store})
    with pytest.raises(AirflowFailException, match="200 sent, 100 in doubt"):
        task().execute({"task_state_store": store})
    due = {item.client_id: item.due_at for item in salebot_emulator.outbox}
    assert sorted(due) == sorted(ids)  # each once
    starts = [due[ids[0]], due[ids[100]], due[ids[200]]]
    # The 3rd chunk may begin only where the 2nd one's sequence ends: 100 messages, 1 s apart.
    assert starts[2] - starts[1] >= 100 - 1e-6, f"chunk starts {starts}: the retry overlaps the doubt"
    gaps = [due[b] - due[a] for a, b in itertools.pairwise(ids)]
    assert min(gaps) >= 1 - 1e-6


# ------------------------------------------------------------------------------ a user's clear


def test_a_clear_of_the_failed_broadcast_resumes_from_the_surviving_task_state(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(300, seed=52, with_deals=False)
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    with make_dag("salebot_rel_broadcast_clear", retries=0) as dag:
        BroadcastOperator(task_id="send", clients=ids, message="Clear me", chunk_size=100)
    dag_run = run_dag(dag)
    assert task_instances(dag_run)["send"].state == "failed"
    before = recorded(dag_run, "send")["salebot_broadcast"]
    assert (before["cursor"], before["in_doubt"], before["counts"]) == (200, [[100, 200]], {"sent": 100})

    clear_and_rerun(dag, dag_run, "send")

    ti = task_instances(dag_run)["send"]
    assert (ti.state, ti.try_number) == ("failed", 2)
    # The clear kept the record: the second try sent only the third chunk.
    assert batches(salebot_emulator, "broadcast") == [ids[:100], ids[100:200], ids[200:]]
    assert outbox_ids(salebot_emulator, "Clear me") == ids
    after = recorded(dag_run, "send")["salebot_broadcast"]
    assert (after["cursor"], after["in_doubt"], after["counts"]) == (300, [[100, 200]], {"sent": 200})
    out, err = capfd.readouterr()
    assert "an earlier try of this task instance sent 100 and left 100 in doubt" in out + err
    assert "every client id was tried: 200 sent, 100 in doubt" in out + err
    assert f"client ids {ids[100]}, {ids[101]}," in out + err

    # A further clear sends nothing more, and fails again naming the same ids.
    clear_and_rerun(dag, dag_run, "send")
    ti = task_instances(dag_run)["send"]
    assert (ti.state, ti.try_number) == ("failed", 3)
    assert len(sends(salebot_emulator, "broadcast")) == 3
    out, err = capfd.readouterr()
    assert "every client id was tried: 200 sent, 100 in doubt" in out + err
    no_key(salebot_emulator, out, err)


def test_a_clear_of_the_failed_load_loads_only_the_rows_not_tried(
    salebot_emulator: Any, run_dag: Any, tmp_path: Path, capfd: Any
) -> None:
    leads = rows(5, 8_000)
    output = tmp_path / "loaded.jsonl"
    # The 2nd request never reaches Salebot's processing, but a 503 after sending is in doubt.
    salebot_emulator.inject("load_clients", status=503, after=1, times=1)
    with make_dag("salebot_rel_load_clear", retries=0) as dag:
        LoadClientsOperator(task_id="load", clients=leads, chunk_size=2, output_path=str(output))
    dag_run = run_dag(dag)
    assert task_instances(dag_run)["load"].state == "failed"
    assert [json.loads(line)["status"] for line in output.read_text().splitlines()] == [
        "loaded",
        "loaded",
        "in_doubt",
        "in_doubt",
        "not_tried",
    ]
    assert recorded(dag_run, "load")["salebot_load_clients"]["cursor"] == 4

    clear_and_rerun(dag, dag_run, "load")

    assert task_instances(dag_run)["load"].state == "failed"
    assert batches(salebot_emulator, "load_clients") == [leads[0:2], leads[2:4], leads[4:5]]
    assert statuses(salebot_emulator, "load_clients") == [200, 503, 200]
    outcome = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["status"] for row in outcome] == ["loaded", "loaded", "in_doubt", "in_doubt", "loaded"]
    # Rows 3-4 were never processed (an unprocessed 503) and never resent: not in the project.
    assert sorted(c.platform_id for c in salebot_emulator.state.clients.values()) == ["8000", "8001", "8004"]
    out, err = capfd.readouterr()
    assert "every row was tried: 3 loaded, 0 failed, 2 in doubt (rows 3, 4)" in out + err
    no_key(salebot_emulator, out, err)


def test_a_clear_on_a_changed_input_file_is_refused_by_its_fingerprint(
    salebot_emulator: Any, run_dag: Any, tmp_path: Path, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(300, seed=53, with_deals=False)
    audience = tmp_path / "audience.txt"
    audience.write_text("".join(f"{i}\n" for i in ids))
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    with make_dag("salebot_rel_broadcast_fingerprint", retries=0) as dag:
        BroadcastOperator(task_id="send", clients=str(audience), message="Pinned", chunk_size=100)
    dag_run = run_dag(dag)
    assert task_instances(dag_run)["send"].state == "failed"
    before = recorded(dag_run, "send")
    requests_before = len(salebot_emulator.requests)
    capfd.readouterr()

    # Between the tries the file changes: one recipient fewer, one new at the end.
    audience.write_text("".join(f"{i}\n" for i in [*ids[:-2], ids[-1], 40_999_999]))
    clear_and_rerun(dag, dag_run, "send")

    ti = task_instances(dag_run)["send"]
    assert (ti.state, ti.try_number) == ("failed", 2)
    assert len(salebot_emulator.requests) == requests_before  # nothing was sent
    assert recorded(dag_run, "send") == before  # and the record is as the first try left it
    out, err = capfd.readouterr()
    assert SalebotValidationError.__name__ in out + err
    assert "already sent part of a different input (its fingerprint differs)" in out + err
    assert "run it in a new DAG run" in out + err
    assert outbox_ids(salebot_emulator, "Pinned") == ids[:200]
    no_key(salebot_emulator, out, err)


# ------------------------------------------------------------------------------ a timeout or a kill mid-chunk


def wait_for(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Wait until ``condition()`` holds; a generous bound only turns a hang into a clear failure."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def records_of(dag_id: str, task_id: str) -> list[dict[str, Any]]:
    """The ``salebot_broadcast`` records of a task in any run of a DAG (read while a run is going on)."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [
            json.loads(value)
            for value in session.scalars(
                select(TaskStateStoreModel.value).where(
                    TaskStateStoreModel.dag_id == dag_id,
                    TaskStateStoreModel.task_id == task_id,
                    TaskStateStoreModel.key == "salebot_broadcast",
                )
            )
        ]


def each_once(values: list[Any]) -> bool:
    return all(n == 1 for n in Counter(map(str, values)).values())


@pytest.mark.timeout(120, method="thread")  # Airflow's execution_timeout takes SIGALRM, pytest-timeout's
def test_execution_timeout_mid_chunk_leaves_it_in_doubt_and_the_retry_never_resends_it(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(300, seed=54, with_deals=False)
    # The 2nd chunk's reply is held for 6 s; the task's execution_timeout is 3 s (ample for the
    # other chunks, even on a loaded machine).
    held = salebot_emulator.inject("broadcast", latency=6, after=1, times=1)
    with make_dag(
        "salebot_rel_broadcast_timeout", retries=1, execution_timeout=dt.timedelta(seconds=3)
    ) as dag:
        BroadcastOperator(task_id="send", clients=ids, message="Timed", chunk_size=100)
    dag_run = run_dag(dag)
    ti = task_instances(dag_run)["send"]
    # Try 1 was stopped by the timeout mid-chunk (Airflow retries a timeout); try 2 sent the rest
    # and failed for good naming the chunk in doubt.
    assert (held.hits, ti.state, ti.try_number) == (1, "failed", 2)
    record = recorded(dag_run, "send")["salebot_broadcast"]
    assert (record["in_doubt"], record["counts"], record["cursor"]) == ([[100, 200]], {"sent": 200}, 300)
    # The held request is processed when its latency ends: it went out once, and only once.
    wait_for(lambda: len(sends(salebot_emulator, "broadcast")) == 3, "the held chunk to be handled")
    assert sorted(map(tuple, batches(salebot_emulator, "broadcast"))) == [
        tuple(ids[i : i + 100]) for i in range(0, 300, 100)
    ]
    assert sorted(outbox_ids(salebot_emulator, "Timed")) == ids
    assert each_once(outbox_ids(salebot_emulator, "Timed"))
    out, err = capfd.readouterr()
    assert "AirflowTaskTimeout" in out + err
    assert f"client ids in doubt (not resent): {ids[100]}, {ids[101]}," in out + err
    assert "every client id was tried: 200 sent, 100 in doubt" in out + err
    no_key(salebot_emulator, out, err)


class KillAwareBroadcast(BroadcastOperator):
    """BroadcastOperator, noting when the task runner calls ``on_kill``."""

    killed = threading.Event()

    def on_kill(self) -> None:
        type(self).killed.set()
        super().on_kill()


def test_sigterm_mid_chunk_in_the_task_runner_lets_the_chunk_finish_and_starts_no_other(
    salebot_emulator: Any, run_dag: Any, capfd: Any
) -> None:
    """
    SIGTERM to the process running the task (dag.test(): this one) while Salebot holds a chunk.

    The task runner's own handler (``task_runner._run_task_and_map_outcome``) calls the operator's
    ``on_kill`` and returns; the request goes on, its reply comes, and the chunk is recorded as done.
    No further chunk starts: the try fails with an ordinary error, and Airflow's retry sends the
    rest. Nothing is interrupted, so nothing is in doubt and nothing is sent twice. (A supervisor
    whose task outlives SIGTERM escalates to SIGKILL: the next test.)
    """
    ids = salebot_emulator.seed_clients(300, seed=55, with_deals=False)
    held = salebot_emulator.inject("broadcast", latency=4, after=1, times=1)
    KillAwareBroadcast.killed.clear()
    in_flight: list[Any] = []
    fell_through: list[int] = []

    def terminate_while_held() -> None:
        wait_for(lambda: held.hits == 1, "the 2nd chunk to be held")
        in_flight.extend(r["in_flight"] for r in records_of("salebot_rel_broadcast_sigterm", "send"))
        os.kill(os.getpid(), signal.SIGTERM)

    # Should the signal ever come outside the task runner's handler, it must not end the test session.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: fell_through.append(signum))
    try:
        with make_dag("salebot_rel_broadcast_sigterm", retries=1) as dag:
            KillAwareBroadcast(task_id="send", clients=ids, message="Termed", chunk_size=100)
        killer = threading.Thread(target=terminate_while_held, daemon=True)
        killer.start()
        dag_run = run_dag(dag)
        killer.join(timeout=30)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert in_flight == [[100, 200]]  # recorded as in flight before its request, while it was out
    assert KillAwareBroadcast.killed.is_set()  # the task runner's handler had the signal,
    assert fell_through == []  # not the stand-by one
    ti = task_instances(dag_run)["send"]
    assert (ti.state, ti.try_number) == ("success", 2)  # try 1 stopped after the held chunk
    record = recorded(dag_run, "send")["salebot_broadcast"]
    assert (record["in_flight"], record["in_doubt"], record["cursor"]) == (None, [], 300)
    assert batches(salebot_emulator, "broadcast") == [ids[:100], ids[100:200], ids[200:]]
    assert outbox_ids(salebot_emulator, "Termed") == ids
    out, err = capfd.readouterr()
    assert "the task was told to stop" in out + err
    assert "200 recipients sent, 0 in doubt (it may have been processed; not resent), 100 not sent" in (
        out + err
    )
    no_key(salebot_emulator, out, err)


#: A task's process: the operator with ``task_state_store`` kept in a JSON file, written through on
#: each ``set`` as Airflow writes its DB row, so that whatever the process had recorded outlives it.
CHILD_TASK = """
import json, os, sys
from pathlib import Path

from salebot_provider.operators import BroadcastOperator


class FileStore:
    def __init__(self, path):
        self.path = Path(path)

    def get(self, key, default=None):
        return json.loads(self.path.read_text()).get(key, default) if self.path.exists() else default

    def set(self, key, value, *, retention=None):
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        data[key] = value
        self.path.with_suffix(".tmp").write_text(json.dumps(data))
        os.replace(self.path.with_suffix(".tmp"), self.path)


store, ids = FileStore(sys.argv[1]), json.loads(sys.argv[2])
op = BroadcastOperator(task_id="send", clients=ids, message="Killed", chunk_size=100)
op.execute({"task_state_store": store})
"""


def test_a_task_process_killed_mid_chunk_never_gets_that_chunk_resent(
    salebot_emulator: Any, store: Any, tmp_path: Path
) -> None:
    """
    The task runs in a child process, killed by SIGTERM (its default action: no Python code runs,
    as with the SIGKILL a supervisor escalates to) while Salebot holds its 2nd chunk; then a rerun.
    """
    ids = salebot_emulator.seed_clients(300, seed=56, with_deals=False)
    held = salebot_emulator.inject("broadcast", latency=5, after=1, times=1)
    script, kept = tmp_path / "task.py", tmp_path / "task_state.json"
    script.write_text(CHILD_TASK)
    child = subprocess.Popen(
        [sys.executable, str(script), str(kept), json.dumps(ids)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    try:
        wait_for(lambda: held.hits == 1 or child.poll() is not None, "the 2nd chunk to be held")
        assert child.poll() is None, child.communicate()[0].decode(errors="replace")[-2000:]
        child.send_signal(signal.SIGTERM)
        output = child.communicate(timeout=30)[0].decode(errors="replace")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGTERM
    left = json.loads(kept.read_text())["salebot_broadcast"]
    assert (left["in_flight"], left["cursor"], left["counts"]) == ([100, 200], 100, {"sent": 100})

    store.data = json.loads(kept.read_text())
    with pytest.raises(AirflowFailException) as ended:
        BroadcastOperator(task_id="send", clients=ids, message="Killed", chunk_size=100).execute(
            {"task_state_store": store}
        )
    assert "every client id was tried: 200 sent, 100 in doubt" in str(ended.value)
    assert f"client ids {ids[100]}, {ids[101]}," in str(ended.value)
    assert store.data["salebot_broadcast"]["in_doubt"] == [[100, 200]]
    wait_for(lambda: len(sends(salebot_emulator, "broadcast")) == 3, "the held chunk to be handled")
    assert sorted(map(tuple, batches(salebot_emulator, "broadcast"))) == [
        tuple(ids[i : i + 100]) for i in range(0, 300, 100)
    ]
    # The killed process's chunk was processed after all (Salebot had it): once, never resent.
    assert sorted(outbox_ids(salebot_emulator, "Killed")) == ids
    assert each_once(outbox_ids(salebot_emulator, "Killed"))
    # The rerun's chunk begins after the killed chunk's whole sequence (its start was recorded
    # before its request): no client gets two sequences at once.
    due = {item.client_id: item.due_at for item in salebot_emulator.outbox if item.text == "Killed"}
    assert min(due[i] for i in ids[200:]) >= max(due[i] for i in ids[100:200])
    no_key(salebot_emulator, output, str(ended.value))


# ------------------------------------------------------------------------------ no task_state_store


def test_without_task_state_a_part_sent_broadcast_fails_for_good_and_the_documented_resume_sends_each_once(
    salebot_emulator: Any, caplog: Any, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(450, seed=57, with_deals=False)
    # Repeats, as real input has them ("007" is client 7): the operator drops them, the first kept.
    audience: list[Any] = [*ids[:120], ids[3], str(ids[5]), *ids[120:], f"0{ids[200]}"]
    salebot_emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    first = BroadcastOperator(task_id="send", clients=audience, message="Resume", chunk_size=100)
    with caplog.at_level("WARNING"), pytest.raises(AirflowFailException) as raised:
        first.execute({"ti": None})  # a context without task_state_store (Airflow before 3.3)
    text = str(raised.value)
    assert "100 recipients sent, 100 in doubt (it may have been processed; not resent), 250 not sent" in text
    assert "automatic retries are off for this failure" in text
    assert "docs/operators.md#when-a-send-fails-part-way" in text
    # The task log has every in-doubt id (where it goes depends on how logging was set up).
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    logged = re.findall(r"client ids in doubt \(not resent\): ([0-9, ]+)", logs)
    assert [int(i) for i in logged[0].split(", ")] == ids[100:200]

    # The documented resume: the ids from the number given on, repeats dropped as the operator does.
    number = int(re.search(r"number ([0-9,]+) of the input", text)[1].replace(",", ""))  # type: ignore[index]
    rest = list(dict.fromkeys(int(i) for i in audience))[number - 1 :]
    assert rest == ids[200:]
    second = BroadcastOperator(task_id="send", clients=rest, message="Resume", chunk_size=100)
    assert second.execute({}) == {"audience": "clients", "recipients": 250, "requests": 3}
    # The in-doubt chunk was processed (then a 502): everybody got it exactly once.
    assert outbox_ids(salebot_emulator, "Resume") == ids
    no_key(salebot_emulator, text, logs)


def test_without_task_state_a_part_loaded_file_is_finished_from_its_not_tried_rows(
    salebot_emulator: Any, tmp_path: Path
) -> None:
    leads = rows(7, 9_000)
    output = tmp_path / "loaded.jsonl"
    salebot_emulator.inject("load_clients", status=502, processed=True, after=1, times=1)
    first = LoadClientsOperator(task_id="load", clients=leads, chunk_size=2, output_path=str(output))
    with pytest.raises(AirflowFailException) as raised:
        first.execute({})
    text = str(raised.value)
    assert "2 rows loaded, 0 failed; rows 3-4 in doubt; rows 5-7 not tried" in text
    assert "automatic retries are off" in text

    # The documented resume: load the rows whose status in output_path is not_tried.
    outcome = [json.loads(line) for line in output.read_text().splitlines()]
    rest = [row["item"] for row in outcome if row["status"] == "not_tried"]
    assert rest == leads[4:]
    finished = LoadClientsOperator(task_id="load", clients=rest, chunk_size=2).execute({})
    assert (finished["loaded"], finished["failed"]) == (3, 0)
    sent = [row["platform_id"] for batch in batches(salebot_emulator, "load_clients") for row in batch]
    assert sorted(sent) == [str(9_000 + i) for i in range(7)]
    assert each_once(sent)
    assert sorted(c.platform_id for c in salebot_emulator.state.clients.values()) == [
        str(9_000 + i) for i in range(7)
    ]
    no_key(salebot_emulator, text, output.read_text())


# ------------------------------------------------------------------------------ a mapped task


def test_a_mapped_broadcast_retries_only_the_failing_map_index_and_messages_nobody_twice(
    salebot_emulator: Any, run_dag: Any, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    ids = salebot_emulator.seed_clients(12, seed=58, with_deals=False)
    groups = [ids[0:3], ids[3:8], ids[8:12]]
    target = groups[1][2]  # in map index 1's 2nd chunk (2 per chunk)
    hit: list[Any] = []
    real = salebot_emulator.handle_api

    def handle_api(method: str, key: str, action: str, query: Any, raw: bytes) -> Any:
        # A fault for that one request: processed, then a 502 (in doubt).
        if action == "broadcast" and not hit and target in json.loads(raw).get("clients", []):
            hit.append(json.loads(raw)["clients"])
            salebot_emulator.inject("broadcast", status=502, processed=True, times=1)
        return real(method, key, action, query, raw)

    monkeypatch.setattr(salebot_emulator, "handle_api", handle_api)
    with make_dag("salebot_rel_mapped", retries=2) as dag:
        BroadcastOperator.partial(task_id="mapped", message="Mapped", chunk_size=2).expand(clients=groups)
    dag_run = run_dag(dag)
    tis = task_instances(dag_run)
    assert hit == [groups[1][2:4]]
    assert {k: (ti.state, ti.try_number) for k, ti in tis.items()} == {
        "mapped[0]": ("success", 1),
        "mapped[1]": ("failed", 2),  # retried alone: the retry sent its last chunk, then named the doubt
        "mapped[2]": ("success", 1),
    }
    assert [recorded(dag_run, "mapped", i)["salebot_broadcast"]["in_doubt"] for i in range(3)] == [
        [],
        [[2, 4]],
        [],
    ]
    sent = batches(salebot_emulator, "broadcast")
    chunks = [tuple(group[i : i + 2]) for group in groups for i in range(0, len(group), 2)]
    assert sorted(map(tuple, sent)) == sorted(chunks)  # each chunk of each map index once
    assert sorted(outbox_ids(salebot_emulator, "Mapped")) == sorted(ids)
    assert each_once(outbox_ids(salebot_emulator, "Mapped"))
    out, err = capfd.readouterr()
    assert "every client id was tried: 3 sent, 2 in doubt" in out + err
    no_key(salebot_emulator, out, err)
