"""Test doubles for code that uses s3orch, shipped with it (this is the only test code that is).

* :class:`~s3orch.testing.s3server.InMemoryS3` -- an S3 server as a ``twisted.web`` resource
  (SigV4, Content-MD5 and payload hashes checked, S3 XML errors), to test S3 clients in memory;
* :class:`~s3orch.testing.harness.GatewayHarness` -- a whole gateway built by ``tap.build`` on a
  clock, over in-memory backends, answering requests sent over in-memory connections;
* :func:`~s3orch.testing.config.config_from_string` -- config.yaml text to the checked ``Config``.
"""

from s3orch.testing.config import config_from_string
from s3orch.testing.harness import GatewayHarness, HarnessResponse
from s3orch.testing.s3server import InMemoryS3

__all__ = ["GatewayHarness", "HarnessResponse", "InMemoryS3", "config_from_string"]
