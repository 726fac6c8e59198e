"""Model sources: every source yields ``ModelRecord`` (or ``Failure``), never raw dicts.

Three sources share one contract (``Source``): ``HubSource`` (``read.hub``: a Hub or any
compatible endpoint, by org / search / explicit ids), ``DirSource`` (a local directory in Hub
layout ``<root>/<org>/<name>/...``) and ``HfCacheSource`` (the local huggingface_hub cache).

    for item in iter_records(source):          # ModelRecord | Failure, in a stable order
        if isinstance(item, Failure): ...
        reader = source.open_reader(item)       # RangeReader pinned to item.sha / item.location

A model that cannot be read (gated, missing, rate limited, hostile header, ...) becomes a
``records.Failure`` with the error's ``kind``; nothing partial is yielded for it and the run
goes on. Weights are only ever read through safetensors headers; pickle checkpoints
(``.bin/.pt/.pth/.ckpt``) are recorded as ``weight_format='pickle'`` and never opened.

``DirSource`` sha: SHA-1 over the sorted (path, size, mtime_ns) of every file of the model
directory, so it is stable while nothing changes and changes when any file is written, added
or removed (a ``touch`` counts as a change). ``created_at``: front-matter ``created_at`` if the
README has one, else the oldest file mtime (UTC). ``HfCacheSource`` takes the snapshot ``main``
points at (else the newest) and its commit hash as sha.

``header_bytes_read``/``header_requests`` count what reading the safetensors headers cost
(sharded index JSON included; config/README reads excluded).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from lineage_index.errors import HeaderError, ModelReadError, UsageError
from lineage_index.indexer.read.card import CardFields, card_fields, front_matter, iso_utc
from lineage_index.indexer.read.ranges import LocalReader, RangeReader
from lineage_index.indexer.read.safetensors import (
    DEFAULT_PREFIX_BYTES,
    primary_weight_files,
    read_model_tensors,
)
from lineage_index.records import Failure, FileEntry, ModelRecord, TensorInfo, WeightFormat

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
GGUF_SUFFIXES = (".gguf",)
MAX_JSON_BYTES = 8 * 1024 * 1024  # config.json / adapter_config.json
README_PREFIX_BYTES = 256 * 1024  # front matter must start and end within this prefix


class Source(Protocol):
    """What every source offers."""

    name: str  # "hub" | "dir" | "hf-cache" (== ModelRecord.source)

    def iter_records(self) -> Iterator[ModelRecord | Failure]: ...

    def open_reader(self, record: ModelRecord) -> RangeReader: ...


def iter_records(source: Source) -> Iterator[ModelRecord | Failure]:
    """Records of ``source``; per-model failures come out as ``Failure``, never raised."""
    return source.iter_records()


def open_reader(record: ModelRecord, *, token: str | bool | None = None) -> RangeReader:
    """A RangeReader for ``record`` without its source object (hub: default or given token)."""
    if record.source == "hub":
        from lineage_index.indexer.read.remote import HubReader

        return HubReader(record.id, revision=record.sha, endpoint=record.location or None, token=token)
    return LocalReader(record.location)


# --- shared helpers ------------------------------------------------------------------------


def weight_format(paths: Iterable[str]) -> WeightFormat:
    """'safetensors' if any safetensors file, else 'pickle' / 'gguf' by suffix, else 'none'."""
    names = [p.lower() for p in paths]
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n.endswith(PICKLE_SUFFIXES) for n in names):
        return "pickle"
    if any(n.endswith(GGUF_SUFFIXES) for n in names):
        return "gguf"
    return "none"


def read_json(reader: RangeReader, path: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any] | None:
    """A small JSON object file; None when it is not valid JSON or not an object (tolerated)."""
    data = reader.read_file(path, max_bytes)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


#: pickle files a training run leaves beside the weights (not state dicts of the model)
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state")
PICKLE_INDEX = "pytorch_model.bin.index.json"


def pickle_weight_files(reader: RangeReader, paths: Sequence[str]) -> list[str]:
    """The pickle files that hold the model: the shards of ``pytorch_model.bin.index.json``, else
    ``pytorch_model.bin``, else every root-level checkpoint that is not a trainer's file."""
    root = [p for p in paths if "/" not in p]
    if PICKLE_INDEX in root:
        index = read_json(reader, PICKLE_INDEX) or {}
        shards = index.get("weight_map") if isinstance(index.get("weight_map"), dict) else {}
        named = sorted({s for s in shards.values() if isinstance(s, str)})
        missing = [s for s in named if s not in paths]
        if missing:
            raise HeaderError(f"{PICKLE_INDEX}: names shard {missing[0][:100]!r}, which is not in the repository")
        if named:
            return named
    if "pytorch_model.bin" in root:
        return ["pytorch_model.bin"]
    return [p for p in root if p.lower().endswith(PICKLE_SUFFIXES) and not p.startswith(NOT_WEIGHTS)]


