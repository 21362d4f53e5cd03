"""Jobs, servers and PEM keys as the JSON objects of the REST contract."""

from __future__ import annotations

from typing import Any

from remora.models import Job, PemKey, Server, to_rfc3339


def text(data: bytes) -> str:
    """Bytes for display: UTF-8 with undecodable bytes replaced (raw downloads stay byte-exact)."""
    return data.decode("utf-8", errors="replace")


def server_ref(server: Server | None) -> dict[str, Any] | None:
    if server is None:
        return None
    return {"id": server.id, "name": server.name, "hostname": server.hostname}


def job_dict(job: Job, server: Server | None = None) -> dict[str, Any]:
    """A job without output bodies (byte counts kept): what lists carry."""
    duration = job.duration
    return {
        "id": job.id,
        "name": job.name,
        "command": job.command,
        "args": job.args,
        "script": job.script,
        "shell": job.shell,
        "env": job.env or {},
        "secret_env": {name: "***" for name, value in (job.env or {}).items() if value == "***"} if job.secret_env else {},
        "workdir": job.workdir,
        "pty": bool(job.pty),
        "server_id": job.server_id,
        "server": server_ref(server),
        "batch_id": job.batch_id,
        "parent_id": job.parent_id,
        "queue": job.queue,
        "status": job.status,
        "priority": job.priority,
        "timeout": job.timeout,
        "retries": job.retries,
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "error": job.error or "",
        "stdout_bytes": int(job.stdout_bytes or 0),
        "stderr_bytes": int(job.stderr_bytes or 0),
        "output_truncated": bool(job.output_truncated),
        "cancel_requested": bool(job.cancel_requested),
        "created_at": to_rfc3339(job.created_at),
        "updated_at": to_rfc3339(job.updated_at),
        "started_at": to_rfc3339(job.started_at),
        "finished_at": to_rfc3339(job.finished_at),
        "duration": round(duration, 6) if duration is not None else None,
        "worker": job.worker,
        "created_by": job.created_by or "",
        "template": job.template,
        "params": job.params,
        "run_at": to_rfc3339(job.run_at),
    }


def server_dict(server: Server) -> dict[str, Any]:
    """A server; secrets appear only as ``has_*`` flags; ``jump_server`` is the name of the server it connects through."""
    jump_id = server.jump_server_id
    jump_name = Server.select(Server.name).where(Server.id == jump_id).scalar() if jump_id else None
    return {
        "id": server.id,
        "name": server.name,
        "hostname": server.hostname,
        "port": server.port,
        "user": server.user,
        "auth_type": server.auth_type,
        "has_password": server.password is not None,
        "has_private_key": server.private_key is not None,
        "has_passphrase": server.passphrase is not None,
        "pem_file": server.pem_file,
        "host_key_policy": server.host_key_policy,
        "jump_server": jump_name,
        "jump_server_id": jump_id,
        "tags": list(server.tags or []),
        "max_concurrent_jobs": server.max_concurrent_jobs,
        "is_active": bool(server.is_active),
        "description": server.description or "",
        "created_at": to_rfc3339(server.created_at),
        "updated_at": to_rfc3339(server.updated_at),
        "last_test_at": to_rfc3339(server.last_test_at),
        "last_test_ok": server.last_test_ok,
        "last_test_message": server.last_test_message or "",
        "last_latency_ms": server.last_latency_ms,
        "host_key_fingerprint": server.host_key_fingerprint or "",
        "last_status": server.last_status or "",
        "last_status_at": to_rfc3339(server.last_status_at),
    }


def pem_dict(key: PemKey) -> dict[str, Any]:
    return {
        "filename": key.filename,
        "size": key.size,
        "fingerprint": key.fingerprint,
        "key_type": key.key_type,
        "uploaded_at": to_rfc3339(key.uploaded_at),
        "uploaded_by": key.uploaded_by,
    }
