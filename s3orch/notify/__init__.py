"""Webhook notifications (``notifications.*``): CloudEvents written to an outbox, delivered later.

:mod:`~s3orch.notify.events` names the event types and builds the CloudEvents bodies;
:mod:`~s3orch.notify.sink` is the seam the core emits through (:class:`~s3orch.notify.sink.EventSink`,
:data:`~s3orch.notify.sink.NULL_SINK` when no endpoint is configured); the notifier worker
(:mod:`s3orch.workers.notifier`) drains the outbox with :mod:`~s3orch.notify.delivery`.
"""
