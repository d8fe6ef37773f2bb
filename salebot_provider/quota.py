"""
One rate limit for every process that uses a Salebot project: a token bucket in Redis.

Salebot's quota belongs to the project, not to a process; the connection's ``rate_limit`` holds per
hook (and per triggerer). With ``rate_limit_redis`` set on the connection (a ``redis://`` URL, or
the id of an Airflow Redis connection), every hook and every triggerer on the same project reserve
their turns in one bucket in Redis, so that workers, triggerers and machines together keep to
``rate_limit``.

- **Atomic, one round trip:** a Lua script reserves the next free moment (a "theoretical arrival
  time", kept in microseconds of Redis's own clock, so the machines' clocks do not matter) and
  returns how long the caller waits before sending.
- **The key** is ``salebot:rate:`` and a hash of the base URL and the API key, never the key.
- **When Redis cannot be reached** the limiter falls back to the per-process limit (the same
  ``rate_limit``), says so once in a warning, and tries Redis again after ``RETRY_AFTER`` seconds:
  a pipeline goes on (each process keeping its own pace, and the hook waiting out any 429) rather
  than stalling on the broker.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from salebot_provider.exceptions import SalebotValidationError

if TYPE_CHECKING:
    from salebot_provider.api import ConnectionSettings

log = logging.getLogger(__name__)

#: Seconds between attempts to reach Redis again after it failed.
RETRY_AFTER = 30.0
#: Seconds a Redis round trip may take before it counts as unreachable.
REDIS_TIMEOUT = 2.0

#: Reserve the next moment: ``ARGV[1]`` microseconds apart; or, with ``ARGV[2]`` > 0, hold every
#: reservation back until that many microseconds from now (a 429 seen by anyone). Returns the
#: microseconds the caller waits before sending.
RESERVE = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000000 + tonumber(now_s[2])
local interval = tonumber(ARGV[1])
local hold = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if hold > 0 then
  local until_ = math.max(tat, now + hold)
  redis.call('SET', KEYS[1], string.format('%d', until_), 'PX', math.ceil((until_ - now) / 1000) + 60000)
  return 0
end
local start = math.max(tat, now)
local after = start + interval
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.ceil((after - now) / 1000) + 60000)
return math.floor(start - now)
"""


def bucket_key(settings: ConnectionSettings) -> str:
    """The bucket's Redis key: a hash of the base URL and the API key, never the key itself."""
    digest = hashlib.sha256(f"{settings.base_url}\n{settings.api_key}".encode()).hexdigest()[:32]
    return f"salebot:rate:{digest}"


