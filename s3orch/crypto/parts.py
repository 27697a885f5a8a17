"""Encrypted multipart uploads: one data key per upload, each part its own encrypted stream.

CreateMultipartUpload wraps a fresh DEK into the upload's row; each UploadPart seals its bytes
under it (the part number bound into every chunk, the upload id as the object's identity: it
becomes the object's write id); the part rows keep the *stored* size (quotas count it) and the
plaintext size is derived from it (:func:`~s3orch.crypto.format.plaintext_size_of`) where a client
sees sizes: ListParts, the completed object's size and part sizes.  A part compressed first
(:mod:`s3orch.codec.parts`) seals the compressed stream and records the client's size instead
(:func:`~s3orch.codec.parts.client_size`).  UploadPartCopy into an encrypted upload reads the
source range's plaintext and seals it the same way; it is never a backend's copy.
"""

from __future__ import annotations

from dataclasses import replace

from s3orch.crypto.envelope import Envelope, Sealed, require
from s3orch.crypto.format import StreamParams
from s3orch.crypto.streams import encrypt_spool
from s3orch.payload import Payload
from s3orch.store.records import MultipartUpload, ObjectRecord


async def seal_upload(envelope: Envelope | None, upload: MultipartUpload) -> MultipartUpload:
    """``upload`` with a fresh wrapped data key when encryption is on."""
    if envelope is None or not envelope.enabled:
        return upload
    _, wrapped, key_id = await envelope.new_key()
    return replace(upload, wrapped_dek=wrapped, key_id=key_id)


def upload_identity(upload_id: str) -> bytes:
    """The identity bound into an upload's chunks: its id (the object's write id)."""
    return upload_id.encode("utf-8")


async def seal_part(envelope: Envelope | None, upload: MultipartUpload, part_number: int, plain: Payload) -> Payload:
    """The bytes a part's backend gets: ``plain`` itself, or its ciphertext (a new spool the
    caller closes) when the upload is encrypted."""
    if not upload.encrypted:
        return plain
    env = require(envelope)
    probe = ObjectRecord(upload.bucket, upload.key, upload.upload_id, 0, "", 0.0,
                         wrapped_dek=upload.wrapped_dek, key_id=upload.key_id, encrypted=True)
    dek = await env.data_key(probe)
    params = StreamParams(dek, upload_identity(upload.upload_id), part_number, plain.length, env.chunk_size)
    return await encrypt_spool(plain, params, spool_dir=env.spool_dir, offload=env.offload)


def stamp_upload(upload: MultipartUpload, record: ObjectRecord) -> ObjectRecord:
    """The completed object's record, marked encrypted when its upload is."""
    if not upload.encrypted:
        return record
    sealed = Sealed(Payload.from_bytes(b""), upload.wrapped_dek, upload.key_id, upload_identity(upload.upload_id).hex())
    return sealed.stamp(record)


def backend_copy_allowed(upload: MultipartUpload) -> bool:
    """Whether a part of ``upload`` may be a backend's server-side copy of stored bytes: never
    when the upload is encrypted, whose ciphertext binds its own identity and part number
    (UploadPartCopy reads the range's plaintext and seals it like an UploadPart's)."""
    return not upload.encrypted