def read_card(reader: RangeReader, path: str = "README.md", *,
              prefix_bytes: int = README_PREFIX_BYTES) -> dict[str, Any] | None:
    """YAML front matter of a README (bounded prefix); None when absent or broken."""
    return front_matter(reader.read_prefix(path, prefix_bytes))


def build_record(model_id: str, source: str, reader: RangeReader, files: Sequence[FileEntry], *,
                 sha: str | None, location: str, card: dict[str, Any] | None,
                 hub_tags: Sequence[str] | None = None, api_config: dict[str, Any] | None = None,
                 created_at: str | None = None, author: str | None = None,
                 pipeline_tag: str | None = None, library_name: str | None = None,
                 gated: bool = False, private: bool = False,
                 header_prefix_bytes: int = DEFAULT_PREFIX_BYTES, economy: bool = False) -> ModelRecord:
    """Read config/adapter config/safetensors headers through ``reader`` and assemble a record.

    ``economy`` (the Hub, where each request counts against a rate limit): ``config.json`` is
    not read when the listing's ``config`` already names the architecture (the index uses
    ``architectures``, ``model_type`` and ``quantization_config``, which the listing carries),
    and a complete set of named shards is read without its index file.
    Raises the ``ModelReadError`` family; the caller turns it into a ``Failure``.
    """
    paths = [f.path for f in files]
    present = set(paths)
    config = dict(api_config or {})
    if "config.json" in present and not (economy and {"model_type", "architectures"} & config.keys()):
        config.update(read_json(reader, "config.json") or {})
    adapter_config = None
    if "adapter_config.json" in present:
        adapter_config = read_json(reader, "adapter_config.json") or {}
    fmt = weight_format(paths)
    before = reader.stats()
    weight_files = primary_weight_files(paths)
    tensors: tuple[TensorInfo, ...] = ()
    if fmt == "safetensors":
        from lineage_index.indexer.read.packed import bnb_states, logical_tensors, needs_config

        tensors = read_model_tensors(reader, weight_files, prefix_bytes=header_prefix_bytes, trust_shard_names=economy)
        if "config.json" in present and needs_config(tensors, config):  # MLX: bits and group are in the file only
            config.update(read_json(reader, "config.json") or {})
        # packed quantised weights (FP8, MLX, bitsandbytes 4-bit, ...) under their logical shapes
        tensors = logical_tensors(tensors, config, bnb_states(reader, tensors))
    weight_error: ModelReadError | None = None
    if fmt == "pickle":  # torch.save zip checkpoints, the pickle read as data (never unpickled)
        from lineage_index.indexer.read.torchzip import read_checkpoint

        sizes_by_path = {f.path: f.size_bytes for f in files}
        try:
            tensors = tuple(t for path in pickle_weight_files(reader, paths)
                            for t in read_checkpoint(reader, path, sizes_by_path.get(path)))
        except ModelReadError as exc:  # the model stays recorded; its weights are its failure
            weight_error = exc
    elif fmt == "gguf":  # GGUF metadata is card data; the card, where it says something, wins
        from lineage_index.indexer.read.gguf import read_gguf_model

        try:
            tensors, config["gguf"], gguf_card = read_gguf_model(reader, [(f.path, f.size_bytes) for f in files])
            card = {**gguf_card, **(card or {})}
            if not config.get("model_type") and config["gguf"].get("architecture"):
                config["model_type"] = config["gguf"]["architecture"]
        except ModelReadError as exc:
            weight_error = exc
    fields: CardFields = card_fields(card, hub_tags)
    used = reader.stats() - before
    sizes = reader.known_sizes()
    files = tuple(f if f.size_bytes is not None else FileEntry(f.path, sizes.get(f.path)) for f in files)
    return ModelRecord(
        id=model_id,
        source=source,
        sha=sha,
        author=author or (model_id.split("/", 1)[0] if "/" in model_id else None),
        created_at=created_at or fields.created_at,
        license=fields.license,
        license_name=fields.license_name,
        base_models=fields.base_models,
        base_model_relation=fields.base_model_relation,
        tags=fields.tags,
        pipeline_tag=pipeline_tag or fields.pipeline_tag,
        library_name=library_name or fields.library_name,
        config=config,
        adapter_config=adapter_config,
        gated=gated,
        private=private,
        files=files,
        tensors=tensors,
        weight_format=fmt,
        location=location,
        header_bytes_read=used.bytes_read,
        header_requests=used.requests,
        weight_error=str(weight_error) if weight_error is not None else None,
        weight_error_kind=weight_error.kind if weight_error is not None else None,
    )


