"""Benchmark: bytes and requests to sketch a 7B-shaped PyTorch ``.bin``, counted by the server.

    python bench/bench_pickle.py

Writes a sparse Llama-2-7B-shaped ``pytorch_model.bin`` (BF16, 13.5 GB on disk as a hole) with the
layout ``torch.save`` gives it: a zip of stored entries, each entry's data aligned to 64 bytes by a
padding extra field, zip64 records past 4 GB, and a ``data.pkl`` pickled as torch pickles a state
dict (``_rebuild_tensor_v2`` of persistent storages, protocol 2). It is served by the test Hub
(weight files redirected to a CDN) and ingested through the real huggingface_hub client; the
server counts the bytes it sent and the requests it answered.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from hubserver import LocalHub  # noqa: E402

from lineage_index import api  # noqa: E402
from lineage_index.indexer.sketch.store import SketchStore  # noqa: E402

H, INTER, V, L = 4096, 11008, 32000, 32


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...]) -> None:
        self.storage, self.shape = storage, shape

    def __reduce__(self):  # type: ignore[no-untyped-def]
        stride = tuple(int(torch.tensor(self.shape[i + 1:]).prod()) if i + 1 < len(self.shape) else 1
                       for i in range(len(self.shape)))
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):  # type: ignore[no-untyped-def]
        if isinstance(obj, _Storage):
            return ("storage", torch.BFloat16Storage, obj.key, "cpu", obj.numel)
        return None


def _shapes() -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (V, H))]
    for n in range(L):
        p = f"model.layers.{n}."
        out += [(p + f"self_attn.{x}_proj.weight", (H, H)) for x in "qkvo"]
        out += [(p + "mlp.gate_proj.weight", (INTER, H)), (p + "mlp.up_proj.weight", (INTER, H)),
                (p + "mlp.down_proj.weight", (H, INTER)), (p + "input_layernorm.weight", (H,)),
                (p + "post_attention_layernorm.weight", (H,))]
    return out + [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]


def write_sparse_bin(path: Path) -> int:
    shapes = _shapes()
    state = collections.OrderedDict()
    sizes: dict[str, int] = {}
    for k, (name, shape) in enumerate(shapes):
        numel = int(torch.tensor(shape).prod())
        state[name] = _Tensor(_Storage(str(k), numel), shape)
        sizes[str(k)] = numel * 2
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(state)
    entries = [("archive/data.pkl", buf.getvalue())] + [(f"archive/data/{k}", n) for k, n in sizes.items()] + [
        ("archive/version", b"3\n")]
    central = []
    with open(path, "wb") as fh:
        for name, data in entries:
            size = data if isinstance(data, int) else len(data)
            cursor = fh.tell()
            nb = name.encode()
            start = cursor + 30 + len(nb) + 4
            big = size >= 0xFFFFFFFF or cursor >= 0xFFFFFFFF
            z64 = b""
            if big:  # the zip64 field PyTorch's writer reserves: sizes when the entry is large, the offset when far
                body = (struct.pack("<QQ", size, size) if size >= 0xFFFFFFFF else b"") + (
                    struct.pack("<Q", cursor) if cursor >= 0xFFFFFFFF else b"")
                z64 = struct.pack("<HH", 1, len(body)) + body
                start += 4 + len(body)
            pad = -start % 64
            extra = z64 + struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            small = 0xFFFFFFFF if big else size
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, 0, small, small, len(nb), len(extra)))
            fh.write(nb + extra)
            if isinstance(data, int):
                fh.seek(data, 1)  # a hole: never written
            else:
                fh.write(data)
            central.append((nb, size, cursor))
        cd_start = fh.tell()
        for nb, size, cursor in central:
            vals = ([size, size] if size >= 0xFFFFFFFF else []) + ([cursor] if cursor >= 0xFFFFFFFF else [])
            extra = struct.pack("<HH", 1, 8 * len(vals)) + b"".join(struct.pack("<Q", v) for v in vals) if vals else b""
            s32 = 0xFFFFFFFF if size >= 0xFFFFFFFF else size
            c32 = 0xFFFFFFFF if cursor >= 0xFFFFFFFF else cursor
            fh.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, 0, s32, s32, len(nb),
                                 len(extra), 0, 0, 0, 0, c32) + nb + extra)
        cd_end = fh.tell()
        n = len(central)
        fh.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_end - cd_start, cd_start))
        fh.write(struct.pack("<IIQI", 0x07064B50, 0, cd_end, 1))
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        return fh.tell()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "hub" / "bench" / "Llama-2-7b-bin"
        repo.mkdir(parents=True)
        size = write_sparse_bin(repo / "pytorch_model.bin")
        (repo / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
        print(sketch_through_hub(Path(tmp), "bench/Llama-2-7b-bin", "7B-shaped BF16 pytorch_model.bin", size))


def sketch_through_hub(tmp: Path, model_id: str, what: str, size: int) -> str:
    """Ingest ``model_id`` from ``tmp/hub`` through the test Hub (weight files redirected to a
    CDN) and say what the server counted: bytes sent and requests answered, by bucket."""
    with LocalHub(tmp / "hub") as hub:
        hub.cdn = True
        s = api.ingest(api.make_source(models=[model_id], endpoint=hub.url), store=SketchStore(tmp / "store"))
        sent, reqs = hub.bytes_served(), hub.requests_by_bucket()
    assert not s.failures, s.failures
    n = reqs.get("resolvers", 0) + reqs.get("cdn", 0)
    return (f"{what}, {size / 1e9:.2f} GB: {sent:,} bytes sent ({sent / size * 100:.4f}% of the file) in {n} range "
            f"requests ({reqs.get('resolvers', 0)} resolver, {reqs.get('cdn', 0)} CDN), {reqs.get('api', 0)} API; "
            f"{s.sketched} model sketched")


if __name__ == "__main__":
    main()
