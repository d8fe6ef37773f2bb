"""A long run under random faults: 20,000 recipients and 20,000 rows, every one accounted for exactly.

A broadcast to 20,000 clients and a load of 20,000 rows, in chunks of 50 (400 requests each), go
through an emulator that answers 2% of the requests with a fault: HTTP 500, 502, 503, 504 (502 and
504 after processing the request, 500 and 503 without) or 429. The faults are random but replayed
exactly: whether the n-th request to an action is hit depends only on the emulator's seed
(``Faults.decide``), and the requests here go one after another. At 400 requests, 2% is about eight
faults a run; the tests check that every kind (a 5xx after processing, one without, a 429) hit, so
a run without faults cannot pass.

The task's retries are driven as Airflow would: ``execute`` again with the same ``task_state_store``
until it succeeds or fails saying everything was tried. Proved: sent + in doubt + not sent is
exactly 20,000; every recipient or row went out in exactly one request that was not refused (a 429
is retried by the hook, a 5xx never); the ids in doubt are exactly those of the requests that
failed with a 5xx; and Salebot (the emulator's outbox, or its clients) holds exactly the input less
the in-doubt ids it never processed, each once.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from salebot_provider.exceptions import SalebotError
from salebot_provider.operators import BroadcastOperator, LoadClientsOperator
from salebot_provider.testing import SalebotEmulator
from tests.reliability.conftest import StateStore, no_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TOTAL = 20_000
#: Items per request: small enough that 2% of the requests is several faults a run.
CHUNK = 50
#: 2% of the requests, split evenly between the five kinds of fault.
FAULTS: list[dict[str, Any]] = [
    {"status": 500},
    {"status": 502, "processed": True},
    {"status": 503},
    {"status": 504, "processed": True},
    {"status": 429},
]
RATE = 0.02 / len(FAULTS)
#: 5xx replies given after the request was processed, and without processing it.
PROCESSED, UNPROCESSED = {502, 504}, {500, 503}
#: The most tries the driver allows: each 5xx ends one try, and about one request in 60 gets one.
MAX_TRIES = 20


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[SalebotEmulator]:
    """An emulator of its own with the seed the test names, ``salebot_default`` pointing at it."""
    with SalebotEmulator(seed=request.param) as emulator:
        extras = {"backoff_factor": 0, "max_retries": 3}
        monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emulator.connection_json(**extras))
        yield emulator


def inject_faults(emulator: SalebotEmulator, action: str) -> None:
    for fault in FAULTS:
        emulator.inject(action, rate=RATE, **fault)


def drive(make: Callable[[], Any], store: StateStore) -> tuple[Any, AirflowFailException | None, int]:
    """
    Run a task's tries as Airflow's retries would: until it succeeds or fails for good.

    :return: the result (None if it failed for good), the final error if any, and the number of tries.
    """
    for tries in range(1, MAX_TRIES + 1):
        try:
            return make().execute({"task_state_store": store}), None, tries
        except AirflowFailException as ended:  # every item was tried; some are in doubt
            return None, ended, tries
        except SalebotError:  # an ordinary error: the retry is safe, and Airflow would make it
            continue
    pytest.fail(f"the task did not end in {MAX_TRIES} tries")


def requests_of(emulator: SalebotEmulator, action: str) -> list[tuple[int, list[Any]]]:
    """Each request of an action, in order, as ``(HTTP status, what it carried)``."""
    out = []
    for r in emulator.requests:
        if r.action == action:
            out.append((r.status, r.body if isinstance(r.body, list) else r.body["clients"]))
    return out


def carried(requests: list[tuple[int, list[Any]]], statuses: set[int]) -> list[Any]:
    return [item for status, items in requests if status in statuses for item in items]


def assert_every_kind_hit(requests: list[tuple[int, list[Any]]]) -> Counter[int]:
    """That a 5xx after processing, a 5xx without, and a 429 each hit at least once (so the test can fail)."""
    seen = Counter(status for status, _ in requests)
    assert set(seen) <= {200, *PROCESSED, *UNPROCESSED, 429}
    kinds = [PROCESSED, UNPROCESSED, {429}]
    assert all(any(seen[s] for s in kind) for kind in kinds), f"not every kind of fault hit: {seen}"
    return seen


@pytest.mark.parametrize("faulty", [1], indirect=True)  # the seed: 500, 502, 503, 504 and 429 all hit
def test_a_20000_recipient_broadcast_under_random_faults_accounts_for_everyone(
    faulty: SalebotEmulator, capfd: Any
) -> None:
    ids = faulty.seed_clients(TOTAL, seed=7, with_deals=False)
    inject_faults(faulty, "broadcast")
    store = StateStore()
    result, ended, tries = drive(
        lambda: BroadcastOperator(
            task_id="announce", clients=ids, message="Sale", shift=0.1, chunk_size=CHUNK
        ),
        store,
    )
    requests = requests_of(faulty, "broadcast")
    seen = assert_every_kind_hit(requests)
    # The run is replayed exactly (docs/reliability.md shows these figures).
    assert (tries, dict(seen)) == (11, {200: 390, 429: 1, 500: 2, 502: 1, 503: 4, 504: 3})
    sent_ids, doubt_ids = carried(requests, {200}), carried(requests, PROCESSED | UNPROCESSED)
    # Each 5xx ended one try; a 429 never did (the hook waited it out and sent the chunk again).
    assert tries == 1 + sum(seen[s] for s in PROCESSED | UNPROCESSED)
    assert all(len(items) <= CHUNK for _, items in requests)

    record = store.data["salebot_broadcast"]
    sent, not_sent = record["counts"]["sent"], record["total"] - record["cursor"]
    in_doubt = [i for a, b in record["in_doubt"] for i in ids[a:b]]
    assert sent + len(in_doubt) + not_sent == TOTAL
    assert (sent, in_doubt, not_sent, record["in_flight"]) == (len(sent_ids), doubt_ids, 0, None)
    # Every recipient went out in exactly one request that was not refused.
    assert sorted(sent_ids + doubt_ids) == sorted(ids)
    assert len(set(sent_ids + doubt_ids)) == TOTAL

    # The task ends naming the in-doubt recipients; with none it would have returned the summary.
    assert result is None
    assert ended is not None
    assert f"every client id was tried: {sent:,} sent, {len(in_doubt):,} in doubt" in str(ended)
    # Salebot has the input less the in-doubt ids it never processed (500, 503), each once.
    never = set(carried(requests, UNPROCESSED))
    outbox = [item.client_id for item in faulty.outbox]
    assert outbox == [i for i in ids if i not in never]
    assert len(never) == CHUNK * sum(seen[s] for s in UNPROCESSED)
    out, err = capfd.readouterr()
    no_key(faulty, out, err, str(ended), json.dumps(record))


def leads(n: int) -> list[dict[str, Any]]:
    return [{"platform_id": str(5_000_000 + i), "group_id": "shop_bot", "client_type": 1} for i in range(n)]


@pytest.mark.parametrize("faulty", [1], indirect=True)  # the seed: 500, 502, 503, 504 and 429 all hit
def test_a_20000_row_load_under_random_faults_accounts_for_every_row(
    faulty: SalebotEmulator, tmp_path: Path, capfd: Any
) -> None:
    rows = leads(TOTAL)
    output = tmp_path / "loaded.jsonl"
    inject_faults(faulty, "load_clients")
    store = StateStore()
    result, ended, tries = drive(
        lambda: LoadClientsOperator(task_id="load", clients=rows, output_path=str(output), chunk_size=CHUNK),
        store,
    )
    requests = requests_of(faulty, "load_clients")
    seen = assert_every_kind_hit(requests)
    assert (tries, dict(seen)) == (5, {200: 396, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1})
    loaded_rows, doubt_rows = carried(requests, {200}), carried(requests, PROCESSED | UNPROCESSED)
    assert tries == 1 + sum(seen[s] for s in PROCESSED | UNPROCESSED)
    assert all(len(items) <= CHUNK for _, items in requests)

    # Every row has one outcome in output_path, covering every try.
    outcome = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["item"] for row in outcome] == rows
    counts = Counter(row["status"] for row in outcome)
    assert counts["loaded"] + counts["failed"] + counts["in_doubt"] + counts["not_tried"] == TOTAL
    assert (counts["loaded"], counts["in_doubt"], counts["failed"], counts["not_tried"]) == (
        len(loaded_rows),
        len(doubt_rows),
        0,
        0,
    )
    assert [row["item"] for row in outcome if row["status"] == "in_doubt"] == doubt_rows
    record = store.data["salebot_load_clients"]
    assert record["counts"].get("loaded") == len(loaded_rows)
    assert [r for a, b in record["in_doubt"] for r in rows[a:b]] == doubt_rows
    # Every row went out in exactly one request that was not refused.
    platform_ids = [row["platform_id"] for row in loaded_rows + doubt_rows]
    assert sorted(platform_ids) == sorted(row["platform_id"] for row in rows)
    assert len(set(platform_ids)) == TOTAL

    assert result is None
    assert ended is not None
    assert f"every row was tried: {len(loaded_rows):,} loaded, 0 failed, {len(doubt_rows):,} in doubt" in (
        str(ended)
    )
    # Salebot has a client for each row but the in-doubt ones it never processed (500, 503), once
    # each, and each loaded row's id is that client's.
    never = {row["platform_id"] for row in carried(requests, UNPROCESSED)}
    with faulty.state.lock:
        made = [c.platform_id for c in faulty.state.clients.values()]
    assert sorted(made) == sorted(row["platform_id"] for row in rows if row["platform_id"] not in never)
    assert len(never) == CHUNK * sum(seen[s] for s in UNPROCESSED)
    by_id = {row["id"]: row["item"]["platform_id"] for row in outcome if row["status"] == "loaded"}
    assert len(by_id) == len(loaded_rows)
    assert all(faulty.client(client_id).platform_id == pid for client_id, pid in list(by_id.items())[::97])
    out, err = capfd.readouterr()
    no_key(faulty, out, err, str(ended), output.read_text())
