"""Probe data for the behaviour tier: synthetic classification tasks and user probe data.

A ``TaskSpec`` names a synthetic task (Gaussian-blob vectors, small synthetic images, or short
English texts tokenised with the packaged MiniLM tokenizer) by its seed, so the tool can draw
fresh samples of a source's task to train auxiliary models for calibration.

A user's probe data is one of: a ``.safetensors`` file with a tensor ``x`` (and optionally
integer labels ``y``), a ``.npz``/``.npy`` read with ``allow_pickle=False``; a folder of images
(PNG/JPEG through Pillow, resized to the model's input; sub-folders, when present, are the class
labels as in the usual image-folder layout); or a text file with one probe per line (optionally
``label<TAB>text``). Nothing here ever unpickles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineage_index.errors import UsageError


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic classification task, reproducible from its fields.

    ``kind`` is ``"blobs"`` (vectors of length ``dim``; each class a mixture of ``modes`` Gaussian
    blobs), ``"images"`` (``channels`` x ``size`` x ``size``; each class ``modes`` smooth random
    patterns plus noise) or ``"text"`` (``length`` tokens with [CLS]/[SEP]: each class ``modes``
    topics of five words; a sentence mixes its topic's words with neutral words and, with a
    probability growing with ``noise``, words of other topics).
    """

    kind: str = "blobs"
    classes: int = 4
    seed: int = 0
    dim: int = 16
    channels: int = 1
    size: int = 8
    modes: int = 2
    spread: float = 2.0
    noise: float = 1.0
    length: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "text":
            return (self.length,)
        return (self.dim,) if self.kind == "blobs" else (self.channels, self.size, self.size)


