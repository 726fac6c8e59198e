"""The Hub source: model records from a Hugging Face Hub (or a compatible endpoint).

Listing uses ``HfApi.list_models(author=..., search=..., expand=EXPAND)`` (``expand`` cannot be
combined with ``full``/``cardData``; the client retries list pages itself); explicit ids use
``HfApi.model_info(id, files_metadata=True)`` wrapped in our retry policy (the client does not
retry it). Per model, small files (``config.json``, ``adapter_config.json``, the README only
when the API returned no ``cardData``) and the safetensors headers are read with
``HubReader`` range requests pinned to the commit sha, so one record is one commit. We do not
use ``get_safetensors_metadata`` (it probes root names only and fills the HF cache).

``HF_ENDPOINT``/``HF_TOKEN`` apply through huggingface_hub's defaults when ``endpoint``/``token``
are None. Per-model errors become ``Failure`` (gated, not_found, rate_limited, bad_header,
read_error); a failure of the listing itself raises. Never downloads weights or unpickles.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from huggingface_hub import HfApi

from lineage_index.errors import ModelReadError, UsageError
from lineage_index.indexer.read.card import iso_utc
from lineage_index.indexer.read.remote import (
    HUB_ERRORS,
    HubReader,
    Locations,
    RetryPolicy,
    guard_token,
    map_hub_error,
    with_retries,
)
from lineage_index.indexer.read.safetensors import DEFAULT_PREFIX_BYTES
from lineage_index.indexer.read.sources import PICKLE_SUFFIXES, build_record, read_card
from lineage_index.records import Failure, FileEntry, ModelRecord

T = TypeVar("T")
R = TypeVar("R")

HUB_README_PREFIX_BYTES = 32 * 1024  # README fallback, only when the API gave no cardData
EXPAND = [
    "author", "sha", "createdAt", "lastModified", "private", "gated", "disabled", "tags",
    "pipeline_tag", "library_name", "cardData", "config", "siblings", "safetensors",
]


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` with up to ``workers`` calls in flight, results in input order, bounded look-ahead."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="hub-source") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def listing_info(item: Any) -> Any:
    """A listing entry as a ``ModelInfo``, or a Failure naming what is wrong with it (an entry
    that is no object, has no valid repo id, or whose fields huggingface_hub cannot parse)."""
    from huggingface_hub import ModelInfo
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(item, dict):
        return Failure("<listing>", "bad_listing_entry", f"not a model object: {repr(item)[:80]}")
    model_id = item.get("id")
    try:
        if not isinstance(model_id, str) or model_id.count("/") != 1 or len(model_id) > MAX_REPO_ID:
            raise ValueError("not an org/name of at most 96 + 96 characters")
        validate_repo_id(model_id)
    except Exception as exc:  # noqa: BLE001 - any invalid id: the entry is skipped
        return Failure("<listing>", "bad_listing_entry", f"invalid model id {repr(model_id)[:80]}: {str(exc)[:120]}")
    try:
        return ModelInfo(**{"siblings": None, **item})
    except Exception as exc:  # noqa: BLE001 - huggingface_hub's parser on hostile fields
        return Failure(model_id, "bad_listing_entry", f"unparseable listing fields ({type(exc).__name__}: "
                                                      f"{str(exc)[:160]})")


class _NoReads:
    """A reader for planning: files are named, never read."""

    def read_file(self, file: str, max_bytes: int) -> bytes:  # pragma: no cover - never called without an index
        raise ModelReadError(f"{file}: not read while planning")


MAX_REPO_ID = 96 + 1 + 96  # the Hub's limit per name part, and the slash

# A listing whose pages come back to models it already gave (a Link: rel=next that never ends)
# is stopped after this many repeated models in a row: a page or more of nothing new.
LISTING_REPEATS = 1000


class HubSource:
    """Models of a Hub org (``org``), a search (``search``) or explicit ids (``models``).

    ``retry`` governs every call the client does not retry itself (model_info, file and
    header reads); ``max_workers`` models are read concurrently, records come out in
    listing order.
    """

    name = "hub"

    def __init__(self, org: str | Iterable[str] | None = None, search: str | None = None,
                 models: Iterable[str] | None = None, endpoint: str | None = None,
                 token: str | bool | None = None, *, limit: int | None = None,
                 retry: RetryPolicy | None = None, max_workers: int = 8, reader_workers: int = 4,
                 readme_fallback: bool = True,
                 header_prefix_bytes: int = DEFAULT_PREFIX_BYTES, everything: bool = False,
                 max_requests: str | None = None) -> None:
        self.models = list(models) if models is not None else None
        if not (org or search or self.models or everything):
            raise UsageError("HubSource needs an org, a search string, a list of model ids, or everything=True")
        self.orgs = [org] if isinstance(org, str) else list(dict.fromkeys(org or ()))
        self.org = ", ".join(self.orgs) or None
        self.search = search
        self.token = token
        self.limit = limit
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers
        self.reader_workers = reader_workers
        self.readme_fallback = readme_fallback
        self.header_prefix_bytes = header_prefix_bytes
        self.api = HfApi(endpoint=endpoint, token=token)
        self.endpoint: str = self.api.endpoint
        guard_token(self.endpoint)
        from lineage_index.indexer.read.budget import RequestBudget

        self.max_requests = max_requests
        self.locations = Locations()  # each file resolved once per run, across readers and threads
        self.budget = RequestBudget.for_endpoint(self.endpoint, token, max_requests)

    def reader(self, repo_id: str, sha: str | None) -> HubReader:
        return HubReader(repo_id, revision=sha, endpoint=self.endpoint, token=self.token,
                         retry=self.retry, max_workers=self.reader_workers, budget=self.budget,
                         locations=self.locations)

    def open_reader(self, record: ModelRecord) -> HubReader:
        """A RangeReader on ``record``'s repo pinned to ``record.sha``."""
        return self.reader(record.id, record.sha)

    # --- metadata ----------------------------------------------------------------------
    def _model_info(self, repo_id: str) -> Any:
        def info() -> Any:
            # the request model_info(files_metadata=True) sends, sent here so that the answer's
            # RateLimit headers reach the budget
            from huggingface_hub import ModelInfo
            from huggingface_hub.utils import get_session, hf_raise_for_status

            url = f"{self.endpoint}/api/models/{quote(repo_id, safe='/')}"
            self.budget.acquire("api")
            r = get_session().get(url, params={"blobs": "true"}, headers=self.api._build_hf_headers(token=self.token),
                                  timeout=self.retry.timeout_s)
            self.budget.observe("api", r.headers)
            hf_raise_for_status(r)
            try:
                data = r.json()
                return ModelInfo(**data)
            except Exception as exc:  # noqa: BLE001 - not JSON, not an object, fields the client cannot parse
                raise ModelReadError(f"{repo_id}: unreadable model info ({type(exc).__name__}: {str(exc)[:120]})") \
                    from None

        try:
            return with_retries(info, self.retry, repo_id)
        except HUB_ERRORS as exc:
            err = map_hub_error(exc, repo_id)
            return Failure(repo_id, err.kind, str(err))
        except ModelReadError as exc:
            return Failure(repo_id, exc.kind, str(exc))

    def iter_infos(self) -> Iterator[Any]:
        """``ModelInfo`` per model (``Failure`` for an explicit id that cannot be fetched)."""
        if self.models is not None and not (self.org or self.search):
            yield from ordered_map(self._model_info, self.models, self.max_workers)
            return
        seen: set[str] = set()
        for org in self.orgs or [None]:  # several --org: one listing each, a model once
            what = f"list_models(author={org!r}, search={self.search!r})"
            repeats = 0
            for item in self._listing(what, org):
                info = listing_info(item)
                if isinstance(info, Failure):
                    yield info  # one bad entry is one failure; the listing goes on
                    continue
                if info.id in seen:  # a listing that pages in a circle: stop, and say so
                    repeats += 1
                    if repeats >= LISTING_REPEATS:
                        yield Failure("<listing>", "listing_loop",
                                      f"{what}: the listing repeated {repeats} models in a row; stopped after "
                                      f"{len(seen)} distinct models")
                        break
                    continue
                repeats = 0
                seen.add(info.id)
                yield info
                if self.limit is not None and len(seen) >= self.limit:
                    return
        if self.models:
            yield from ordered_map(self._model_info, self.models, self.max_workers)

    def _listing(self, what: str, org: str | None) -> Iterator[Any]:
        """Raw entries of ``GET /api/models`` (expanded fields), page after page by the ``Link:
        rel=next`` header, as huggingface_hub's ``list_models`` pages; read here so that a bad
        entry becomes one failure instead of ending the generator, and the limit and loop guards
        see every page."""
        from huggingface_hub.utils import get_session, hf_raise_for_status

        params: list[tuple[str, Any]] = [("expand", f) for f in EXPAND]
        params += [(k, v) for k, v in (("author", org), ("search", self.search)) if v]
        if self.limit is not None:
            params.append(("limit", self.limit))
        headers = self.api._build_hf_headers(token=self.token)
        url: str | None = f"{self.endpoint}/api/models"
        first = True
        while url is not None:
            def get(url: str = url, first: bool = first) -> Any:
                from lineage_index.indexer.read.budget import bucket_of

                bucket = bucket_of(url, self.endpoint)
                self.budget.acquire(bucket)
                r = get_session().get(url, params=params if first else None, headers=headers,
                                      timeout=self.retry.timeout_s)
                self.budget.observe(bucket, r.headers)
                hf_raise_for_status(r)
                return r
            try:
                r = with_retries(get, self.retry, what)
                page = r.json()
            except HUB_ERRORS as exc:
                raise map_hub_error(exc, what) from None
            except ValueError as exc:  # not JSON
                raise ModelReadError(f"{what}: the listing is not JSON ({exc})") from None
            if not isinstance(page, list):
                raise ModelReadError(f"{what}: the listing is not a list of models")
            yield from page
            url = r.links.get("next", {}).get("url")
            first = False

    # --- what a crawl will cost ---------------------------------------------------------
    def planned_requests(self, info: Any) -> dict[str, int]:
        """Requests ``record(info)`` will send, by bucket: one resolver request per file read
        (its range reads then go to the CDN the Hub redirects to), none for what the listing's
        expanded fields already carry; an ``api`` request when the listing gave no files."""
        from lineage_index.indexer.read.safetensors import (
            INDEX_SUFFIX,
            complete_shards,
            primary_weight_files,
        )

        if isinstance(info, Failure) or info.disabled:
            return {}
        out = {"api": 0, "resolvers": 0}
        if info.siblings is None or info.sha is None:
            return {"api": 1, "resolvers": 3}  # files unknown until model_info: a typical model's three
        paths = [sib.rfilename for sib in info.siblings]
        config = info.config if isinstance(info.config, dict) else {}
        out["resolvers"] += info.card_data is None and self.readme_fallback and "README.md" in paths
        out["resolvers"] += "config.json" in paths and not ({"model_type", "architectures"} & config.keys())
        out["resolvers"] += "adapter_config.json" in paths
        weights = [p for p in primary_weight_files(paths) if p.endswith((".safetensors", INDEX_SUFFIX))]
        index = [p for p in weights if p.endswith(INDEX_SUFFIX)]
        shards = [p for p in weights if p.endswith(".safetensors")]
        if len(index) == 1 and complete_shards(index[0], shards):
            weights = shards
        out["resolvers"] += len(weights)
        if not weights and any(p.lower().endswith(PICKLE_SUFFIXES) for p in paths):
            from lineage_index.indexer.read.sources import PICKLE_INDEX, pickle_weight_files

            if PICKLE_INDEX in paths:  # the index, and the shards it names (the listing names them too)
                out["resolvers"] += 1 + sum(1 for p in paths if p.startswith("pytorch_model-") and p.endswith(".bin"))
            else:
                out["resolvers"] += len(pickle_weight_files(_NoReads(), paths))
        elif not weights and any(p.lower().endswith(".gguf") for p in paths):
            from lineage_index.indexer.read.gguf import choose_variant, variants

            out["resolvers"] += len(choose_variant(variants([(p, None) for p in paths if p.lower().endswith(".gguf")])))
        return out

    # --- records -----------------------------------------------------------------------
    def record(self, info: Any) -> ModelRecord | Failure:
        """Read one model's small files and headers; any read error -> Failure."""
        if isinstance(info, Failure):
            return info
        repo_id: str = info.id
        if info.disabled:
            return Failure(repo_id, "not_found", f"{repo_id}: repository is disabled")
        if info.siblings is None or info.sha is None:  # a listing without files: ask the repo itself
            info = self._model_info(repo_id)
            if isinstance(info, Failure):
                return info
        siblings = info.siblings or []
        files = [FileEntry(s.rfilename, s.size) for s in siblings]
        reader = self.reader(repo_id, info.sha)
        try:
            card = info.card_data.to_dict() if info.card_data is not None else None
            if card is None and self.readme_fallback and any(f.path == "README.md" for f in files):
                card = read_card(reader, prefix_bytes=HUB_README_PREFIX_BYTES)
            return build_record(
                repo_id, self.name, reader, files, sha=info.sha, location=self.endpoint,
                card=card, hub_tags=list(info.tags or []),
                api_config=info.config if isinstance(info.config, dict) else None,
                created_at=iso_utc(info.created_at), author=info.author,
                pipeline_tag=info.pipeline_tag, library_name=info.library_name,
                gated=info.gated not in (None, False, "false"), private=bool(info.private),
                header_prefix_bytes=self.header_prefix_bytes, economy=True,
            )
        except ModelReadError as exc:
            return Failure(repo_id, exc.kind, str(exc))
        except HUB_ERRORS as exc:
            err = map_hub_error(exc, repo_id)
            return Failure(repo_id, err.kind, str(err))
        finally:
            reader.close()

    def iter_records(self) -> Iterator[ModelRecord | Failure]:
        """Records (or Failures) in listing order; ``max_workers`` models read concurrently."""
        return ordered_map(self.record, self.iter_infos(), self.max_workers)
