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

`setup()` also stops AutoGraph (TF 2.14) from mistaking a new object in a Jupyter kernel for a
builtin, which made `build_weighted_fed_avg` fail now and then in a fresh kernel
(`ignore_dead_builtin_ids`).

Scaling out (notebook 10): `start_workers(n)` starts n more workers on free ports (each listens on
every interface; no flag limits it to loopback), with the same
guards; `remote_context(address)` builds an asynchronous TFF context for one worker address on
`tff.framework.RemoteExecutor` (TFF 0.87 has no public function for it); `mergeable_context(addresses)`
builds TFF's mergeable context over such contexts with the course's two additions: each context runs
on a thread of its own (TFF 0.87's RemoteExecutor makes blocking gRPC calls inside its coroutines, so
contexts that share one event loop run one after another), and *after merge* is not sent clients'
data it cannot use. `use_context(workers)` switches between TFF's default single-worker context and
that mergeable context over that many workers. `setup(workers=n)` does both at once. The teaching
copies of `remote_context` and `mergeable_context` are in notebooks/10_scaling_out.ipynb;
tests/test_notebooks.py keeps them identical.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import ctypes
import gc
import importlib.util
import os
import platform
import random
import signal
import subprocess
import sys
import time
import types

SUPPORTED_PYTHON = ((3, 9), (3, 11))
SUPPORTED_TFF = '0.87.0'
_PR_SET_PDEATHSIG = 1

_workers: list[subprocess.Popen] = []
_WORKER_BINARY_NAME = 'worker_binary'
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000  # What TFF's own channels allow.
_state: dict = {'default': None, 'local': [], 'mergeable': {}, 'max_calls': -1}


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


class _LiveBuiltinIds:
    """AutoGraph's recorded ids of builtins values, counting only those whose value is in builtins now."""

    def __init__(self, recorded: frozenset[int]) -> None:
        self.recorded = recorded

    def __contains__(self, object_id: object) -> bool:
        # A live object's id is unique, so a match here means the object is that builtins value.
        return object_id in self.recorded and any(id(value) == object_id
                                                  for value in vars(builtins).values())


def ignore_dead_builtin_ids() -> None:
    """Stop AutoGraph taking an object for a builtin because it reuses a freed builtin's id (idempotent).

    When TF 2.14 is imported, AutoGraph records `id(v)` of every value in `builtins`
    (tensorflow/python/autograph/pyct/inspect_utils.py, line 34) and later treats any object whose
    id is in that set as a builtin (`isbuiltin`, lines 62-65). AutoGraph's `converted_call` then
    calls it as it is, unconverted (autograph/impl/api.py, lines 359-371). CPython reuses a freed
    object's memory, and so its id, for a new object of a similar size. A Jupyter kernel sets
    `builtins.input` to a new bound method for every cell and puts the old value back when the cell
    ends (ipykernel/ipkernel.py, `_forward_input` and `_restore_input`), so the method of the cell
    that imported TF is freed and its id goes stale. When a later bound method lands at that
    address, AutoGraph calls it directly. For the method TF binds inside a tf.function method
    (`MethodType(python_function, TfMethodTarget(...))`, polymorphic_function.py, lines 1662-1665)
    that means `self` is TF's stand-in, not the object: TFF's Keras wrapper then fails at
    `self.get_metrics()` with "'TfMethodTarget' object has no attribute 'get_metrics'" (issue 14).
    Any other function landing there would silently run without AutoGraph. This keeps TF's record
    but counts an id only while its value is still in `builtins`.
    """
    from tensorflow.python.autograph.pyct import inspect_utils

    if not isinstance(inspect_utils._BUILTIN_FUNCTION_IDS, _LiveBuiltinIds):
        inspect_utils._BUILTIN_FUNCTION_IDS = _LiveBuiltinIds(inspect_utils._BUILTIN_FUNCTION_IDS)


