"""A small HTTP client for Remora's REST API (``/work/shared/API.md``).

Standard library only (``http.client``), so client commands start fast and
the zipapp carries nothing extra.  One ``Client`` keeps one keep-alive
connection; it is not thread-safe (use one per thread).

Contract:
- Every non-2xx answer becomes a ``RemoraError`` subclass chosen by status
  (400 ``ValidationError``, 401 ``Unauthorized``, 403 ``Forbidden``, 404
  ``NotFound``, 409 ``Conflict``, 413 ``PayloadTooLarge``, 503 ``Unavailable``
  / ``QueueFull``), carrying the envelope's message, code and details.
- A refused or failed connection becomes ``Unavailable`` naming the URL
  (exit code 69 in the CLI).
- A request on a reused connection that the server closed while idle is
  retried once on a fresh connection.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from remora import __version__
from remora.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RemoraError,
    Unauthorized,
    Unavailable,
    ValidationError,
)

API = "/api/v1"
_STATUS_ERRORS: dict[int, type[RemoraError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: ValidationError,
    503: Unavailable,
}
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _peer_closed(conn: http.client.HTTPConnection) -> bool:
    """True when a kept-alive connection was closed by the server (readable = EOF or junk)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        poller = select.poll()  # not select(): it cannot watch a descriptor numbered past 1024
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# A connection lost before or during the answer (IncompleteRead: the server died mid-body).
_RETRYABLE = (
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    ConnectionResetError,
    BrokenPipeError,
    http.client.BadStatusLine,
)
UUID_LEN = 36


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)


def error_from_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> RemoraError:
    """The RemoraError for an error answer (the envelope when there is one)."""
    message, code = "", ""
    details: dict[str, Any] = {}
    try:
        data = json.loads(body) if body else {}
        if isinstance(data, dict):
            message = str(data.get("error") or data.get("message") or "")
            code = str(data.get("code") or "")
            raw_details = data.get("details")
            details = raw_details if isinstance(raw_details, dict) else {}
    except ValueError:
        message = body[:200].decode("utf-8", "replace").strip()
    message = message or f"HTTP {status}"
    if code == "QUEUE_FULL":
        return QueueFull(message, code=code, details=details)
    cls = _STATUS_ERRORS.get(status, RemoraError)
    if cls is Unavailable:
        retry = (headers or {}).get("retry-after", "5")
        exc: RemoraError = Unavailable(message, retry_after=int(retry) if retry.isdigit() else 5, details=details)
    else:
        exc = cls(message, details=details)
    if code:
        exc.code = code
    exc.status = status
    return exc


