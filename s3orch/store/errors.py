"""What the metadata store raises: operator-facing failures and the contract's refusals.

:class:`StoreError` and :class:`StoreUnavailable` say the database cannot serve
(the gateway refuses to start, or answers 503); the others are answers of one
call (a failed condition, a missing upload) that the core maps to S3 errors.
"""

from __future__ import annotations

from s3orch.store.records import CleanupItem


class StoreError(Exception):
    """The database cannot be used as configured (wrong path, server, version or schema).

    Its message is written for the operator; a gateway that meets one at start-up
    refuses to start.
    """


class StoreUnavailable(Exception):
    """The database did not answer (down, restarting, connection lost, locked or out of
    disk) after the engine's own retries; the work may be tried again later.

    The front door answers 503 ServiceUnavailable with ``Retry-After``, never 500.
    Every engine raises this, and only this, for such failures (the driver's
    exception is its ``__cause__``).
    """


class PreconditionConflict(Exception):
    """A conditional commit found the key's current object failing its conditions.

    ``violation`` is what :meth:`WriteConditions.violation` said (the failed header, or
    :data:`~s3orch.s3.conditions.KEY_MISSING`); nothing was changed.
    """

    def __init__(self, message: str, violation: str) -> None:
        super().__init__(message)
        self.violation = violation


class IntentNotFound(Exception):
    """``commit_object`` found no pending intent for the reservation's write.

    It was released (the write was given up on, or the pending reaper dropped
    it), or the write was committed and has since been overwritten.  Committing
    anyway could bring an old write back over a newer one, so the write fails.
    Its uploaded copy is queued for cleanup (reason ``intent_missing``) in the
    same transaction and carried here for an immediate delete attempt.
    """

    def __init__(self, write_id: str, cleanup: CleanupItem | None = None) -> None:
        super().__init__(write_id)
        self.write_id = write_id
        self.cleanup = cleanup


class UploadNotFound(Exception):
    """No upload with that id in that bucket and key, or not in a state allowing the call.

    Callers answer exactly what a missing upload answers (404 NoSuchUpload): a
    wrong bucket or key must be indistinguishable from a missing upload.
    """

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class UploadLimitReached(Exception):
    """The bucket already has ``max_multipart_uploads`` active uploads."""


class PartMismatch(Exception):
    """``complete_upload``: a listed part is missing or its ETag changed."""
