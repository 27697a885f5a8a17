"""The bulk compression passes behind ``POST /admin/api/{compress-existing,decompress-existing}``
(BEHAVIOURS §1.20, issue 18 item 2), through the shared rewrite loop of :mod:`s3orch.core.rewrite`.

* **compress-existing** rewrites every object stored uncompressed whose size is at least
  ``compression.min_size`` as chunked zstd, with ``compression.*`` as a PUT would (a multipart
  object part by part, as UploadPart would: :mod:`s3orch.core.rewrite_parts`); an
  encrypted object stays encrypted (read back, compressed, sealed again).  An object whose
  compressed form is worse than ``min_ratio`` is left as it is and counted ``skipped`` (a skipped
  object is a success: nothing is wrong with it).  Refused while ``compression.enabled`` is off.
* **decompress-existing** rewrites every compressed object as the client wrote it, keeping its
  encryption; it runs whatever ``compression.enabled`` says (it is how compression is left).
"""

from __future__ import annotations

from typing import Any

from s3orch.core.rewrite import StoredForm, StoredFormRewriter
from s3orch.observe.compression_metrics import COMPRESS_EXISTING_OBJECTS, DECOMPRESS_EXISTING_OBJECTS


class CompressionPasses:
    """compress-existing and decompress-existing over one gateway's rewriter."""

    def __init__(self, rewriter: StoredFormRewriter) -> None:
        self.rewriter = rewriter

    @property
    def enabled(self) -> bool:
        """``compression.enabled`` (the object service holds a compressor only then)."""
        return self.rewriter.objects.compressor is not None

    async def compress(self, progress: Any) -> dict[str, Any]:
        """compress-existing; the caller checked :attr:`enabled`."""
        compressor = self.rewriter.objects.compressor
        if compressor is None:
            raise ValueError("compression not enabled")
        min_size = compressor.settings.min_size
        store = self.rewriter.store
        tally = await self.rewriter.run(
            lambda after, limit: store.objects_by_compression(False, min_size, after, limit),
            StoredForm(compressed=True), operation="compress-existing", metric=COMPRESS_EXISTING_OBJECTS,
            progress=progress,
        )
        return {"status": "complete", "compressed": tally.done, "skipped": tally.skipped,
                "failed": tally.failed, "total": tally.total}

    async def decompress(self, progress: Any) -> dict[str, Any]:
        """decompress-existing."""
        store = self.rewriter.store
        tally = await self.rewriter.run(
            lambda after, limit: store.objects_by_compression(True, 0, after, limit),
            StoredForm(compressed=False), operation="decompress-existing", metric=DECOMPRESS_EXISTING_OBJECTS,
            progress=progress,
        )
        return {"status": "complete", "decompressed": tally.done, "skipped": tally.skipped,
                "failed": tally.failed, "total": tally.total}
