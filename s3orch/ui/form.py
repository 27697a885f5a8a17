"""The upload form (``multipart/form-data``) read from the request's spool, piece by piece.

Twisted would parse a multipart body into ``request.args`` whole, in memory; the listener
switches that off for the upload route and spools the body to a temporary file (see
:mod:`s3orch.http.site`).  This parser reads that file in :data:`CHUNK` pieces and writes the
``file`` field to a spool file of its own, hashing as it goes, so the bytes become a
:class:`~s3orch.payload.Payload` for the normal PUT path without ever being whole in memory.
It is blocking file work: callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO

from s3orch.payload import Payload

CHUNK = 64 * 1024
#: The most bytes of a part's headers, and of a text field.
MAX_HEADERS = 16 * 1024
MAX_FIELD = 64 * 1024

_PARAM = re.compile(rb';\s*([a-zA-Z0-9_*-]+)="?([^";]*)"?')


class FormError(ValueError):
    """The body is not the multipart form it claims to be (answered 400)."""


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: Payload | None = None
    filename: str = ""
    content_type: str = ""


def boundary_of(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or match is None:
        raise FormError("the body must be multipart/form-data")
    return match.group(1).encode("latin-1")


class _FileSink:
    """The ``file`` field: to a spool file, hashed on the way."""

    def __init__(self, spool_dir: str | None) -> None:
        self.out: BinaryIO = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115  # the Payload owns it
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.md5.update(data)
        self.sha256.update(data)
        self.length += len(data)

    def payload(self) -> Payload:
        self.out.flush()
        return Payload(self.out, self.length, self.md5.hexdigest(), self.sha256.hexdigest())


class _FieldSink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > MAX_FIELD:
            raise FormError("a form field is too long")
        self.data += data


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def parse_form(source: BinaryIO, content_type: str, spool_dir: str | None = None) -> Form:
    """The fields and the (first) ``file`` part of the form in ``source``."""
    delimiter = b"\r\n--" + boundary_of(content_type)
    keep = len(delimiter) + 4
    form = Form()
    source.seek(0)
    buffer = b"\r\n"  # the first delimiter has no CRLF before it: pretend it has
    sink: _FileSink | _FieldSink | _Discard = _Discard()  # the preamble
    name = ""
    eof = False
    try:
        while True:
            index = buffer.find(delimiter)
            if index < 0:
                if eof:
                    raise FormError("the form ends without its closing boundary")
                if len(buffer) > keep:
                    sink.write(buffer[:-keep])
                    buffer = buffer[-keep:]
                chunk = source.read(CHUNK)
                eof = not chunk
                buffer += chunk
                continue
            sink.write(buffer[:index])
            _finish_part(form, sink, name)
            buffer = buffer[index + len(delimiter):]
            while len(buffer) < 2 and not eof:
                chunk = source.read(CHUNK)
                eof = not chunk
                buffer += chunk
            if buffer.startswith(b"--"):
                return form
            # The part's headers, up to the empty line.
            while b"\r\n\r\n" not in buffer:
                if eof or len(buffer) > MAX_HEADERS:
                    raise FormError("a form part's headers are malformed")
                chunk = source.read(CHUNK)
                eof = not chunk
                buffer += chunk
            head, buffer = buffer[2:].split(b"\r\n\r\n", 1)
            name, filename, part_type = _part_headers(head)
            if name == "file" and form.file is None and not isinstance(sink, _FileSink):
                form.filename, form.content_type = filename, part_type
                sink = _FileSink(spool_dir)
            elif name == "file":
                sink = _Discard()
            else:
                sink = _FieldSink()
    except BaseException:
        if form.file is not None:
            form.file.close()
        if isinstance(sink, _FileSink):
            sink.out.close()
        raise


def _finish_part(form: Form, sink: _FileSink | _FieldSink | _Discard, name: str) -> None:
    if isinstance(sink, _FileSink) and form.file is None:
        form.file = sink.payload()
    elif isinstance(sink, _FieldSink) and name:
        try:
            form.fields[name] = sink.data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormError(f"form field {name!r} is not UTF-8") from None


def _part_headers(head: bytes) -> tuple[str, str, str]:
    """(name, filename, content type) from a part's header lines."""
    name = filename = ""
    part_type = "application/octet-stream"
    for line in head.split(b"\r\n"):
        header, _, value = line.partition(b":")
        lowered = header.strip().lower()
        if lowered == b"content-disposition":
            params = {k.lower(): v for k, v in _PARAM.findall(value)}
            name = params.get(b"name", b"").decode("utf-8", "replace")
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
        elif lowered == b"content-type":
            part_type = value.strip().decode("latin-1") or part_type
    return name, filename, part_type
