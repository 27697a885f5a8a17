"""The S3 operations the front door serves, one module per kind.

Each module exposes a handler class whose ``routes()`` is a table
``operation name -> Route`` (:class:`s3orch.frontend.request.Route`: the handler,
what its body is, what it checks when the headers arrive).  The tables are
merged once when the front door is built (:mod:`s3orch.frontend.assembly`).
A new operation lands in the module of its kind: multipart uploads in
``multipart``, everything else by the level :mod:`s3orch.s3.operations` gives
it (``service``, ``bucket``, ``object``).
"""