@dataclass(frozen=True)
class ProbeSet:
    """Probe inputs ``x`` (first dim = points) with optional labels ``y`` (int64).

    ``x`` is float32 for vectors and images, int64 token ids (padding 0) for text; ``texts`` keeps
    the probe texts when they came from text.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    origin: str = "synthetic"
    texts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> ProbeSet:
        texts = None if self.texts is None else tuple(self.texts[int(i)] for i in index)
        return ProbeSet(self.x[index], None if self.y is None else self.y[index], self.origin, texts)


def _prototypes(spec: TaskSpec) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + spec.seed)
    n = spec.classes * spec.modes
    if spec.kind == "blobs":
        return torch.randn(n, spec.dim, generator=g) * spec.spread
    if spec.kind == "images":
        coarse = torch.randn(n, spec.channels, 4, 4, generator=g)
        up = torch.nn.functional.interpolate(coarse, size=(spec.size, spec.size), mode="bilinear",
                                             align_corners=False)
        return up * spec.spread
    raise UsageError(f"unknown synthetic task kind {spec.kind!r} (blobs | images)")


def task_data(spec: TaskSpec, n: int, seed: int) -> ProbeSet:
    """``n`` labelled samples of the task; ``seed`` picks the sample (not the task)."""
    if spec.kind == "text":
        return _text_data(spec, n, seed)
    protos = _prototypes(spec)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, spec.classes, (n,), generator=g)
    mode = torch.randint(0, spec.modes, (n,), generator=g)
    centre = protos[y * spec.modes + mode]
    x = centre + spec.noise * torch.randn(centre.shape, generator=g)
    return ProbeSet(x.float(), y.long(), f"synthetic:{spec.kind}:{spec.seed}")


# --- text -------------------------------------------------------------------------------

# Common English words that are single word pieces of the BERT uncased vocabulary (MiniLM's).
CONTENT_WORDS = """apple river music garden winter doctor market engine forest guitar storm bread school
ocean camera planet coffee train window football village summer letter mountain castle bottle teacher
desert island museum rocket pencil flower candle silver dragon kitchen bridge tiger cloud piano soldier
farmer hammer butter thunder valley harbor jacket rabbit wheel mirror palace cotton lemon finger shadow
circle ticket stone honey chair table horse movie paper money water light house phone baby sister
brother church king queen power energy metal glass green blue red yellow purple black white orange
brown pink dark bright quiet loud happy angry simple strong weak fast slow early late rich poor young
old cold hot soft hard heavy empty full clean dirty sweet bitter fresh dry wet wild calm busy lazy
brave proud gentle cheap small large short long wide narrow deep round flat sharp smooth rough loose
tight thin thick warm cool safe famous run walk swim sing dance read write cook build drive fly climb
paint jump sleep laugh cry fight play teach learn listen speak watch throw catch carry pull push open
close break fix wash buy sell""".split()
FUNCTION_WORDS = """the a of and to in on at with for from by about over under near after before during
without very really quite just still also only even never always often again maybe soon today""".split()
TOPIC_WORDS = 5


def text_topics(spec: TaskSpec) -> tuple[list[list[str]], list[str]]:
    """(topic word lists, class ``c`` mode ``m`` at ``c * modes + m``; neutral words) of the task."""
    g = torch.Generator().manual_seed(20_000 + spec.seed)
    order = [CONTENT_WORDS[int(i)] for i in torch.randperm(len(CONTENT_WORDS), generator=g)]
    need = spec.classes * spec.modes * TOPIC_WORDS
    if need > len(order) - 20:
        raise UsageError(f"text task too large: {spec.classes} classes x {spec.modes} modes")
    topics = [order[i * TOPIC_WORDS:(i + 1) * TOPIC_WORDS] for i in range(spec.classes * spec.modes)]
    return topics, order[need:] + FUNCTION_WORDS


def _text_data(spec: TaskSpec, n: int, seed: int) -> ProbeSet:
    topics, neutral = text_topics(spec)
    g = torch.Generator().manual_seed(seed)
    words = spec.length - 2
    p_other = min(0.3, 0.1 * spec.noise)
    y = torch.randint(0, spec.classes, (n,), generator=g)
    texts = []
    for i in range(n):
        own = topics[int(y[i]) * spec.modes + int(torch.randint(0, spec.modes, (1,), generator=g))]
        u = torch.rand(words, generator=g)
        pick = torch.randint(0, 1 << 20, (words, 2), generator=g)
        sentence = []
        for j in range(words):
            if u[j] < 0.35 or j == int(pick[0, 1]) % words:
                sentence.append(own[int(pick[j, 0]) % len(own)])
            elif u[j] < 0.35 + p_other:
                other = topics[int(pick[j, 1]) % len(topics)]
                sentence.append(other[int(pick[j, 0]) % len(other)])
            else:
                sentence.append(neutral[int(pick[j, 0]) % len(neutral)])
        texts.append(" ".join(sentence))
    ids = encode_texts(texts, text_tokenizer(None), spec.length, pad_to=spec.length)
    return ProbeSet(ids, y.long(), f"synthetic:text:{spec.seed}", tuple(texts))


def text_tokenizer(directory: str | Path | None) -> Any:
    """The ``tokenizers`` tokenizer of a model directory (its ``tokenizer.json``; else, for a
    Hugging Face directory with only ``vocab.txt``/``tokenizer_config.json``, the fast tokenizer
    transformers builds from those local files), else the packaged MiniLM's (the text classifiers
    here use its vocabulary)."""
    from tokenizers import Tokenizer

    from lineage_index.behaviour.archs import minilm_dir

    path = Path(directory) / "tokenizer.json" if directory is not None else None
    if path is not None and not path.is_file() and any(
            (path.parent / n).is_file() for n in ("vocab.txt", "tokenizer_config.json")):
        key = str(path.parent.resolve())
        if key not in _TOKENIZERS:
            from transformers import AutoTokenizer

            try:
                fast = AutoTokenizer.from_pretrained(key, trust_remote_code=False, local_files_only=True)
                _TOKENIZERS[key] = fast.backend_tokenizer
            except (OSError, ValueError, AttributeError) as exc:
                raise UsageError(f"{key}: no usable tokenizer ({exc})") from None
        return _TOKENIZERS[key]
    if path is None or not path.is_file():
        path = minilm_dir() / "tokenizer.json"
    return _tokenizer_from(str(path), Tokenizer)


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer_from(path: str, cls: Any) -> Any:
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = cls.from_file(path)
    return _TOKENIZERS[path]


def encode_texts(texts: list[str] | tuple[str, ...], tokenizer: Any, max_length: int,
                 pad_to: int | None = None) -> torch.Tensor:
    """Token ids (int64, padding id 0), truncated to ``max_length``, padded to the longest (or ``pad_to``)."""
    encoded = [e.ids[:max_length] for e in tokenizer.encode_batch(list(texts))]
    width = pad_to or max((len(e) for e in encoded), default=1)
    out = torch.zeros(len(encoded), width, dtype=torch.long)
    for i, ids in enumerate(encoded):
        out[i, :len(ids)] = torch.tensor(ids[:width], dtype=torch.long)
    return out


def read_text_lines(path: str | Path) -> tuple[list[str], list[int] | None]:
    """Probe texts of a text file (one per line, blank lines skipped); labels when every line is
    ``<integer label><TAB><text>``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"probe data not found: {p}")
    try:
        lines = [ln.rstrip("\r\n") for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p}: not a UTF-8 text file ({exc})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise UsageError(f"{p}: no probe lines")
    parts = [ln.split("\t", 1) for ln in lines]
    if all(len(pt) == 2 and pt[0].strip().lstrip("-").isdigit() for pt in parts):
        return [pt[1] for pt in parts], [int(pt[0]) for pt in parts]
    return lines, None


