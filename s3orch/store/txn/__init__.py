"""The metadata store's transactions, written once for every SQL engine, by domain.

Each ``txn_*`` function is one transaction's logic: a plain synchronous
function of a :class:`~s3orch.store.txn.base.Tx` (a cursor speaking the shared
SQL) and the transaction's :class:`~s3orch.store.txn.base.Notes`, run in a pool
thread by the engine, inside one transaction that is rolled back on any error
and may be run again whole.  So every function is idempotent under retry: a
retried reservation finds its intent, a retried commit finds its write current,
a repeated cleanup_done finds its rows gone.  Time is an argument (``now``): no
transaction reads the wall clock.

What differs between engines inside a transaction lives behind the small
:class:`~s3orch.store.txn.base.Dialect`:

* the parameter marker (the SQL here is written with ``?``);
* whether a transaction must lock what it decides on.  SQLite runs every
  write transaction on one connection under ``BEGIN IMMEDIATE``: nobody else
  writes, so there is nothing to lock.  PostgreSQL serves many instances at
  READ COMMITTED, so the same statements carry ``FOR UPDATE`` (``SKIP
  LOCKED`` for queue claims), and the dialect takes transaction-scoped
  advisory locks where there may be no row to lock yet (an object key, a
  bucket's count of uploads).

One lock order keeps deadlocks rare: the object key (advisory), the object
row, the key's pending intents, its locations, then every quota row the
transaction touches, in name order; multipart calls lock the upload row
before anything else of the upload.  Nothing is read in one transaction and
written in another.

The statements use only what both engines have (``ON CONFLICT``,
``RETURNING``, row values, ``IN`` lists); anything odd a transaction notices
(quota that would go negative: a bug signal) is collected in its notes and
logged by the store from the reactor thread.

Modules: :mod:`~s3orch.store.txn.base` (Tx, Dialect, Notes, RetryTransaction),
:mod:`~s3orch.store.txn.quota`, :mod:`~s3orch.store.txn.cleanup`,
:mod:`~s3orch.store.txn.objects`, :mod:`~s3orch.store.txn.intents`,
:mod:`~s3orch.store.txn.multipart`, :mod:`~s3orch.store.txn.listing`.
"""
