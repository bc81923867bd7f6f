"""A tiny in-memory stand-in for the Hugging Face Hub HTTP API, for tests without internet.

It speaks just enough of the protocol that the real `huggingface_hub` (2.4) client and `transformers` (5.23) can
create model repos, push to them (`create_commit`, `upload_file`, `upload_folder`, `push_to_hub`) and download from
them (`hf_hub_download`, `snapshot_download`, `from_pretrained`, `model_info`, `list_repo_files`).

Clients read `HF_ENDPOINT` when `huggingface_hub` is imported, so they must run in a subprocess whose environment
comes from `HubServer.client_env()`; the server itself runs in a thread of the test process and binds 127.0.0.1 only.

State: a repo is an ordered list of commits (oldest first), each a full snapshot {path: bytes}. `create_repo` makes
an "initial commit" holding `.gitattributes`, as the real Hub does (transformers' `push_to_hub` first looks for an
existing README.md on `main`, which must resolve). Only model repos and the `main` branch exist; a full 40-hex
commit sha is accepted wherever a revision is. No pull requests, tags, other branches, auth checks or .gitignore.

No LFS, no Xet: the preupload endpoint answers `"uploadMode": "regular"` for every file, so the client sends every
file base64-encoded inside the NDJSON commit payload and never calls the LFS batch API nor asks for a Xet write
token (`_commit_api._upload_files` only runs for "lfs" files). Downloads are plain 200 answers without any
`X-Xet-*` header, `xetHash` or `lfs` field, so `hf_hub_download` never goes down its Xet path (nor follows an LFS
redirect). As a second guard, `client_env()` sets `HF_HUB_DISABLE_XET=1`, which makes
`huggingface_hub.utils._runtime.is_xet_available()` false even though `hf_xet` is installed.

Unknown routes get a 404 and are logged to stderr and to `HubServer.unhandled`.
"""

import base64
import hashlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

INITIAL_GITATTRIBUTES = b"# files are stored inline by the test hub: no LFS patterns\n"


def git_blob_sha(content: bytes) -> str:
    """Git's blob id; the Hub uses it as ETag of non-LFS files and as `oid` in tree and preupload answers."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    files: dict[str, bytes]  # full snapshot of the repo at this commit


class HubError(Exception):
    """An error answer: `X-Error-Code` is what `hf_raise_for_status` maps to RepositoryNotFoundError etc."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def answer_headers(self) -> dict:
        code = {"X-Error-Code": self.code} if self.code else {}
        return {**code, "X-Error-Message": self.message, **self.headers}


