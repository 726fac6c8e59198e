"""HTTP request handler of the local Hub test server (``hubserver.LocalHub``): routing, auth,
gating, fault injection, exact Range handling and the request log. Never sends ``X-Xet-*``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

if TYPE_CHECKING:
    from hubserver import LocalHub

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
LIST_DEFAULT = ("_id", "id", "modelId", "likes", "downloads", "private", "pipeline_tag",
                "library_name", "tags", "createdAt")
LIST_FULL = ("author", "sha", "lastModified", "gated", "disabled", "siblings")


@dataclass
class LogEntry:
    """One request the server answered (``body_bytes`` = body bytes actually sent)."""

    method: str
    path: str
    route: str
    repo: str | None
    file: str | None
    range: str | None
    status: int
    body_bytes: int
    authorized: bool


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class HubHandler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.0"  # one request per connection: simplest and robust

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- plumbing -------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _send(self, status: int, body: bytes, headers: dict[str, str], method: str) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD" and body:
            if self.hub.trickle_s and self.path.split("?")[0].endswith(".safetensors") and status == 206:
                try:
                    for i in range(len(body)):  # misbehave: one byte at a time, slowly
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(self.hub.trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should
                return
            self.wfile.write(body)

    def _handle(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        raw = split.path.split("/")[1:]
        on_cdn = self.server is hub.cdn_server
        route, repo, file = ("cdn", None, None) if on_cdn else _route(raw)
        limit_headers: dict[str, str] = {}
        try:
            if on_cdn:
                status, body, headers = self._cdn(method, raw, split.query)
                repo, file = "/".join(unquote(p) for p in raw[1:3]), unquote("/".join(raw[4:]))
            else:
                bucket = {"list": "api", "info": "api", "tree": "api", "resolve": "resolvers"}.get(route)
                allowed, limit_headers = hub.count(bucket)
                if not allowed:
                    raise HubError(429, "RateLimited", f"you have reached your '{bucket}' rate limit")
                fault = hub.take_fault(repo, route)
                if fault is not None:
                    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                    raise HubError(fault.status, "Injected", f"injected HTTP {fault.status}", headers)
                status, body, headers = self._dispatch(method, route, raw, split.query, repo, file)
        except HubError as err:
            status, body = err.status, json.dumps({"error": err.message}).encode()
            headers = {"X-Error-Code": err.code, "X-Error-Message": err.message,
                       "Content-Type": "application/json", **err.headers}
        headers = {**headers, **limit_headers}
        sent = 0 if method == "HEAD" else len(body)
        with hub.lock:  # logged before the reply, so a client never sees a reply not yet logged
            hub.log.append(LogEntry(method, self.path, route, repo, file, self.headers.get("Range"),
                                    status, sent, self._token() is not None))
        self._send(status, body, headers, method)

    def _dispatch(self, method: str, route: str, raw: list[str], query: str, repo: str | None,
                  file: str | None) -> tuple[int, bytes, dict[str, str]]:
        q = parse_qsl(query, keep_blank_values=True)
        if route == "harness":
            return _json({"standardEnvVars": [], "harnesses": {}})
        if route == "list" and method == "GET":
            return self._list(q)
        if repo is None or method not in ("GET", "HEAD") or (route != "resolve" and method == "HEAD"):
            raise HubError(404, "RepoNotFound", "Repository not found")
        self._check_repo(repo)
        if route == "info":
            rev = unquote(raw[5]) if len(raw) > 5 and raw[4] == "revision" else None
            self._check_rev(repo, rev)
            obj = self.hub.model_json(repo, blobs=dict(q).get("blobs") == "true")
            return _json(_select(obj, _expand(q)) if _expand(q) else obj)
        if route == "tree":
            self._check_rev(repo, unquote(raw[5]) if len(raw) > 5 else "main")
            return _json(self._tree(repo, file or "", dict(q).get("recursive") == "true"))
        self._check_rev(repo, unquote(raw[3]))
        self._check_gate(repo)
        return self._resolve(method, repo, file or "")

    # --- access ---------------------------------------------------------------------------
    def _check_repo(self, repo: str) -> None:
        hub, token = self.hub, self._token()
        if hub.repo_dir(repo) is None or (repo in hub.private and not hub.can_read(repo, token)):
            raise HubError(401 if token is None else 404, "RepoNotFound", "Repository not found")

    def _check_rev(self, repo: str, rev: str | None) -> None:
        if rev not in (None, "main", self.hub.sha(repo)):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _check_gate(self, repo: str) -> None:
        hub, token = self.hub, self._token()
        if repo in hub.disabled:
            raise HubError(403, "DisabledRepo", "Access to this resource is disabled.")
        if hub.gated.get(repo) and not hub.can_read(repo, token):
            if token is None:
                raise HubError(401, "GatedRepo", f"Access to model {repo} is restricted. You must have"
                               " access to it and be authenticated to access it. Please log in.")
            raise HubError(403, "GatedRepo", f"Access to model {repo} is restricted and you are not"
                           " in the authorized list.")

    # --- routes ---------------------------------------------------------------------------
    def _list(self, q: list[tuple[str, str]]) -> tuple[int, bytes, dict[str, str]]:
        hub, token, d = self.hub, self._token(), dict(q)
        ids = [r for r in hub.repo_ids()
               if (r not in hub.private or hub.can_read(r, token))
               and (not d.get("author") or r.split("/")[0] == d["author"])
               and (not d.get("search") or d["search"].lower() in r.lower())]
        cursor = int(d.get("cursor") or 0)
        size = min(hub.page_size, int(d["limit"])) if d.get("limit") else hub.page_size
        expand = _expand(q)
        keys = set(expand) if expand else set(_list_keys(d))
        items = []
        for r in ids[cursor : cursor + size]:
            obj = _select(hub.model_json(r), keys)
            if "siblings" in obj:
                obj["siblings"] = [{"rfilename": s["rfilename"]} for s in obj["siblings"]]
            items.append(obj)
        if cursor == 0:
            items.extend(hub.extra_listing)
        headers: dict[str, str] = {}
        nxt_cursor = cursor + size
        if nxt_cursor >= len(ids) and hub.loop_listing:  # misbehaving: the last page links to the first
            nxt_cursor = 0
        if nxt_cursor < len(ids):
            nxt = [(k, v) for k, v in q if k != "cursor"] + [("cursor", str(nxt_cursor))]
            headers["Link"] = f'<{hub.next_origin or hub.url}/api/models?{urlencode(nxt)}>; rel="next"'
        return _json(items, headers)

    def _tree(self, repo: str, sub: str, recursive: bool) -> list[dict[str, Any]]:
        sub = sub.strip("/")
        prefix = f"{sub}/" if sub else ""
        out: dict[str, dict[str, Any]] = {}
        for path, st in self.hub.files(repo):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folder = prefix + rest.split("/", 1)[0]
                out[folder] = {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0}
                continue
            blob, sha256 = self.hub.hashes(repo, path)
            entry: dict[str, Any] = {"type": "file", "path": path, "oid": blob, "size": st.st_size}
            if self.hub.is_lfs(path, st.st_size):
                entry["lfs"] = {"oid": sha256, "size": st.st_size, "pointerSize": 134}
            out[path] = entry
        if sub and not out:
            raise HubError(404, "EntryNotFound", f"{sub} does not exist on \"main\"",
                           {"X-Repo-Commit": self.hub.sha(repo)})
        return sorted(out.values(), key=lambda e: e["path"])

    def _cdn(self, method: str, raw: list[str], query: str) -> tuple[int, bytes, dict[str, str]]:
        """``/cdn/<org>/<name>/<sha>/<path>?expires=<unix time>``: a signed URL that expires."""
        q = dict(parse_qsl(query))
        if len(raw) < 5 or raw[0] != "cdn":
            raise HubError(404, "NotFound", "not found")
        try:
            expires = float(q.get("expires", "0"))
        except ValueError:
            expires = 0.0
        if time.time() > expires:
            raise HubError(403, "Expired", "Request has expired")
        repo, sha, path = "/".join(unquote(p) for p in raw[1:3]), unquote(raw[3]), unquote("/".join(raw[4:]))
        self._check_repo_exists(repo)
        if sha != self.hub.sha(repo):
            raise HubError(404, "NotFound", "no such object")
        return self._serve(method, repo, path, cdn=False)

    def _check_repo_exists(self, repo: str) -> None:
        if self.hub.repo_dir(repo) is None:
            raise HubError(404, "NotFound", "no such object")

    def _resolve(self, method: str, repo: str, path: str) -> tuple[int, bytes, dict[str, str]]:
        return self._serve(method, repo, path, cdn=self.hub.cdn)

    def _serve(self, method: str, repo: str, path: str, *, cdn: bool) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        sha = hub.sha(repo)
        base = hub.repo_dir(repo)
        full = base / path if base and path and ".." not in path.split("/") else None
        if full is None or not full.is_file() or any(p.startswith(".") for p in path.split("/")):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on \"main\"",
                           {"X-Repo-Commit": sha})
        size = full.stat().st_size
        blob, sha256 = hub.hashes(repo, path)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if hub.is_lfs(path, size):
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"',
                            "X-Linked-Size": str(size)})
            if cdn:  # the Hub's answer for LFS files: 302 to the CDN, metadata on the 302
                expires = int(time.time() + hub.cdn_ttl_s)
                headers["Location"] = (f"{hub.cdn_url}/cdn/{quote(repo)}/{sha}/{quote(path)}"
                                       f"?expires={expires}&signature={sha256[:16]}")
                return 302, b"", headers
        else:
            headers["ETag"] = f'"{blob}"'
        rng = self.headers.get("Range")
        if rng is None or repo in hub.ignore_range or method == "HEAD":
            if method == "HEAD":
                headers["Content-Length"] = str(size)
                return 200, b"", headers
            return 200, full.read_bytes(), headers
        m = _RANGE.match(rng.strip())
        if not m or m.group(1) == m.group(2) == "":
            raise HubError(416, "RangeNotSatisfiable", "unsupported Range", {"Content-Range": f"bytes */{size}"})
        if m.group(1) == "":
            start, end = max(0, size - int(m.group(2))), size - 1
        else:
            start = int(m.group(1))
            end = size - 1 if m.group(2) == "" else min(int(m.group(2)), size - 1)
        if start >= size or (m.group(2) and int(m.group(2)) < start) or end < start:
            raise HubError(416, "RangeNotSatisfiable", "Range not satisfiable", {"Content-Range": f"bytes */{size}"})
        if repo in hub.misrange and start < end:
            start += 1  # a broken server: answers another range (honestly labelled)
        with full.open("rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, body, headers


def _route(raw: list[str]) -> tuple[str, str | None, str | None]:
    """(route, repo id, file/sub-path) from the raw (still quoted) path segments."""
    if raw[:2] == ["api", "agent-harnesses"]:
        return "harness", None, None
    if raw[:2] == ["api", "models"]:
        if len(raw) == 2 or raw[2:] == [""]:
            return "list", None, None
        repo = "/".join(unquote(p) for p in raw[2:4]) if len(raw) >= 4 else None
        if len(raw) >= 6 and raw[4] == "tree":
            sub = unquote("/".join(raw[6:])) if len(raw) > 6 else None
            return "tree", repo, sub
        return "info", repo, None
    if len(raw) >= 5 and raw[2] == "resolve":
        return "resolve", f"{unquote(raw[0])}/{unquote(raw[1])}", unquote("/".join(raw[4:]))
    return "other", None, None


def _expand(q: list[tuple[str, str]]) -> list[str]:
    return [v for k, v in q if k in ("expand", "expand[]")]


def _list_keys(d: dict[str, str]) -> list[str]:
    keys = list(LIST_DEFAULT)
    if d.get("full") == "true":
        keys += LIST_FULL
    if d.get("cardData") == "true" or d.get("full") == "true":
        keys.append("cardData")
    if d.get("config") == "true":
        keys.append("config")
    return keys


def _select(obj: dict[str, Any], keys: Any) -> dict[str, Any]:
    keep = set(keys) | {"_id", "id"}
    return {k: v for k, v in obj.items() if k in keep}


def _json(obj: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
