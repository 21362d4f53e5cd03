"""A strict multipart/form-data parser for small uploads (the body is already size-limited)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from remora.errors import ValidationError

_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.I)
_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse(content_type: str, body: bytes) -> dict[str, Part]:
    """Parts by field name; ValidationError when the body is not well-formed multipart."""
    match = _BOUNDARY.search(content_type or "")
    if not content_type.lower().startswith("multipart/form-data") or not match:
        raise ValidationError("expected a multipart/form-data body with a boundary", details={"body": "must be multipart/form-data"})
    delimiter = b"--" + match.group(1).encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise ValidationError("malformed multipart body (missing closing boundary)", details={"body": "malformed multipart"})
    parts: dict[str, Part] = {}
    for section in sections[1:-1]:
        if not section.startswith(b"\r\n"):
            raise ValidationError("malformed multipart body", details={"body": "malformed multipart"})
        head, sep, data = section[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ValidationError("malformed multipart part (no header end)", details={"body": "malformed multipart"})
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        attrs = dict(_DISPOSITION.findall(headers.get("content-disposition", "")))
        if "name" not in attrs:
            raise ValidationError("multipart part without a name", details={"body": "malformed multipart"})
        parts[attrs["name"]] = Part(attrs["name"], attrs.get("filename"), headers.get("content-type", ""), data)
    return parts
