"""PyTorch zip checkpoints (``torch.save`` since 1.6) read by range reads, the pickle as data.

A ``.bin``/``.pt``/``.pth``/``.ckpt`` written by ``torch.save`` is a zip archive (PKWARE APPNOTE
4.3: end-of-central-directory record, its zip64 form, central directory entries, local file
headers) of ``<archive>/data.pkl`` (the object, pickled), ``<archive>/data/<key>`` (one stored,
uncompressed entry per storage) and small bookkeeping files. We range-read the end of the file,
the central directory and ``data.pkl``, then interpret the pickle with ``read_pickle``: a
restricted opcode reader of our own that **imports and calls nothing**. It knows the opcodes
``torch.save`` writes for a state dict (protocol 2: dicts, lists, tuples, strings, numbers,
memo, marks, ``REDUCE``/``BUILD``/``BINPERSID``) and an allowlist of globals, each replaced by a
plain description (``_rebuild_tensor_v2`` -> a ``TensorRef``; ``torch.FloatStorage`` -> a dtype;
``collections.OrderedDict`` -> a dict). Any other global or opcode ends the read with
``HostilePickleError`` naming it: nothing in the file is ever executed.

Each tensor becomes a ``TensorInfo`` whose bytes are ``data/<key>`` from its element offset, when
its strides are contiguous; the data of an entry starts at the next 64-byte boundary after its
local header (PyTorch's writer pads every entry so), which is checked against the local headers
of ``data.pkl`` and of the first and last storage and otherwise read from every local header.
Compressed entries, the legacy (pre-1.6, non-zip) format and non-contiguous tensors are clear
per-model failures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from lineage_index.errors import HeaderError, ModelReadError, UnsupportedFormatError
from lineage_index.indexer.read.ranges import RangeReader
from lineage_index.records import TensorInfo

TAIL_BYTES = 65_536 + 22  # the end record with the longest comment a zip may carry
MAX_CD_BYTES = 64 << 20
MAX_ENTRIES = 1_000_000
MAX_PICKLE_BYTES = 64 << 20
ALIGN = 64  # PyTorch's writer aligns every entry's data to 64 bytes

#: storage class -> (dtype the sketch knows or "" for a kept-but-unsampled one, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4), "HalfStorage": ("F16", 2), "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
    "ShortStorage": ("I16", 2), "IntStorage": ("I32", 4), "LongStorage": ("I64", 8), "BoolStorage": ("BOOL", 1),
}


class HostilePickleError(ModelReadError):
    """A pickle that asks for something outside what ``torch.save`` writes for a state dict."""

    kind = "hostile_pickle"


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int
    compressed: int
    size: int
    local_offset: int


@dataclass(frozen=True)
class TensorRef:
    """What ``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` would have built."""

    storage_key: str
    storage_class: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


# --- zip ------------------------------------------------------------------------------------


def read_zip_directory(reader: RangeReader, file: str, size: int | None) -> list[ZipEntry]:
    """The central directory of a zip file by range reads (zip64 included)."""
    if size is None:
        reader.read_prefix(file, 4)
        size = reader.size(file)
    if size is None or size < 22:
        raise HeaderError(f"{file}: too short to be a zip checkpoint")
    tail_start = max(0, size - TAIL_BYTES)
    tail = reader.read_ranges(file, [(tail_start, size)])[0]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        head = reader.read_prefix(file, 4)
        if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
            raise UnsupportedFormatError(f"{file}: a legacy (pre-1.6, non-zip) torch checkpoint; not read "
                                         "(convert it to safetensors)")
        raise HeaderError(f"{file}: not a zip checkpoint (no end-of-central-directory record)")
    entries, cd_size, cd_offset = struct.unpack_from("<HII", tail, at + 10)
    if 0xFFFF in (entries,) or 0xFFFFFFFF in (cd_size, cd_offset):
        loc = tail.rfind(b"PK\x06\x07", 0, at)
        if loc < 0:
            raise HeaderError(f"{file}: zip64 sizes without a zip64 locator")
        (eocd64,) = struct.unpack_from("<Q", tail, loc + 8)
        rec = reader.read_ranges(file, [(eocd64, eocd64 + 56)])[0]
        if rec[:4] != b"PK\x06\x06":
            raise HeaderError(f"{file}: bad zip64 end-of-central-directory record")
        entries, cd_size, cd_offset = struct.unpack_from("<QQQ", rec, 32)
    if entries > MAX_ENTRIES or cd_size > MAX_CD_BYTES or cd_offset + cd_size > size:
        raise HeaderError(f"{file}: zip central directory of {entries:,} entries / {cd_size:,} bytes at "
                          f"{cd_offset:,} does not fit the file or the limits")
    cd = tail[cd_offset - tail_start: cd_offset - tail_start + cd_size] if cd_offset >= tail_start else \
        reader.read_ranges(file, [(cd_offset, cd_offset + cd_size)])[0]
    out: list[ZipEntry] = []
    pos = 0
    for _ in range(entries):
        if cd[pos:pos + 4] != b"PK\x01\x02" or pos + 46 > len(cd):
            raise HeaderError(f"{file}: damaged zip central directory")
        method, = struct.unpack_from("<H", cd, pos + 10)
        csize, usize = struct.unpack_from("<II", cd, pos + 20)
        nlen, elen, clen = struct.unpack_from("<HHH", cd, pos + 28)
        (local,) = struct.unpack_from("<I", cd, pos + 42)
        name = cd[pos + 46: pos + 46 + nlen].decode("utf-8", "replace")
        extra = cd[pos + 46 + nlen: pos + 46 + nlen + elen]
        usize, csize, local = _zip64(extra, usize, csize, local)
        out.append(ZipEntry(name, method, csize, usize, local))
        pos += 46 + nlen + elen + clen
    return out


def _zip64(extra: bytes, usize: int, csize: int, local: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, i)
        if tag == 0x0001:
            j = i + 4
            vals = []
            for v in (usize, csize, local):
                if v == 0xFFFFFFFF and j + 8 <= i + 4 + n:
                    vals.append(struct.unpack_from("<Q", extra, j)[0])
                    j += 8
                else:
                    vals.append(v)
            return vals[0], vals[1], vals[2]
        i += 4 + n
    return usize, csize, local


def predicted_data_offset(e: ZipEntry) -> int:
    """Where PyTorch's writer puts an entry's data: the 64-byte boundary after its local header
    and the padding field (with room for the zip64 sizes when the entry or offset needs them)."""
    start = e.local_offset + 30 + len(e.name.encode()) + 4
    if e.size >= 0xFFFFFFFF or e.local_offset >= 0xFFFFFFFF:
        start += 4 + (16 if e.size >= 0xFFFFFFFF else 0) + (8 if e.local_offset >= 0xFFFFFFFF else 0)
    return -(-start // ALIGN) * ALIGN


def data_offsets(reader: RangeReader, file: str, entries: list[ZipEntry]) -> dict[str, int]:
    """Data offset of each entry: predicted, checked on a few local headers, read where wrong."""
    def read_local(es: list[ZipEntry]) -> dict[str, int]:
        heads = reader.read_ranges(file, [(e.local_offset, e.local_offset + 30) for e in es])
        out = {}
        for e, h in zip(es, heads, strict=True):
            if h[:4] != b"PK\x03\x04":
                raise HeaderError(f"{file}: no local header for {e.name[:100]!r} at {e.local_offset}")
            nlen, elen = struct.unpack_from("<HH", h, 26)
            out[e.name] = e.local_offset + 30 + nlen + elen
        return out

    predicted = {e.name: predicted_data_offset(e) for e in entries}
    probe = [entries[0], entries[-1]] + [e for e in entries if e.name.endswith("/data.pkl")][:1]
    if all(predicted[n] == off for n, off in read_local(list({e.name: e for e in probe}.values())).items()):
        return predicted
    return read_local(entries)  # not PyTorch's layout: every local header read (one request each)


# --- the pickle, as data --------------------------------------------------------------------

_ALLOWED = {
    ("collections", "OrderedDict"): "dict",
    ("torch._utils", "_rebuild_tensor_v2"): "tensor",
    ("torch._utils", "_rebuild_tensor"): "tensor",
    ("torch._utils", "_rebuild_parameter"): "parameter",
    ("torch", "Size"): "tuple",
    **{("torch", s): "storage" for s in STORAGES},
}


class _Global:
    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self.kind = _ALLOWED.get((module, name))


class _Mark:
    pass


def read_pickle(data: bytes, file: str = "data.pkl") -> Any:
    """The object a ``torch.save`` pickle describes, built from plain Python values only
    (see the module docstring); ``HostilePickleError`` for anything outside the allowlist."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    pos = 0
    n = len(data)

    def hostile(what: str) -> HostilePickleError:
        return HostilePickleError(f"{file}: the pickle asks for {what}, which a state dict never holds; "
                                  "not read (nothing was executed)")

    def take(k: int) -> bytes:
        nonlocal pos
        if pos + k > n:
            raise HeaderError(f"{file}: truncated pickle")
        b = data[pos:pos + k]
        pos += k
        return b

    def pop_mark() -> list[Any]:
        for i in range(len(stack) - 1, -1, -1):
            if isinstance(stack[i], _Mark):
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise HeaderError(f"{file}: pickle MARK missing")

    def pop() -> Any:
        if not stack:
            raise HeaderError(f"{file}: pickle stack underflow")
        return stack.pop()

    while True:
        op = take(1)
        if op == b"\x80":  # PROTO
            take(1)
        elif op == b"\x95":  # FRAME
            take(8)
        elif op == b".":  # STOP
            return pop()
        elif op == b"(":
            stack.append(_Mark())
        elif op == b"}":
            stack.append({})
        elif op == b"]":
            stack.append([])
        elif op == b")":
            stack.append(())
        elif op == b"t":
            stack.append(tuple(pop_mark()))
        elif op in (b"\x85", b"\x86", b"\x87"):
            k = op[0] - 0x84
            items = [pop() for _ in range(k)][::-1]
            stack.append(tuple(items))
        elif op == b"q":
            memo[take(1)[0]] = stack[-1]
        elif op == b"r":
            memo[struct.unpack("<I", take(4))[0]] = stack[-1]
        elif op == b"\x94":  # MEMOIZE
            memo[len(memo)] = stack[-1]
        elif op == b"h":
            stack.append(memo[take(1)[0]])
        elif op == b"j":
            stack.append(memo[struct.unpack("<I", take(4))[0]])
        elif op == b"X":
            stack.append(take(struct.unpack("<I", take(4))[0]).decode("utf-8", "replace"))
        elif op == b"\x8c":  # SHORT_BINUNICODE
            stack.append(take(take(1)[0]).decode("utf-8", "replace"))
        elif op == b"\x8d":  # BINUNICODE8
            stack.append(take(struct.unpack("<Q", take(8))[0]).decode("utf-8", "replace"))
        elif op == b"U":  # SHORT_BINSTRING
            stack.append(take(take(1)[0]).decode("latin-1"))
        elif op == b"T":
            stack.append(take(struct.unpack("<I", take(4))[0]).decode("latin-1"))
        elif op == b"J":
            stack.append(struct.unpack("<i", take(4))[0])
        elif op == b"K":
            stack.append(take(1)[0])
        elif op == b"M":
            stack.append(struct.unpack("<H", take(2))[0])
        elif op == b"\x8a":  # LONG1
            stack.append(int.from_bytes(take(take(1)[0]), "little", signed=True))
        elif op == b"G":
            stack.append(struct.unpack(">d", take(8))[0])
        elif op == b"\x88":
            stack.append(True)
        elif op == b"\x89":
            stack.append(False)
        elif op == b"N":
            stack.append(None)
        elif op == b"c":  # GLOBAL "module\nname\n"
            end1 = data.find(b"\n", pos)
            end2 = data.find(b"\n", end1 + 1)
            if end1 < 0 or end2 < 0:
                raise HeaderError(f"{file}: truncated pickle GLOBAL")
            module, name = data[pos:end1].decode("utf-8", "replace"), data[end1 + 1:end2].decode("utf-8", "replace")
            pos = end2 + 1
            g = _Global(module, name)
            if g.kind is None:
                raise hostile(f"the global {module}.{name}")
            stack.append(g)
        elif op == b"\x93":  # STACK_GLOBAL
            name, module = pop(), pop()
            g = _Global(str(module), str(name))
            if g.kind is None:
                raise hostile(f"the global {module}.{name}")
            stack.append(g)
        elif op == b"Q":  # BINPERSID: ('storage', storage class, key, location, numel)
            pid = pop()
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                    and isinstance(pid[1], _Global) and pid[1].kind == "storage"):
                raise hostile(f"the persistent id {str(pid)[:80]}")
            stack.append(("storage", pid[1].name, str(pid[2]), int(pid[4])))
        elif op == b"R":  # REDUCE
            args, fn = pop(), pop()
            if not isinstance(fn, _Global) or not isinstance(args, tuple):
                raise hostile("a call of something other than an allowed global")
            stack.append(_call(fn, args, hostile))
        elif op == b"b":  # BUILD: a state dict's _metadata; kept out
            pop()
        elif op == b"s":
            value, key = pop(), pop()
            _setitem(stack[-1], key, value, hostile)
        elif op == b"u":
            items = pop_mark()
            for k, v in zip(items[::2], items[1::2], strict=False):
                _setitem(stack[-1], k, v, hostile)
        elif op == b"a":
            value = pop()
            if not isinstance(stack[-1], list):
                raise hostile("APPEND to a non-list")
            stack[-1].append(value)
        elif op == b"e":
            items = pop_mark()
            if not isinstance(stack[-1], list):
                raise hostile("APPENDS to a non-list")
            stack[-1].extend(items)
        else:
            raise hostile(f"the pickle opcode {op!r}")


def _setitem(target: Any, key: Any, value: Any, hostile: Any) -> None:
    if not isinstance(target, dict) or not isinstance(key, (str, int)):
        raise hostile("an item set on something other than a dict")
    target[key] = value


def _call(fn: _Global, args: tuple, hostile: Any) -> Any:
    if fn.kind == "dict":
        return {}
    if fn.kind == "tuple":
        return tuple(args[0]) if args else ()
    if fn.kind == "parameter":
        return args[0] if args else None
    if fn.kind == "tensor":
        if len(args) < 4 or not (isinstance(args[0], tuple) and args[0][:1] == ("storage",)):
            raise hostile("a tensor rebuilt from something other than a storage")
        storage, offset, size, stride = args[0], args[1], tuple(args[2]), tuple(args[3])
        if not all(isinstance(x, int) for x in (offset, *size, *stride)):
            raise hostile("a tensor with non-integer sizes")
        return TensorRef(storage[2], storage[1], offset, size, stride)
    raise hostile(f"a call of {fn.module}.{fn.name}")


# --- tensors --------------------------------------------------------------------------------


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def read_checkpoint(reader: RangeReader, file: str, size: int | None = None) -> tuple[TensorInfo, ...]:
    """The tensors of a ``torch.save`` zip checkpoint holding a state dict (or a dict with one
    under ``state_dict``/``model``), each as the byte range of its data."""
    entries = read_zip_directory(reader, file, size)
    pkl = [e for e in entries if e.name.endswith("/data.pkl") or e.name == "data.pkl"]
    if len(pkl) != 1:
        raise UnsupportedFormatError(f"{file}: a zip without one data.pkl is not a torch checkpoint")
    prefix = pkl[0].name[: -len("data.pkl")]
    if pkl[0].size > MAX_PICKLE_BYTES:
        raise HeaderError(f"{file}: data.pkl of {pkl[0].size:,} bytes (limit {MAX_PICKLE_BYTES:,})")
    by_name = {e.name: e for e in entries}
    storages = [e for e in entries if e.name.startswith(prefix + "data/")]
    compressed = [e.name for e in [pkl[0], *storages] if e.method != 0]
    if compressed:
        raise UnsupportedFormatError(f"{file}: entry {compressed[0][:100]!r} is compressed; only stored entries "
                                     "are range-read")
    offsets = data_offsets(reader, file, [pkl[0], *storages])
    start = offsets[pkl[0].name]
    obj = read_pickle(reader.read_ranges(file, [(start, start + pkl[0].size)])[0], file=f"{file}:data.pkl")
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if isinstance(obj.get(key), dict) and not any(isinstance(v, TensorRef) for v in obj.values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise UnsupportedFormatError(f"{file}: the checkpoint holds a {type(obj).__name__}, not a state dict")
    out: list[TensorInfo] = []
    for name, ref in obj.items():
        if not isinstance(ref, TensorRef):
            continue
        dtype, width = STORAGES[ref.storage_class]
        entry = by_name.get(f"{prefix}data/{ref.storage_key}")
        if entry is None:
            raise HeaderError(f"{file}: tensor {str(name)[:100]!r} names storage {ref.storage_key!r}, which is "
                              "not in the archive")
        numel = 1
        for d in ref.shape:
            numel *= d
        if numel and ref.stride != _contiguous(ref.shape):
            raise UnsupportedFormatError(f"{file}: tensor {str(name)[:100]!r} has strides {ref.stride} for shape "
                                         f"{ref.shape} (not contiguous); not read")
        first = offsets[entry.name] + ref.offset * width
        end = first + numel * width
        if ref.offset < 0 or end > offsets[entry.name] + entry.size:
            raise HeaderError(f"{file}: tensor {str(name)[:100]!r} lies outside its storage")
        out.append(TensorInfo(str(name), dtype, ref.shape, file, first, end))
    return tuple(out)
