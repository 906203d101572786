"""A fake Hugging Face Hub on 127.0.0.1 for the publishing tests (stdlib only, no network).

It answers what ``HfApi.create_repo`` and ``HfApi.upload_folder`` call:

* ``POST /api/repos/create`` -- creates the repo (409 when it exists, which ``exist_ok`` accepts);
* ``POST /api/validate-yaml`` -- accepts any README metadata;
* ``POST /api/models/<repo>/preupload/<revision>`` -- every file is a "regular" upload (inline base64);
* ``POST /api/models/<repo>/commit/<revision>`` -- stores the files of the ndjson commit and answers
  with a commit sha (and a pull-request URL with ``create_pr=1``);
* ``POST /api/models/<repo>/discussions`` and ``GET .../discussions/<num>`` -- opens a pull request
  (what ``upload_folder(create_pr=True)`` does first when ``hf_xet`` is installed) and describes it;
  a commit to ``refs/pr/<num>`` is recorded as that pull request's.

Every request needs ``Authorization: Bearer <token>`` with the server's token, else 401.
:meth:`FakeHub.fail_next` queues status codes (e.g. 503) that the next requests get instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeHub:
    def __init__(self, token: str = "hf_fake_write_token") -> None:
        self.token = token
        self.repos: dict[str, dict] = {}  # repo_id -> {"private", "files": {path: bytes}, "commits": [...]}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.discussions: list[dict] = []  # pull requests opened, in order (num = index + 1)
        self._faults: deque[int] = deque()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                parts = url.path.split("/")
                with hub._lock:
                    hub.requests.append(("GET", url.path, dict(self.headers)))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if len(parts) == 7 and parts[5] == "discussions":
                    num = int(parts[6])
                    d = hub.discussions[num - 1]
                    return self._reply(200, {
                        "title": d["title"], "num": num, "author": {"name": "someone"}, "createdAt": "2026-12-02T00:00:00.000Z", "status": "open",
                        "repo": {"name": d["repo"], "type": "model"}, "isPullRequest": True, "events": [],
                        "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [],
                    })
                return self._reply(404, {"error": f"fake hub: no route for GET {url.path}"})

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                url = urlparse(self.path)
                with hub._lock:
                    hub.requests.append(("POST", url.path, dict(self.headers)))
                    fault = hub._faults.popleft() if hub._faults else None
                if fault is not None:
                    return self._reply(fault, {"error": f"fake hub: injected {fault}"})
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if url.path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                if url.path == "/api/repos/create":
                    body = json.loads(raw)
                    repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                    with hub._lock:
                        if repo_id in hub.repos:
                            return self._reply(409, {"error": "You already created this model repo", "url": f"{hub.endpoint}/{repo_id}"})
                        hub.repos[repo_id] = {"private": body.get("visibility") == "private", "files": {}, "commits": []}
                    return self._reply(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
                parts = url.path.split("/")  # "", "api", "models", ns, name, action, revision
                if len(parts) == 6 and parts[1:3] == ["api", "models"] and parts[5] == "discussions":
                    repo_id = f"{parts[3]}/{parts[4]}"
                    with hub._lock:
                        hub.discussions.append({"repo": repo_id, "title": json.loads(raw)["title"]})
                        num = len(hub.discussions)
                    return self._reply(200, {"num": num, "url": f"{hub.endpoint}/{repo_id}/discussions/{num}"})
                if len(parts) >= 7 and parts[1:3] == ["api", "models"]:
                    repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                    if repo_id not in hub.repos:
                        return self._reply(404, {"error": "Repository not found"})
                    if action == "preupload":
                        files = json.loads(raw)["files"]
                        return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})
                    if action == "commit":
                        revision = "/".join(parts[6:]).replace("%2F", "/")
                        return self._commit(repo_id, raw, "create_pr" in parse_qs(url.query) or revision.startswith("refs/pr/"))
                return self._reply(404, {"error": f"fake hub: no route for {url.path}"})

            def _commit(self, repo_id: str, raw: bytes, create_pr: bool) -> None:
                header, files = {}, {}
                for line in raw.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        header = item["value"]
                    elif item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    else:
                        return self._reply(400, {"error": f"fake hub: unsupported commit item {item['key']}"})
                sha = hashlib.sha1(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())}).encode()).hexdigest()
                with hub._lock:
                    repo = hub.repos[repo_id]
                    repo["files"].update(files)
                    repo["commits"].append({"sha": sha, "summary": header.get("summary"), "files": sorted(files), "pr": create_pr})
                    pr = len(hub.discussions) or len(repo["commits"])
                body = {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha}
                body["pullRequestUrl"] = f"{hub.endpoint}/{repo_id}/discussions/{pr}" if create_pr else None
                return self._reply(200, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, n: int, status: int) -> None:
        with self._lock:
            self._faults.extend([status] * n)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
