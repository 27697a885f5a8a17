"""Envelope encryption: the stored format (:mod:`.format`), the keys that wrap the
per-object data keys (:mod:`.keys`), and the streams that encrypt on the way to a
backend and decrypt on the way back (:mod:`.streams`)."""