def load_text_probes(path: str | Path, tokenizer: Any, max_length: int = 32) -> ProbeSet:
    """A text probe file tokenised for a text classifier."""
    texts, labels = read_text_lines(path)
    ids = encode_texts(texts, tokenizer, max_length)
    y = torch.tensor(labels, dtype=torch.long) if labels is not None else None
    return ProbeSet(ids, y, str(path), tuple(texts))


def write_text_probes(probes: ProbeSet, path: str | Path, *, labels: bool = False) -> None:
    """Write a text probe set, one probe per line (``label<TAB>text`` with ``labels``)."""
    if probes.texts is None:
        raise UsageError("this probe set has no texts")
    rows = [(f"{int(probes.y[i])}\t" if labels and probes.y is not None else "") + t  # type: ignore[index]
            for i, t in enumerate(probes.texts)]
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")


# --- image folders --------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image_folder(path: str | Path, channels: int, size: int,
                      norm: tuple[float, float] | None = None) -> ProbeSet:
    """Images of a folder (PNG/JPEG), as ``channels`` x ``size`` x ``size`` floats.

    Pixels are scaled to [0, 1], then ``(x - mean) / std`` with ``norm = (mean, std)`` when the
    model declares one. Sub-folders, when present, are classes (sorted names -> 0, 1, ...).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"image folder not found: {root}")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    groups = [(i, d) for i, d in enumerate(subdirs)] if subdirs else [(-1, root)]
    xs, ys, names = [], [], []
    mode = "L" if channels == 1 else "RGB"
    if channels not in (1, 3):
        raise UsageError(f"image probes need a model with 1 or 3 input channels, not {channels}")
    for label, folder in groups:
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise UsageError(f"{f}: not a readable image ({exc})") from None
            xs.append(torch.from_numpy(arr.reshape(size, size, -1).transpose(2, 0, 1).copy()))
            ys.append(label)
            names.append(f.name)
    if not xs:
        raise UsageError(f"{root}: no PNG/JPEG images found")
    x = torch.stack(xs)
    if norm is not None:
        mean, std = _channel_norm(norm)
        x = (x - mean) / std
    y = torch.tensor(ys, dtype=torch.long) if subdirs else None
    return ProbeSet(x, y, str(root))


def _channel_norm(norm: tuple[Any, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as tensors broadcasting over (channels, height, width): scalars or per-channel
    lists (a Hugging Face ``preprocessor_config.json``'s ``image_mean`` / ``image_std``)."""
    return (torch.as_tensor(norm[0], dtype=torch.float32).reshape(-1, 1, 1),
            torch.as_tensor(norm[1], dtype=torch.float32).reshape(-1, 1, 1))


def to_pixels(x: torch.Tensor, norm: tuple[Any, Any] | None = None) -> torch.Tensor:
    """Image inputs as the 8-bit pixels of an image file (uint8; inverse of ``load_image_folder``'s
    scaling: ``norm`` undone, clipped to [0, 1], rounded to 1/255)."""
    if norm is not None:
        mean, std = _channel_norm(norm)
        x = x * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def through_pixels(x: torch.Tensor, norm: tuple[Any, Any]) -> torch.Tensor:
    """Image inputs as an 8-bit image file holds them, read back as ``load_image_folder`` reads it."""
    mean, std = _channel_norm(norm)
    return (to_pixels(x, norm).float() / 255 - mean) / std


def write_image_folder(probes: ProbeSet, path: str | Path, norm: tuple[float, float] | None = None,
                       *, by_label: bool = False) -> Path:
    """Write image probes as 8-bit PNGs (``to_pixels``)."""
    from PIL import Image

    root = Path(path)
    pixels = to_pixels(probes.x, norm)
    for i, img in enumerate(pixels):
        folder = root / f"class{int(probes.y[i]):03d}" if by_label and probes.y is not None else root
        folder.mkdir(parents=True, exist_ok=True)
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(folder / f"probe{i:05d}.png")
    return root


def synthetic_probes(spec: TaskSpec, n: int = 512, seed: int = 12_345) -> ProbeSet:
    """A probe pool drawn from the task (a sample seed apart from any training seed)."""
    return task_data(spec, n, seed)


