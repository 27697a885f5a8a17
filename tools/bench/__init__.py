"""``make bench``: what s3orch costs compared with the bare backend it fronts, and with its peer.

Three SeaweedFS ``weed mini`` backends (fast, and they check SigV4 and Content-MD5 like a real
provider), ``twistd -n s3orch`` over them (pack routing), and ``rclone union`` over the same
three behind ``rclone serve s3`` (tools/bench/peer.py says how it is configured and why).  Every
workload runs against three *targets* with the same client code -- ``direct`` (the first
backend's bucket), ``s3orch`` (the gateway's virtual bucket) and ``rclone`` (the union's bucket)
-- so s3orch/direct is the proxy's overhead on this machine and rclone/direct the peer's.  On the
HEAD/GET 4 KiB c1/c16 rows a fourth target, ``floor`` (tools/bench/floor.py), is a bare
twisted.web server answering a fixed body with no auth and no store: the most any gateway on
s3orch's front door (twisted.web, one CPython reactor) could answer, measured in the same rounds
(not with ``--processes`` above 1: the floor is one reactor).  The
cells of a workload run back to back, and their order rotates by round and by workload, so
drift (page cache, database growth, background work) falls on every side equally; the ratio
columns are per-round ratios within those back-to-back runs (s3orch/rclone too).  Each number in
the table is the median across rounds, with the min..max spread so noise shows.  Dirty pages are
synced before each cell.

Workloads: small-object PUT, GET, HEAD and LIST at concurrency 1 and 16; 1 KiB PUT and GET
paced at a steady 100 requests/s (open loop, judged by p99: tools/bench/pacing.py); one large
PUT and one large GET per cell; and one native multipart upload per cell ("MPU":
CreateMultipartUpload, the parts a few in flight on their own connections,
CompleteMultipartUpload), whose object is checked with a HEAD after the clock stops.  Large and multipart bodies stream from one temporary file.

The load client is asyncio + raw HTTP/1.1 over persistent connections (one per concurrent
worker), signed with our own SigV4 (``UNSIGNED-PAYLOAD``): boto3 tops out at ~300 small ops/s
here and would measure itself, not the proxy.  CPU use is reported per cell for the client, the
gateway, the peer, the backends together and everything else on the machine ("other"), so a client-bound cell, or one
disturbed by a busy neighbour, is visible.

The heavy scenarios (tools/bench/scenarios.py) run only when ``--only`` names them:
``rss-16x`` (the gateway's peak RSS during 8 PUTs and 8 GETs of 1 GiB at once) and ``list-1m``
(the first LIST page of a bucket of a million keys built in the database by bigbucket.py).

Run ``python -m tools.bench --help``.  Results go to stdout (a table, then one summary line per
row with s3orch/rclone and the issue's goal for it) and to
``bench-results/<UTC timestamp>.json`` (raw cells, rows, scenarios, summary lines).  Exit status:
0 clean, 1 request errors (loudly reported; the servers' logs are copied next to the JSON), 2
aborted (a server died), 130 interrupted.

Modules: ``workloads`` (what is measured and in which order), ``client`` (the HTTP/1.1 load
client), ``cells`` (one timed cell, and seeding), ``pacing`` (open-loop schedule), ``cpu``
(per-process CPU and memory), ``stats`` (medians, ratios, the table, the summary lines),
``peer`` (rclone union), ``scenarios`` and ``bigbucket`` (the heavy scenarios), ``run`` (the
servers, the rounds, the results).
"""
