"""Faults the emulator can inject, decided deterministically from a seed."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

#: The failure kinds a fault can have.
_KINDS = ("reset", "status", "html", "invalid_json")
HTML_ERROR_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center></body></html>"
)


@dataclass
class Fault:
    """
    One fault rule. It hits a share (``rate``) of the requests it matches.

    :param action: the action it applies to; None for every action.
    :param latency: seconds added before the reply: a number, or a ``(low, high)`` range.
    :param status: reply with this HTTP status instead (e.g. 500, 502, 503, 504).
    :param html: reply with an HTML error page instead (HTTP 502, or ``status`` when given).
    :param invalid_json: reply HTTP 200 with a body that is not JSON instead.
    :param reset: close the connection without any reply.
    :param processed: with a failure kind, the action takes effect first, then fails: the case that
        must not lead a client to send again.
    :param rate: the share of matching requests it hits, 0 to 1.
    :param times: stop after hitting this many requests; None for no end.
    """

    action: str | None = None
    latency: float | tuple[float, float] | list[float] = 0.0
    status: int | None = None
    html: bool = False
    invalid_json: bool = False
    reset: bool = False
    processed: bool = False
    rate: float = 1.0
    times: int | None = None
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Fault rate must be between 0 and 1; got {self.rate}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"Fault status must be an HTTP error status (4xx or 5xx); got {self.status}")
        if isinstance(self.latency, list | tuple) and len(self.latency) != 2:
            raise ValueError("Fault latency range must be (low, high)")
        if self.processed and not self.fails:
            raise ValueError(
                "Fault processed=True needs a failure to follow: status, html, invalid_json or reset"
            )

    @property
    def fails(self) -> bool:
        """Whether it replaces the reply (as opposed to only slowing it)."""
        return any(getattr(self, kind) for kind in _KINDS)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, for the admin API."""
        return asdict(self)


@dataclass
class Decision:
    """What happens to one request: how long it waits and how it fails, if it does."""

    latency: float = 0.0
    failure: Fault | None = None
    retry_after: int | None = None


class Faults:
    """
    The fault rules and the request-rate limits of one emulator.

    Whether a rule hits the n-th request to an action depends only on the seed, the action and n:
    calls made one after another replay the same faults every run. Concurrent calls to one action
    race for their place in that order, so which of them is hit can change (not how many).

    :param seed: the seed of every random choice.
    :param clock: the time source of the rate limits, in seconds.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seed = seed
        self.clock = clock
        self._lock = threading.Lock()
        self.rules: list[Fault] = []
        self._counts: dict[str, int] = {}
        self._limits: dict[str | None, float] = {}
        self._buckets: dict[str | None, tuple[float, float]] = {}

    def add(self, fault: Fault) -> Fault:
        """Add a rule; it applies from the next request on."""
        with self._lock:
            self.rules.append(fault)
        return fault

    def rate_limit(self, per_second: float | None, action: str | None = None) -> None:
        """
        Answer 429 with ``Retry-After`` beyond ``per_second`` requests (for one action, or all).

        A token bucket: bursts of up to ``per_second`` requests (at least one) pass, then requests
        are refused until tokens come back. ``Retry-After`` is the whole seconds until the next one.

        :param per_second: the allowed rate; None removes the limit.
        :param action: the action it applies to; None for all together.
        """
        with self._lock:
            if per_second is None:
                self._limits.pop(action, None)
            elif per_second <= 0:
                raise ValueError(f"rate limit must be positive; got {per_second}")
            else:
                self._limits[action] = per_second
            self._buckets.pop(action, None)

    def clear(self) -> None:
        """Remove every rule and limit."""
        with self._lock:
            self.rules.clear()
            self._counts.clear()
            self._limits.clear()
            self._buckets.clear()

    def decide(self, action: str) -> Decision:
        """Roll the dice for the next request to ``action``."""
        with self._lock:
            retry_after = self._throttle(action)
            if retry_after is not None:
                return Decision(retry_after=retry_after)
            n = self._counts.get(action, 0)
            self._counts[action] = n + 1
            rng = random.Random(f"{self.seed}:{action}:{n}")
            decision = Decision()
            for fault in self.rules:
                if fault.action not in (None, action) or (
                    fault.times is not None and fault.hits >= fault.times
                ):
                    continue
                if fault.fails and decision.failure is not None:
                    continue
                if rng.random() >= fault.rate:
                    continue
                fault.hits += 1
                decision.latency += _latency(fault.latency, rng)
                if fault.fails and decision.failure is None:
                    decision.failure = fault
            return decision

    def _throttle(self, action: str) -> int | None:
        now = self.clock()
        scopes = [scope for scope in (action, None) if scope in self._limits]
        levels = {}
        for scope in scopes:
            rate = self._limits[scope]
            capacity = max(1.0, rate)
            tokens, since = self._buckets.get(scope, (capacity, now))
            levels[scope] = min(capacity, tokens + (now - since) * rate)
        short = [(1.0 - levels[s]) / self._limits[s] for s in scopes if levels[s] < 1.0]
        if short:
            for scope in scopes:
                self._buckets[scope] = (levels[scope], now)
            return max(1, math.ceil(max(short)))
        for scope in scopes:
            self._buckets[scope] = (levels[scope] - 1.0, now)
        return None


def _latency(value: float | tuple[float, float] | list[float], rng: random.Random) -> float:
    if isinstance(value, tuple | list):
        low, high = value
        return rng.uniform(low, high)
    return float(value)
