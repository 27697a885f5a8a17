"""Developer tools run from the checkout by the Makefile (``make run``, ``make bench``).

Not part of the shipped package: setup.py installs only ``s3orch`` (and the twistd
plugin), so neither the load generator nor the demo's process orchestration ends up
in a wheel or the .deb.  They may import the process helpers of ``tests.support``.
"""
