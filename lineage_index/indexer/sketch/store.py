"""Sketch store on disk, keyed by (model id, commit sha, sketch version).

Two layouts, read through the same ``SketchStore`` API (``has``, ``get``, ``latest``,
``records``):

* per model (what ``ingest`` writes): one ``.npz`` file per sketch (numeric arrays + a JSON
  meta string, loaded with ``allow_pickle=False``) and one JSON record per model, each written
  atomically (temporary file + ``os.replace``), so an interrupted run never leaves a partial
  sketch. Re-ingesting an unchanged model finds its sketch here and reads no weight bytes.
* packed (bulk: simulated hubs, millions of models): ``_packed/`` shards, written by
  ``packed.PackedWriter`` and read by ``packed.PackedIndex`` (format described
  there); ``get``/``has``/``latest``/``records`` fall back to them.

This module does no network I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lineage_index.config import SKETCH_VERSION, sketch_store_dir
from lineage_index.errors import TooLargeError
from lineage_index.indexer.sketch.packed import PACKED_DIR, PackedIndex
from lineage_index.records import ModelRecord, Sketch, TensorSample, record_from_dict


def _safe(model_id: str) -> str:
    """A file-name stem for ``model_id``: ``org--name``, cut with a hash when it would not fit
    a file system's 255-byte names (a long local directory name is a valid model id)."""
    safe = model_id.replace("/", "--")
    if len(safe.encode()) > MAX_STEM_BYTES:
        digest = hashlib.sha1(model_id.encode()).hexdigest()[:16]
        safe = safe.encode()[:MAX_STEM_BYTES - 17].decode("utf-8", "ignore") + "~" + digest
    return safe


#: The most one model's record (files, tensor names, shapes and offsets) may take in the store:
#: a 7B model's record is about 0.1 MiB, a 405B one with every tensor listed about 2 MiB.
MAX_RECORD_BYTES = 16 * 2**20
MAX_STEM_BYTES = 160  # + "@sha16.tag12.vN.npz" stays under 255 bytes


def _file_name(model_id: str, sha: str | None, version: int) -> str:
    safe = _safe(model_id)
    tag = hashlib.sha1(f"{model_id}@{sha}".encode()).hexdigest()[:12]
    return f"{safe}@{(sha or 'nosha')[:16]}.{tag}.v{version}.npz"