class HubServer:
    """In-memory Hub on http://127.0.0.1:<free port>; use as a context manager or with start()/stop()."""

    def __init__(self):
        self.url: str | None = None
        self.repos: dict[str, list[Commit]] = {}  # repo id -> commits, oldest first
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request answered
        self.unhandled: list[tuple[str, str]] = []  # (method, path) of requests no route matched
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # Join the per-connection threads on server_close(), so stop() leaves no thread behind.
        self._httpd.daemon_threads = False
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()  # stops serve_forever
        self._httpd.server_close()  # closes the socket, waits for the connection threads
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, hf_home, **extra: str) -> dict[str, str]:
        """Environment for a client subprocess: this server, a dummy token, its own cache, no telemetry, no Xet."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        env.update(
            HF_ENDPOINT=self.url,
            HF_TOKEN="hf_test",
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        env.update(extra)
        return env

    # --- inspection helpers for tests ------------------------------------------------------------------------

    def commits(self, repo_id: str) -> list[str]:
        """Commit shas of a repo, oldest first (the first one is the "initial commit" of create_repo)."""
        with self._lock:
            return [c.sha for c in self._repo(repo_id)]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Snapshot {path: content} of a repo at a revision ("main" or a commit sha)."""
        with self._lock:
            return dict(self._commit(repo_id, revision).files)

    # --- state (call with self._lock held) -------------------------------------------------------------------

    def _repo(self, repo_id: str) -> list[Commit]:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return self.repos[repo_id]

    def _commit(self, repo_id: str, revision: str) -> Commit:
        commits = self._repo(repo_id)
        if revision == "main":
            return commits[-1]
        for commit in commits:
            if commit.sha == revision:
                return commit
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _add_commit(self, repo_id: str, message: str, files: dict[str, bytes]) -> Commit:
        commits = self.repos.setdefault(repo_id, [])
        parent = commits[-1].sha if commits else None
        listing = {path: git_blob_sha(content) for path, content in sorted(files.items())}
        payload = json.dumps([repo_id, parent, message, listing]).encode()
        commit = Commit(hashlib.sha1(payload).hexdigest(), message, files)
        commits.append(commit)
        return commit


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"  # the client quotes revisions with safe="", so a revision is one path segment
# (method, path regex, handler method name); matched against the still-quoted path.
_ROUTES = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", "preupload"),
    ("POST", rf"/api/models/{_REPO}/commit/{_REV}", "commit"),
    ("GET", rf"/api/models/{_REPO}(?:/revision/{_REV})?", "model_info"),
    ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", "tree"),
    ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries a Content-Length
    timeout = 30  # seconds an idle keep-alive connection may hold its thread (bounds stop())

    def log_message(self, format, *args):  # the default logs every request to stderr
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def _dispatch(self):
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        for method, pattern, name in _ROUTES:
            match = re.fullmatch(pattern, url.path)
            if method == self.command and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    with self.hub._lock:
                        status, headers, body = getattr(self, name)(**args)
                except HubError as e:
                    status, headers, body = e.status, e.answer_headers(), {"error": e.message}
                return self._send(status, headers, body)
        print(f"hub_server: unhandled {self.command} {self.path}", file=sys.stderr)
        self.hub.unhandled.append((self.command, self.path))
        self._send(404, {}, {"error": f"no route for {self.command} {url.path}"})

    # every method goes through _dispatch, so that unknown ones are logged as unhandled too
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _send(self, status: int, headers: dict, body):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.hub.requests.append((self.command, self.path, status))

    # --- routes: each returns (status, headers, body) --------------------------------------------------------

    def create_repo(self):
        """HfApi.create_repo: 200 {"url"} for a new repo, 409 if it exists (exist_ok=True accepts the 409)."""
        payload = json.loads(self.body)
        if payload.get("type", "model") != "model":
            raise HubError(400, None, "this test hub only has model repos")
        # a bare name goes to the token owner's namespace on the Hub: "user" stands for that owner here
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"  # RepoUrl parses the repo id back out of this url
        if repo_id in self.hub.repos:
            return 409, {}, {"error": "You already created this model repo", "url": url}
        self.hub._add_commit(repo_id, "initial commit", {".gitattributes": INITIAL_GITATTRIBUTES})
        return 200, {}, {"url": url, "name": repo_id}

    def validate_yaml(self):
        """create_commit posts any README.md here first; the client reads "warnings" and "errors"."""
        return 200, {}, {"errors": [], "warnings": []}

    def preupload(self, repo, rev):
        """_fetch_upload_modes: every file is "regular" (inline in the commit). The client reads uploadMode and
        shouldIgnore of each file, and skips a file whose "oid" equals the git blob sha of its new content."""
        current = self.hub._commit(repo, rev).files
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha(current[f["path"]]) if f["path"] in current else None,
            }
            for f in json.loads(self.body)["files"]
        ]
        return 200, {}, {"files": files}

    def commit(self, repo, rev):
        """_send_commit: NDJSON lines {"key": "header"|"file"|"deletedFile"|"deletedFolder", "value": ...}.
        The client reads commitUrl and commitOid (and pullRequestUrl with create_pr, which is not supported)."""
        if self.query.get("create_pr"):
            raise HubError(400, None, "this test hub does not support pull requests")
        head = self.hub._commit(repo, rev)  # RepoNotFound / RevisionNotFound
        if rev != "main":
            raise HubError(400, None, "only the main branch can take commits")
        files = dict(head.files)
        message = ""
        for line in self.body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
                if value.get("parentCommit", head.sha) != head.sha:
                    raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(prefix)}
            else:  # "lfsFile" cannot happen: preupload never answers "lfs"
                raise HubError(400, None, f"unsupported commit operation {key}")
        commit = self.hub._add_commit(repo, message, files)
        commit_url = f"{self.hub.url}/{repo}/commit/{commit.sha}"
        return 200, {}, {"commitUrl": commit_url, "commitOid": commit.sha, "pullRequestUrl": None, "success": True}

    def model_info(self, repo, rev="main"):
        """HfApi.model_info / repo_info: ModelInfo needs "id"; snapshot_download and create_commit (when nothing
        changed) read "sha"; transformers reads "tags" (Mistral tokenizer check); "siblings" are the files."""
        commit = self.hub._commit(repo, rev)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        info = {"id": repo, "author": repo.split("/")[0], "sha": commit.sha, "private": False, "gated": False}
        return 200, {}, {**info, "tags": [], "siblings": siblings}

    def tree(self, repo, rev, path=""):
        """HfApi.list_repo_tree (list_repo_files, snapshot_download): one page (no Link header) of
        {"type": "file", "path", "oid", "size"} and {"type": "directory", "path", "oid"} entries."""
        files = self.hub._commit(repo, rev).files
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self.query.get("recursive") == "true"
        entries = {}
        for file_path in sorted(files):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            # the folders on the way to the file (all of them when recursive, else only the first)
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries[folder] = {"type": "directory", "path": folder, "oid": _tree_sha(files, folder)}
            if recursive or len(parts) == 1:
                content = files[file_path]
                entries[file_path] = {"type": "file", "path": file_path, "oid": git_blob_sha(content),
                                      "size": len(content)}
        if prefix and not entries:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        return 200, {}, list(entries.values())

    def resolve(self, repo, rev, path):
        """hf_hub_download: HEAD, then GET. A 200 (no redirect: nothing is on a CDN) with X-Repo-Commit, a quoted
        ETag (git blob sha, as the Hub gives for non-LFS files) and Content-Length. X-Linked-Etag/X-Linked-Size
        are only sent by the Hub for LFS files, so not here. A missing file is EntryNotFound, with X-Repo-Commit
        so that the client caches the miss under .no_exist/<commit>/ as it does with the real Hub."""
        commit = self.hub._commit(repo, rev)
        if path not in commit.files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
        content = commit.files[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{git_blob_sha(content)}"',
        }
        return 200, headers, content


def _tree_sha(files: dict[str, bytes], folder: str) -> str:
    """A stand-in for git's tree id: changes whenever something under the folder changes."""
    listing = [(path, git_blob_sha(data)) for path, data in sorted(files.items()) if path.startswith(folder + "/")]
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()
