"""A Hugging Face hub on 127.0.0.1 for tests: local folders served as model repos through the endpoints
huggingface_hub's client calls (read from huggingface_hub 2.4's `hf_api.py`, `file_download.py` and
`_snapshot_download.py`):

- `GET /api/models/{repo}[/revision/{rev}]`: the repo's info, its commit `sha` and `siblings` with their sizes
  (`model_info(files_metadata=True)`, and `repo_info` inside `snapshot_download`);
- `GET /api/models/{repo}/tree/{rev}`: the recursive file listing `snapshot_download` caches;
- `HEAD` / `GET /{repo}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit`, `ETag` and `Content-Length`; a
  `Range: bytes=N-` request gets `206 Partial Content` from byte N.

`FakeHub.cut(path, after)` makes the next GET of that file send `after` bytes of it and drop the connection, once:
a download cut half-way. `requests` logs each request for a repo as (method, path, Range header or None), the path
`api/models/...` or a file's `org/name/path/inside`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """`repos` maps a repo id (`org/name`) to the folder served as its files. Use as a context manager; `url` is
    what HF_ENDPOINT is set to."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[tuple[str, str, str | None]] = []
        self.cuts: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def cut(self, path: str, after: int) -> None:
        """The next GET of `path` (`org/name/file`) stops after `after` bytes and drops the connection."""
        self.cuts[path] = after

    def files(self, repo: str) -> dict[str, Path]:
        folder = self.repos[repo]
        return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}

    def file(self, path: str) -> Path:
        """The served file at `path` (`org/name/path/inside`)."""
        org, name, inside = path.split("/", 2)
        return self.files(f"{org}/{name}")[inside]

    def fetched(self) -> list[str]:
        """The files (`org/name/path/inside`) fetched with GET, in order."""
        return [path for method, path, _ in self.requests if method == "GET" and not path.startswith("api/")]


def _oid(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: `hub.requests` is the log
            pass

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            parts = unquote(urlsplit(self.path).path).strip("/").split("/")
            if parts[:2] == ["api", "models"]:
                hub.requests.append((self.command, "/".join(parts), None))
                self.api(parts[2:])
            elif len(parts) > 4 and parts[2] == "resolve":
                name = "/".join(parts[:2] + parts[4:])
                hub.requests.append((self.command, name, self.headers.get("Range")))
                self.file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
            else:  # huggingface_hub's other calls (e.g. its agent-harness registry): not a repo's
                self.fail(404, "EntryNotFound")

        def api(self, parts: list[str]) -> None:
            repo = "/".join(parts[:2])
            if repo not in hub.repos:
                return self.fail(404, "RepoNotFound")
            files = hub.files(repo)
            if len(parts) >= 4 and parts[2] == "tree":
                listing = [{"type": "file", "path": name, "size": p.stat().st_size, "oid": _oid(p)}
                           for name, p in files.items()]  # fmt: skip
                return self.json(listing)
            siblings = [{"rfilename": name, "size": p.stat().st_size, "blobId": _oid(p)} for name, p in files.items()]
            self.json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})

        def file(self, repo: str, revision: str, name: str, body: bool) -> None:
            if repo not in hub.repos:
                return self.fail(404, "RepoNotFound")
            if revision not in ("main", COMMIT):
                return self.fail(404, "RevisionNotFound")
            found = hub.files(repo).get(name)
            if found is None:
                return self.fail(404, "EntryNotFound")
            data = found.read_bytes()
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{_oid(found)}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = hub.cuts.pop(f"{repo}/{name}", None)
            self.wfile.write(data[start:] if cut is None else data[start:cut])
            if cut is not None:  # fewer bytes than Content-Length said, then the connection goes: a network cut
                self.wfile.flush()
                self.close_connection = True

        def json(self, value: object) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def fail(self, status: int, code: str) -> None:
            data = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
