-- s3orch metadata schema, version 5 (PostgreSQL): the notification outbox carries its event's
-- id.  The same change as sql/sqlite/0005_notification_outbox.sql (see there).

ALTER TABLE notification_outbox ADD COLUMN event_id TEXT NOT NULL DEFAULT '';
