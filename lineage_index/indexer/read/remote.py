"""HTTP Range reads from a Hugging Face Hub (or a compatible endpoint), with retries.

``HubReader`` reads byte ranges of one repository's files at one revision (pin it to the commit
sha) via HTTP ``Range`` GETs on the ``resolve`` URL, through huggingface_hub's shared session
(``get_session``, ``build_hf_headers``, ``hf_hub_url``, ``hf_raise_for_status``). Every answer is
checked: a ``206`` must carry a ``Content-Range`` equal to the request (clipped only at the end
of the file); a ``200`` that ignored ``Range`` is accepted only as the whole file (sliced, and
refused beyond ``max_unranged_bytes``); a ``416`` means the file is shorter than asked.

``RetryPolicy``/``with_retries`` retry 408/429/5xx and network errors with backoff, honouring
``Retry-After`` / ``RateLimit: ...;t=N``, bounded in count and total wait; huggingface_hub's own
calls that do not retry (``model_info``, ...) are wrapped with them by the sources.
``map_hub_error`` turns huggingface_hub errors into ``lineage_index.errors``.

Never downloads whole model files, never uses Xet, never puts a token in a message.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

from huggingface_hub import constants, hf_hub_url
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.errors import GatedRepoError as HfGatedRepoError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from lineage_index.config import notice
from lineage_index.errors import (
    GatedRepoError,
    HeaderError,
    ModelReadError,
    RateLimitedError,
    RepoNotFoundError,
)
from lineage_index.indexer.read.ranges import (
    DEFAULT_HUB_GAP_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    RangeReader,
    safe_relpath,
)

try:  # huggingface_hub 2.x
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - huggingface_hub 1.x
    import httpx as _httpx  # type: ignore[no-redef]

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    _httpx.TimeoutException,
    _httpx.NetworkError,
    _httpx.RemoteProtocolError,
)
#: Everything the HTTP layer may raise (HfHubHTTPError subclasses httpx's HTTPError in 2.x).
HUB_ERRORS: tuple[type[Exception], ...] = (HfHubHTTPError, _httpx.HTTPError)
DEFAULT_MAX_UNRANGED_BYTES = 64 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$")
@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 408/429/5xx and network errors: exponential backoff, ``Retry-After`` honoured.

    The wait before retry ``k`` (0-based) is the server's ``Retry-After`` (or ``RateLimit`` t=)
    when given, else ``base_wait_s * 2**k`` capped at ``max_wait_s``. A server asking for more
    than ``max_wait_s``, or a total wait beyond ``max_total_wait_s``, ends the retries early.
    After the last retry a status error becomes ``RateLimitedError``.
    """

    max_retries: int = 5
    base_wait_s: float = 1.0
    max_wait_s: float = 30.0
    max_total_wait_s: float = 120.0
    timeout_s: float = 30.0  # per read: the longest silence a connection may keep
    # a whole answer must arrive within this (a server that trickles a byte at a time never
    # trips the per-read timeout), and one model's reads all within ``model_budget_s``
    deadline_s: float = 120.0
    model_budget_s: float = 900.0

    def backoff_s(self, attempt: int) -> float:
        return min(self.max_wait_s, self.base_wait_s * (2**attempt))