class SketchStore:
    """Directory of sketches. ``get`` returns None when the (id, sha, version) is absent."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else sketch_store_dir()
        self._packed: PackedIndex | None = None
        self.damaged: list[str] = []  # store entries found damaged (and re-read) in this process

    def path_for(self, model_id: str, sha: str | None, version: int = SKETCH_VERSION) -> Path:
        return self.root / model_id.split("/", 1)[0] / _file_name(model_id, sha, version)

    def has(self, model_id: str, sha: str | None, version: int = SKETCH_VERSION) -> bool:
        return self.path_for(model_id, sha, version).exists() or self.packed.find(model_id, sha, version) is not None

    @property
    def packed(self) -> PackedIndex:
        """The packed shards (bulk layout) of this store; empty when there are none."""
        if self._packed is None or self._packed.stale():
            self._packed = PackedIndex(self.root / PACKED_DIR)
        return self._packed

    def put(self, sketch: Sketch) -> Path:
        path = self.path_for(sketch.model_id, sketch.sha, sketch.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"embedding": sketch.embedding.astype(np.float32)}
        samples_meta = []
        for i, s in enumerate(sketch.samples.values()):
            arrays[f"s{i}"] = s.values.astype(np.float32, copy=False)
            samples_meta.append(
                {
                    "key": s.key,
                    "role": s.role,
                    "layer": s.layer,
                    "shape": list(s.shape),
                    "dtype": s.dtype,
                    "row_start": s.row_start,
                    "col_start": s.col_start,
                    "bytes_read": s.bytes_read,
                    "quant": s.quant,
                }
            )
        for layer, v in sketch.layer_prints.items():
            arrays[f"p{layer}"] = v.astype(np.float32, copy=False)
        meta = {
            "prints": sorted(sketch.layer_prints),
            "model_id": sketch.model_id,
            "sha": sketch.sha,
            "version": sketch.version,
            "family": sketch.family,
            "family_desc": sketch.family_desc,
            "kind": sketch.kind,
            "bytes_read": sketch.bytes_read,
            "requests": sketch.requests,
            "model_bytes": sketch.model_bytes,
            "dtypes": list(sketch.dtypes),
            "quant": sketch.quant,
            "samples": samples_meta,
        }
        meta["checksum"] = _checksum(arrays)
        arrays["meta"] = np.array(json.dumps(meta))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get(self, model_id: str, sha: str | None, version: int = SKETCH_VERSION) -> Sketch | None:
        """The stored sketch of (id, sha, version), or None. An entry that is damaged (cannot be
        read, fails its checksum) or belongs to another model, sha or version is treated as
        missing: it is moved aside (``*.bad``), noted in ``damaged``, and the caller reads the
        model again."""
        path = self.path_for(model_id, sha, version)
        if not path.exists():
            return self.packed.get(model_id, sha, version)
        try:
            sketch = load_sketch(path)
            problem = None
            if (sketch.model_id, sketch.sha, sketch.version) != (model_id, sha, version):
                problem = f"holds {sketch.model_id}@{sketch.sha} v{sketch.version}"
        except Exception as exc:  # noqa: BLE001 - any damage to a cache file means: read again
            sketch, problem = None, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        if problem is None:
            return sketch
        self.damaged.append(f"{model_id}: {path.name} {problem}")
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(".bad"))
        return None

    def latest(self, model_id: str, version: int = SKETCH_VERSION) -> Sketch | None:
        """The most recently written sketch of ``model_id`` (any sha), or None."""
        safe = _safe(model_id)
        folder = self.root / model_id.split("/", 1)[0]
        paths = [p for p in folder.glob(f"{safe}@*.v{version}.npz") if _meta_id_or_none(p) == model_id]
        for path in sorted(paths, key=lambda p: p.stat().st_mtime_ns, reverse=True):
            try:
                return load_sketch(path)
            except Exception as exc:  # noqa: BLE001 - a damaged entry is skipped, never fatal
                self.damaged.append(f"{model_id}: {path.name} unreadable ({type(exc).__name__})")
        return self.packed.get(model_id, None, version, any_sha=True)

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self.root.glob("*/*.npz")))

    # --- records: what the index knows of each model besides its weights ------------------

    def _record_path(self, model_id: str) -> Path:
        return self.root / "_records" / (_safe(model_id) + ".json")

    def put_record(self, record: ModelRecord) -> None:
        """Keep the latest ModelRecord of a model (atomic), so later runs see the whole index.

        A record over ``MAX_RECORD_BYTES`` (a header bomb spread over many files) is refused
        with ``TooLargeError``, which the run records as that model's failure."""
        text = json.dumps(dataclasses.asdict(record))
        if len(text) > MAX_RECORD_BYTES:
            raise TooLargeError(f"{record.id}: its file and tensor list takes {len(text) / 2**20:.0f} MiB in the "
                                f"store (limit {MAX_RECORD_BYTES // 2**20} MiB per model); not indexed")
        path = self._record_path(record.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def record(self, model_id: str) -> ModelRecord | None:
        """The stored per-model ModelRecord of one model, or None when absent or damaged."""
        path = self._record_path(model_id)
        try:
            return record_from_dict(json.loads(path.read_text())) if path.is_file() else None
        except (ValueError, KeyError, TypeError):
            return None  # a damaged entry is as good as none: re-read from its source on the next ingest

    def records(self) -> dict[str, ModelRecord]:
        """Every stored ModelRecord, by model id (packed ones first, per-model JSON ones win)."""
        out: dict[str, ModelRecord] = dict(self.packed.records())
        for path in sorted((self.root / "_records").glob("*.json")):
            try:
                rec = record_from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged entry is re-read from its source on the next ingest
            out[rec.id] = rec
        return out


def load_meta_id(path: Path) -> str:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["meta"]))["model_id"]


def _meta_id_or_none(path: Path) -> str | None:
    try:
        return load_meta_id(path)
    except Exception:  # noqa: BLE001 - a damaged entry names no model
        return None


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """blake2b of every array but ``meta`` (names, dtypes, shapes and bytes), in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_sketch(path: Path) -> Sketch:
    """A stored sketch; raises ValueError when its checksum does not match its arrays."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if "checksum" in meta and meta["checksum"] != _checksum({k: data[k] for k in data.files}):
            raise ValueError("checksum mismatch")
        samples = {}
        for i, m in enumerate(meta["samples"]):
            samples[m["key"]] = TensorSample(
                key=m["key"],
                role=m["role"],
                layer=m["layer"],
                shape=tuple(m["shape"]),
                dtype=m["dtype"],
                row_start=m["row_start"],
                col_start=m["col_start"],
                values=data[f"s{i}"],
                bytes_read=m["bytes_read"],
                quant=m.get("quant"),
            )
        embedding = data["embedding"]
        prints = {int(layer): data[f"p{layer}"] for layer in meta.get("prints", [])}
    return Sketch(
        model_id=meta["model_id"],
        sha=meta["sha"],
        version=meta["version"],
        family=meta["family"],
        family_desc=meta["family_desc"],
        kind=meta["kind"],
        samples=samples,
        embedding=embedding,
        bytes_read=meta["bytes_read"],
        requests=meta["requests"],
        model_bytes=meta["model_bytes"],
        dtypes=tuple(meta["dtypes"]),
        quant=meta["quant"],
        layer_prints=prints,
    )

