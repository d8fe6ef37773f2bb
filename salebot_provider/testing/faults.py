"""Faults the emulator can inject, decided deterministically from a seed."""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

#: The failure kinds a fault can have.
_KINDS = ("reset", "status", "html", "invalid_json")
#: The longest latency a rule may add, in seconds: longer than any client timeout worth testing,
#: and short enough that a forgotten rule does not hold a server thread for good.
MAX_LATENCY = 3600.0
#: The longest ``Retry-After`` given, in seconds (a year): a tiny rate would otherwise ask for forever.
MAX_RETRY_AFTER = 365 * 24 * 3600
HTML_ERROR_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center></body></html>"
)


@dataclass
class Fault:
    """
    One fault rule. It hits a share (``rate``) of the requests it matches.

    :param action: the action it applies to; None for every action.
    :param latency: seconds added before the reply (0 to 3600): a number, or a ``(low, high)`` range.
    :param status: reply with this HTTP status instead (e.g. 500, 502, 503, 504).
    :param html: reply with an HTML error page instead (HTTP 502, or ``status`` when given).
    :param invalid_json: reply HTTP 200 with a body that is not JSON instead.
    :param reset: close the connection without any reply.
    :param processed: with a failure kind, the action takes effect first, then fails: the case that
        must not lead a client to send again.
    :param rate: the share of matching requests it hits, 0 to 1.
    :param times: stop after hitting this many requests; None for no end.
    :param after: let this many matching requests pass untouched first (e.g. ``after=2, times=1``
        hits the third): a fault in the middle of a chunked run.
    :param retry_after: with ``status=429``, the whole seconds of the ``Retry-After`` header sent
        (1 to a year), as Salebot's front would: the request is refused, not processed.
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
    after: int = 0
    retry_after: int | None = None
    hits: int = field(default=0, init=False)
    passed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        # Checked here, not where a rule is used: a bad rule accepted now would fail every call later.
        if self.action is not None and not isinstance(self.action, str):
            raise ValueError(f"Fault action must be an action name or None; got {self.action!r}")
        if isinstance(self.latency, list | tuple):
            if len(self.latency) != 2:
                raise ValueError(f"Fault latency range must be (low, high); got {self.latency!r}")
            low, high = (_seconds("latency", value) for value in self.latency)
            if low > high:
                raise ValueError(f"Fault latency range must have low <= high; got {self.latency!r}")
        else:
            _seconds("latency", self.latency)
        if self.status is not None and not (_is_int(self.status) and 400 <= self.status <= 599):
            raise ValueError(f"Fault status must be an HTTP error status (4xx or 5xx); got {self.status!r}")
        for kind in ("html", "invalid_json", "reset", "processed"):
            if not isinstance(getattr(self, kind), bool):
                raise ValueError(f"Fault {kind} must be true or false; got {getattr(self, kind)!r}")
        if not finite_number(self.rate) or not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"Fault rate must be a number between 0 and 1; got {self.rate!r}")
        if self.times is not None and (not _is_int(self.times) or self.times < 0):
            raise ValueError(f"Fault times must be a whole number, at least 0, or None; got {self.times!r}")
        if not _is_int(self.after) or self.after < 0:
            raise ValueError(f"Fault after must be a whole number, at least 0; got {self.after!r}")
        if self.retry_after is not None and (
            not _is_int(self.retry_after) or not 1 <= self.retry_after <= MAX_RETRY_AFTER
        ):
            raise ValueError(f"Fault retry_after must be whole seconds, 1 or more; got {self.retry_after!r}")
        if self.retry_after is not None and (self.status != 429 or self.processed):
            raise ValueError("Fault retry_after goes with status=429 (and not processed): a refusal")
        if self.processed and not self.fails:
            raise ValueError(
                "Fault processed=True needs a failure to follow: status, html, invalid_json or reset"
            )

    @classmethod
    def from_fields(cls, **spec: Any) -> Fault:
        """
        A rule from named fields, as ``inject`` and the admin API take them.

        :param spec: the fields; a name that is not a field is a ValueError that names it.
        """
        known = [f.name for f in fields(cls) if f.init]
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise ValueError(f"unknown Fault field(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**spec)

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
            elif not finite_number(per_second) or per_second <= 0:
                raise ValueError(f"rate limit per_second must be a positive number; got {per_second!r}")
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
                if fault.passed < fault.after:
                    fault.passed += 1
                    continue
                if fault.fails and decision.failure is not None:
                    continue
                if rng.random() >= fault.rate:
                    continue
                fault.hits += 1
                decision.latency += _latency(fault.latency, rng)
                if fault.fails and decision.failure is None:
                    decision.failure = fault
                    decision.retry_after = fault.retry_after
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
            # A rate near zero would make the wait infinite, which no header can say.
            return max(1, math.ceil(min(max(short), MAX_RETRY_AFTER)))
        for scope in scopes:
            self._buckets[scope] = (levels[scope] - 1.0, now)
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """
    Whether ``value`` is a number of seconds, a rate or a share the emulator can compute with.

    NaN and the infinities mean no time or rate; a bool is not a number here, though Python says it is.

    :param value: any value, as a caller or a JSON body gives it.
    :return: True for a finite int or float (not a bool) that fits in a float, False for anything else.
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _seconds(name: str, value: Any) -> float:
    if not finite_number(value) or not 0 <= value <= MAX_LATENCY:
        raise ValueError(f"Fault {name} must be a number of seconds from 0 to {MAX_LATENCY:g}; got {value!r}")
    return float(value)


def _latency(value: float | tuple[float, float] | list[float], rng: random.Random) -> float:
    if isinstance(value, tuple | list):
        low, high = value
        return rng.uniform(low, high)
    return float(value)