def skip_autograph(package: str) -> None:
    """Stop AutoGraph rewriting the functions of `package` that a tf.function calls (idempotent).

    When a tf.function is first traced, AutoGraph parses and rewrites the Python source of the
    functions it calls so that `if`, `for` and `while` on tensors become TF control flow (a
    tf.function's own body is converted regardless: `autograph/impl/api.py` skips the rules for it).
    Conversions are cached per function, but notebook 07 still spent seconds in them for
    tensor_encoding. A package that writes its control flow as `tf.cond` and `tf.while_loop`, as
    tensor_encoding does, needs no rewriting. TF has no public switch per package: this prepends a
    rule to AutoGraph's own list, `tensorflow/python/autograph/core/config.py` (`CONVERSION_RULES`,
    read on every conversion by `autograph/impl/conversion.py`), as TF's own tests do.
    """
    if not isinstance(package, str):
        raise TypeError("package must be a top-level package name as a str, e.g. "
                        f"'tensorflow_model_optimization', got {type(package).__name__}.")
    if not package.isidentifier() or importlib.util.find_spec(package) is None:
        raise ValueError("package must name an installed top-level package, e.g. "
                         f"'tensorflow_model_optimization'; got {package!r}.")
    if package in ('tensorflow_federated', 'keras'):
        raise ValueError(f'package must not be {package!r}: its functions rely on AutoGraph (for '
                         'example Python loops over datasets); pass a package written with tf.cond '
                         "and tf.while_loop, e.g. 'tensorflow_model_optimization'.")
    from tensorflow.python.autograph.core import config

    if any(isinstance(rule, config.DoNotConvert) and rule._prefix == package
           for rule in config.CONVERSION_RULES):
        return
    config.CONVERSION_RULES = (config.DoNotConvert(package),) + tuple(config.CONVERSION_RULES)


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
          quiet: bool = True, workers: int | None = None) -> None:
    """Check the environment, seed every generator and install TFF's local execution context.

    Call it before importing TensorFlow. With `quiet=True` it also hides TensorFlow's C++ start-up
    notices and lowers TF/absl Python logging to errors. It makes TFF's worker process die with this
    one by wrapping the `subprocess` module that TFF's executor factory uses (see the module docstring).
    `workers=None` installs TFF's default context (one worker); an int n >= 1 installs the mergeable
    context over n workers instead (`use_context` switches later).
    """
    if quiet:
        # TF's C++ start-up notices (CUDA plugin registration on a CPU machine) are noise here.
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
        # gRPC's notice that it skipped its fork handlers when a worker starts is noise too.
        os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
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
    if workers is not None:
        workers = check_int('workers', workers, minimum=1, example=2)
    import tensorflow as tf
    import tensorflow_federated as tff

    if quiet:
        tf.get_logger().setLevel('ERROR')
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    install_worker_guard()
    ignore_dead_builtin_ids()
    set_seeds(seed)
    context = tff.backends.native.create_sync_local_cpp_execution_context(
        default_num_clients=default_num_clients,
        max_concurrent_computation_calls=max_concurrent_computation_calls)
    make_interruptible(context)
    _state['default'] = context
    _state['mergeable'] = {}
    _state['max_calls'] = max_concurrent_computation_calls
    tff.framework.get_context_stack().set_default_context(context)
    if workers is not None:
        use_context(workers)


def worker_binary_path() -> str:
    """Return the path of the `worker_binary` that ships inside the TFF package."""
    import tensorflow_federated as tff

    path = os.path.join(os.path.dirname(tff.__file__), 'data', _WORKER_BINARY_NAME)
    if not os.path.isfile(path):
        raise RuntimeError(f'TFF\'s worker binary is missing at {path}; reinstall the lock.')
    return path


class _LocalWorker:
    """A `worker_binary` this process started, restarted if it died; it listens on every interface."""

    def __init__(self, max_concurrent_computation_calls: int, grpc_max_message_length_megabytes: int):
        import portpicker

        self.port = portpicker.pick_unused_port()
        self.args = [worker_binary_path(), f'--port={self.port}',
                     f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
                     f'--grpc_max_message_length_megabytes={grpc_max_message_length_megabytes}']
        self.process = None
        self.ensure_running()

    @property
    def address(self) -> str:
        return f'localhost:{self.port}'

    def ensure_running(self) -> bool:
        """Start the worker if it is not running; return whether it had to be (re)started."""
        if self.process is not None and self.process.poll() is None and _alive(self.process.pid):
            return False
        self.process = _GuardedPopen(self.args)
        return True