class RetryableError(Exception):
    """A response worth retrying (status None = network error)."""

    def __init__(self, status: int | None, retry_after_s: float | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.retry_after_s = retry_after_s


def retry_after_s(headers: object) -> float | None:
    """Seconds to wait from ``RateLimit: ...;t=N`` or ``Retry-After: N`` (HTTP dates ignored)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ratelimit = get("RateLimit") or ""
    for part in ratelimit.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.strip().isdigit():
            return float(value.strip())
    value = (get("Retry-After") or "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


NOTICE_WAIT_S = 2.0  # waits at least this long are told to ``config.notices`` (the CLI: stderr)


def with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it stops raising ``RetryableError`` (or a retryable hub/network error)."""
    waited = 0.0
    attempt = 0
    while True:
        try:
            return fn()
        except RetryableError as exc:
            last = exc
        except HfHubHTTPError as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            if status not in RETRY_STATUSES:
                raise
            last = RetryableError(status, retry_after_s(getattr(response, "headers", None)), f"HTTP {status}")
        except NETWORK_ERRORS as exc:
            last = RetryableError(None, None, type(exc).__name__)
        wait = last.retry_after_s if last.retry_after_s is not None else policy.backoff_s(attempt)
        if attempt >= policy.max_retries or wait > policy.max_wait_s or waited + wait > policy.max_total_wait_s:
            break
        if wait >= NOTICE_WAIT_S:  # a wait long enough to look like a hang is said
            reason = f"HTTP {last.status}" if last.status is not None else str(last)
            notice(f"{what}: waiting {wait:.0f} s after {reason}, try {attempt + 2}/{policy.max_retries + 1}")
        sleep(wait)
        waited += wait
        attempt += 1
    tries = attempt + 1
    if last.status is None:
        raise ModelReadError(f"{what}: network error after {tries} attempt(s): {last}")
    hint = f" (server asked to retry after {last.retry_after_s:g}s)" if last.retry_after_s else ""
    raise RateLimitedError(f"{what}: HTTP {last.status} after {tries} attempt(s){hint}")


def map_hub_error(exc: Exception, what: str) -> ModelReadError:
    """The ``lineage_index.errors`` exception for a huggingface_hub / HTTP error (no secrets)."""
    if isinstance(exc, ModelReadError):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    code = f" (HTTP {status})" if status else ""
    if isinstance(exc, HfGatedRepoError):
        return GatedRepoError(f"{what}: gated repository; no access with the token given{code}")
    if isinstance(exc, RevisionNotFoundError):
        return RepoNotFoundError(f"{what}: revision not found{code}")
    if isinstance(exc, DisabledRepoError):
        return RepoNotFoundError(f"{what}: repository is disabled{code}")
    if isinstance(exc, RepositoryNotFoundError) or status == 401:
        return RepoNotFoundError(f"{what}: repository not found, or private{code}")
    if isinstance(exc, EntryNotFoundError):
        return ModelReadError(f"{what}: file not found{code}")
    if status in RETRY_STATUSES:
        return RateLimitedError(f"{what}: HTTP {status}")
    if isinstance(exc, NETWORK_ERRORS):
        return ModelReadError(f"{what}: network error: {type(exc).__name__}")
    detail = getattr(exc, "server_message", None) or type(exc).__name__
    return ModelReadError(f"{what}: request failed{code}: {str(detail)[:200]}")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_range: str | None
    location: str | None = None  # a redirect's absolute target


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: answers of a remembered redirect target (a signed CDN URL) that mean: it expired, resolve again
EXPIRED = frozenset({401, 403, 404, 410})


class Locations:
    """Where each file's resolve URL redirected (a signed CDN URL), shared by every reader of a
    source so that a file is resolved once per run, not once per reader or per thread: the
    first reader of a file resolves it while the others wait (one lock per file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[tuple[str, ...], str] = {}
        self._file_locks: dict[tuple[str, ...], threading.Lock] = {}

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            return self._where.get(key)

    def put(self, key: tuple[str, ...], url: str) -> None:
        with self._lock:
            self._where[key] = url

    def drop(self, key: tuple[str, ...], url: str) -> None:
        with self._lock:
            if self._where.get(key) == url:
                del self._where[key]

    def lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(key, threading.Lock())


class HubReader(RangeReader):
    """Range reads of ``repo_id`` at ``revision`` (a commit sha; ``main`` if None) on ``endpoint``.

    ``token=None`` uses huggingface_hub's default (``HF_TOKEN`` or the stored login);
    ``endpoint=None`` uses ``HF_ENDPOINT`` as huggingface_hub read it at import time.

    **Resolve once per file.** The first read of a file goes to its ``/resolve/`` URL (a
    *resolver* request, the Hub's scarcest budget after the API's); when that answers with a
    redirect (the Hub sends weight files to a CDN), the target is remembered and every later
    read of the file goes straight there, without the token, until the target answers
    401/403/404/410 (a signed URL that expired), when the file is resolved again. ``budget``
    (a ``budget.RequestBudget``) paces the requests that count against the Hub's rate limits;
    ``by_bucket`` counts what was sent (``resolvers``, ``api``, ``cdn``).
    """

    def __init__(self, repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
                 token: str | bool | None = None, retry: RetryPolicy | None = None,
                 max_gap_bytes: int = DEFAULT_HUB_GAP_BYTES,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_workers: int = 4,
                 max_unranged_bytes: int = DEFAULT_MAX_UNRANGED_BYTES, budget: Any = None,
                 locations: Locations | None = None) -> None:
        super().__init__(max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes,
                         max_workers=max_workers)
        self.repo_id = repo_id
        self.revision = revision or "main"
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.retry = retry or RetryPolicy()
        self.max_unranged_bytes = max_unranged_bytes
        self.budget = budget
        self._headers = build_hf_headers(token=token)
        self._plain_headers = {k: v for k, v in self._headers.items() if k.lower() != "authorization"}
        self._started: float | None = None  # first request of this model (its time budget)
        self._located = locations if locations is not None else Locations()
        self.by_bucket: dict[str, int] = {}

    def url(self, file: str) -> str:
        return hf_hub_url(self.repo_id, safe_relpath(file), revision=self.revision,
                          endpoint=self.endpoint)

    def describe(self, file: str) -> str:
        return f"{self.repo_id}@{self.revision[:12]}/{file}"

    def _request(self, url: str, rng: str, what: str, asked: int, *, raise_errors: bool) -> _Reply:
        """One GET (no redirect followed), paced by the budget and counted by bucket."""
        from lineage_index.indexer.read.budget import bucket_of

        bucket = bucket_of(url, self.endpoint)
        if self.budget is not None:
            before = time.monotonic()
            self.budget.acquire(bucket)
            if self._started is not None:
                self._started += time.monotonic() - before  # waiting for the budget is not reading
        self._count(0, 1)
        with self._lock:
            self.by_bucket[bucket or "cdn"] = self.by_bucket.get(bucket or "cdn", 0) + 1
        now = time.monotonic()
        self._started = self._started if self._started is not None else now
        if now - self._started > self.retry.model_budget_s:
            raise ModelReadError(f"{what}: this model's reads took over {self.retry.model_budget_s:.0f} s; "
                                 "given up (the run goes on)")
        headers = {**(self._headers if bucket is not None else self._plain_headers),
                   "Range": rng, "Accept-Encoding": "identity"}
        with get_session().stream("GET", url, headers=headers, timeout=self.retry.timeout_s,
                                  follow_redirects=False) as r:
            if self.budget is not None:
                self.budget.observe(bucket, r.headers)
            status = r.status_code
            if status in (200, 206):
                return _Reply(status, self._body(r, what, asked), r.headers.get("Content-Range"))
            r.read()
            if status in REDIRECTS and r.headers.get("Location"):
                return _Reply(status, b"", None, urljoin(url, r.headers["Location"]))
            if status == 416:
                return _Reply(416, b"", r.headers.get("Content-Range"))
            if status in RETRY_STATUSES:
                wait = retry_after_s(r.headers)
                if status == 429 and self.budget is not None:
                    wait = 0.0  # the budget has the server's reset time: the next acquire waits for it
                raise RetryableError(status, wait, f"HTTP {status}")
            if raise_errors:
                hf_raise_for_status(r)
            return _Reply(status, b"", None)

    def _get(self, file: str, first: int, last: int) -> _Reply:
        what = self.describe(file)
        rng = f"bytes={first}-{last}"

        key = (self.endpoint, self.repo_id, self.revision, file)

        def located() -> _Reply | None:
            target = self._located.get(key)
            if target is None:
                return None
            reply = self._request(target, rng, what, last - first + 1, raise_errors=False)
            if reply.status in (200, 206, 416):
                return reply
            if reply.status not in EXPIRED and reply.location is None:
                raise ModelReadError(f"{what}: unexpected HTTP {reply.status} from its download location")
            self._located.drop(key, target)  # expired: resolve the file again
            return None

        def attempt() -> _Reply:
            reply = located()
            if reply is not None:
                return reply
            with self._located.lock(key):  # one resolve per file, whatever the threads
                reply = located()  # another thread may have resolved it meanwhile
                if reply is not None:
                    return reply
                url = self.url(file)
                for _ in range(MAX_REDIRECTS + 1):
                    reply = self._request(url, rng, what, last - first + 1, raise_errors=True)
                    if reply.location is None:
                        break
                    url = reply.location
                else:
                    raise ModelReadError(f"{what}: more than {MAX_REDIRECTS} redirects")
                if reply.status in (200, 206, 416):
                    if url != self.url(file):
                        self._located.put(key, url)
                    return reply
            raise ModelReadError(f"{what}: unexpected HTTP {reply.status} to a range request")

        try:
            return with_retries(attempt, self.retry, what)
        except HUB_ERRORS as exc:
            raise map_hub_error(exc, what) from None

    def _body(self, r: _httpx.Response, what: str, asked: int) -> bytes:
        """The body, refused once it exceeds what was asked (206) or ``max_unranged_bytes`` (200)."""
        limit = asked if r.status_code == 206 else self.max_unranged_bytes
        length = r.headers.get("Content-Length")
        if r.status_code == 200 and length and length.isdigit() and int(length) > limit:
            raise ModelReadError(f"{what}: server ignored the Range request and offers {length} bytes; refused")
        body = bytearray()
        start = time.monotonic()
        try:
            for chunk in r.iter_bytes():
                body += chunk
                if time.monotonic() - start > self.retry.deadline_s:
                    raise ModelReadError(f"{what}: {len(body)} of {asked} bytes in {self.retry.deadline_s:.0f} s; "
                                         "a server that trickles is given up on (the run goes on)")
                if len(body) > limit:
                    detail = "ignored the Range request" if r.status_code == 200 else "sent more than asked"
                    raise ModelReadError(f"{what}: server {detail}; body over {limit} bytes refused")
        finally:
            self._count(len(body), 0)
        return bytes(body)

    def _parse_206(self, reply: _Reply, file: str, first: int) -> tuple[int, int]:
        m = _CONTENT_RANGE.match(reply.content_range or "")
        if not m:
            raise ModelReadError(f"{self.describe(file)}: 206 without a valid Content-Range")
        a, b = int(m.group(1)), int(m.group(2))
        if m.group(3) != "*":
            self._learn_size(file, int(m.group(3)))
        if a != first or b < a or len(reply.body) != b - a + 1:
            raise ModelReadError(
                f"{self.describe(file)}: server answered bytes {a}-{b} ({len(reply.body)} body bytes)"
                f" to a request starting at {first}"
            )
        return a, b

    def _check_full_body(self, reply: _Reply, file: str) -> None:
        known = self.size(file)
        if known is not None and known != len(reply.body):
            raise ModelReadError(
                f"{self.describe(file)}: server ignored Range and sent {len(reply.body)} bytes,"
                f" but the file has {known}"
            )
        self._learn_size(file, len(reply.body))

    def _unsatisfied_total(self, reply: _Reply, file: str) -> int:
        m = _UNSATISFIED_RANGE.match(reply.content_range or "")
        if not m:
            raise ModelReadError(f"{self.describe(file)}: 416 without 'Content-Range: bytes */size'")
        self._learn_size(file, int(m.group(1)))
        return int(m.group(1))

    def _fetch(self, file: str, start: int, end: int) -> bytes:
        reply = self._get(file, start, end - 1)
        if reply.status == 206:
            _, b = self._parse_206(reply, file, start)
            if b > end - 1:
                raise ModelReadError(f"{self.describe(file)}: server sent bytes past the requested {end - 1}")
            if b < end - 1:
                raise HeaderError(
                    f"{self.describe(file)}: truncated: asked bytes [{start}, {end}), file ends at {b + 1}"
                )
            return reply.body
        if reply.status == 200:
            self._check_full_body(reply, file)
            if len(reply.body) < end:
                raise HeaderError(
                    f"{self.describe(file)}: truncated: asked bytes [{start}, {end}),"
                    f" file has {len(reply.body)}"
                )
            return reply.body[start:end]
        total = self._unsatisfied_total(reply, file)
        raise HeaderError(
            f"{self.describe(file)}: truncated: asked bytes [{start}, {end}), file has {total}"
        )

    def _fetch_prefix(self, file: str, nbytes: int) -> bytes:
        reply = self._get(file, 0, nbytes - 1)
        if reply.status == 206:
            _, b = self._parse_206(reply, file, 0)
            total = self.size(file)
            if b > nbytes - 1 or (b < nbytes - 1 and total is not None and total != b + 1):
                raise ModelReadError(
                    f"{self.describe(file)}: server answered bytes 0-{b} of {total} to 0-{nbytes - 1}"
                )
            return reply.body
        if reply.status == 200:
            self._check_full_body(reply, file)
            return reply.body[:nbytes]
        if self._unsatisfied_total(reply, file) != 0:
            raise ModelReadError(f"{self.describe(file)}: 416 for a prefix of a non-empty file")
        return b""


__all__ = [
    "HubReader",
    "RetryPolicy",
    "RetryableError",
    "map_hub_error",
    "retry_after_s",
    "with_retries",
    "RETRY_STATUSES",
]


# --- the token stays with the Hub ------------------------------------------------------------
_TOKEN_ORIGINS: set[str] = set()  # origins (scheme://host:port) that may receive Authorization
_GUARD_INSTALLED = False


def _origin(url: object) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(str(url))
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _strip_foreign_token(request) -> None:  # type: ignore[no-untyped-def]
    """httpx request hook: no Authorization header to an origin other than the Hub endpoint's
    (a pagination ``Link`` or a redirect to another host never receives ``HF_TOKEN``)."""
    if "authorization" in request.headers and _origin(request.url) not in _TOKEN_ORIGINS:
        del request.headers["authorization"]


def guard_token(endpoint: str) -> None:
    """Allow the token for ``endpoint``'s origin only, for every huggingface_hub request of this
    process (listing pages included, which huggingface_hub follows with the same headers)."""
    global _GUARD_INSTALLED
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    _TOKEN_ORIGINS.add(_origin(endpoint))
    if _GUARD_INSTALLED:
        return

    def factory():  # type: ignore[no-untyped-def]
        client = default_client_factory()
        client.event_hooks["request"] = [*client.event_hooks.get("request", []), _strip_foreign_token]
        return client

    set_client_factory(factory)
    _GUARD_INSTALLED = True
