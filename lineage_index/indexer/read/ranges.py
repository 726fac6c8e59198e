"""Byte-range readers: exact slices of one repository's files, coalesced into few requests.

``RangeReader.read_ranges(file, [(start, end), ...])`` returns the bytes ``[start, end)`` of
each range (absolute offsets in that repo file), in the order asked. Nearby ranges are merged
into one request when the gap between them is at most ``max_gap_bytes``; the reader counts
``requests`` (requests sent, retries included) and ``bytes_read`` (bytes actually received
or pread, gaps of merged ranges included; HTTP error bodies are not counted).

Coalescing thresholds (documented choice): ``HubReader`` merges across gaps up to 16 KiB, since
one extra HTTP round trip (tens of ms) costs more than 16 KiB of transfer; ``LocalReader``
merges only touching/overlapping ranges (gap 0), since a pread costs microseconds, so it reads
exactly the bytes asked. Merged requests are capped at ``max_request_bytes`` (8 MiB) unless a
single range is larger.

``LocalReader`` (here) uses ``os.pread`` on a directory; ``HubReader`` (``read.remote``, which
builds on this module and is never imported by it) issues HTTP Range GETs on the ``resolve`` URL pinned to a commit,
with retries and strict ``206``/``Content-Range`` checks. Readers never read whole files unless
asked for a small one (``read_file``), never unpickle anything, and never put tokens in messages.
"""

from __future__ import annotations

import bisect
import os
import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lineage_index.errors import HeaderError, ModelReadError

T = TypeVar("T")

DEFAULT_HUB_GAP_BYTES = 16 * 1024
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ReadStats:
    """Counters of a reader at one moment (subtract two to measure a phase)."""

    bytes_read: int
    requests: int

    def __sub__(self, other: ReadStats) -> ReadStats:
        return ReadStats(self.bytes_read - other.bytes_read, self.requests - other.requests)


