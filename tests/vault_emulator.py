"""A local stand-in for HashiCorp Vault's KV v2 HTTP API, enough for `hvac` to read and write secrets.

No Vault server can be installed on the test machines, so this emulates the endpoints
`hvac`'s `secrets.kv.v2.read_secret_version` / `create_or_update_secret` / `delete_latest_version_of_secret`
call, with Vault's status codes and JSON shapes:

- `GET /v1/<mount>/data/<path>[?version=N]` -> 200 `{"data": {"data": {...}, "metadata": {...}}}`;
  404 `{"errors": []}` when missing; 404 with the metadata (`deletion_time` set, `data` null) when deleted.
- `POST`/`PUT /v1/<mount>/data/<path>` with `{"data": {...}, "options": {"cas": N}}` -> 200 with the new
  version's metadata.
- `DELETE /v1/<mount>/data/<path>` -> 204 (soft-deletes the latest version).

Every request needs `X-Vault-Token` equal to the configured token, else 403 `{"errors": ["permission denied"]}`;
an unmounted path gets Vault's 404 "no handler for route". Every request is recorded in `.requests`.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class VaultEmulator:
    """A KV v2 server on 127.0.0.1 (random port) in a background thread. Use as a context manager."""

    def __init__(self, token: str = "root-token", mounts: tuple[str, ...] = ("secret",)) -> None:
        self.token = token
        self.mounts = tuple(m.strip("/") for m in mounts)
        #: (mount, path) -> list of versions, each {"data": dict | None, "metadata": dict}.
        self._secrets: dict[tuple[str, str], list[dict]] = {}
        self._lock = threading.Lock()
        #: Every request seen: {"method", "path", "query", "token"} (token as sent, for assertions).
        self.requests: list[dict] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("VaultEmulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        emulator = self

        class Handler(_Handler):
            vault = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="vault-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- direct access (test setup, no HTTP) -----------------------------------------------------------

    def put(self, path: str, data: dict, mount: str = "secret") -> int:
        """Write a new version of a secret; returns its version number."""
        return self._write(mount, path.strip("/"), data, cas=None)[1]["version"]

    # -- the store -------------------------------------------------------------------------------------

    def _write(self, mount: str, path: str, data: dict, cas: int | None) -> tuple[int, dict]:
        with self._lock:
            versions = self._secrets.setdefault((mount, path), [])
            if cas is not None and cas != len(versions):
                return 400, {"errors": ["check-and-set parameter did not match the current version"]}
            metadata = {
                "created_time": _now(),
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions) + 1,
            }
            versions.append({"data": json.loads(json.dumps(data)), "metadata": metadata})
            return 200, dict(metadata)

    def _read(self, mount: str, path: str, version: int) -> tuple[int, dict]:
        with self._lock:
            versions = self._secrets.get((mount, path))
            if not versions or version > len(versions) or version < 0:
                return 404, {"errors": []}
            entry = versions[(version or len(versions)) - 1]
            body = {"data": json.loads(json.dumps(entry["data"])), "metadata": dict(entry["metadata"])}
            if entry["metadata"]["deletion_time"] or entry["metadata"]["destroyed"]:
                return 404, {"data": {"data": None, "metadata": body["metadata"]}}
            return 200, body

    def _delete_latest(self, mount: str, path: str) -> int:
        with self._lock:
            versions = self._secrets.get((mount, path))
            if versions:
                versions[-1]["metadata"]["deletion_time"] = _now()
            return 204

    def _route(self, raw_path: str) -> tuple[str, str] | None:
        """Split `/v1/<mount>/data/<path>` into (mount, path), or None when no mount handles it."""
        if not raw_path.startswith("/v1/"):
            return None
        rest = unquote(raw_path[len("/v1/"):]).strip("/")
        for mount in sorted(self.mounts, key=len, reverse=True):
            prefix = mount + "/data/"
            if rest.startswith(prefix) and rest[len(prefix):].strip("/"):
                return mount, rest[len(prefix):].strip("/")
        return None


class _Handler(BaseHTTPRequestHandler):
    vault: VaultEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""

    def _reply(self, status: int, body: dict | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _envelope(self, data: dict | None) -> dict:
        """Vault's full response envelope around `data`."""
        return {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": None,
            "mount_type": "kv",
        }

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        token = self.headers.get("X-Vault-Token")
        self.vault.requests.append({"method": self.command, "path": url.path, "query": query, "token": token})

        if token != self.vault.token:
            return self._reply(403, {"errors": ["permission denied"]})
        route = self.vault._route(url.path)
        if route is None:
            name = url.path.removeprefix("/v1/")
            return self._reply(404, {"errors": [f'no handler for route "{name}". route entry not found.']})
        mount, path = route

        if self.command == "GET":
            try:
                version = int(query.get("version", ["0"])[0])
            except ValueError:
                return self._reply(400, {"errors": ["invalid version"]})
            status, body = self.vault._read(mount, path, version)
            return self._reply(status, self._envelope(body) if status == 200 else body)
        if self.command in ("POST", "PUT"):
            try:
                request = json.loads(raw_body or b"{}")
            except ValueError:
                return self._reply(400, {"errors": ["failed to parse JSON input"]})
            data = request.get("data") if isinstance(request, dict) else None
            if not isinstance(data, dict):
                return self._reply(400, {"errors": ["no data provided"]})
            cas = (request.get("options") or {}).get("cas")
            status, body = self.vault._write(mount, path, data, cas)
            return self._reply(status, self._envelope(body) if status == 200 else body)
        if self.command == "DELETE":
            return self._reply(self.vault._delete_latest(mount, path))
        return self._reply(405, {"errors": ["unsupported operation"]})

    do_GET = do_POST = do_PUT = do_DELETE = _handle