# --- local sources -------------------------------------------------------------------------


MAX_FILES = 10_000  # files under one model directory (a Hub repo holds tens; a walk of /usr, 100k+)


class TooManyFilesError(ModelReadError):
    kind = "too_many_files"


def list_files(root: Path, within: Path | None = None, max_files: int = MAX_FILES) -> list[tuple[str, int, int]]:
    """(relative POSIX path, size, mtime_ns) of every regular file under ``root``, hidden dirs
    skipped. A symlink counts only when it resolves inside ``within`` (default: ``root``; the
    HF cache passes its own root, whose snapshots point at blobs); symlinked directories are not
    entered; FIFOs, devices and sockets are left out (opening one can block for ever). More than
    ``max_files`` files: ``TooManyFilesError``."""
    inside = Path(within if within is not None else root).resolve()
    out: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            full = Path(dirpath) / name
            try:
                if full.is_symlink() and not full.resolve().is_relative_to(inside):
                    continue
                st = full.stat()
            except (OSError, RuntimeError):  # dangling, looping or unreadable
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((full.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
            if len(out) > max_files:
                raise TooManyFilesError(f"{root}: more than {max_files:,} files; not a model directory")
    return sorted(out)


def dir_sha(listing: Sequence[tuple[str, int, int]]) -> str:
    """Content-state hash of a model directory (see module docstring)."""
    h = hashlib.sha1()
    for path, size, mtime_ns in listing:
        h.update(f"{path}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def local_record(model_id: str, source: str, root: Path, listing: Sequence[tuple[str, int, int]],
                 *, sha: str, header_prefix_bytes: int = DEFAULT_PREFIX_BYTES) -> ModelRecord | Failure:
    """Record of a model stored as plain files under ``root`` (a model dir or a snapshot)."""
    reader = LocalReader(root)
    files = [FileEntry(path, size) for path, size, _ in listing]
    try:
        card = read_card(reader) if any(p == "README.md" for p, _, _ in listing) else None
        oldest = min((m for _, _, m in listing), default=None)
        return build_record(
            model_id, source, reader, files, sha=sha, location=str(root), card=card,
            created_at=(card_fields(card).created_at if card else None)
            or (iso_utc(oldest / 1e9) if oldest is not None else None),
            header_prefix_bytes=header_prefix_bytes,
        )
    except ModelReadError as exc:
        return Failure(model_id, exc.kind, str(exc))
    finally:
        reader.close()


_MODEL_MARKERS = ("config.json", "adapter_config.json", "model.safetensors", "model.safetensors.index.json")


def model_dirs_below(path: Path, depth: int = 4, cap: int = 10_000) -> list[str]:
    """Directories under ``path`` (not ``path`` itself) that look like one model each, when
    ``path`` has no weights or config of its own: a zoo root, a Hub-layout folder, an HF cache."""
    def is_model(p: Path) -> bool:
        return any((p / m).is_file() for m in _MODEL_MARKERS) or any(p.glob("*.safetensors"))

    if is_model(path):
        return []
    found: list[str] = []
    frontier = [path]
    for _ in range(depth):
        nxt = []
        for d in frontier:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
            except OSError:
                continue
            for s in subs:
                (found if is_model(s) else nxt).append(s)  # type: ignore[arg-type]
                if len(found) + len(nxt) > cap:
                    return [str(p.relative_to(path)) for p in found]
        frontier = nxt
    return [str(p.relative_to(path)) for p in found]


class DirSource:
    """A directory in Hub layout: ``<path>/<org>/<name>/{config.json, *.safetensors, README.md}``."""

    name = "dir"

    def __init__(self, path: str | os.PathLike[str], *,
                 header_prefix_bytes: int = DEFAULT_PREFIX_BYTES) -> None:
        self.root = Path(path)
        self.header_prefix_bytes = header_prefix_bytes

    def model_dirs(self) -> list[tuple[str, Path]]:
        """(model id, directory) of every non-hidden ``<org>/<name>`` directory, sorted; a
        directory that is a symlink out of the source root is not one of them."""
        if not self.root.is_dir():
            raise UsageError(f"model directory not found: {self.root}")
        inside = self.root.resolve()
        out = []
        for org in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not org.resolve().is_relative_to(inside):
                continue
            for model in sorted(p for p in org.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if model.resolve().is_relative_to(inside):
                    out.append((f"{org.name}/{model.name}", model))
        return out

    def iter_records(self) -> Iterator[ModelRecord | Failure]:
        inside = self.root.resolve()
        for model_id, path in self.model_dirs():
            try:
                listing = list_files(path, within=inside, max_files=MAX_FILES)
            except TooManyFilesError as exc:
                yield Failure(model_id, exc.kind, str(exc))
                continue
            if listing:
                yield local_record(model_id, self.name, path, listing, sha=dir_sha(listing),
                                   header_prefix_bytes=self.header_prefix_bytes)

    def open_reader(self, record: ModelRecord) -> RangeReader:
        return LocalReader(record.location)


_CACHE_REPO = re.compile(r"models--([^/\\\s'\"]+)")


class HfCacheSource:
    """The local huggingface_hub cache (``scan_cache_dir``): one record per cached model repo."""

    name = "hf-cache"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, *,
                 header_prefix_bytes: int = DEFAULT_PREFIX_BYTES) -> None:
        self.cache_dir = cache_dir
        self.header_prefix_bytes = header_prefix_bytes

    def iter_records(self) -> Iterator[ModelRecord | Failure]:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            info = scan_cache_dir(self.cache_dir)
        except (CacheNotFound, ValueError) as exc:
            raise UsageError(f"Hugging Face cache not usable: {exc}") from None
        for warning in info.warnings:
            m = _CACHE_REPO.search(str(warning))
            model_id = m.group(1).replace("--", "/") if m else "<hf-cache>"
            yield Failure(model_id, ModelReadError.kind, f"corrupted cache entry: {str(warning)[:300]}")
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
            root = Path(revision.snapshot_path)
            try:
                listing = list_files(root, within=Path(repo.repo_path))  # snapshots point at the repo's blobs
            except TooManyFilesError as exc:
                yield Failure(repo.repo_id, exc.kind, str(exc))
                continue
            if listing:
                yield local_record(repo.repo_id, self.name, root, listing, sha=revision.commit_hash,
                                   header_prefix_bytes=self.header_prefix_bytes)

    def open_reader(self, record: ModelRecord) -> RangeReader:
        return LocalReader(record.location)


__all__ = [
    "DirSource",
    "HfCacheSource",
    "Source",
    "build_record",
    "iter_records",
    "open_reader",
    "weight_format",
]