class Client:
    """Speaks the REST contract; methods return the decoded JSON."""

    def __init__(self, base_url: str, token: str = "", *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(f"API URL {base_url!r}: expected http://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # -- transport -------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            import ssl

            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raw(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Response:
        """One request; errors for non-2xx answers; returns status, headers and body bytes."""
        url = self.prefix + path
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        if query:
            url += "?" + urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()})
        headers = {"User-Agent": f"remora-cli/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        # A POST that reached the server must never be sent twice (it could record a job
        # twice), so only idempotent requests are retried on a dropped keep-alive
        # connection; a POST instead checks that the connection is still open first.
        idempotent = method in _IDEMPOTENT
        for attempt in (1, 2):
            if self._conn is not None and not idempotent and _peer_closed(self._conn):
                self.close()
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(method, url, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except _RETRYABLE as exc:
                self.close()
                if reused and attempt == 1 and idempotent:
                    continue
                raise Unavailable(f"lost the connection to the Remora API at {self.base_url}: {exc or type(exc).__name__}") from None
            except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError) as exc:
                self.close()
                raise self._unreachable(exc) from None
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status >= 400:
                raise error_from_response(resp.status, data, resp_headers)
            return Response(resp.status, resp_headers, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, exc: BaseException) -> Unavailable:
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is `remora up` or `remora api` running?)"
        elif isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout:g}s"
        else:
            why = str(exc) or type(exc).__name__
        return Unavailable(f"cannot reach the Remora API at {self.base_url}: {why}", details={"url": self.base_url})

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None) -> Any:
        body = None if json_body is None else json.dumps(json_body).encode()
        return self.raw(method, path, params=params, body=body).json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, json_body=body if body is not None else {})

    # -- system ----------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.get("/health")

    def system_info(self) -> dict[str, Any]:
        return self.get(f"{API}/system/info")

    # -- templates -------------------------------------------------------
    def list_templates(self) -> list[dict[str, Any]]:
        return list(self.get(f"{API}/templates")["templates"])

    def get_template(self, name: str) -> dict[str, Any]:
        return self.get(f"{API}/templates/{quote(name, safe='')}")

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"{API}/templates", body)

    def update_template(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"{API}/templates/{quote(name, safe='')}", json_body=body)

    def delete_template(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/templates/{quote(name, safe='')}")

    def run_template(self, name: str, params: dict[str, Any] | None = None, servers: list[str] | None = None) -> list[dict[str, Any]]:
        """Run a template; always a list of the created jobs."""
        body: dict[str, Any] = {"params": params or {}}
        if servers:
            body["servers"] = servers
        return jobs_of(self.post(f"{API}/templates/{quote(name, safe='')}/run", body))

    # -- schedules -------------------------------------------------------
    def list_schedules(self) -> list[dict[str, Any]]:
        return list(self.get(f"{API}/schedules")["schedules"])

    def get_schedule(self, name: str) -> dict[str, Any]:
        return self.get(f"{API}/schedules/{quote(name, safe='')}")

    def schedule_runs(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.get(f"{API}/schedules/{quote(name, safe='')}/runs", limit=limit)["runs"])

    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"{API}/schedules", body)

    def update_schedule(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"{API}/schedules/{quote(name, safe='')}", json_body=body)

    def delete_schedule(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/schedules/{quote(name, safe='')}")

    def run_schedule(self, name: str) -> list[dict[str, Any]]:
        """Run a schedule now; always a list of the created jobs."""
        return jobs_of(self.post(f"{API}/schedules/{quote(name, safe='')}/run"))

    # -- jobs ------------------------------------------------------------
    def submit(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """POST a job (command or script); always a list of the created jobs."""
        path = f"{API}/jobs/script" if payload.get("script") is not None else f"{API}/jobs"
        data = self.post(path, payload)
        return jobs_of(data)

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        return self.get(f"{API}/jobs", **filters)

    def iter_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            data = self.list_jobs(page=page, limit=100, **filters)
            yield from data.get("jobs") or []
            if not (data.get("pagination") or {}).get("has_next"):
                return
            page += 1

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"{API}/jobs/{quote(job_id)}")

    def job_logs(self, job_id: str, stdout_offset: int | None = None, stderr_offset: int | None = None) -> dict[str, Any]:
        return self.get(f"{API}/jobs/{quote(job_id)}/logs", stdout_offset=stdout_offset, stderr_offset=stderr_offset)

    def job_stream(self, job_id: str, stream: str) -> bytes:
        return self.raw("GET", f"{API}/jobs/{quote(job_id)}/{stream}").body

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.post(f"{API}/jobs/{quote(job_id)}/cancel")

    def rerun(self, job_id: str) -> dict[str, Any]:
        return self.post(f"{API}/jobs/{quote(job_id)}/rerun")

    # -- the change feed -------------------------------------------------------
    def events(
        self, cursor: str | None = None, *, batch_id: str | None = None, job_ids: list[str] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """One long-poll of ``/events``: ``{"events", "cursor"}`` (``Gone`` when the cursor expired)."""
        params = {"cursor": cursor, "batch_id": batch_id, "job_id": ",".join(job_ids or []) or None, "timeout": timeout}
        return self.get(f"{API}/events", **params)

    def event_stream(
        self,
        cursor: str | None = None,
        *,
        batch_id: str | None = None,
        job_ids: list[str] | None = None,
        read_timeout: float = 60.0,
        output: bool = False,
        kind: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The change feed as Server-Sent Events on a connection of its own, one message at a time.

        Yields ``{"event": name, "id": cursor or None, "data": decoded JSON or None}``: ``ready`` first
        (its id is the starting cursor), ``message`` per change, ``output`` per piece of output (with
        ``output``), ``heartbeat`` for a comment or a bare cursor, ``end`` when the server closes the
        stream (reconnect from the last id).  Errors as for any request.
        """
        wanted = {
            "cursor": cursor,
            "batch_id": batch_id,
            "job_id": ",".join(job_ids or []),
            "output": "true" if output else None,
            "kind": kind,
        }
        query = {k: v for k, v in wanted.items() if v}
        url = self.prefix + f"{API}/events" + ("?" + urlencode(query) if query else "")
        headers = {"User-Agent": f"remora-cli/{__version__}", "Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connect()
        resp: http.client.HTTPResponse | None = None
        try:
            try:
                conn.connect()
                # Before the request: a stream's response closes the connection, which hands its socket
                # to the response (``conn.sock`` is None once the headers are read).
                conn.sock.settimeout(read_timeout)
                conn.request("GET", url, headers=headers)
                resp = conn.getresponse()
                if resp.status >= 400:
                    raise error_from_response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
                yield from _sse_messages(resp)
            except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
        finally:
            if resp is not None:
                resp.close()  # the socket stays open while the response holds it: the API would keep our slot
            conn.close()

    # -- batches -----------------------------------------------------------
    def batches(self, **filters: Any) -> dict[str, Any]:
        return self.get(f"{API}/batches", **filters)

    def batch(self, batch_id: str, *, output: bool = False) -> dict[str, Any]:
        return self.get(f"{API}/batches/{quote(batch_id)}", output="true" if output else None)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self.post(f"{API}/batches/{quote(batch_id)}/cancel")

    def rerun_batch(self, batch_id: str, only: str = "failed") -> dict[str, Any]:
        return self.post(f"{API}/batches/{quote(batch_id)}/rerun", {"only": only})

    def resolve_batch_id(self, prefix: str) -> str:
        """A batch id from a unique prefix of it, among the newest 500 batches (a full id is taken as is)."""
        if len(prefix) == 36:
            return prefix
        matches = [b["id"] for b in self.batches(limit=500).get("batches") or [] if str(b["id"]).startswith(prefix)]
        if len(matches) == 1:
            return str(matches[0])
        if not matches:
            raise NotFound(f"batch not found: {prefix}")
        raise ValidationError(f"batch id prefix {prefix!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}")

    def duplicate(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"{API}/jobs/{quote(job_id)}/duplicate", body)

    def set_priority(self, job_id: str, priority: int) -> dict[str, Any]:
        return self.post(f"{API}/jobs/{quote(job_id)}/priority", {"priority": priority})

    def prune_jobs(self, older_than: str | float, statuses: list[str] | None = None, *, dry_run: bool = False) -> dict[str, Any]:
        """Delete (or with ``dry_run`` count) finished jobs older than ``older_than`` (admin only)."""
        body: dict[str, Any] = {"older_than": older_than, "dry_run": dry_run}
        if statuses:
            body["status"] = statuses
        return self.post(f"{API}/jobs/prune", body)

    def resolve_job_id(self, prefix: str) -> str:
        """A full job id from a unique prefix, as git resolves abbreviated hashes.

        Asks the server first (``GET /jobs?id_prefix=``); a server that does
        not know that filter answers an unfiltered list, which is detected and
        replaced by a client-side scan of the job list.
        """
        text = prefix.strip().lower()
        if not text:
            raise ValidationError("empty job id")
        if len(text) == UUID_LEN:
            return text
        if any(c not in "0123456789abcdef-" for c in text):
            raise NotFound(f"no job with id {prefix!r} (ids are hexadecimal)")
        matches = self._prefix_matches(text)
        if not matches:
            raise NotFound(f"no job with an id starting with {prefix!r}")
        if len(matches) > 1:
            shown = ", ".join(sorted(m[:12] for m in matches)[:5])
            raise ValidationError(f"job id {prefix!r} is ambiguous: it matches {len(matches)} jobs ({shown}…); give more characters")
        return matches[0]

    def _prefix_matches(self, text: str) -> list[str]:
        try:
            data = self.list_jobs(id_prefix=text, limit=2)
            if "id_prefix" in (data.get("filters") or {}):
                return [j["id"] for j in data.get("jobs") or []]
        except ValidationError:
            pass
        found: list[str] = []
        for job in self.iter_jobs(sort_by="created_at", sort_order="desc"):
            if str(job.get("id", "")).startswith(text):
                found.append(job["id"])
                if len(found) > 1:
                    break
        return found

    # -- servers ---------------------------------------------------------
    def servers(self, **filters: Any) -> list[dict[str, Any]]:
        return self.get(f"{API}/servers", **filters).get("servers") or []

    def server(self, server_id: str) -> dict[str, Any]:
        return self.get(f"{API}/servers/{quote(server_id)}")

    def create_server(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"{API}/servers", body)

    def import_servers(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST an inventory (one request however many hosts): created / updated / skipped."""
        return self.post(f"{API}/servers/import", body)

    def update_server(self, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"{API}/servers/{quote(server_id)}", json_body=body)

    def delete_server(self, server_id: str, *, force: bool = False) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/servers/{quote(server_id)}", params={"force": True if force else None}) or {}

    def test_server(self, server_id: str) -> dict[str, Any]:
        try:
            return self.post(f"{API}/servers/{quote(server_id)}/test")
        except Unavailable as exc:  # 503 connection_failed carries the reason in its body
            if exc.details or exc.message:
                return {"status": "connection_failed", "error": exc.message, **exc.details}
            raise

    def server_status(self, server_id: str) -> dict[str, Any]:
        return self.get(f"{API}/servers/{quote(server_id)}/status")

    def all_server_status(self) -> dict[str, Any]:
        return self.get(f"{API}/servers/status/all")

    def resolve_server(self, ref: str) -> dict[str, Any]:
        """A server by exact name, exact id, or unique id prefix."""
        servers = self.servers()
        for server in servers:
            if server.get("name") == ref or server.get("id") == ref:
                return server
        matches = [s for s in servers if str(s.get("id", "")).startswith(ref.lower())] if len(ref) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValidationError(f"server {ref!r} is ambiguous: it matches {', '.join(s['name'] for s in matches)}")
        raise NotFound(f"no server named {ref!r} (see `remora servers list`)")

    # -- PEM keys --------------------------------------------------------
    def upload_pem(self, filename: str, content: bytes) -> dict[str, Any]:
        import uuid

        boundary = uuid.uuid4().hex
        safe = filename.replace('"', "").replace("\r", "").replace("\n", "")
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="pem_file"; filename="{safe}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        resp = self.raw("POST", f"{API}/upload/pem", body=body, content_type=f"multipart/form-data; boundary={boundary}")
        return resp.json()

    def pem_files(self) -> list[dict[str, Any]]:
        return self.get(f"{API}/files/pem").get("files") or []

    def delete_pem(self, filename: str) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/files/pem/{quote(filename, safe='')}") or {}

    # -- tokens (admin) --------------------------------------------------
    def tokens(self) -> list[dict[str, Any]]:
        return self.get(f"{API}/tokens").get("tokens") or []

    def create_token(self, name: str, role: str, expires_in: float | str | None = None) -> dict[str, Any]:
        """The new token's fields plus ``token``, the token itself (the only time the API shows it)."""
        body: dict[str, Any] = {"name": name, "role": role}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self.post(f"{API}/tokens", body)

    def revoke_token(self, name_or_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/tokens/{quote(name_or_id, safe='')}")

    # -- webhooks (admin) ------------------------------------------------
    def webhooks(self) -> list[dict[str, Any]]:
        return list(self.get(f"{API}/webhooks")["webhooks"])

    def create_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(f"{API}/webhooks", body)

    def delete_webhook(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"{API}/webhooks/{quote(name, safe='')}")

    def test_webhook(self, name: str) -> dict[str, Any]:
        """Send a ping now; the delivery after its first attempt."""
        return self.post(f"{API}/webhooks/{quote(name, safe='')}/test")

    def webhook_deliveries(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.get(f"{API}/webhooks/{quote(name, safe='')}/deliveries", limit=limit)["deliveries"])


def _sse_messages(resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """Server-Sent Events read off a response, one dict per message (see ``Client.event_stream``)."""
    event, ident, data, comment = "", None, [], False
    while True:
        line = resp.readline()
        if not line:
            yield {"event": "end", "id": ident, "data": None}
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text:
            if text.startswith(":"):
                comment = True
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)
            continue
        if data or event or comment or ident is not None:
            body = json.loads("\n".join(data)) if data else None
            yield {"event": event or ("message" if data else "heartbeat"), "id": ident, "data": body}
            if event == "end":
                return
        event, data, comment = "", [], False


def jobs_of(data: Any) -> list[dict[str, Any]]:
    """The jobs in a submit/rerun/duplicate answer: a job, ``{"jobs"}`` or ``{"new_job"}``."""
    if isinstance(data, dict):
        if isinstance(data.get("jobs"), list):
            return list(data["jobs"])
        if isinstance(data.get("new_job"), dict):
            return [data["new_job"]]
        if "id" in data:
            return [data]
    raise RemoraError(f"unexpected answer from the API: {str(data)[:200]}")