def coalesce(ranges: Sequence[tuple[int, int]], max_gap_bytes: int,
             max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> list[tuple[int, int]]:
    """Merge sorted ``[start, end)`` ranges whose gap is <= ``max_gap_bytes`` into request spans.

    Empty ranges are dropped; overlapping and duplicate ranges always merge. A merge that would
    exceed ``max_request_bytes`` starts a new span instead (a single larger range stays whole).
    """
    spans: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if spans:
            s0, e0 = spans[-1]
            if start <= e0 or (start - e0 <= max_gap_bytes and max(end, e0) - s0 <= max_request_bytes):
                spans[-1] = (s0, max(e0, end))
                continue
        spans.append((start, end))
    return spans


def check_ranges(file: str, ranges: Sequence[tuple[int, int]]) -> None:
    for r in ranges:
        if len(r) != 2 or not all(isinstance(x, int) for x in r) or not 0 <= r[0] <= r[1]:
            raise ValueError(f"{file}: invalid byte range {r!r} (need 0 <= start <= end)")


def safe_relpath(file: str) -> str:
    """A repo-relative POSIX path that cannot escape the repository root."""
    path = posixpath.normpath(file.replace("\\", "/"))
    if not file or path.startswith("/") or path == ".." or path.startswith("../") or path == ".":
        raise ModelReadError(f"invalid repository path {file[:200]!r}")
    return path


class RangeReader(ABC):
    """Reads exact byte ranges of the files of one repository, counting what it costs."""

    def __init__(self, *, max_gap_bytes: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_workers: int = 1) -> None:
        self.max_gap_bytes = max_gap_bytes
        self.max_request_bytes = max_request_bytes
        self.max_workers = max(1, max_workers)
        self._lock = threading.Lock()
        self._bytes_read = 0
        self._requests = 0
        self._sizes: dict[str, int] = {}
        self._pool: ThreadPoolExecutor | None = None

    # --- counters -----------------------------------------------------------------------
    @property
    def bytes_read(self) -> int:
        """Bytes actually transferred (HTTP bodies received / bytes pread), all files."""
        return self._bytes_read

    @property
    def requests(self) -> int:
        """Requests sent (HTTP requests incl. retries / coalesced local reads)."""
        return self._requests

    def stats(self) -> ReadStats:
        with self._lock:
            return ReadStats(self._bytes_read, self._requests)

    def _count(self, nbytes: int, nrequests: int = 1) -> None:
        with self._lock:
            self._bytes_read += nbytes
            self._requests += nrequests

    def _learn_size(self, file: str, size: int) -> None:
        with self._lock:
            self._sizes[file] = size

    def size(self, file: str) -> int | None:
        """The size of ``file`` when known (always locally; on the Hub once a read saw it)."""
        with self._lock:
            return self._sizes.get(file)

    def known_sizes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._sizes)

    # --- reading ------------------------------------------------------------------------
    def read_ranges(self, file: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Exact bytes ``[start, end)`` of each range of ``file``, in the order given.

        Raises ``HeaderError`` when the file is shorter than a range (truncated file) and the
        ``ModelReadError`` family for everything else.
        """
        check_ranges(file, ranges)
        spans = coalesce(ranges, self.max_gap_bytes, self.max_request_bytes)
        blobs = self._map(lambda span: self._fetch(file, span[0], span[1]), spans)
        starts = [s for s, _ in spans]
        out: list[bytes] = []
        for start, end in ranges:
            if start == end:
                out.append(b"")
                continue
            i = bisect.bisect_right(starts, start) - 1
            s0 = spans[i][0]
            out.append(blobs[i][start - s0 : end - s0])
        return out

    def read_prefix(self, file: str, nbytes: int) -> bytes:
        """Up to ``nbytes`` from the start of ``file`` (fewer when the file is shorter)."""
        return self._fetch_prefix(file, nbytes) if nbytes > 0 else b""

    def read_file(self, file: str, max_bytes: int) -> bytes:
        """The whole of a small file; ``ModelReadError`` if it is larger than ``max_bytes``."""
        data = self._fetch_prefix(file, max_bytes + 1)
        if len(data) > max_bytes:
            raise ModelReadError(f"{file}: larger than the {max_bytes}-byte limit for this file")
        return data

    def _map(self, fn: Callable[[tuple[int, int]], T], items: list[tuple[int, int]]) -> list[T]:
        if self.max_workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="range-reader")
            pool = self._pool
        return list(pool.map(fn, items))

    @abstractmethod
    def _fetch(self, file: str, start: int, end: int) -> bytes:
        """Exactly ``[start, end)`` in one request, or raise (HeaderError if the file is short)."""

    @abstractmethod
    def _fetch_prefix(self, file: str, nbytes: int) -> bytes:
        """``[0, nbytes)`` clipped at the end of the file, in one request."""

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalReader(RangeReader):
    """Reads files under a local directory with ``os.pread`` (symlinks, e.g. HF cache blobs, ok)."""

    def __init__(self, root: str | os.PathLike[str], *, max_gap_bytes: int = 0,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        super().__init__(max_gap_bytes=max_gap_bytes, max_request_bytes=max_request_bytes)
        self.root = Path(root)

    def _path(self, file: str) -> Path:
        return self.root / safe_relpath(file)

    def size(self, file: str) -> int | None:
        try:
            return os.stat(self._path(file)).st_size
        except OSError as exc:
            raise ModelReadError(f"{file}: cannot stat ({exc.strerror})") from None

    def _pread(self, file: str, start: int, nbytes: int) -> bytes:
        try:
            fd = os.open(self._path(file), os.O_RDONLY)
        except OSError as exc:
            raise ModelReadError(f"{file}: cannot open ({exc.strerror})") from None
        parts: list[bytes] = []
        got = 0
        try:
            while got < nbytes:
                chunk = os.pread(fd, nbytes - got, start + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
        except OSError as exc:
            raise ModelReadError(f"{file}: read failed ({exc.strerror})") from None
        finally:
            os.close(fd)
        self._count(got)
        return b"".join(parts)

    def _fetch(self, file: str, start: int, end: int) -> bytes:
        data = self._pread(file, start, end - start)
        if len(data) < end - start:
            raise HeaderError(
                f"{file}: truncated: asked bytes [{start}, {end}) but the file ends at {start + len(data)}"
            )
        return data

    def _fetch_prefix(self, file: str, nbytes: int) -> bytes:
        return self._pread(file, 0, nbytes)

