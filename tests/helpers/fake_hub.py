"""A small Hugging Face Hub on 127.0.0.1 for the tests: the few routes huggingface_hub's own client calls to push
(whoami-v2, repos/create, validate-yaml, preupload, the LFS batch API and its PUT, commit as NDJSON, tree listing)
and to download (revision info, resolve). It keeps repos in memory and records every request it receives, so tests
assert on what actually reached "the Hub" through the real client (HfApi(endpoint=hub.url) / HF_ENDPOINT).

Large files take the basic LFS path: run the client with HF_HUB_DISABLE_XET=1 (the Xet protocol needs Xet's own
storage service, which this server does not imitate).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".png", ".pt", ".pth")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read_body(h) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":  # httpx streams a file object this way
        out = b""
        while True:
            size = int(h.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                h.rfile.readline()
                return out
            out += h.rfile.read(size)
            h.rfile.readline()
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


class FakeHub:
    def __init__(self, token: str, user: str = "alice", role: str = "write", fine_grained: dict | None = None):
        self.token, self.user, self.role, self.fine_grained = token, user, role, fine_grained
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content uploaded through the LFS PUT
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.lfs_puts: list[str] = []  # oids PUT
        self.fail_commit: set[str] = set()  # repo ids whose next commit fails (500), once
        self.bad_auth: list[str] = []  # paths called with a missing or wrong token
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str) -> dict[str, bytes]:
        return self.repos[repo_id]["files"]

    # --- routes -------------------------------------------------------------------------------------------------
    def route(self, h: "BaseHTTPRequestHandler", method: str):
        url = urlparse(h.path)
        path, query = url.path, parse_qs(url.query)
        self.requests.append((method, path))
        body = _read_body(h) if method in ("POST", "PUT") else b""
        if path.startswith("/lfs-upload/") and method == "PUT":
            oid = path.rsplit("/", 1)[1]
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "sha256 mismatch"}
            self.lfs[oid] = body
            self.lfs_puts.append(oid)
            return 200, {}
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            self.bad_auth.append(path)
            return 401, {"error": "Invalid credentials in Authorization header"}
        if path == "/api/whoami-v2":
            token = {"displayName": "test", "role": self.role}
            if self.fine_grained is not None:
                token["fineGrained"] = self.fine_grained
            return 200, {"type": "user", "name": self.user, "auth": {"type": "access_token", "accessToken": token},
                         "orgs": []}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if path == "/api/repos/create":
            data = json.loads(body)
            repo = f"{data.get('organization') or self.user}/{data['name']}"
            if repo in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
            self.repos[repo] = {"visibility": data.get("visibility"), "files": {".gitattributes": b"*.gguf filter=lfs\n"},
                                "commits": []}
            return 200, {"url": f"{self.url}/{repo}", "name": repo}
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(tree|preupload|commit|revision)/([^/]+)(/.*)?$", path)
        if m:
            repo, action = m.group(1), m.group(2)
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            return getattr(self, f"_{action}")(repo, body, query)
        m = re.match(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/batch$", path)
        if m:
            return self._lfs_batch(m.group(1), json.loads(body))
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and m.group(1) in self.repos:
            return self._resolve(m.group(1), m.group(3), method)
        return 404, {"error": f"no route {method} {path}"}

    def _tree(self, repo, body, query):
        entries = []
        for name, data in sorted(self.files(repo).items()):
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return 200, entries

    def _preupload(self, repo, body, query):
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 1024 * 1024
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return 200, {"files": files, "commitOid": "0" * 40}

    def _lfs_batch(self, repo, data):
        objects = []
        for obj in data["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:  # already stored: no action, the client skips the upload
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def _commit(self, repo, body, query):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if repo in self.fail_commit:
            self.fail_commit.discard(repo)
            return 500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"}
        staged = {}
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                staged[value["path"]] = self.lfs[value["oid"]]
        self.files(repo).update(staged)
        oid = hashlib.sha1(json.dumps(sorted(staged)).encode() + str(len(self.repos[repo]["commits"])).encode()
                           ).hexdigest()
        self.repos[repo]["commits"].append({"summary": lines[0]["value"]["summary"], "files": sorted(staged)})
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "success": True}

    def _revision(self, repo, body, query):
        files = self.files(repo)
        return 200, {"id": repo, "modelId": repo, "sha": self._sha(repo), "private": True,
                     "siblings": [{"rfilename": name} for name in sorted(files)]}

    def _sha(self, repo) -> str:
        return hashlib.sha1(str(len(self.repos[repo]["commits"])).encode() + repo.encode()).hexdigest()

    def _resolve(self, repo, name, method):
        files = self.files(repo)
        if name not in files:
            return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
        data = files[name]
        headers = {"X-Repo-Commit": self._sha(repo), "ETag": f'"{git_blob_id(data)}"'}
        return 200, data, headers

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, method):
                status, payload, *headers = hub.route(self, method)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                                 else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers[0] if headers else {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(raw)

            def do_GET(self):
                self._answer("GET")

            def do_HEAD(self):
                self._answer("HEAD")

            def do_POST(self):
                self._answer("POST")

            def do_PUT(self):
                self._answer("PUT")

        return Handler
