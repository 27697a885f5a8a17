"""Redis, for the usage counters several gateways share (BEHAVIOURS §1.8, issue 17 item 2).

``resp`` is the wire format (RESP2, pure functions and an incremental parser), ``client`` a
Twisted-native client over it (one pipelined connection, reconnecting), ``counters`` the shared
usage counters with their breaker and the exactly-once replay of local deltas.
"""