def load_probes(path: str | Path, input_shape: tuple[int, ...] | None = None, *, token_ids: bool = False) -> ProbeSet:
    """Read a user's probe file (``.safetensors`` / ``.npz`` / ``.npy``), never by unpickling.

    ``x`` becomes float32, or int64 token ids with ``token_ids`` (text classifiers)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"probe data not found: {p}")
    arrays: dict[str, Any]
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        arrays = dict(load_file(str(p)))
    elif p.suffix in (".npz", ".npy"):
        try:
            loaded = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"{p}: not a plain numeric array file ({exc})") from None
        arrays = {k: torch.from_numpy(loaded[k]) for k in loaded.files} if p.suffix == ".npz" \
            else {"x": torch.from_numpy(loaded)}
    else:
        raise UsageError(f"{p}: probe data must be .safetensors (tensor 'x', optional 'y'), .npz or .npy")
    if "x" not in arrays:
        raise UsageError(f"{p}: no tensor named 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    x = torch.as_tensor(arrays["x"])
    if token_ids:
        if x.is_floating_point() or x.dim() != 2:
            raise UsageError(f"{p}: a text classifier needs 'x' as integer token ids of shape (points, tokens)")
        x = x.long()
    else:
        x = x.float()
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        if math.prod(x.shape[1:]) == math.prod(input_shape):
            x = x.reshape(x.shape[0], *input_shape)
        else:
            raise UsageError(f"{p}: probe shape {tuple(x.shape[1:])} does not fit the model input {input_shape}")
    y = torch.as_tensor(arrays["y"]).long() if "y" in arrays else None
    return ProbeSet(x, y, str(p))


def save_probes(probes: ProbeSet, path: str | Path) -> None:
    """Write a probe set as ``.safetensors`` (``x`` and, when known, ``y``)."""
    from safetensors.torch import save_file

    tensors = {"x": probes.x.contiguous()}
    if probes.y is not None:
        tensors["y"] = probes.y.contiguous()
    save_file(tensors, str(path))


def token_rows(path: str | Path, directory: str | Path | None, vocab: int, name: str,
               max_length: int = 64) -> list[list[int]]:
    """A causal LM's probe sequences of a text file (each of at least two tokens): tokenised with
    the model's ``tokenizer.json``, or, for a model without one, whitespace-separated token ids."""
    texts, _ = read_text_lines(path)
    d = Path(directory or ".")
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = _tokenizer_from(str(d / "tokenizer.json"), Tokenizer)
        rows = [e.ids[:max_length] for e in tok.encode_batch(texts)]
    else:
        try:
            rows = [[int(t) for t in line.split()][:max_length] for line in texts]
        except ValueError:
            raise UsageError(f"{name} ships no tokenizer.json: the probe file {path} must hold "
                             "whitespace-separated token ids, one sequence per line") from None
    if any(t < 0 or t >= vocab for r in rows for t in r):
        raise UsageError(f"{path}: token ids outside the vocabulary of {name} ({vocab})")
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise UsageError(f"{path}: no probe of at least two tokens")
    return rows


def next_token_probes(model: Any, path: str | Path, max_length: int = 64) -> ProbeSet:
    """A causal LM's probes as a classification task: each sequence without its last token
    (padded with the model's pad id) is a point, the last token its label - the next-token
    decision closeness walks and the auxiliary models train on."""
    module = model.module
    rows = token_rows(path, model.meta.get("dir"), int(module.embed_table().shape[0]), model.name, max_length)
    width = max(len(r) for r in rows) - 1
    x = torch.full((len(rows), width), int(module.pad_id), dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r) - 1] = torch.tensor(r[:-1])
    y = torch.tensor([r[-1] for r in rows], dtype=torch.long)
    return ProbeSet(x, y, str(path))


def probes_for(model: Any, path: str | Path) -> ProbeSet:
    """A user's probe data read for ``model`` (a ``models.Classifier``): a folder of images for an
    image classifier, a text file for a text classifier, else a tensor file (see ``load_probes``)."""
    p = Path(path)
    kind, shape = model.kind, model.input_shape
    if p.is_dir():
        if kind != "images" or shape is None:
            raise UsageError(f"{p} is a folder: image folders are probes for image classifiers, and "
                             f"{model.name} reads {kind}")
        norm = model.meta.get("input_norm")
        return load_image_folder(p, shape[0], shape[-1], tuple(norm) if norm else None)
    if p.suffix.lower() in (".txt", ".text"):
        if getattr(model, "arch", "") == "hf-lm":
            return next_token_probes(model, p)
        if kind != "text":
            raise UsageError(f"{p} is a text file: text probes are for text classifiers, and {model.name} "
                             f"reads {kind}")
        length = model.task.length if model.task is not None else 32
        return load_text_probes(p, text_tokenizer(model.meta.get("dir")), max_length=max(length, 8))
    return load_probes(p, shape, token_ids=kind == "text")
