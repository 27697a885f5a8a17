-- s3orch metadata schema, version 9 (sqlite): compression (BEHAVIOURS §1.20, docs/compression.rst).
-- objects.compression_chunk_size: NULL when the object's bytes are stored as the client sent them
-- (or only encrypted); else the chunk size of its zstd frames.  A compressed object's logical
-- size (what the client wrote) is kept in plaintext_size, as an encrypted object's is; size_bytes
-- stays the stored size (quotas count what the provider stores).
ALTER TABLE objects ADD COLUMN compression_chunk_size INTEGER;
