"""Shared fixtures: the repository root on sys.path and TFF's execution context set up once."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def tff_runtime():
    """Set up TFF's execution context once per test session (and its worker clean-up)."""
    from helpers import runtime

    runtime.setup(seed=0)
    import tensorflow_federated as tff

    return tff