def start_workers(count: int, *, max_concurrent_computation_calls: int = -1,
                  grpc_max_message_length_megabytes: int = 10_000) -> list[str]:
    """Start `count` guarded `worker_binary` processes on free ports; return their localhost addresses."""
    from helpers._checks import check_int

    count = check_int('count', count, minimum=1, example=2)
    max_concurrent_computation_calls = check_int(
        'max_concurrent_computation_calls', max_concurrent_computation_calls, example=-1)
    grpc_max_message_length_megabytes = check_int(
        'grpc_max_message_length_megabytes', grpc_max_message_length_megabytes, minimum=1,
        example=10_000)
    install_worker_guard()
    started = [_LocalWorker(max_concurrent_computation_calls, grpc_max_message_length_megabytes)
               for _ in range(count)]
    _state['local'].extend(started)
    import grpc

    for worker in started:  # Return once every worker answers (each takes about a second).
        channel = grpc.insecure_channel(worker.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            raise RuntimeError(f'The worker started at {worker.address} did not answer within 60 s.'
                               ) from None
        finally:
            channel.close()
    return [worker.address for worker in started]


def _course_context(context, threaded: bool):
    """Wrap an async TFF context: lean *after merge* calls and, if `threaded`, a thread of its own."""
    import tensorflow_federated as tff
    from tensorflow_federated.python.common_libs import async_utils

    class CourseContext(tff.framework.AsyncContext):
        """An async context that leaves out clients' data *after merge* cannot use; maybe threaded."""

        def __init__(self):
            self.inner = context
            self.runner = async_utils.AsyncThreadRunner() if threaded else None

        async def invoke(self, comp, arg):
            if _lean_after_merge.get(id(comp)) is comp and arg is not None:
                arg = _without_client_values(arg, comp.type_signature.parameter)
            if self.runner is None:  # As TFF's own contexts: a blocking call holds the shared loop.
                return await self.inner.invoke(comp, arg)
            future = asyncio.run_coroutine_threadsafe(
                self.inner.invoke(comp, arg), self.runner._event_loop)
            return await asyncio.wrap_future(future)

        def cancel_all(self) -> None:
            """Cancel every task on this context's own loop (each stops at its next await)."""
            if self.runner is not None:
                _cancel_all_tasks(self.runner._event_loop)

    return CourseContext()


# id -> the *after merge* computation itself: holding it keeps its id from being reused by another
# object once TFF's compile cache drops it (an id alone could match an unrelated computation).
_lean_after_merge: dict[int, object] = {}


def _server_only(type_spec) -> bool:
    """Return whether `type_spec` holds no value placed at the clients (except all-equal ones)."""
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.types import type_analysis

    return type_analysis.contains_only(type_spec, lambda t: not isinstance(
        t, tff.FederatedType) or t.all_equal or t.placement is not tff.CLIENTS)


def _without_client_values(value, type_spec):
    """Return `value` with every non-all-equal CLIENTS-placed part replaced by no clients at all."""
    import tensorflow_federated as tff
    from tensorflow_federated.python.common_libs import structure

    if isinstance(type_spec, tff.FederatedType):
        return [] if type_spec.placement is tff.CLIENTS and not type_spec.all_equal else value
    if isinstance(type_spec, tff.StructType) and isinstance(value, structure.Struct):
        elements = structure.to_elements(value)
        return structure.Struct([(name, _without_client_values(v, t))
                                 for (name, v), t in zip(elements, type_spec)])
    return value


def _make_after_merge_lean(context) -> None:
    """Stop the mergeable context from sending the clients' data again to *after merge*.

    TFF's *after merge* computation takes the call's argument again (the first sub-round's share).
    When a computation's result is placed at the server only, every aggregation is in *up to merge*,
    so nothing after it can use the clients' values: they are replaced by no clients. The contexts
    of `remote_context` apply it to the computations registered here.
    """
    import tensorflow_federated as tff

    pipeline = context._compiler_pipeline
    compile_form = pipeline.compile

    def compile_and_register(comp):
        form = compile_form(comp)
        after_merge = form.after_merge
        parameter = after_merge.type_signature.parameter
        if (_server_only(after_merge.type_signature.result)
                and isinstance(parameter, tff.StructType) and len(parameter) == 2):
            # (original argument, merge result); a computation without argument has no first part.
            _lean_after_merge[id(after_merge)] = after_merge
        return form

    pipeline.compile = compile_and_register


def _cancel_all_tasks(event_loop) -> None:
    """Cancel, from another thread, every task running on `event_loop`."""
    def cancel():
        for task in asyncio.all_tasks(event_loop):
            task.cancel()

    event_loop.call_soon_threadsafe(cancel)


def _check_address(address) -> None:
    """Raise unless `address` is a 'host:port' string with a port in 1-65535."""
    host, _, port = address.rpartition(':') if isinstance(address, str) else ('', '', '')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'address must be a "host:port" string with a port in 1-65535, e.g. '
                         f"'localhost:8000', got {address!r}.")


