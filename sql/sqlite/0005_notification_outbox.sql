-- s3orch metadata schema, version 5 (SQLite): the notification outbox carries its event's id.
--
-- notification_outbox (version 1) holds one row per event and webhook endpoint: the event is
-- written in the transaction of the change that causes it, and the notifier worker POSTs
-- payload (the CloudEvents JSON body, fixed when the event happened) to endpoint, deleting the
-- row once delivered or dropped after the endpoint's max_retries.  event_id is the CloudEvents
-- id of the event (shared by the rows of one event for several endpoints): what the notifier
-- logs when it drops a delivery, and what a receiver deduplicates on.  Rows written before
-- this version get '' (their payload still has the id).

ALTER TABLE notification_outbox ADD COLUMN event_id TEXT NOT NULL DEFAULT '';
