"""The Hub's rate limits as data: a client-side request budget, shared by every thread and process.

The Hub counts requests per bucket in fixed 5-minute windows (hub-docs ``rate-limits.md``):
``api`` (``/api/...``: listings, model info), ``resolvers`` (every URL with ``/resolve/``) and
``pages``. Files a resolver redirects to a CDN (another origin) are not counted. Published quotas
per window (December 2026): anonymous (per IP) api 500, resolvers 3,000; a free account 1,000 and
5,000; PRO 2,500 and 12,000. Each answer states the state of its bucket:

    RateLimit: "resolvers";r=<remaining>;t=<seconds to reset>
    RateLimit-Policy: "fixed window";"resolvers";q=<quota>;w=<window seconds>

``RequestBudget.acquire(bucket)`` is called before each request and blocks until it may be sent
(it says so through ``config.notice`` when the wait is long); ``observe(bucket, headers)`` after
each answer takes the server's figures, which win over the defaults. Two rules together keep a
crawl just under the limit instead of running into 429 storms:

* **sliding count**: at most ``quota`` requests in any ``window`` seconds (plus a margin for the
  time a request takes to arrive: a quarter of the window, at most 5 s), counted in 1/100-window
  slots. Whatever the alignment of the server's fixed windows, none then sees more than ``quota``;
* **server's word**: when an answer says ``r`` requests remain until ``t`` seconds from now, no
  more than ``r`` are sent before then.

The state lives in one small JSON file per (endpoint, token) under the user cache, locked with
``fcntl.flock``, so threads, processes and Ray workers on one machine share one budget (the Hub's
budget is per token or IP, not per process). The token itself is never written, only a hash.

Override the quotas with ``LINEAGE_INDEX_RATE_LIMITS`` (``api=1000,resolvers=5000,window=300``)
or ``ingest --max-requests``; ``tier`` picks the published defaults.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lineage_index.config import notice, user_cache_root
from lineage_index.errors import UsageError

ENV_RATE_LIMITS = "LINEAGE_INDEX_RATE_LIMITS"
WINDOW_S = 300.0
#: Published quotas per 5-minute window, per bucket.
TIERS: dict[str, dict[str, int]] = {
    "anonymous": {"api": 500, "resolvers": 3000},
    "free": {"api": 1000, "resolvers": 5000},
    "pro": {"api": 2500, "resolvers": 12000},
}
SLOTS = 100  # a window is counted in this many slots (the sliding count is exact to 1/SLOTS)
NOTICE_AFTER_S = 2.0
MARGIN, MAX_MARGIN_S = 0.25, 5.0  # the sliding window is longer than the server's by this share, at most 5 s
PROBE_S = 5.0  # the longest the first request of a bucket is waited for before others follow
_POLICY = re.compile(r'"fixed window"\s*;\s*"(\w+)"\s*;\s*q=(\d+)\s*;\s*w=(\d+)')
_STATE = re.compile(r'"(\w+)"\s*;\s*r=(\d+)\s*;\s*t=(\d+)')


@dataclass(frozen=True)
class Limits:
    """Quota per bucket for one window of ``window_s`` seconds."""

    quotas: dict[str, int]
    window_s: float = WINDOW_S
    explicit: bool = False  # given by the user: the server's policy header does not raise them

    @staticmethod
    def parse(text: str, base: Limits | None = None) -> Limits:
        """``api=1000,resolvers=5000,window=300`` (any subset; the rest from ``base``)."""
        quotas = dict((base or Limits(TIERS["anonymous"])).quotas)
        window = (base or Limits(TIERS["anonymous"])).window_s
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if key.strip() not in ("api", "resolvers", "window") or number <= 0:
                raise UsageError(f"rate limits {text!r}: expected api=N,resolvers=N,window=SECONDS with positive "
                                 "numbers")
            if key.strip() == "window":
                window = number
            else:
                quotas[key.strip()] = int(number)
        return Limits(quotas, window, explicit=True)

    @staticmethod
    def default(token: bool, override: str | None = None) -> Limits:
        """The published limits of an anonymous caller or a free account, unless overridden
        (``override`` or the environment)."""
        base = Limits(TIERS["free" if token else "anonymous"])
        text = override or os.environ.get(ENV_RATE_LIMITS)
        return Limits.parse(text, base) if text else base


def bucket_of(url: str, endpoint: str) -> str | None:
    """The Hub bucket a request to ``url`` counts against; None for other origins (a CDN)."""
    from urllib.parse import urlsplit

    a, b = urlsplit(url), urlsplit(endpoint)
    if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        return None
    path = a.path[len(b.path.rstrip("/")):] if b.path.strip("/") else a.path
    if "/resolve/" in path:
        return "resolvers"
    return "api" if path.startswith("/api/") else "pages"


@dataclass
class _Bucket:
    quota: int
    window_s: float
    slots: dict[int, int] = field(default_factory=dict)  # slot index -> requests sent in it
    server_left: int | None = None  # what the server said remains ...
    server_reset: float = 0.0  # ... until this wall-clock time
    answered: bool = False  # an answer of this bucket was seen (until then, for up to PROBE_S,
    #                         one request at a time: the server's policy may be below the defaults)
    first_sent: float = 0.0

    def slot_s(self) -> float:
        return self.window_s / SLOTS

    def span_s(self) -> float:
        """The sliding window: the server's, plus a margin for the time a request takes to arrive
        (a request counted here at t may reach the server's next fixed window)."""
        return self.window_s + min(MAX_MARGIN_S, MARGIN * self.window_s)

    def used(self, now: float) -> int:
        first = math.floor((now - self.span_s()) / self.slot_s())  # the slot the window starts in counts whole
        self.slots = {k: v for k, v in self.slots.items() if k >= first}
        return sum(self.slots.values())

    def wait_s(self, now: float) -> float:
        """Seconds until one more request may go (0: now)."""
        waits = []
        if not self.answered and self.used(now) >= 1 and now - self.first_sent < PROBE_S:
            waits.append(0.05)  # the first answer (and its RateLimit-Policy) is on its way
        if self.server_left is not None and now < self.server_reset and self.server_left <= 0:
            waits.append(self.server_reset - now)
        if self.used(now) >= self.quota:
            # the oldest slot that must leave the window for one request to fit
            need, acc = self.used(now) - self.quota + 1, 0
            for k in sorted(self.slots):
                acc += self.slots[k]
                if acc >= need:
                    waits.append((k + 1) * self.slot_s() + self.span_s() - now)
                    break
        return max(waits, default=0.0)

    def take(self, now: float) -> None:
        if not self.slots:
            self.first_sent = now
        k = math.floor(now / self.slot_s())
        self.slots[k] = self.slots.get(k, 0) + 1
        if self.server_left is not None and now < self.server_reset:
            self.server_left -= 1


class RequestBudget:
    """See the module docstring. ``path=None`` keeps the state in this process only."""

    def __init__(self, limits: Limits, path: Path | None = None) -> None:
        self.limits = limits
        self.path = path
        self._lock = threading.Lock()
        self._local: dict[str, _Bucket] = {}
        self.sent: dict[str, int] = {}  # requests this process sent, per bucket
        self.waited_s = 0.0

    @staticmethod
    def for_endpoint(endpoint: str, token: str | bool | None, override: str | None = None,
                     folder: Path | None = None) -> RequestBudget:
        """The budget of one (endpoint, token), shared through a file under the user cache;
        ``override`` as ``Limits.parse`` reads it (else the environment, else the tier's)."""
        from huggingface_hub.utils import get_token

        real = token if isinstance(token, str) else (get_token() if token is not False else None)
        key = hashlib.sha256(f"{endpoint.rstrip('/')}\0{real or ''}".encode()).hexdigest()[:20]
        limits = Limits.default(bool(real), override)
        folder = folder or user_cache_root() / "ratelimit"
        return _shared(key, limits, folder / f"{key}.json")

    # --- state ----------------------------------------------------------------------------
    def _load(self, raw: str) -> dict[str, _Bucket]:
        try:
            data = json.loads(raw) if raw else {}
            out = {}
            for name, d in data.items():
                out[name] = _Bucket(int(d["quota"]), float(d["window_s"]), {int(k): int(v) for k, v in d["slots"].items()},
                                    d.get("server_left"), float(d.get("server_reset", 0.0)), bool(d.get("answered")),
                                    float(d.get("first_sent", 0.0)))
            return out
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}  # a damaged state file: start counting afresh (the server's word still holds)

    @contextlib.contextmanager
    def _state(self):  # type: ignore[no-untyped-def]
        with self._lock:
            if self.path is None:
                yield self._local
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with os.fdopen(os.dup(fd), "r+") as fh:
                    state = self._load(fh.read())
                    yield state
                    fh.seek(0)
                    fh.truncate()
                    fh.write(json.dumps({n: {"quota": b.quota, "window_s": b.window_s, "slots": b.slots,
                                             "server_left": b.server_left, "server_reset": b.server_reset,
                                             "answered": b.answered, "first_sent": b.first_sent}
                                         for n, b in state.items()}))
            finally:
                os.close(fd)  # releases the lock

    def _bucket(self, state: dict[str, _Bucket], name: str) -> _Bucket:
        quota = self.limits.quotas.get(name)
        b = state.get(name)
        if b is None:
            b = state[name] = _Bucket(quota or 10**9, self.limits.window_s)
        elif self.limits.explicit and quota is not None and (b.quota, b.window_s) != (quota, self.limits.window_s):
            b.quota, b.window_s = min(b.quota, quota), self.limits.window_s
        return b

    # --- use ------------------------------------------------------------------------------
    def acquire(self, bucket: str | None) -> None:
        """Block until one request of ``bucket`` may be sent, and count it (None: free)."""
        if bucket is None:
            with self._lock:
                self.sent["cdn"] = self.sent.get("cdn", 0) + 1
            return
        told = False
        while True:
            with self._state() as state:
                b = self._bucket(state, bucket)
                now = time.time()
                wait = b.wait_s(now)
                if wait <= 0:
                    b.take(now)
                    self.sent[bucket] = self.sent.get(bucket, 0) + 1  # under self._lock (held by _state)
                    return
            if wait >= NOTICE_AFTER_S and not told:
                notice(f"Hub rate limit: the '{bucket}' budget ({b.quota} per {b.window_s:.0f} s) is spent; "
                       f"waiting {wait:.0f} s")
                told = True
            self.waited_s += min(wait, 1.0)
            time.sleep(min(wait, 1.0))

    def describe(self) -> str:
        """Requests this process sent per bucket, against the quotas: for progress lines."""
        parts = [f"{name} {self.sent.get(name, 0):,}/{quota:,}" for name, quota in sorted(self.limits.quotas.items())]
        if self.sent.get("cdn"):
            parts.append(f"cdn {self.sent['cdn']:,}")
        return f"Hub requests {' · '.join(parts)} per {self.limits.window_s:.0f} s"

    def observe(self, bucket: str | None, headers: object) -> None:
        """Take the server's ``RateLimit`` / ``RateLimit-Policy`` figures from an answer."""
        get = getattr(headers, "get", None)
        if bucket is None or get is None:
            return
        policy, status = get("RateLimit-Policy") or "", get("RateLimit") or ""
        p, s = _POLICY.search(policy), _STATE.search(status)
        with self._state() as state:
            self._bucket(state, bucket).answered = True
            if p and p.group(1) == bucket:
                b = self._bucket(state, bucket)
                quota, window = int(p.group(2)), float(p.group(3))
                if self.limits.explicit:
                    quota = min(quota, self.limits.quotas.get(bucket, quota))
                if (quota, window) != (b.quota, b.window_s):
                    b.quota, b.window_s, b.slots = quota, window, _rescale(b.slots, b.window_s, window)
            if s and s.group(1) == bucket:
                b = self._bucket(state, bucket)
                now = time.time()
                left, reset = int(s.group(2)), now + int(s.group(3))
                if b.server_left is None or now >= b.server_reset or abs(reset - b.server_reset) > 1.5:
                    b.server_left, b.server_reset = left, reset  # a new window: the server's count
                else:
                    b.server_left = min(b.server_left, left)  # answers overtake one another


def _rescale(slots: dict[int, int], old_window: float, new_window: float) -> dict[int, int]:
    """Slots re-indexed for another window length (counts kept at their time)."""
    if old_window == new_window:
        return slots
    out: dict[int, int] = {}
    for k, v in slots.items():
        nk = math.floor(k * (old_window / SLOTS) / (new_window / SLOTS))
        out[nk] = out.get(nk, 0) + v
    return out


_SHARED: dict[str, RequestBudget] = {}
_SHARED_LOCK = threading.Lock()


def _shared(key: str, limits: Limits, path: Path) -> RequestBudget:
    with _SHARED_LOCK:
        budget = _SHARED.get(key)
        if budget is None or budget.limits != limits:
            budget = _SHARED[key] = RequestBudget(limits, path)
        return budget
