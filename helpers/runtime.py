"""Environment checks, seeds, and TFF's execution context with a worker process that cannot outlive us.

TFF's local runtime runs computations in a separate C++ process, `worker_binary`. TFF starts it on the
first computation and relies on a `__del__` to stop it, which does not run when the interpreter exits,
so every Python process or Jupyter kernel that used TFF leaves one behind (about 300 MB each).
`setup()` starts every worker with the Linux "parent-death signal" set, so the kernel takes its worker
with it however it ends (even `kill -9`), and also stops workers at a normal interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import platform
import random
import signal
import subprocess
import sys
import types

SUPPORTED_PYTHON = ((3, 9), (3, 11))
SUPPORTED_TFF = '0.87.0'
_PR_SET_PDEATHSIG = 1

_workers: list[subprocess.Popen] = []


def check_environment() -> None:
    """Raise a RuntimeError that says what to do if this Python/platform/TFF cannot run the course."""
    version = sys.version_info[:2]
    low, high = SUPPORTED_PYTHON
    if not low <= version <= high:
        raise RuntimeError(
            f'This course needs CPython {low[0]}.{low[1]}-{high[0]}.{high[1]}: TensorFlow Federated '
            f'{SUPPORTED_TFF} publishes no wheels for Python {version[0]}.{version[1]}. Create the '
            'environment with `make lab` (it uses python3.11), or see "Supported platforms" in README.md.')
    if sys.platform != 'linux' or platform.machine() not in ('x86_64', 'AMD64'):
        raise RuntimeError(
            f'TensorFlow Federated {SUPPORTED_TFF} ships wheels for Linux x86-64 only; this is '
            f'{sys.platform}/{platform.machine()}. Use Binder, a Linux x86-64 VM or container '
            '(see "Supported platforms" in README.md).')
    try:
        import tensorflow_federated as tff
    except ImportError as error:
        raise RuntimeError(
            'tensorflow_federated is not installed in this kernel. Run `make lab` from the repository '
            'root, or `pip install --no-deps -r requirements.txt` in a Python 3.11 virtual environment, '
            'and choose that environment as the notebook kernel.') from error
    if tff.__version__ != SUPPORTED_TFF:
        raise RuntimeError(
            f'Found tensorflow_federated {tff.__version__}; the course is written for {SUPPORTED_TFF}. '
            'Install the lock: `pip install --no-deps -r requirements.txt`.')


def set_seeds(seed: int) -> None:
    """Seed Python's, NumPy's and TensorFlow's random generators with one call."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
    import numpy as np
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def _die_with_parent(parent_pid: int) -> None:
    """In the forked child: ask the kernel to SIGKILL us when our parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # The parent died before the signal was armed.
        os._exit(1)


class _GuardedPopen(subprocess.Popen):
    """A Popen whose process is killed with its parent and stopped at interpreter exit."""

    def __init__(self, *args, **kwargs):
        parent_pid = os.getpid()
        kwargs.setdefault('preexec_fn', lambda: _die_with_parent(parent_pid))
        super().__init__(*args, **kwargs)
        _workers.append(self)


def _stop_workers() -> None:
    """Stop every worker this process started that is still running (registered with atexit)."""
    for process in _workers:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # What TFF itself sends; the worker exits at once.
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # TFF's service managers would try again from `__del__` during interpreter teardown, when their
    # module's globals are already gone, and print a traceback. Their job is done: retire them (each
    # execution context has its own ServiceManager class).
    for obj in gc.get_objects():
        if type(obj).__qualname__.endswith('local_cpp_executor_factory.<locals>.ServiceManager'):
            type(obj).__del__ = lambda self: None


def worker_pids() -> list[int]:
    """Return the process ids of the TFF workers this process started that are still running."""
    return [p.pid for p in _workers if p.poll() is None]


def install_worker_guard() -> None:
    """Make every TFF worker started from now on die with this process (idempotent)."""
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if isinstance(executor_factory.subprocess, types.SimpleNamespace):
        return
    guarded = types.SimpleNamespace(**vars(subprocess))
    guarded.Popen = _GuardedPopen
    executor_factory.subprocess = guarded
    atexit.register(_stop_workers)


def setup(seed: int = 0, *, default_num_clients: int = 0, max_concurrent_computation_calls: int = -1,
          quiet: bool = True) -> None:
    """Check the environment, seed every generator and install TFF's local execution context.

    Call it before importing TensorFlow. With `quiet=True` it also hides TensorFlow's C++ start-up
    notices and lowers TF/absl Python logging to errors. It makes TFF's worker process die with this
    one by wrapping the `subprocess` module that TFF's executor factory uses (see the module docstring).
    """
    if quiet:
        # TF's C++ start-up notices (CUDA plugin registration on a CPU machine) are noise here.
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    check_environment()
    if not isinstance(default_num_clients, int) or default_num_clients < 0:
        raise ValueError(f'default_num_clients must be an int >= 0, got {default_num_clients!r}.')
    if not isinstance(max_concurrent_computation_calls, int) or not (
            max_concurrent_computation_calls == -1 or max_concurrent_computation_calls > 0):
        raise ValueError('max_concurrent_computation_calls must be a positive int, or -1 for no limit; '
                         f'got {max_concurrent_computation_calls!r}.')
    import tensorflow as tf
    import tensorflow_federated as tff

    if quiet:
        tf.get_logger().setLevel('ERROR')
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    install_worker_guard()
    set_seeds(seed)
    tff.backends.native.set_sync_local_cpp_execution_context(
        default_num_clients=default_num_clients,
        max_concurrent_computation_calls=max_concurrent_computation_calls)