_stubs: dict = {}


def _ready_stub(address: str):
    """Return a gRPC stub for the worker at `address` once it answers (restarting ours if it died)."""
    import grpc
    import tensorflow_federated as tff

    local = {worker.address: worker for worker in _state['local']}.get(address)
    if (local is not None and local.ensure_running()) or address not in _stubs:
        options = [('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
                   ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
                   ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES)]
        _stubs[address] = tff.framework.RemoteExecutorGrpcStub(
            grpc.insecure_channel(address, options))  # A fresh channel for a new worker.
    deadline = time.monotonic() + 60
    while not _stubs[address].is_ready:  # A worker starts in about a second.
        if time.monotonic() > deadline:
            raise RuntimeError(f'No TFF worker answers at {address} after 60 s.')
        time.sleep(0.2)
    return _stubs[address]


def remote_context(address: str, *, threaded: bool = True):
    """Return an async TFF context that runs computations on the TFF worker at `address` ('host:port')."""
    import tensorflow_federated as tff
    from helpers._checks import check_bool

    _check_address(address)
    check_bool('threaded', threaded)

    def executor_for(cardinalities):  # TFF asks for an executor per number of clients in a call.
        cardinalities.setdefault(tff.CLIENTS, 0)
        executor = tff.framework.RemoteExecutor(_ready_stub(address))
        executor.set_cardinalities(cardinalities)
        return executor

    context = tff.framework.AsyncExecutionContext(
        tff.framework.ResourceManagingExecutorFactory(executor_for),
        tff.backends.native.desugar_and_transform_to_native,  # The compiler of TFF's default context.
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result)
    return _course_context(context, threaded)  # The course's addition: see mergeable_context.


def mergeable_context(addresses: list[str], *, threaded: bool = True):
    """Return TFF's mergeable context over the workers at `addresses`, with the course's additions."""
    import tensorflow_federated as tff

    if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)) or not addresses:
        raise TypeError('addresses must be a non-empty list of "host:port" strings, e.g. '
                        f"['localhost:8000'], got {addresses!r}.")
    context = tff.backends.native.create_mergeable_comp_execution_context(
        [remote_context(address, threaded=threaded) for address in addresses])
    # Addition 1: each sub-round's context runs on a thread of its own (if threaded), so workers
    # compute at the same time. Addition 2: *after merge* gets no clients' data it cannot use.
    _make_after_merge_lean(context)
    return context


def _make_mergeable_interruptible(context) -> None:
    """Make a KeyboardInterrupt during a mergeable `invoke` stop it and kill this process's workers."""
    event_loop = context._async_runner._event_loop

    def run(coro):
        future = asyncio.run_coroutine_threadsafe(coro, event_loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            # The subround tasks outlive a cancelled parent: cancel them all, here and on each
            # context's own thread, or they would restart the computation on the restarted workers.
            future.cancel()
            _cancel_all_tasks(event_loop)
            for sub_context in context._async_execution_contexts:
                if hasattr(sub_context, 'cancel_all'):
                    sub_context.cancel_all()
            for worker in _state['local']:  # Ends the blocking gRPC calls; restarted on the next call.
                if worker.process is not None:
                    _kill(worker.process.pid, signal.SIGKILL)
            raise

    context._async_runner.run_coro_and_return_result = run


def use_context(workers: int | None = None):
    """Install TFF's default context (`None`: one worker) or the mergeable context over `workers` workers.

    The workers are started on first use and kept for later calls; return the installed context.
    """
    from helpers._checks import check_int

    if _state['default'] is None:
        raise RuntimeError('Call runtime.setup() first: it installs the default context.')
    import tensorflow_federated as tff

    if workers is None:
        context = _state['default']
    else:
        workers = check_int('workers', workers, minimum=1, example=2)
        context = _state['mergeable'].get(workers)
        if context is None:
            missing = workers - len(_state['local'])
            if missing > 0:
                start_workers(missing, max_concurrent_computation_calls=_state['max_calls'])
            addresses = [worker.address for worker in _state['local'][:workers]]
            context = mergeable_context(addresses)
            _make_mergeable_interruptible(context)
            _state['mergeable'][workers] = context
    tff.framework.get_context_stack().set_default_context(context)
    return context
