"""s3orch packaging: metadata lives in setup.cfg."""

from setuptools import setup

setup()
