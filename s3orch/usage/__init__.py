"""Monthly usage limits per backend (``api_request_limit``, ``egress_byte_limit``,
``ingress_byte_limit``; BEHAVIOURS §1.8).

* :mod:`s3orch.usage.counters`: the unflushed deltas behind a small seam
  (:class:`~s3orch.usage.counters.UsageCounters`), local in memory here;
* :mod:`s3orch.usage.shared`: the same seam over Redis (``redis.address``), every instance's counts.
* :mod:`s3orch.usage.tracker`: limits, the stored baseline of this period, the checks
  placement and reads ask, and the additive flush to the database.
* :mod:`s3orch.usage.metered`: the one booking seam, a wrapper around every backend client,
  so every call any path makes (requests, workers, failed calls) is counted.
"""
