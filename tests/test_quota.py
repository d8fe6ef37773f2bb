"""The rate limit shared through Redis (``rate_limit_redis``): its Lua bucket, the hook, the trigger.

Redis is fakeredis here (it runs the Lua script with lupa). ``make e2e`` runs these same tests
against its real redis-server, naming it in ``SALEBOT_TEST_REDIS_URL``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import fakeredis
import pytest
import redis
import redis.asyncio

from salebot_provider import quota
from salebot_provider.api import ConnectionSettings, settings_from_connection
from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.hooks import SalebotHook
from salebot_provider.triggers import OrderStateTrigger, order_state

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing import SalebotEmulator

URL = "redis://:redis-secret-pw@redis.internal:6379/2"
#: A real Redis to run against instead of fakeredis (``make e2e`` sets it; its database is emptied).
REAL = os.environ.get("SALEBOT_TEST_REDIS_URL")


class Backend:
    """
    Where every Redis client the provider makes (sync and asyncio) goes: one fakeredis server, or
    the real server of ``SALEBOT_TEST_REDIS_URL``.

    :ivar made: the URLs the provider asked for, in order.
    """

    def __init__(self) -> None:
        self.made: list[str] = []
        self.fake = None if REAL else fakeredis.FakeServer()
        self._sync, self._async = redis.Redis.from_url, redis.asyncio.Redis.from_url

    def client(self) -> Any:
        return self._sync(REAL) if REAL else fakeredis.FakeRedis(server=self.fake)

    def sync_client(self, url: str, **kwargs: Any) -> Any:
        self.made.append(url)
        return self._sync(REAL, **kwargs) if REAL else fakeredis.FakeRedis(server=self.fake)

    def async_client(self, url: str, **kwargs: Any) -> Any:
        self.made.append(url)
        return self._async(REAL, **kwargs) if REAL else fakeredis.FakeAsyncRedis(server=self.fake)


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The provider's Redis clients all go to one server, empty at the start."""
    backend = Backend()
    backend.client().flushdb()
    monkeypatch.setattr(redis.Redis, "from_url", staticmethod(backend.sync_client))
    monkeypatch.setattr(redis.asyncio.Redis, "from_url", staticmethod(backend.async_client))
    yield backend
    backend.client().flushdb()


