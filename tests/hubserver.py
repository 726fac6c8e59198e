"""A local Hugging Face Hub test server (stdlib only) serving a directory in Hub layout.

``LocalHub(root)`` serves ``root/<org>/<name>/...`` on ``http://127.0.0.1:<port>`` from a
thread (a ``ThreadingHTTPServer``; use it as a context manager or pytest fixture) with the HTTP
surface of HUB-API.md: ``GET /api/models`` (author/search/expand incl. ``expand[]``, full,
cardData, config; pagination with an ABSOLUTE ``Link: <...>; rel="next"``), ``GET
/api/models/{ns}/{name}[/revision/{rev}]`` (``blobs=true`` adds file metadata), ``GET
/api/models/{ns}/{name}/tree/{rev}[/{path}]``, ``HEAD/GET /{ns}/{name}/resolve/{rev}/{path}``
(exact single ``Range``: 206 + ``Content-Range``, end clipped, 416 only when start >= size;
HEAD has the real ``Content-Length`` and no body; ``X-Repo-Commit``, ``ETag``,
``X-Linked-Etag``/``X-Linked-Size`` for LFS-like files). Every error carries ``X-Error-Code``.
The real Hub's traits are knobs: ``cdn = True`` answers resolve requests for LFS files with
``302`` to a second server on another origin (``cdn_url``, signed URLs valid ``cdn_ttl_s``);
``limits = {"api": (quota, window_s), "resolvers": (...)}`` counts requests in fixed windows,
answers ``429`` past the quota, and sends ``RateLimit``/``RateLimit-Policy`` on every answer of
a limited bucket (``limited`` counts the 429s, ``requests_by_bucket`` what was asked).
No ``X-Xet-*`` header is ever sent.

Repo settings: ``gated`` (repo -> "manual"/"auto"), ``private``, ``disabled``, ``grant(token,
repo)`` (Bearer tokens allowed on gated/private repos), ``ignore_range`` (answer 200 with the
whole file), ``misrange`` (answer a range one byte off), ``created_at`` overrides. Fault injection: ``fail(status, times, repo, route,
retry_after)``; ``times=None`` is a storm. ``log`` records every request with the body bytes
sent, so tests can assert exactly what was read (``bytes_served``, ``requests_for``).

Metadata is derived from the files like the Hub does: cardData from README front matter,
computed tags (``base_model:<id>``, ``base_model:<relation>:<id>``, ``license:<id>``), a curated
``config`` subset, ``safetensors`` {parameters, total} from the headers. Test code: it trusts
the files it serves only as far as needed to describe them; it never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

try:  # imported as ``tests.hubserver``
    from .hubserver_handler import HubHandler, LogEntry
except ImportError:  # imported as ``hubserver`` (tests/ on sys.path)
    from hubserver_handler import HubHandler, LogEntry  # type: ignore[no-redef]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".onnx", ".msgpack")
CONFIG_KEYS = ("architectures", "model_type", "quantization_config", "tokenizer_config")
RELATIONS = ("adapter", "merge", "quantized", "finetune")


@dataclass
class Fault:
    """Answer ``status`` to the next ``remaining`` matching requests (None: forever)."""

    status: int = 429
    remaining: int | None = 1
    repo: str | None = None  # None: any repo (and the listing)
    route: str | None = None  # "list" | "info" | "tree" | "resolve" | None: any
    retry_after: int | None = 0
    hits: int = 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _front_matter(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.match(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*$", text, re.S | re.M)
    if not m:
        return None
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _st_params(path: Path) -> dict[str, int] | None:
    """dtype -> element count from a safetensors header, None if it does not parse."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > 25_000_000 or n > path.stat().st_size - 8:
                return None
            header = json.loads(f.read(n))
        out: dict[str, int] = {}
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for d in entry["shape"]:
                    count *= int(d)
                out[entry["dtype"]] = out.get(entry["dtype"], 0) + count
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class LocalHub:
    """The server; see the module docstring. ``url`` is the endpoint to pass as ``endpoint=``."""

    def __init__(self, root: str | os.PathLike[str], *, page_size: int = 50) -> None:
        self.root = Path(root)
        self.page_size = page_size
        self.gated: dict[str, str] = {}
        self.private: set[str] = set()
        self.disabled: set[str] = set()
        self.ignore_range: set[str] = set()
        self.misrange: set[str] = set()
        self.created_at: dict[str, str] = {}
        self.loop_listing = False  # misbehave: the listing's last page links back to the first, for ever
        self.next_origin: str | None = None  # misbehave: listing pages link to this other origin
        self.extra_listing: list[Any] = []
        self.trickle_s = 0.0  # misbehave: weight ranges (206) sent one byte per trickle_s seconds  # misbehave: raw entries added to the first listing page
        # the real Hub's traits, off by default: weight files redirected to a CDN on another
        # origin (signed URLs that expire), and fixed-window rate limits per bucket with the
        # Hub's RateLimit / RateLimit-Policy headers (``limits={"api": (q, w), "resolvers": (q, w)}``)
        self.cdn = False
        self.cdn_ttl_s = 3600.0
        self.limits: dict[str, tuple[int, float]] = {}
        self.window_counts: dict[tuple[str, int], int] = {}  # (bucket, window index) -> requests
        self.limited = 0  # 429 answers given because a bucket was spent
        self.tokens: dict[str, set[str]] = {}
        self.faults: list[Fault] = []
        self.log: list[LogEntry] = []
        self.lock = threading.Lock()
        self._hashes: dict[tuple[str, int, int], tuple[str, str]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.cdn_server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.cdn_server.daemon_threads = True
        # another origin (host name and port), as the Hub's CDN is: the token is never sent there
        self.cdn_url = f"http://localhost:{self.cdn_server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> LocalHub:
        for server in (self.server, self.cdn_server):
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        for server in (self.server, self.cdn_server):
            server.shutdown()
            server.server_close()

    # --- rate limits (fixed windows, as the Hub counts) ----------------------------------------
    def count(self, bucket: str | None) -> tuple[bool, dict[str, str]]:
        """Count one request of ``bucket``: (allowed, the Hub's rate-limit headers)."""
        if bucket is None or bucket not in self.limits:
            return True, {}
        import time as _time

        quota, window = self.limits[bucket]
        now = _time.time()
        idx = int(now // window)
        with self.lock:
            used = self.window_counts.get((bucket, idx), 0) + 1
            self.window_counts[(bucket, idx)] = used
            if used > quota:
                self.limited += 1
        reset = max(1, int((idx + 1) * window - now + 0.999))
        headers = {"RateLimit": f'"{bucket}";r={max(0, quota - used)};t={reset}',
                   "RateLimit-Policy": f'"fixed window";"{bucket}";q={quota};w={int(window)}'}
        return used <= quota, headers

    def requests_by_bucket(self) -> dict[str, int]:
        """Requests answered, by the Hub's buckets (api, resolvers) and the CDN."""
        out: dict[str, int] = {}
        with self.lock:
            for e in self.log:
                name = {"list": "api", "info": "api", "tree": "api", "resolve": "resolvers",
                        "cdn": "cdn"}.get(e.route, "other")
                out[name] = out.get(name, 0) + 1
        return out

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs ----------------------------------------------------------------------------
    def grant(self, token: str, *repos: str) -> None:
        self.tokens.setdefault(token, set()).update(repos)

    def fail(self, status: int = 429, times: int | None = 1, *, repo: str | None = None,
             route: str | None = None, retry_after: int | None = 0) -> Fault:
        fault = Fault(status, times, repo, route, retry_after)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, repo: str | None, route: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.repo in (None, repo) and fault.route in (None, route)
                        and (fault.remaining is None or fault.remaining > 0)):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    return fault
        return None

    # --- request log ----------------------------------------------------------------------
    def requests_for(self, repo: str | None = None, file: str | None = None,
                     route: str | None = None, method: str | None = None) -> list[LogEntry]:
        with self.lock:
            return [e for e in self.log if (repo is None or e.repo == repo)
                    and (file is None or e.file == file) and (route is None or e.route == route)
                    and (method is None or e.method == method)]

    def bytes_served(self, repo: str | None = None, file: str | None = None) -> int:
        """Body bytes of successful (200/206) file GETs (resolve URLs and the CDN)."""
        return sum(e.body_bytes for route in ("resolve", "cdn") for e in self.requests_for(repo, file, route, "GET")
                   if e.status in (200, 206))

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()

    # --- repository model -----------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        path = self.root / parts[0] / parts[1]
        return path if path.is_dir() else None

    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{o.name}/{m.name}" for o in self.root.iterdir()
                      if o.is_dir() and not o.name.startswith(".")
                      for m in o.iterdir() if m.is_dir() and not m.name.startswith("."))

    def files(self, repo_id: str) -> list[tuple[str, os.stat_result]]:
        base = self.repo_dir(repo_id)
        out = []
        for dirpath, dirnames, names in os.walk(base) if base else ():
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in names:
                full = Path(dirpath) / name
                out.append((full.relative_to(base).as_posix(), full.stat()))
        return sorted(out)

    def sha(self, repo_id: str) -> str:
        h = hashlib.sha1(repo_id.encode())
        for path, st in self.files(repo_id):
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def hashes(self, repo_id: str, path: str) -> tuple[str, str]:
        """(git blob sha1, sha256) of a file, cached by (path, size, mtime)."""
        full = self.repo_dir(repo_id) / path  # type: ignore[operator]
        st = full.stat()
        key = (str(full), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:  # streamed: checkpoints may be many GB (sparse in benches)
            blob, sha256 = hashlib.sha1(b"blob %d\0" % st.st_size), hashlib.sha256()
            with open(full, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    blob.update(chunk)
                    sha256.update(chunk)
            self._hashes[key] = (blob.hexdigest(), sha256.hexdigest())
        return self._hashes[key]

    @staticmethod
    def is_lfs(path: str, size: int) -> bool:
        return path.endswith(LFS_SUFFIXES) or size > 10 * 1024 * 1024

    def model_json(self, repo_id: str, blobs: bool = False) -> dict[str, Any]:
        base = self.repo_dir(repo_id)
        assert base is not None
        files = self.files(repo_id)
        names = {p for p, _ in files}
        card = _front_matter(base / "README.md") if "README.md" in names else None
        config: dict[str, Any] = {}
        adapter: dict[str, Any] | None = None
        for fname in ("config.json", "adapter_config.json"):
            if fname in names:
                try:
                    obj = json.loads((base / fname).read_text())
                except ValueError:
                    obj = None
                if isinstance(obj, dict) and fname == "config.json":
                    config = {k: obj[k] for k in CONFIG_KEYS if k in obj}
                elif isinstance(obj, dict):
                    adapter = obj
        if adapter is not None:
            config["peft"] = {k: adapter[k] for k in ("base_model_name_or_path", "task_type") if k in adapter}
        card_d = card or {}
        library = card_d.get("library_name") or ("peft" if adapter is not None else
                                                  "transformers" if "config.json" in names else None)
        bases = card_d.get("base_model") or []
        bases = [bases] if isinstance(bases, str) else [b for b in bases if isinstance(b, str)]
        relation = card_d.get("base_model_relation")
        if relation not in RELATIONS:
            relation = ("adapter" if adapter is not None else "merge" if len(bases) > 1 else
                        "quantized" if "quantization_config" in config else "finetune")
        tags = [library] if library else []
        if any(p.endswith(".safetensors") for p in names):
            tags.append("safetensors")
        tags += [t for t in (card_d.get("tags") or []) if isinstance(t, str)]
        for b in bases:
            tags += [f"base_model:{b}", f"base_model:{relation}:{b}"]
        lic = card_d.get("license")
        if isinstance(lic, str):
            tags.append(f"license:{lic}")
        tags.append("region:us")
        params: dict[str, int] = {}
        ok = True
        for p, _ in files:
            if p.endswith(".safetensors"):
                got = _st_params(base / p)
                ok = ok and got is not None
                for k, v in (got or {}).items():
                    params[k] = params.get(k, 0) + v
        mtimes = [st.st_mtime for _, st in files] or [base.stat().st_mtime]
        created = self.created_at.get(repo_id) or card_d.get("created_at")
        if isinstance(created, datetime):
            created = _iso(created.replace(tzinfo=created.tzinfo or UTC).timestamp())
        elif created is not None:
            created = _iso(datetime.fromisoformat(str(created).replace("Z", "+00:00"))
                           .replace(tzinfo=None).replace(tzinfo=UTC).timestamp())
        sha = self.sha(repo_id)
        siblings = []
        for p, st in files:
            sib: dict[str, Any] = {"rfilename": p}
            if blobs:
                blob, sha256 = self.hashes(repo_id, p)
                sib.update(size=st.st_size, blobId=blob)
                if self.is_lfs(p, st.st_size):
                    sib["lfs"] = {"sha256": sha256, "size": st.st_size, "pointerSize": 134}
            siblings.append(sib)
        out: dict[str, Any] = {
            "_id": sha[:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
            "sha": sha, "createdAt": created or _iso(min(mtimes)), "lastModified": _iso(max(mtimes)),
            "private": repo_id in self.private, "gated": self.gated.get(repo_id, False),
            "disabled": repo_id in self.disabled, "downloads": 0, "likes": 0, "tags": tags,
            "siblings": siblings, "spaces": [], "usedStorage": sum(st.st_size for _, st in files),
        }
        for key, value in (("pipeline_tag", card_d.get("pipeline_tag")), ("library_name", library),
                           ("cardData", card), ("config", config or None)):
            if value is not None:
                out[key] = value
        if ok and params:
            out["safetensors"] = {"parameters": params, "total": sum(params.values())}
        return json.loads(json.dumps(out, default=str))

    def can_read(self, repo_id: str, token: str | None) -> bool:
        return token is not None and repo_id in self.tokens.get(token, set())


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    return type("BoundHubHandler", (HubHandler,), {"hub": hub})


def write_model(root: str | os.PathLike[str], model_id: str, *,
                tensors: dict[str, Any] | None = None, card: dict[str, Any] | str | None = None,
                config: dict[str, Any] | None = None, adapter_config: dict[str, Any] | None = None,
                shards: int = 1, weights_name: str = "model.safetensors",
                extra: dict[str, bytes] | None = None) -> Path:
    """Write a model in Hub layout under ``root/<org>/<name>`` (numpy arrays via safetensors).

    ``card``: a dict becomes README YAML front matter, a str is written verbatim. ``shards > 1``
    splits the tensors round-robin into ``model-0000i-of-0000n.safetensors`` + an index.
    """
    from safetensors.numpy import save_file

    path = Path(root) / model_id
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if adapter_config is not None:
        (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    if card is not None:
        text = card if isinstance(card, str) else f"---\n{yaml.safe_dump(card)}---\n# {model_id}\n"
        (path / "README.md").write_text(text)
    if tensors:
        if shards <= 1:
            save_file(tensors, str(path / weights_name), metadata={"format": "pt"})
        else:
            names = sorted(tensors)
            weight_map = {}
            for i in range(shards):
                shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
                part = {n: tensors[n] for n in names[i::shards]}
                save_file(part, str(path / shard), metadata={"format": "pt"})
                weight_map.update({n: shard for n in part})
            total = sum(t.nbytes for t in tensors.values())
            (path / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    for name, data in (extra or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path
