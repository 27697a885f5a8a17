-- s3orch metadata schema, version 10 (sqlite): compressed multipart parts (issue 18 item 2).
-- Each part of a multipart upload is compressed on its own (or stored as sent), so the state is
-- per part:
-- * multipart_parts.compression_chunk_size: NULL when the part is stored as the client sent it
--   (or only encrypted); else the chunk size of its zstd frames.  Its client (logical) size is
--   then in plaintext_size; size_bytes stays the stored size (reservations and quotas count what
--   the provider stores).
-- * object_parts.compression_chunk_size: the same for each extent of a completed upload;
--   object_parts.size_bytes is the client's size of the extent (offsets and ranges are the
--   client's), object_locations.size_bytes the stored size of each copy.
-- * objects.compression_chunk_size of a multi-extent object is set when any of its extents is
--   compressed (the object's size is then in plaintext_size, as for a compressed single-extent
--   object); each extent's own column says which.
ALTER TABLE multipart_parts ADD COLUMN compression_chunk_size INTEGER;
ALTER TABLE object_parts ADD COLUMN compression_chunk_size INTEGER;
