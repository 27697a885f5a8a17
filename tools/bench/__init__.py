"""``make bench``: what s3orch costs compared with the bare backend it fronts.

One SeaweedFS ``weed mini`` (fast, and it checks SigV4 and Content-MD5 like a real provider) and
one ``twistd -n s3orch`` in front of it.  Every workload runs against two *targets* with the same
client code -- ``s3orch`` (the gateway's virtual bucket) and ``direct`` (the backend bucket behind
it) -- so the ratio s3orch/direct is the proxy's overhead on this machine.  The two targets of a
workload run back to back, and which one goes first alternates by round and by workload, so
drift (page cache, database growth, background work) falls on both sides equally; the ratio
columns are per-round ratios of those back-to-back pairs.  Each number in the table is the median
across rounds, with the min..max spread so noise shows.  Dirty pages are synced before each cell.

Workloads: small-object PUT, GET, HEAD and LIST at concurrency 1 and 16; one large PUT and one
large GET per cell; and one native multipart upload per cell ("MPU": CreateMultipartUpload, the
parts a few in flight on their own connections, CompleteMultipartUpload), whose object is checked
with a HEAD after the clock stops.  Large and multipart bodies stream from one temporary file.

The load client is asyncio + raw HTTP/1.1 over persistent connections (one per concurrent
worker), signed with our own SigV4 (``UNSIGNED-PAYLOAD``): boto3 tops out at ~300 small ops/s
here and would measure itself, not the proxy.  CPU use is reported per cell for the client, the
gateway, the backend and everything else on the machine ("other"), so a client-bound cell, or one
disturbed by a busy neighbour, is visible.

Run ``python -m tools.bench --help``.  Results go to stdout (a table) and to
``bench-results/<UTC timestamp>.json``.  Exit status: 0 clean, 1 request errors (loudly
reported; the servers' logs are copied next to the JSON), 2 aborted (a server died), 130 interrupted.

Modules: ``workloads`` (what is measured and in which order), ``client`` (the HTTP/1.1 load
client), ``cells`` (one timed cell, and seeding), ``cpu`` (per-process CPU and memory),
``stats`` (medians, ratios, the table), ``run`` (the servers, the rounds, the results).
"""