def check_redis_setting(value: Any) -> str | None:
    """
    Check the ``rate_limit_redis`` extra: a ``redis://``/``rediss://``/``unix://`` URL or a connection id.

    :param value: the extra's value.
    :raises SalebotValidationError: naming the extra, never the URL's password.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise SalebotValidationError(
            "Salebot connection extra 'rate_limit_redis' must be a Redis URL (redis://host:6379/0) or "
            "the id of an Airflow Redis connection"
        )
    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise SalebotValidationError(
                "Salebot connection extra 'rate_limit_redis' must be a redis://, rediss:// or unix:// "
                f"URL; got one with the scheme {parts.scheme!r}"
            )
    elif any(c.isspace() or c in "/?#" for c in text):
        raise SalebotValidationError(
            "Salebot connection extra 'rate_limit_redis' is neither a Redis URL nor a connection id"
        )
    return text


async def aget_connection(conn_id: str) -> Any:
    """
    An Airflow connection, read without blocking the event loop (a trigger's look-up).

    :param conn_id: the connection's id.
    """
    import asyncio

    from airflow.providers.common.compat.sdk import BaseHook

    aget = getattr(BaseHook, "aget_connection", None)
    if aget is not None:
        return await aget(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)  # Airflow 3.0: no async look-up


def redis_url(setting: str, connection: Any | None) -> str:
    """
    The URL of the Redis named by the setting: the URL itself, or one made of a Redis connection.

    :param setting: the ``rate_limit_redis`` extra.
    :param connection: the Airflow connection it names, when it is an id (host, port, password,
        and ``db`` or ``ssl`` in its extras, as Airflow's Redis provider reads them).
    """
    if "://" in setting or connection is None:
        return setting
    extra = connection.extra_dejson or {}
    scheme = "rediss" if str(extra.get("ssl", "")).lower() in ("true", "1") else "redis"
    auth = f":{quote(connection.password, safe='')}@" if connection.password else ""
    if connection.login and connection.password:
        auth = f"{quote(connection.login, safe='')}:{quote(connection.password, safe='')}@"
    return f"{scheme}://{auth}{connection.host or 'localhost'}:{connection.port or 6379}/{extra.get('db', 0)}"


def _mask(url: str) -> None:
    password = urlsplit(url).password
    if password:
        try:
            from airflow.providers.common.compat.sdk import mask_secret

            mask_secret(password)
        except Exception:  # masking is best effort here: the URL is never logged whole
            log.debug("could not register the Redis password with Airflow's masker")


def _shown(url: str) -> str:
    """The URL without its credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


class SharedLimiter:
    """
    The synchronous side, for hooks: ``wait()`` before each request.

    :param settings: the connection's settings (``rate_limit``, ``rate_limit_redis``).
    :param fallback: the per-process limiter used while Redis cannot be reached.
    :param connection_of: reads an Airflow connection by id (for a ``rate_limit_redis`` that is one).
    """

    def __init__(self, settings: ConnectionSettings, fallback: Any, connection_of: Any) -> None:
        self.interval_us = round(1_000_000 / (settings.rate_limit or 1.0))
        self.key = bucket_key(settings)
        self._setting = settings.rate_limit_redis or ""
        self._connection_of = connection_of
        self._fallback = fallback
        self._script: Any = None
        self._down_until = 0.0

    def _reserve(self) -> Any:
        if self._script is None:
            import redis

            conn = None if "://" in self._setting else self._connection_of(self._setting)
            url = redis_url(self._setting, conn)
            _mask(url)
            self.where = _shown(url)
            client = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
            self._script = client.register_script(RESERVE)
        return self._script

    def wait(self) -> None:
        """Wait for this process's turn in the project's bucket (or its own, while Redis is down)."""
        if time.monotonic() >= self._down_until:
            try:
                wait_us = int(self._reserve()(keys=[self.key], args=[self.interval_us, 0]))
            except Exception as exc:
                self._unreachable(exc)
            else:
                if wait_us > 0:
                    time.sleep(wait_us / 1_000_000)
                return
        self._fallback.wait()

    def hold(self, seconds: float) -> None:
        """Hold every process back for ``seconds`` (a 429 came): best effort."""
        if time.monotonic() >= self._down_until:
            try:
                self._reserve()(keys=[self.key], args=[self.interval_us, round(seconds * 1_000_000)])
            except Exception as exc:
                self._unreachable(exc)

    def _unreachable(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        self._script = None  # a fresh client next time
        log.warning(
            "Salebot: the shared rate limit in Redis (%s) cannot be reached (%s); this process keeps "
            "its own limit of %.3g requests/s and tries Redis again in %.0f s",
            getattr(self, "where", "rate_limit_redis"),
            type(exc).__name__,
            1_000_000 / self.interval_us,
            RETRY_AFTER,
        )


class AsyncSharedLimiter:
    """
    The asynchronous side, for the triggerer (``redis.asyncio``).

    ``await acquire()`` after the process's own turn.

    :param settings: the connection's settings.
    :param connection_of: awaits an Airflow connection by id.
    """

    def __init__(self, settings: ConnectionSettings, connection_of: Any) -> None:
        self.interval_us = round(1_000_000 / (settings.rate_limit or 1.0))
        self.key = bucket_key(settings)
        self._setting = settings.rate_limit_redis or ""
        self._connection_of = connection_of
        self._script: Any = None
        self._client: Any = None
        self._down_until = 0.0

    async def _reserve(self) -> Any:
        if self._script is None:
            import redis.asyncio

            conn = None if "://" in self._setting else await self._connection_of(self._setting)
            url = redis_url(self._setting, conn)
            _mask(url)
            self.where = _shown(url)
            self._client = redis.asyncio.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
            self._script = self._client.register_script(RESERVE)
        return self._script

    async def acquire(self) -> None:
        """Wait for a turn in the project's bucket; while Redis is down, the process's own turn stands."""
        import asyncio

        if time.monotonic() < self._down_until:
            return
        try:
            script = await self._reserve()
            wait_us = int(await script(keys=[self.key], args=[self.interval_us, 0]))
        except Exception as exc:
            await self._unreachable(exc)
            return
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)

    async def hold(self, seconds: float) -> None:
        """Hold every process back for ``seconds`` (a 429 came): best effort."""
        if time.monotonic() < self._down_until:
            return
        try:
            script = await self._reserve()
            await script(keys=[self.key], args=[self.interval_us, round(seconds * 1_000_000)])
        except Exception as exc:
            await self._unreachable(exc)

    async def _unreachable(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        await self.close()
        log.warning(
            "Salebot: the shared rate limit in Redis (%s) cannot be reached (%s); this triggerer keeps "
            "its own limit of %.3g requests/s and tries Redis again in %.0f s",
            getattr(self, "where", "rate_limit_redis"),
            type(exc).__name__,
            1_000_000 / self.interval_us,
            RETRY_AFTER,
        )

    async def close(self) -> None:
        """Close the Redis client."""
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()
