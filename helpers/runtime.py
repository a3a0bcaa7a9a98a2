"""Environment checks, seeds, and TFF's execution context with a worker process that cannot outlive us.

TFF's local runtime runs computations in a separate C++ process, `worker_binary`. TFF starts it on the
first computation and relies on a `__del__` to stop it, which does not run when the interpreter exits,
so every Python process or Jupyter kernel that used TFF leaves one behind (about 300 MB each).
`setup()` starts every worker with the Linux "parent-death signal" set, so the kernel takes its worker
with it however it ends (even `kill -9`), and also stops workers at a normal interpreter exit.

Interrupting a cell that waits for TFF stops that computation: TFF's event-loop thread is blocked in
a synchronous gRPC call until the worker answers, and TFF retries a failed call, so `setup()` makes
the interrupt cancel the call's coroutine and restart the worker (TFF starts a new one on the next
call, in about a second). Each worker also gets a process group of its own, because Jupyter's stop
button sends SIGINT to the kernel's whole process group: the interrupt must stop the cell, not the
worker that every later TFF call needs. And the worker's SIGINT is reset to its default action,
since TFF stops its worker with SIGINT and then waits forever: a kernel started with SIGINT ignored
(`cmd &` in a script) would pass that on and hang at the next `setup()` or at exit.
"""

from __future__ import annotations

import asyncio
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
    from helpers._checks import check_int  # Here, not at the top: this module imports no NumPy early.

    seed = check_int('seed', seed, minimum=0, maximum=2**32 - 1, example=0)  # NumPy's legacy limit.
    import numpy as np
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def _die_with_parent(parent_pid: int) -> None:
    """In the forked child: SIGKILL us when our parent dies; own process group; SIGINT stops us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)  # Out of the kernel's process group: a Jupyter interrupt no longer reaches us.
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Not inherited as ignored: TFF stops us with it.
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


def _alive(pid: int) -> bool:
    """Return whether `pid` runs, without reaping it (TFF reaps its own worker; see `_kill`)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except FileNotFoundError:  # No such process any more.
        return False


def _kill(pid: int, sig: int) -> None:
    """`os.kill` for TFF's executor factory: a worker that is already gone is not an error.

    TFF sends SIGINT to a worker whose connection broke before starting a new one; if the worker
    had died and been reaped, `os.kill` raised ProcessLookupError and TFF stayed unusable.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def worker_pids() -> list[int]:
    """Return the process ids of the TFF workers this process started that are still running."""
    return [p.pid for p in _workers if p.returncode is None and _alive(p.pid)]


def install_worker_guard() -> None:
    """Make every TFF worker started from now on die with this process (idempotent)."""
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if isinstance(executor_factory.subprocess, types.SimpleNamespace):
        return
    guarded = types.SimpleNamespace(**vars(subprocess))
    guarded.Popen = _GuardedPopen
    executor_factory.subprocess = guarded
    tolerant_os = types.SimpleNamespace(**vars(os))
    tolerant_os.kill = _kill
    executor_factory.os = tolerant_os
    atexit.register(_stop_workers)


_METHOD_TARGET_SLOTS = ('weakrefself_target__', 'weakrefself_func__')


def _method_target_getattr(target, name: str):
    """Look up `name` on the object a TfMethodTarget stands for (installed as its `__getattr__`)."""
    if name in _METHOD_TARGET_SLOTS or (name.startswith('__') and name.endswith('__')):
        raise AttributeError(f"'TfMethodTarget' object has no attribute '{name}'")
    instance = object.__getattribute__(target, 'weakrefself_target__')()
    if instance is None:
        raise AttributeError(
            f"A tf.function method's object was garbage-collected before the method ran, so "
            f"'{name}' cannot be looked up: keep a reference to the object (for example the model) "
            'in a variable while its methods run.')
    return getattr(instance, name)


def forward_method_target_attributes() -> None:
    """Make a tf.function method reached through its raw bound form still see its object (idempotent).

    TF 2.14 binds each tf.function method to a stand-in, not to the object: `__get__` in
    tensorflow/python/eager/polymorphic_function/polymorphic_function.py (lines 1229-1268) calls
    `class_method_to_instance_method` (lines 1656-1710), which builds
    `MethodType(python_function, TfMethodTarget(weakref(instance), python_function))`. Only
    `TfMethodTarget.call` (tf_method_target.py, lines 49-51) and AutoGraph's `converted_call` and
    `_call_unconverted` (autograph/impl/api.py, lines 391-395 and 454-456) swap the stand-in for the
    object. A call that reaches that bound method any other way runs the method with `self` = the
    stand-in, and TFF's Keras wrapper then fails at `self.get_metrics()`
    (tensorflow_federated/python/learning/models/keras_utils.py, lines 425-428 and 501-523) with
    "'TfMethodTarget' object has no attribute 'get_metrics'". This happened now and then while
    `build_weighted_fed_avg` traced a fresh model in a new kernel (issue 14). Forwarding the stand-in's
    missing attributes to the live object makes such a call do what the method means; if the object
    is gone, the error says so.
    """
    from tensorflow.python.eager.polymorphic_function import tf_method_target

    tf_method_target.TfMethodTarget.__getattr__ = _method_target_getattr


def make_interruptible(context) -> None:
    """Make a KeyboardInterrupt during `context.invoke` stop the computation instead of leaving it.

    Without this, the interrupted computation keeps TFF's event-loop thread (and the worker) busy
    until it finishes, and every later TFF call waits behind it. This replaces `invoke` on one
    `SyncExecutionContext` object; it reads two private attributes of TFF 0.87's context
    (`_async_context`, `_async_runner`), which tests/test_runtime.py checks.
    """
    if not (hasattr(context, '_async_context') and hasattr(context, '_async_runner')):
        raise TypeError('context must be the SyncExecutionContext of '
                        'tff.backends.native.create_sync_local_cpp_execution_context(), got '
                        f'{type(context).__name__}.')
    async_context = context._async_context
    event_loop = context._async_runner._event_loop

    def invoke(comp, arg):
        future = asyncio.run_coroutine_threadsafe(async_context.invoke(comp, arg), event_loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # Delivered at the coroutine's next await, so TFF does not retry it.
            for pid in worker_pids():  # Ends the blocking gRPC call; TFF restarts the worker.
                _kill(pid, signal.SIGKILL)
            raise

    context.invoke = invoke


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
    from helpers._checks import check_bool, check_int  # After check_environment: needs NumPy.

    seed = check_int('seed', seed, minimum=0, maximum=2**32 - 1, example=0)
    default_num_clients = check_int('default_num_clients', default_num_clients, minimum=0, example=0)
    max_concurrent_computation_calls = check_int(
        'max_concurrent_computation_calls', max_concurrent_computation_calls, example=-1)
    if not (max_concurrent_computation_calls == -1 or max_concurrent_computation_calls > 0):
        raise ValueError('max_concurrent_computation_calls must be a positive int, or -1 for no limit; '
                         f'got {max_concurrent_computation_calls}.')
    check_bool('quiet', quiet)
    import tensorflow as tf
    import tensorflow_federated as tff

    if quiet:
        tf.get_logger().setLevel('ERROR')
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    install_worker_guard()
    forward_method_target_attributes()
    set_seeds(seed)
    context = tff.backends.native.create_sync_local_cpp_execution_context(
        default_num_clients=default_num_clients,
        max_concurrent_computation_calls=max_concurrent_computation_calls)
    make_interruptible(context)
    tff.framework.get_context_stack().set_default_context(context)