def connect(monkeypatch: pytest.MonkeyPatch, emulator: SalebotEmulator, conn_id: str, **extra: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", emulator.connection_json(backoff_factor=0, **extra))


def settings(**extra: Any) -> ConnectionSettings:
    return settings_from_connection(host=None, password="k" * 40, extra=extra)


def test_the_bucket_spaces_reservations_exactly_and_a_hold_stops_everyone(fake_redis: Backend) -> None:
    client = fake_redis.client()
    reserve = client.register_script(quota.RESERVE)
    key, interval = "salebot:rate:test", 100_000  # 10 requests/s
    ends = []
    for _ in range(5):
        reserve(keys=[key], args=[interval, 0])
        ends.append(int(client.get(key)))
    # Asked faster than the rate, each reservation is exactly one interval after the one before.
    assert [b - a for a, b in itertools.pairwise(ends)] == [interval] * 4
    # A hold (someone met a 429) pushes every later reservation past it.
    reserve(keys=[key], args=[interval, 3_000_000])
    wait = int(reserve(keys=[key], args=[interval, 0]))
    assert wait >= 2_900_000


def test_the_key_is_a_hash_never_the_api_key() -> None:
    one, other = settings(), settings_from_connection(host=None, password="j" * 40, extra={})
    assert quota.bucket_key(one).startswith("salebot:rate:")
    assert "k" * 40 not in quota.bucket_key(one)
    assert quota.bucket_key(one) != quota.bucket_key(other)
    assert quota.bucket_key(one) == quota.bucket_key(settings())  # every process finds the same bucket


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("http://redis:6379", "redis://, rediss:// or unix://"),
        ("redis conn", "neither a Redis URL nor a connection id"),
        (5, "must be a Redis URL"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_extra(value: Any, named: str) -> None:
    with pytest.raises(SalebotValidationError, match="rate_limit_redis") as raised:
        settings(rate_limit_redis=value)
    assert named in str(raised.value)


def test_the_setting_never_shows_in_the_settings_repr() -> None:
    assert "redis-secret-pw" not in repr(settings(rate_limit_redis=URL))


def test_a_redis_connection_id_makes_the_url() -> None:
    conn = SimpleNamespace(host="cache", port=6380, login=None, password="p/w", extra_dejson={"db": 3})
    assert quota.redis_url("redis_default", conn) == "redis://:p%2Fw@cache:6380/3"
    tls = SimpleNamespace(host="cache", port=None, login="u", password="p", extra_dejson={"ssl": "true"})
    assert quota.redis_url("redis_default", tls) == "rediss://u:p@cache:6379/0"
    assert quota.redis_url(URL, None) == URL


def test_hooks_in_different_threads_share_one_bucket(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, fake_redis: Backend
) -> None:
    # Two hooks stand for two worker processes: each has a limiter of its own, and alone each
    # would go at 20 requests/s; through the shared bucket the two together keep to 20/s.
    connect(monkeypatch, salebot_emulator, "salebot_default", rate_limit=20, rate_limit_redis=URL)
    client_id = salebot_emulator.seed_clients(1)[0]
    barrier = threading.Barrier(2)

    def work() -> None:
        with SalebotHook() as hook:
            barrier.wait()
            for _ in range(5):
                hook.get_variables(client_id)

    started = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    assert len(salebot_emulator.requests) == 10
    assert took >= 9 * 0.05  # ten turns 50 ms apart; two own limiters alone would take about half
    keys = [k.decode() for k in fake_redis.client().keys("*")]
    assert len(keys) == 1
    assert keys[0].startswith("salebot:rate:")
    assert salebot_emulator.api_key not in keys[0]


def test_an_unreachable_redis_falls_back_to_the_process_limit_with_one_warning(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:redis-secret-pw@127.0.0.1:{port}/0"
    connect(monkeypatch, salebot_emulator, "salebot_default", rate_limit=50, rate_limit_redis=url)
    client_id = salebot_emulator.seed_clients(1)[0]
    with caplog.at_level(logging.WARNING), SalebotHook() as hook:
        for _ in range(3):
            hook.get_variables(client_id)
    assert len(salebot_emulator.requests) == 3
    warnings = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1  # then the process's own limit, until RETRY_AFTER
    assert f"redis://127.0.0.1:{port}" in warnings[0]
    assert "redis-secret-pw" not in caplog.text
    assert salebot_emulator.api_key not in caplog.text


def test_triggers_on_two_connections_of_one_project_share_the_bucket(
    salebot_emulator: SalebotEmulator, monkeypatch: pytest.MonkeyPatch, fake_redis: Backend
) -> None:
    # Two connections to the same project (same key): in one loop each gets its own limiter, as
    # two triggerers would; the bucket in Redis spaces their polls all the same.
    for conn_id in ("salebot_a", "salebot_b"):
        connect(monkeypatch, salebot_emulator, conn_id, rate_limit=4, rate_limit_redis=URL)
    deals = []
    for _ in range(4):
        client_id = salebot_emulator.add_client(f"q-{len(deals)}")
        with salebot_emulator.state.lock:
            deals.append((client_id, salebot_emulator.state.add_deal(client_id, 104).id))
    triggers = [
        OrderStateTrigger(
            c, 104, order_id=o, poll_interval=0, salebot_conn_id=("salebot_a", "salebot_b")[i % 2]
        )
        for i, (c, o) in enumerate(deals)
    ]

    async def main() -> list[Any]:
        async def one(trigger: OrderStateTrigger) -> Any:
            return [e.payload async for e in trigger.run()]

        return await asyncio.gather(*map(one, triggers))

    started = time.monotonic()
    events = asyncio.run(main())
    took = time.monotonic() - started
    assert [e[0]["status"] for e in events] == ["success"] * 4
    assert order_state._SHARED == {}
    assert len(salebot_emulator.requests) == 4
    assert took >= 3 * 0.25  # four turns 250 ms apart across both limiters
    assert all("redis-secret-pw" in url for url in fake_redis.made)  # the URL reached the client only
    serialized = json.dumps(triggers[0].serialize())
    assert "redis" not in serialized
    assert salebot_emulator.api_key not in serialized
