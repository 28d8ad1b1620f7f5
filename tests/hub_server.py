"""A local stand-in for the Hugging Face Hub, on 127.0.0.1, speaking just the endpoints finetune's uploads and the
downloads after them use: create repo, preupload, commit (every file as a regular, base64 blob), and resolve/info
for downloads. The real `huggingface_hub` client talks to it through HF_ENDPOINT.

Knobs for the failure tests: `token` (requests without `Authorization: Bearer <token>` get 401), `forbidden`
(repos answering 403), `fail_next` (that many requests answered 503 first).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


def card_metadata_problem(content: str) -> str | None:
    """What the Hub's YAML validation would object to, checked with huggingface_hub's own parsers; None if fine."""
    import yaml
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)  # the README's front matter
    if not match:
        return "no YAML front matter"
    try:
        meta = yaml.safe_load(match.group(1))
        if not isinstance(meta, dict):
            return "metadata is not a mapping"
        ModelCardData(**meta)
        if "model-index" in meta:
            model_index_to_eval_results(meta["model-index"])
    except Exception as err:  # any parse or schema error
        return f"{type(err).__name__}: {err}"
    return None


class FakeHub:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.forbidden: set[str] = set()
        self.fail_next = 0
        self.repos: dict[str, dict[str, Any]] = {}  # repo id -> {"private", "files": {path: bytes}, "commits": [...]}
        self.requests: list[tuple[str, str]] = []
        self.validated = 0  # model cards whose metadata passed validation
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else
                                 "application/octet-stream")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _allowed(self, repo: str | None) -> bool:
                hub.requests.append((self.command, self.path))
                if hub.fail_next > 0:
                    hub.fail_next -= 1
                    self._send(503, {"error": "try again"})
                    return False
                writing = self.command == "POST"
                if writing and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._send(401, {"error": "Invalid credentials"}, {"X-Error-Code": "Unauthorized"})
                    return False
                if writing and repo in hub.forbidden:
                    self._send(403, {"error": "You don't have the rights to write here"})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_POST(self) -> None:
                path = unquote(urlparse(self.path).path)
                if path == "/api/repos/create":
                    spec = json.loads(self._body())
                    repo = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                    if not self._allowed(repo):
                        return
                    if repo in hub.repos:
                        return self._send(409, {"error": "You already created this model repo",
                                                "url": f"{hub.endpoint}/{repo}"})
                    private = spec.get("private", spec.get("visibility") == "private")
                    hub.repos[repo] = {"private": private, "files": {}, "commits": []}
                    return self._send(200, {"url": f"{hub.endpoint}/{repo}"})
                if path == "/api/validate-yaml":  # the client checks a README's metadata before committing it
                    hub.requests.append((self.command, self.path))
                    problem = card_metadata_problem(json.loads(self._body())["content"])
                    hub.validated += 1
                    return self._send(400, {"error": problem}) if problem else self._send(200, {"warnings": []})
                parts = path.split("/")  # /api/models/<org>/<name>/<action>/<revision>
                if len(parts) < 6 or parts[2] != "models":
                    hub.requests.append((self.command, self.path))
                    return self._send(404, {"error": f"not served here: {path}"})
                repo, action = f"{parts[3]}/{parts[4]}", parts[5]
                if not self._allowed(repo):
                    return
                body = self._body()
                if repo not in hub.repos:
                    return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if action == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    header = next(item["value"] for item in lines if item["key"] == "header")
                    for item in lines:
                        if item["key"] == "file":
                            hub.repos[repo]["files"][item["value"]["path"]] = base64.b64decode(
                                item["value"]["content"])
                    oid = hashlib.sha1(body).hexdigest()
                    hub.repos[repo]["commits"].append({"oid": oid, "summary": header["summary"]})
                    return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                                            "pullRequestUrl": None})
                if action == "branch":
                    return self._send(200, {})
                return self._send(404, {"error": f"no such action {action}"})

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:  # /api/models/<org>/<name>[/revision/<rev>]
                    repo = f"{parts[2]}/{parts[3]}"
                    if not self._allowed(repo):
                        return
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    files = hub.repos[repo]["files"]
                    sha = hub.repos[repo]["commits"][-1]["oid"] if hub.repos[repo]["commits"] else "0" * 40
                    return self._send(200, {"id": repo, "modelId": repo, "sha": sha, "private": False,
                                            "siblings": [{"rfilename": name} for name in sorted(files)]})
                if len(parts) >= 5 and parts[2] == "resolve":  # /<org>/<name>/resolve/<rev>/<file>
                    repo, name = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
                    if not self._allowed(repo):
                        return
                    files = hub.repos.get(repo, {}).get("files", {})
                    if name not in files:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    data = files[name]
                    sha = hub.repos[repo]["commits"][-1]["oid"]
                    return self._send(200, data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                                  "X-Repo-Commit": sha})
                return self._send(404, {"error": "not found"})

            do_HEAD = do_GET

        return Handler
