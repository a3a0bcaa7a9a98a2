"""Shared fixtures: the repository root on sys.path and TFF's execution context set up once."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helpers import runtime  # noqa: E402

# Tests that import TFF without runtime.setup() still get workers that die with pytest, and none
# of TFF's "Exception ignored in ServiceManager.__del__" noise at exit.
runtime.install_worker_guard()


@pytest.fixture(scope='session')
def tff_runtime():
    """Set up TFF's execution context once per test session (and its worker clean-up)."""
    runtime.setup(seed=0)
    import tensorflow_federated as tff

    return tff
