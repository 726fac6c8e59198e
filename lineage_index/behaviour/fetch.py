"""Where the behaviour tier's full weights come from: a local path, the HF cache, or the Hub.

The behaviour tier needs every weight of a model, so it never streams ranges: it resolves a
model reference to a local directory holding ``config.json`` and ``*.safetensors`` files.

- A path that exists is used as it is.
- A repo id (``org/name``) is looked up in the local Hugging Face cache (``hf_cache``, default
  the standard cache, ``HF_HUB_CACHE``/``HF_HOME``) without any network access.
- Only with ``download=True`` (the user's consent, ``--download``) is it fetched from the Hub
  (``huggingface_hub``, so ``HF_ENDPOINT`` is honoured), and only when its safetensors weights
  plus small metadata files fit ``max_download_mb``. Pickle checkpoints are never requested: a
  repository with pickle weights only raises ``UnsupportedFormatError`` before anything is
  downloaded; a missing one raises ``RepoNotFoundError``.

This module downloads and resolves paths; it reads no weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lineage_index.errors import ModelReadError, UnsupportedFormatError, UsageError
from lineage_index.indexer.read.sources import PICKLE_SUFFIXES

DEFAULT_MAX_DOWNLOAD_MB = 2048.0
# Files fetched besides the weights: configuration, tokenizer, card.
SMALL_FILES = ("*.json", "tokenizer.model", "vocab.txt", "merges.txt", "*.txt", "README.md")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_repo_id(ref: str) -> bool:
    return bool(_REPO_ID.match(ref)) and ".." not in ref


def from_cache(repo_id: str, hf_cache: str | Path | None = None, revision: str | None = None) -> Path | None:
    """The cached snapshot directory of ``repo_id`` holding safetensors weights, or None."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_cache)
    except (CacheNotFound, ValueError):
        return None
    for repo in info.repos:
        if repo.repo_id != repo_id or repo.repo_type != "model" or not repo.revisions:
            continue
        revisions = [r for r in repo.revisions if revision in (None, r.commit_hash) or revision in r.refs]
        # the revision 'main' points at first, then the newest
        for rev in sorted(revisions, key=lambda r: ("main" in r.refs, r.last_modified), reverse=True):
            root = Path(rev.snapshot_path)
            if any(root.glob("*.safetensors")) or any(p.suffix in PICKLE_SUFFIXES for p in root.iterdir()):
                return root
    return None


def download_model(repo_id: str, *, max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB, endpoint: str | None = None,
             token: str | bool | None = None, hf_cache: str | Path | None = None,
             revision: str | None = None) -> Path:
    """Download the safetensors weights and small metadata files of ``repo_id`` (never pickle)."""
    from huggingface_hub import HfApi, snapshot_download

    from lineage_index.indexer.read.remote import HUB_ERRORS, map_hub_error

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None  # read now, not at library import
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except HUB_ERRORS as exc:
        raise map_hub_error(exc, repo_id) from None
    siblings = list(info.siblings or [])
    names = [s.rfilename for s in siblings]
    weights = [s for s in siblings if s.rfilename.endswith(".safetensors")
               and not s.rfilename.rsplit("/", 1)[-1].startswith("adapter_")]
    if not weights:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise UnsupportedFormatError(
                f"{repo_id}: only pickle checkpoints ({', '.join(sorted(pickles)[:4])}); lineage-index never "
                "unpickles weights and does not download them")
        raise ModelReadError(f"{repo_id}: no *.safetensors weights in the repository")
    top = [s for s in weights if "/" not in s.rfilename] or weights
    size_mb = sum((s.size or 0) for s in top) / 2**20
    if size_mb > max_download_mb:
        raise UsageError(f"{repo_id}: {size_mb:.1f} MB of safetensors weights exceed --max-download-mb "
                         f"{max_download_mb:g}; raise the limit to download it")
    patterns = [s.rfilename for s in top] + list(SMALL_FILES)
    try:
        path = snapshot_download(repo_id, revision=info.sha or revision, endpoint=endpoint, token=token,
                                 cache_dir=hf_cache, allow_patterns=patterns,
                                 ignore_patterns=[f"*{s}" for s in PICKLE_SUFFIXES])
    except HUB_ERRORS as exc:
        raise map_hub_error(exc, repo_id) from None
    return Path(path)


def resolve(ref: str | Path, *, hf_cache: str | Path | None = None, download: bool = False,
            max_download_mb: float | None = None, endpoint: str | None = None,
            token: str | bool | None = None) -> Path:
    """A local directory holding the model ``ref`` (see the module docstring for the order)."""
    p = Path(ref)
    if p.exists():
        return p
    text = str(ref)
    if not is_repo_id(text):
        raise UsageError(f"model directory not found: {p}")
    cached = from_cache(text, hf_cache)
    if cached is not None:
        return cached
    if not download:
        where = f"the HF cache at {hf_cache}" if hf_cache else "the local HF cache"
        raise UsageError(f"{text}: no such directory and not in {where}; pass --download to fetch its "
                         "safetensors weights from the Hub (size limit --max-download-mb)")
    return download_model(text, max_download_mb=max_download_mb or DEFAULT_MAX_DOWNLOAD_MB,
                          endpoint=endpoint, token=token, hf_cache=hf_cache)
