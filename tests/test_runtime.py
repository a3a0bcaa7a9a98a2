"""No TFF worker process outlives the Python process that started it; environment checks."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import runtime
from tests.conftest import ROOT

CHILD = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from helpers import runtime
    runtime.setup(seed=0)
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation(tf.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    print('WORKERS', *runtime.worker_pids(), flush=True)
    if sys.argv[1] == 'two_contexts':  # A second context starts a second worker; both live to exit.
        first = tff.framework.get_context_stack().current
        tff.backends.native.set_sync_local_cpp_execution_context()
        assert add_one(2) == 3
        print('WORKERS', *runtime.worker_pids(), flush=True)
    if sys.argv[1] == 'kill':
        os.kill(os.getpid(), signal.SIGKILL)
''')


def _running(pid: int) -> bool:
    """Return whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize('ending', ['exit', 'kill', 'two_contexts'])
def test_no_worker_outlives_its_python_process(ending):
    result = subprocess.run([sys.executable, '-c', CHILD.format(root=str(ROOT)), ending],
                            capture_output=True, text=True, timeout=180)
    lines = [l for l in result.stdout.splitlines() if l.startswith('WORKERS')]
    assert lines, result.stdout + result.stderr
    pids = sorted({int(p) for line in lines for p in line.split()[1:]})
    assert len(pids) == (2 if ending == 'two_contexts' else 1)  # Computations started workers ...
    assert all(_gone_within(pid, 10.0) for pid in pids)  # ... none outlived the child, however it ended.
    if ending != 'kill':
        assert 'Exception ignored' not in result.stderr, result.stderr  # TFF's noisy __del__ is retired.


def test_check_environment_accepts_this_machine():
    runtime.check_environment()


def test_check_environment_explains_unsupported_python(monkeypatch):
    monkeypatch.setattr(sys, 'version_info', (3, 12, 0, 'final', 0))
    with pytest.raises(RuntimeError, match='CPython 3.9-3.11'):
        runtime.check_environment()


def test_check_environment_explains_unsupported_platform(monkeypatch):
    monkeypatch.setattr(sys, 'platform', 'darwin')
    with pytest.raises(RuntimeError, match='Linux x86-64'):
        runtime.check_environment()


@pytest.mark.parametrize('kwargs', [dict(seed=-1), dict(default_num_clients=-2),
                                    dict(max_concurrent_computation_calls=0),
                                    dict(max_concurrent_computation_calls=-5)])
def test_setup_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        runtime.setup(**kwargs)


def test_set_seeds_makes_draws_repeat():
    import numpy as np
    import tensorflow as tf

    runtime.set_seeds(7)
    first = (np.random.rand(), float(tf.random.uniform([])))
    runtime.set_seeds(7)
    assert (np.random.rand(), float(tf.random.uniform([]))) == first
