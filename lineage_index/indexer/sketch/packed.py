"""Packed (bulk) layout of the sketch store: millions of sketches in a few shards.

``_packed/`` (under the store root) holds shards of up to ``SHARD_ROWS`` models. A shard is a
directory with ``values.f32`` (every sample of every model, float32, raw little-endian, models
one after the other), ``embedding.f32`` (rows x EMBED_DIM) and ``models.parquet`` (sketch meta
and the ModelRecord, one row per model). Models of one family are contiguous and share one
layout (sample keys, shapes, offsets), so a family's samples are one (models x width) matrix,
memory-mapped, never loaded whole into RAM here. ``manifest.json`` lists the family chunks of
every shard; a shard is written in a temporary directory and renamed, then the manifest is
replaced atomically, so readers only ever see whole shards. A model written again (new sha)
in a later shard shadows its older rows. The per-model layout (``store.SketchStore``) stays
what ``ingest`` writes; both are read through ``SketchStore``, which builds on this module (this
module never imports it: a writer needs only a store's ``root``). No network I/O here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lineage_index.records import ModelRecord, Sketch, TensorSample, record_from_dict

PACKED_DIR = "_packed"
PACKED_FORMAT = "lineage-index-packed"
PACKED_VERSION = 1
SHARD_ROWS = 65_536  # models per shard (a larger family gets a shard of its own)
_RECORD_JSON = ("base_models", "tags", "config", "adapter_config", "files", "tensors")


class StoreRoot(Protocol):
    """What a packed writer needs of a sketch store (``SketchStore`` is one): its directory."""

    root: Path


@dataclass(frozen=True)
class PackedLayout:
    """Where each sample of a family's sketches sits in a model's row of values."""

    keys: tuple[str, ...]
    roles: tuple[str, ...]
    layers: tuple[int | None, ...]
    shapes: tuple[tuple[int, ...], ...]  # tensor shapes
    rows: tuple[int, ...]  # sample rows
    cols: tuple[int, ...]  # sample columns
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.asarray(self.rows) * np.asarray(self.cols))]).astype(np.int64)

    @property
    def width(self) -> int:
        return int(self.offsets[-1])

    @property
    def matrices(self) -> list[int]:
        """Indices of the 2-D weight samples (what ``verify`` compares)."""
        return [i for i, s in enumerate(self.shapes) if len(s) >= 2]

    @classmethod
    def of_sketch(cls, sketch: Sketch) -> PackedLayout:
        s = list(sketch.samples.values())
        return cls(tuple(x.key for x in s), tuple(x.role for x in s), tuple(x.layer for x in s),
                   tuple(tuple(x.shape) for x in s), tuple(int(x.values.shape[0]) for x in s),
                   tuple(int(x.values.shape[1]) if x.values.ndim == 2 else int(x.values.size) for x in s),
                   tuple(x.row_start for x in s), tuple(x.col_start for x in s))

    def to_json(self) -> dict[str, Any]:
        return {k: [list(v) if isinstance(v, tuple) else v for v in getattr(self, k)]
                for k in ("keys", "roles", "layers", "shapes", "rows", "cols", "row_starts", "col_starts")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PackedLayout:
        return cls(tuple(d["keys"]), tuple(d["roles"]), tuple(d["layers"]), tuple(tuple(s) for s in d["shapes"]),
                   tuple(d["rows"]), tuple(d["cols"]), tuple(d["row_starts"]), tuple(d["col_starts"]))


@dataclass
class PackedFamily:
    """The sketches of one family as arrays: ``values`` (models x layout.width), ``embedding``.

    ``meta`` holds one list per column (sha, version, dtypes, quant, sample_dtypes, ...);
    ``records`` the ModelRecords when the store keeps them. ``sketch(i)`` is a Sketch whose
    samples are views into ``values``: the same object the per-model layout gives.
    """

    family: str
    family_desc: str
    kind: str
    layout: PackedLayout
    model_ids: list[str]
    values: np.ndarray
    embedding: np.ndarray
    meta: dict[str, list[Any]]
    records: list[ModelRecord | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.model_ids)

    def sketch(self, i: int) -> Sketch:
        lay, m = self.layout, self.meta
        off = lay.offsets
        dts = m["sample_dtypes"][i].split(",")
        qs = m["sample_quants"][i].split(",")
        nb = [int(x) for x in m["sample_bytes"][i].split(",")]
        row = self.values[i]
        samples = {}
        for j, key in enumerate(lay.keys):
            samples[key] = TensorSample(key, lay.roles[j], lay.layers[j], lay.shapes[j], dts[j], lay.row_starts[j],
                                        lay.col_starts[j], row[off[j]:off[j + 1]].reshape(lay.rows[j], lay.cols[j]),
                                        nb[j], qs[j] or None)
        return Sketch(model_id=self.model_ids[i], sha=m["sha"][i], version=int(m["version"][i]), family=self.family,
                      family_desc=self.family_desc, kind=self.kind, samples=samples, embedding=self.embedding[i],
                      bytes_read=int(m["bytes_read"][i]), requests=int(m["requests"][i]),
                      model_bytes=int(m["model_bytes"][i]), dtypes=tuple(x for x in m["dtypes"][i].split(",") if x),
                      quant=m["quant"][i] or None)

    def sketches(self) -> list[Sketch]:
        return [self.sketch(i) for i in range(len(self))]

    def subset(self, rows: np.ndarray | list[int]) -> PackedFamily:
        rows = np.asarray(rows, dtype=np.int64)
        return PackedFamily(self.family, self.family_desc, self.kind, self.layout,
                            [self.model_ids[i] for i in rows], self.values[rows], self.embedding[rows],
                            {k: [v[i] for i in rows] for k, v in self.meta.items()},
                            [self.records[i] for i in rows] if self.records else [])

    @classmethod
    def from_sketches(cls, sketches: list[Sketch], records: dict[str, ModelRecord] | None = None
                      ) -> tuple[PackedFamily | None, list[Sketch]]:
        """Pack sketches of one family in memory: (the family on its most common layout, the rest)."""
        if not sketches:
            return None, []
        layouts = [PackedLayout.of_sketch(s) for s in sketches]
        common = max(set(layouts), key=layouts.count)
        keep = [s for s, lay in zip(sketches, layouts, strict=True) if lay == common]
        rest = [s for s, lay in zip(sketches, layouts, strict=True) if lay != common]
        values = np.stack([np.concatenate([x.values.reshape(-1) for x in s.samples.values()]) for s in keep])
        emb = np.stack([s.embedding for s in keep]).astype(np.float32)
        meta = _meta_columns(keep)
        recs = [(records or {}).get(s.model_id) for s in keep]
        first = keep[0]
        return cls(first.family, first.family_desc, first.kind, common, [s.model_id for s in keep],
                   values.astype(np.float32, copy=False), emb, meta, recs if records else []), rest


def _meta_columns(sketches: list[Sketch]) -> dict[str, list[Any]]:
    return {
        "sha": [s.sha for s in sketches],
        "version": [s.version for s in sketches],
        "dtypes": [",".join(s.dtypes) for s in sketches],
        "quant": [s.quant or "" for s in sketches],
        "bytes_read": [s.bytes_read for s in sketches],
        "requests": [s.requests for s in sketches],
        "model_bytes": [s.model_bytes for s in sketches],
        "sample_dtypes": [",".join(x.dtype for x in s.samples.values()) for s in sketches],
        "sample_quants": [",".join(x.quant or "" for x in s.samples.values()) for s in sketches],
        "sample_bytes": [",".join(str(x.bytes_read) for x in s.samples.values()) for s in sketches],
    }


def record_columns(records: Iterable[ModelRecord | None], n: int) -> dict[str, list[Any]]:
    """ModelRecords as parquet-ready columns (JSON strings for the nested fields)."""
    names = [f.name for f in dataclasses.fields(ModelRecord)]
    cols: dict[str, list[Any]] = {f"rec_{k}": [] for k in names}
    cols["rec_present"] = []
    count = 0
    for rec in records:
        count += 1
        cols["rec_present"].append(rec is not None)
        d = dataclasses.asdict(rec) if rec is not None else {}
        for k in names:
            v = d.get(k)
            cols[f"rec_{k}"].append(json.dumps(v) if k in _RECORD_JSON and rec is not None else v)
    if count != n:
        raise ValueError(f"{count} records for {n} models")
    return cols


def _records_from_columns(cols: dict[str, list[Any]], n: int) -> list[ModelRecord | None]:
    if "rec_present" not in cols:
        return [None] * n
    names = [f.name for f in dataclasses.fields(ModelRecord)]
    out: list[ModelRecord | None] = []
    for i in range(n):
        if not cols["rec_present"][i]:
            out.append(None)
            continue
        d = {k: cols[f"rec_{k}"][i] for k in names if f"rec_{k}" in cols}  # older shards lack newer fields
        for k in _RECORD_JSON:
            d[k] = json.loads(d[k]) if d.get(k) is not None else None
        d["files"] = d["files"] or ()
        d["tensors"] = d["tensors"] or ()
        d["config"] = d["config"] or {}
        out.append(record_from_dict(d))
    return out


class PackedWriter:
    """Appends families to the packed layout; ``close()`` (or the ``with`` block) finishes.

    Families are buffered into the current shard and flushed once it holds ``shard_rows``
    models; each flush renames a complete shard into place and then replaces the manifest,
    so readers only ever see whole shards.
    """

    def __init__(self, store: StoreRoot, shard_rows: int = SHARD_ROWS) -> None:
        import polars  # noqa: F401  (fail early: the packed layout needs polars for parquet)

        self.dir = store.root / PACKED_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_rows = shard_rows
        self.manifest = _read_manifest(self.dir)
        self._reset()

    def _reset(self) -> None:
        self._name = f"s{len(self.manifest['shards']):05d}-{os.getpid()}-{os.urandom(3).hex()}"
        self._tmp = self.dir / f".tmp-{self._name}"
        self._tmp.mkdir(parents=True, exist_ok=False)
        self._vals = open(self._tmp / "values.f32", "wb")
        self._embs = open(self._tmp / "embedding.f32", "wb")
        self._rows = 0
        self._floats = 0
        self._chunks: list[dict[str, Any]] = []
        self._cols: dict[str, list[Any]] = {}

    def add_family(self, family: PackedFamily, record_cols: dict[str, list[Any]] | None = None) -> None:
        """Append one family (all rows share its layout); ``record_cols`` as ``record_columns`` makes them."""
        n = len(family)
        if n == 0:
            return
        if self._rows and self._rows + n > self.shard_rows:
            self.flush()
        values = np.ascontiguousarray(family.values, dtype="<f4")
        if values.shape != (n, family.layout.width):
            raise ValueError(f"values {values.shape} do not fit layout width {family.layout.width}")
        values.tofile(self._vals)
        np.ascontiguousarray(family.embedding, dtype="<f4").tofile(self._embs)
        self._chunks.append({"family": family.family, "family_desc": family.family_desc, "kind": family.kind,
                             "row": self._rows, "n": n, "value_offset": self._floats,
                             "dim": int(family.embedding.shape[1]), "layout": family.layout.to_json()})
        cols = {"model_id": family.model_ids, **family.meta,
                **(record_cols if record_cols is not None else
                   record_columns(family.records if family.records else [None] * n, n))}
        for k, v in cols.items():
            self._cols.setdefault(k, []).extend(v)
        self._rows += n
        self._floats += values.size

    def add_sketches(self, sketches: Iterable[Sketch], records: dict[str, ModelRecord] | None = None) -> None:
        """Pack ordinary sketches (grouped by family and layout)."""
        groups: dict[str, list[Sketch]] = {}
        for s in sketches:
            groups.setdefault(s.family, []).append(s)
        for members in groups.values():
            while members:
                fam, members = PackedFamily.from_sketches(members, records)
                if fam is not None:
                    self.add_family(fam)

    def flush(self) -> None:
        import polars as pl

        self._vals.close()
        self._embs.close()
        if not self._rows:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._reset()
            return
        pl.DataFrame(self._cols, strict=False, infer_schema_length=None).write_parquet(self._tmp / "models.parquet")
        os.replace(self._tmp, self.dir / self._name)
        self.manifest["shards"].append({"name": self._name, "rows": self._rows, "floats": self._floats,
                                        "chunks": self._chunks})
        _write_manifest(self.dir, self.manifest)
        self._reset()

    def close(self) -> None:
        self.flush()
        self._vals.close()
        self._embs.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PackedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an interrupted write leaves the shards already renamed, nothing else
            self._vals.close()
            self._embs.close()
            shutil.rmtree(self._tmp, ignore_errors=True)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.exists():
        return {"format": PACKED_FORMAT, "version": PACKED_VERSION, "shards": []}
    data = json.loads(path.read_text())
    if data.get("format") != PACKED_FORMAT or data.get("version") != PACKED_VERSION:
        raise ValueError(f"{path}: not a {PACKED_FORMAT} v{PACKED_VERSION} manifest")
    return data


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh)
    os.replace(tmp, folder / "manifest.json")


class PackedIndex:
    """Read side of the packed layout: families, and single sketches by (id, sha, version)."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        path = folder / "manifest.json"
        self._mtime = path.stat().st_mtime_ns if path.exists() else None
        self.manifest = _read_manifest(folder) if path.exists() else {"shards": []}
        self._ids: dict[str, list[tuple[int, int]]] | None = None  # id -> [(shard, row)], oldest first
        self._frames: dict[int, Any] = {}

    def stale(self) -> bool:
        path = self.dir / "manifest.json"
        return (path.stat().st_mtime_ns if path.exists() else None) != self._mtime

    def __len__(self) -> int:
        return sum(s["rows"] for s in self.manifest["shards"])

    def families(self) -> list[str]:
        """Family names in the order their first chunk was written (shard by shard)."""
        return list(dict.fromkeys(c["family"] for s in self.manifest["shards"] for c in s["chunks"]))

    def _frame(self, shard: int):
        import polars as pl

        if shard not in self._frames:
            if len(self._frames) >= 2:  # families are read in manifest order: two shards cover a boundary
                self._frames.pop(next(iter(self._frames)))
            self._frames[shard] = pl.read_parquet(self.dir / self.manifest["shards"][shard]["name"] / "models.parquet")
        return self._frames[shard]

    def _arrays(self, shard: int, chunk: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        info = self.manifest["shards"][shard]
        folder = self.dir / info["name"]
        lay = PackedLayout.from_json(chunk["layout"])
        vals = np.memmap(folder / "values.f32", dtype="<f4", mode="r", offset=4 * chunk["value_offset"],
                         shape=(chunk["n"], lay.width))
        emb = np.memmap(folder / "embedding.f32", dtype="<f4", mode="r", offset=4 * chunk["dim"] * chunk["row"],
                        shape=(chunk["n"], chunk["dim"]))
        return vals, emb

    def _chunk_family(self, shard: int, chunk: dict[str, Any], with_records: bool) -> PackedFamily:
        frame = self._frame(shard).slice(chunk["row"], chunk["n"])
        cols = {c: frame[c].to_list() for c in frame.columns if not c.startswith("rec_") and c != "model_id"}
        vals, emb = self._arrays(shard, chunk)
        recs = _records_from_columns({c: frame[c].to_list() for c in frame.columns if c.startswith("rec_")},
                                     chunk["n"]) if with_records else []
        return PackedFamily(chunk["family"], chunk["family_desc"], chunk["kind"], PackedLayout.from_json(chunk["layout"]),
                            frame["model_id"].to_list(), vals, emb, cols, recs)

    def load_family(self, family: str, with_records: bool = True) -> PackedFamily | None:
        """Every model of ``family`` (latest write of each id), samples memory-mapped."""
        parts = [(i, c) for i, s in enumerate(self.manifest["shards"]) for c in s["chunks"] if c["family"] == family]
        if not parts:
            return None
        fams = [self._chunk_family(i, c, with_records) for i, c in parts]
        fam = fams[0] if len(fams) == 1 else _concat(fams)
        ids = self.ids()
        latest = [r for r, m in enumerate(fam.model_ids) if _is_latest(ids[m], parts, r, fams)]
        return fam if len(latest) == len(fam) else fam.subset(latest)

    def ids(self) -> dict[str, list[tuple[int, int]]]:
        import polars as pl

        if self._ids is None:
            out: dict[str, list[tuple[int, int]]] = {}
            for i, s in enumerate(self.manifest["shards"]):
                col = pl.read_parquet(self.dir / s["name"] / "models.parquet", columns=["model_id"])["model_id"]
                for row, m in enumerate(col.to_list()):
                    out.setdefault(m, []).append((i, row))
            self._ids = out
        return self._ids

    def find(self, model_id: str, sha: str | None, version: int, any_sha: bool = False) -> tuple[int, int] | None:
        if not self.manifest["shards"]:
            return None
        for shard, row in reversed(self.ids().get(model_id, [])):
            frame = self._frame(shard)
            if int(frame["version"][row]) == version and (any_sha or frame["sha"][row] == sha):
                return shard, row
        return None

    def get(self, model_id: str, sha: str | None, version: int, any_sha: bool = False) -> Sketch | None:
        hit = self.find(model_id, sha, version, any_sha)
        if hit is None:
            return None
        shard, row = hit
        chunk = next(c for c in self.manifest["shards"][shard]["chunks"] if c["row"] <= row < c["row"] + c["n"])
        fam = self._chunk_family(shard, chunk, with_records=False)
        return fam.sketch(row - chunk["row"])

    def records(self) -> Iterator[tuple[str, ModelRecord]]:
        import polars as pl

        for s in self.manifest["shards"]:
            frame = pl.read_parquet(self.dir / s["name"] / "models.parquet")
            cols = {c: frame[c].to_list() for c in frame.columns if c.startswith("rec_")}
            for m, rec in zip(frame["model_id"].to_list(), _records_from_columns(cols, frame.height), strict=True):
                if rec is not None:
                    yield m, rec


def _is_latest(entries: list[tuple[int, int]], parts: list[tuple[int, dict[str, Any]]], row: int,
               fams: list[PackedFamily]) -> bool:
    """Whether concatenated row ``row`` of a family is the last write of its model id."""
    for (shard, chunk), fam in zip(parts, fams, strict=True):
        if row < len(fam):
            return entries[-1] == (shard, chunk["row"] + row)
        row -= len(fam)
    return False


def _concat(fams: list[PackedFamily]) -> PackedFamily:
    first = fams[0]
    if any(f.layout != first.layout for f in fams):
        raise ValueError(f"family {first.family}: chunks with different layouts")
    return PackedFamily(first.family, first.family_desc, first.kind, first.layout,
                        [m for f in fams for m in f.model_ids], np.concatenate([f.values for f in fams]),
                        np.concatenate([f.embedding for f in fams]),
                        {k: [v for f in fams for v in f.meta[k]] for k in first.meta},
                        [r for f in fams for r in f.records] if all(f.records for f in fams) else [])
