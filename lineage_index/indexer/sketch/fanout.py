"""Sketch reads as Ray tasks (``ingest --ray``): the network-bound stage fanned out over a cluster.

``RaySketcher(spec)`` connects to a Ray cluster (``address``), or starts a small local one on
demand (``num_cpus`` bounded, a 200 MB object store: the machine's RAM is shared), and runs
``sketch_model`` for each record as a Ray task, next to the data's reader. Everything after
sketching (store writes, recovery, the graph) stays on the driver, where it runs without Ray.

* **Same results as the local run.** A task gets the record and a ``ReaderSpec`` (how to open a
  reader: Hub endpoint, retry policy, token; or a local directory) and returns the ``Sketch``
  the local path would compute: the same deterministic sampling plan and decoding, so the same
  arrays, bytes counted per successful attempt. ``pipeline.sketch_all`` puts results back in
  listing order.
* **Bounded concurrency per host.** At most ``max_in_flight_per_host`` tasks read from one Hub
  host (the endpoint's ``host:port``; all local reads count as one host) and at most
  ``max_in_flight`` overall; ``submit`` blocks (collecting finished tasks) until a slot frees.
* **Retries.** A task whose worker process dies is re-run by Ray (``max_retries``); a transient
  read error inside a task (the Hub still answering 429/5xx or a network error after the
  reader's own retries) is retried by the task itself ``app_retries`` times with exponential
  backoff, on a fresh reader. Other read errors become the model's ``Failure``, as locally; a
  task that keeps losing its worker becomes a ``read_error`` Failure naming the cause.
* **Secrets.** The token travels inside the pickled ``ReaderSpec`` (Ray's object store, never a
  log line or the runtime environment); its ``repr`` hides it.

Test-only hook: ``$LINEAGE_INDEX_FANOUT_CRASH_ONCE=<model id>@<marker file>`` (read on the
driver, passed to the tasks) makes the first attempt of that model's task create the marker
file and kill its worker process with ``os._exit``, so tests can watch Ray retry a killed worker.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from lineage_index import config
from lineage_index.errors import LineageIndexError, ModelReadError, RateLimitedError, UsageError
from lineage_index.records import Failure, ModelRecord, Sketch

ENV_CRASH_ONCE = "LINEAGE_INDEX_FANOUT_CRASH_ONCE"
LOCAL_HOST = "local"


@dataclass(frozen=True)
class ReaderSpec:
    """How a worker opens the reader of a record: ``kind`` "hub" (HTTP range reads) or "local".

    ``token`` is the Hub token (from the environment or the source), hidden from ``repr``;
    ``None`` lets huggingface_hub use the worker's own default.
    """

    kind: str
    endpoint: str | None = None
    token: str | bool | None = field(default=None, repr=False, compare=False)
    retry: object | None = None  # read.remote.RetryPolicy
    reader_workers: int = 4
    max_requests: str | None = None  # rate-limit override (budget.Limits.parse)
    budget_dir: str | None = None  # where the request budget's state is shared (one per token)

    def open(self, record: ModelRecord):
        if self.kind == "hub":
            from lineage_index.indexer.read.budget import RequestBudget
            from lineage_index.indexer.read.remote import HubReader

            budget = RequestBudget.for_endpoint(self.endpoint or "", self.token, self.max_requests,
                                                Path(self.budget_dir) if self.budget_dir else None)
            return HubReader(record.id, revision=record.sha, endpoint=self.endpoint, token=self.token,
                             retry=self.retry, max_workers=self.reader_workers,  # type: ignore[arg-type]
                             budget=budget)
        from lineage_index.indexer.read.ranges import LocalReader

        return LocalReader(record.location)

    def host(self) -> str:
        """The host whose concurrency a task counts against."""
        if self.kind != "hub":
            return LOCAL_HOST
        return urlparse(self.endpoint or "").netloc or (self.endpoint or "hub")


def reader_spec(source) -> ReaderSpec:
    """The ``ReaderSpec`` of a source (``HubSource``, ``DirSource``, ``HfCacheSource``)."""
    if getattr(source, "name", None) == "hub":
        budget = getattr(source, "budget", None)
        return ReaderSpec("hub", endpoint=source.endpoint, token=source.token, retry=source.retry,
                          reader_workers=source.reader_workers, max_requests=getattr(source, "max_requests", None),
                          budget_dir=str(budget.path.parent) if budget is not None and budget.path else None)
    if getattr(source, "name", None) in ("dir", "hf-cache"):
        return ReaderSpec("local")
    raise UsageError(f"--ray cannot read from a source of kind {getattr(source, 'name', type(source).__name__)!r}")


@dataclass(frozen=True)
class FanoutConfig:
    """Ray fan-out settings (defaults in ``lineage_index.config``)."""

    address: str | None = None  # None: start a local Ray
    num_cpus: int = config.FANOUT_LOCAL_CPUS
    object_store_bytes: int = config.FANOUT_OBJECT_STORE_BYTES
    max_in_flight_per_host: int = config.FANOUT_MAX_PER_HOST
    max_in_flight: int = config.FANOUT_MAX_IN_FLIGHT
    max_retries: int = config.FANOUT_MAX_RETRIES  # worker deaths, retried by Ray
    app_retries: int = config.FANOUT_APP_RETRIES  # transient read errors, retried in the task
    backoff_s: float = 1.0
    task_cpus: float = 1.0
    crash_once: str | None = field(default_factory=lambda: os.environ.get(ENV_CRASH_ONCE) or None)


def is_transient(exc: Exception) -> bool:
    """Worth another attempt: the Hub kept rate-limiting / failing, or the network broke."""
    if isinstance(exc, RateLimitedError):
        return True
    return type(exc) is ModelReadError and "network error" in str(exc)


def _maybe_crash(model_id: str, crash_once: str | None) -> None:
    """Test hook (module doc): kill this worker on the first attempt for ``model_id``."""
    if not crash_once:
        return
    target, _, marker = crash_once.partition("@")
    if target != model_id or not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # the retry: run normally
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(17)


def sketch_task(spec: ReaderSpec, record: ModelRecord, app_retries: int, backoff_s: float,
                crash_once: str | None = None) -> Sketch | Failure:
    """The body of one Ray task (plain function: also callable without Ray)."""
    from lineage_index.indexer.sketch.sample import sketch_model

    _maybe_crash(record.id, crash_once)
    attempt = 0
    while True:
        try:
            reader = spec.open(record)
            try:
                return sketch_model(record, reader)
            finally:
                reader.close()
        except LineageIndexError as exc:
            if attempt < app_retries and is_transient(exc):
                time.sleep(backoff_s * (2**attempt))
                attempt += 1
                continue
            return Failure(record.id, getattr(exc, "kind", "error"), str(exc))


class RaySketcher:
    """Submit records, get ``(model id, Sketch | Failure)`` back as tasks finish (module doc)."""

    def __init__(self, spec: ReaderSpec, cfg: FanoutConfig | None = None) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.cfg = cfg or FanoutConfig()
        self._started = False
        if not ray.is_initialized():
            if self.cfg.address:
                ray.init(address=self.cfg.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address="local", num_cpus=self.cfg.num_cpus,
                         object_store_memory=self.cfg.object_store_bytes, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
                self._started = True
            self._connected = True
        else:
            self._connected = False
        self._remote = ray.remote(sketch_task).options(
            max_retries=self.cfg.max_retries, retry_exceptions=False, num_cpus=self.cfg.task_cpus)
        self._spec_ref = ray.put(spec)
        self._in_flight: dict[object, tuple[str, str]] = {}  # ref -> (model id, host)
        self._per_host: dict[str, int] = {}
        self._done: deque[tuple[str, Sketch | Failure]] = deque()
        self.tasks = 0
        self.lost_workers = 0
        self.peak_per_host: dict[str, int] = {}

    # --- scheduling ------------------------------------------------------------------------

    def _collect(self, timeout: float | None) -> None:
        if not self._in_flight:
            return
        ready, _ = self.ray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
        for ref in ready:
            model_id, host = self._in_flight.pop(ref)
            self._per_host[host] -= 1
            self._done.append((model_id, self._result(ref, model_id)))

    def _result(self, ref, model_id: str) -> Sketch | Failure:
        from ray.exceptions import RayError, RayTaskError

        try:
            return self.ray.get(ref)
        except RayTaskError as exc:  # a bug, not a read error: re-raise it on the driver
            raise exc.as_instanceof_cause() from None
        except RayError as exc:  # the worker kept dying (or the cluster lost the task)
            self.lost_workers += 1
            return Failure(model_id, ModelReadError.kind,
                           f"{model_id}: sketch task failed after {self.cfg.max_retries} retries: "
                           f"{type(exc).__name__}")

    def submit(self, record: ModelRecord) -> Iterator[tuple[str, Sketch | Failure]]:
        """Start ``record``'s task once its host has a free slot; yields tasks finished meanwhile."""
        host = self.spec.host()
        while (self._per_host.get(host, 0) >= self.cfg.max_in_flight_per_host
               or len(self._in_flight) >= self.cfg.max_in_flight):
            self._collect(timeout=None)
        ref = self._remote.remote(self._spec_ref, record, self.cfg.app_retries, self.cfg.backoff_s,
                                  self.cfg.crash_once)
        self._in_flight[ref] = (record.id, host)
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self.peak_per_host[host] = max(self.peak_per_host.get(host, 0), self._per_host[host])
        self.tasks += 1
        self._collect(timeout=0)
        while self._done:
            yield self._done.popleft()

    def finish(self) -> Iterator[tuple[str, Sketch | Failure]]:
        """Wait for every task still running; yields their results as they finish."""
        while self._in_flight or self._done:
            while self._done:
                yield self._done.popleft()
            self._collect(timeout=None)

    def close(self) -> None:
        """Disconnect (and stop the local Ray this object started)."""
        if self._connected:
            self.ray.shutdown()
            self._connected = False

    def __enter__(self) -> RaySketcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def make_sketcher(source, address: str | None = None, **overrides) -> RaySketcher:
    """A ``RaySketcher`` for ``source`` on the cluster at ``address`` (None: a local Ray)."""
    if not ray_available():
        raise UsageError("--ray needs the ray package: pip install 'lineage-index[ray]'")
    return RaySketcher(reader_spec(source), FanoutConfig(address=address, **overrides))


__all__ = ["FanoutConfig", "RaySketcher", "ReaderSpec", "make_sketcher", "reader_spec", "sketch_task",
           "is_transient", "ENV_CRASH_ONCE"]
