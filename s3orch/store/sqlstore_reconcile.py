"""The reconcile/import methods of :class:`~s3orch.store.sqlstore.SQLStore` (the contract is
:mod:`s3orch.store.interface_reconcile`, the transactions :mod:`s3orch.store.txn.reconcile`).

A mixin of its own so ``sqlstore.py`` stays one readable file: it only checks arguments and
picks the transaction, running it with the store's ``_read``/``_write``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from s3orch.store.records import CleanupItem, ImportCandidate, LostCopy, StoredCopy
from s3orch.store.txn import reconcile
from s3orch.store.txn.base import Notes, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")


class TransactionRunner:
    """What a mixin of :class:`~s3orch.store.sqlstore.SQLStore` runs its transactions with."""

    async def _read(
        self, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        raise NotImplementedError  # SQLStore's

    async def _write(
        self, fn: Callable[Concatenate[Tx, Notes, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        raise NotImplementedError  # SQLStore's


class ReconcileTransactions(TransactionRunner):
    """Reconcile and import, over the store's transaction runners."""

    async def stored_copies(self, backend: str, after: str | None, limit: int) -> list[StoredCopy]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._read(reconcile.txn_stored_copies, backend, after, limit)

    async def queue_orphans(
        self, backend: str, found: Sequence[tuple[str, int]], now: float, due: float
    ) -> tuple[dict[str, str], list[CleanupItem]]:
        if not found:
            return {}, []
        return await self._write(reconcile.txn_queue_orphans, backend, list(found), now, due)

    async def forget_lost_copy(self, backend: str, copy: StoredCopy, now: float, grace: float) -> LostCopy:
        return await self._write(reconcile.txn_forget_lost_copy, backend, copy, now, grace)

    async def import_objects(
        self,
        backend: str,
        candidates: Sequence[ImportCandidate],
        write_ids: Sequence[str],
        now: float,
        dry_run: bool = False,
    ) -> list[str]:
        if len(candidates) != len(write_ids):
            raise ValueError("one write id per candidate")
        if not candidates:
            return []
        call = self._read if dry_run else self._write
        return await call(
            reconcile.txn_import_objects, backend, list(candidates), list(write_ids), now, not dry_run
        )
