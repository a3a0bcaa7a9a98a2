"""No TFF worker process outlives the Python process that started it; environment checks."""

import os
import re
import signal
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


WORKERS_CHILD = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from helpers import runtime
    runtime.setup(seed=0, workers=3)
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def total(values):
        return tff.federated_sum(values)

    assert total([1, 2, 3, 4, 5]) == 15  # Split over 3 workers, merged, and right.
    runtime.use_context(None)  # TFF's default context starts its own worker ...
    assert total([1, 2]) == 3
    runtime.use_context(3)  # ... and the 3 workers are reused, not started again.
    assert total([4, 5, 6]) == 15
    print('WORKERS', *runtime.worker_pids(), flush=True)
    if sys.argv[1] == 'kill':
        os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.parametrize('ending', ['exit', 'kill'])
def test_no_worker_of_several_outlives_its_python_process(ending):
    result = subprocess.run([sys.executable, '-c', WORKERS_CHILD.format(root=str(ROOT)), ending],
                            capture_output=True, text=True, timeout=240)
    lines = [l for l in result.stdout.splitlines() if l.startswith('WORKERS')]
    assert lines, result.stdout + result.stderr[-3000:]
    pids = [int(p) for p in lines[0].split()[1:]]
    assert len(pids) == 4  # Three for the mergeable context, one for the default context.
    assert all(_gone_within(pid, 10.0) for pid in pids)
    if ending == 'exit':
        assert result.returncode == 0 and 'Exception ignored' not in result.stderr, result.stderr


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


@pytest.mark.parametrize('kwargs, message', [
    (dict(seed=-1), 'seed must be an int between 0 and 4294967295, got -1'),
    (dict(default_num_clients=-2), 'default_num_clients must be an int >= 0, got -2'),
    (dict(max_concurrent_computation_calls=0), 'or -1 for no limit; got 0'),
    (dict(max_concurrent_computation_calls=-5), 'or -1 for no limit; got -5'),
    (dict(workers=0), 'workers must be an int >= 1, got 0')])
def test_setup_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        runtime.setup(**kwargs)


def test_set_seeds_makes_draws_repeat():
    import numpy as np
    import tensorflow as tf

    runtime.set_seeds(7)
    first = (np.random.rand(), float(tf.random.uniform([])))
    runtime.set_seeds(7)
    assert (np.random.rand(), float(tf.random.uniform([]))) == first


SETUP_TWICE = textwrap.dedent('''
    import signal, sys
    sys.path.insert(0, {root!r})
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # As for `cmd &` in a script.
    from helpers import runtime
    runtime.setup(seed=0)
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation(tf.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    runtime.setup(seed=0)  # Retires the first context, whose worker TFF stops with SIGINT.
    assert add_one(2) == 3
    print('DONE', flush=True)
''')


def test_setup_twice_and_exit_do_not_hang_when_sigint_is_ignored():
    started = time.monotonic()
    result = subprocess.run([sys.executable, '-c', SETUP_TWICE.format(root=str(ROOT))],
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    elapsed = time.monotonic() - started
    assert 'DONE' in result.stdout, result.stderr[-3000:]
    assert result.returncode == 0
    # Before the fix the second setup() hung for ever; exit alone took 5 s (SIGINT, then SIGKILL).
    assert elapsed < 60, f'took {elapsed:.0f} s'


class Kernel:
    """A real IPython kernel driven through jupyter_client, as JupyterLab drives one."""

    def __init__(self):
        import jupyter_client

        self.manager, self.client = jupyter_client.manager.start_new_kernel(
            kernel_name='python3', cwd=str(ROOT))

    def run(self, code: str, interrupt_after_s: float | None = None, timeout_s: float = 120
            ) -> tuple[str, str | None, float]:
        """Run `code`; return (stdout, error name or None, seconds), interrupting it if asked.

        The interrupt comes `interrupt_after_s` seconds after the cell's first output, as a person
        presses stop while a cell runs. An interrupt that reaches the kernel before it starts the
        cell is ignored, and the cell runs to its end (checked: `time.sleep(8)` interrupted right
        after the request still took 8 s), so counting from the request could race a busy machine.
        """
        msg_id = self.client.execute(code)
        started = time.monotonic()
        out, error, interrupted, running_since = [], None, False, None
        while time.monotonic() - started < timeout_s:
            if interrupt_after_s is not None and not interrupted and running_since is not None and (
                    time.monotonic() - running_since > interrupt_after_s):
                self.manager.interrupt_kernel()  # What the stop button does.
                interrupted = True
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except Exception:  # queue.Empty: nothing yet.
                continue
            if msg['parent_header'].get('msg_id') != msg_id:
                continue
            kind = msg['msg_type']
            if kind == 'stream' and msg['content']['name'] == 'stdout':
                out.append(msg['content']['text'])
                running_since = running_since or time.monotonic()
            elif kind == 'error':
                error = msg['content']['ename']
            elif kind == 'status' and msg['content']['execution_state'] == 'idle':
                return ''.join(out), error, time.monotonic() - started
        waiting = (' (it printed nothing, so the interrupt was never sent: print first)'
                   if interrupt_after_s is not None and running_since is None else '')
        raise TimeoutError(f'cell did not finish within {timeout_s} s{waiting}: {code!r}')

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


KERNEL_SETUP = textwrap.dedent('''
    from helpers import runtime
    runtime.setup(seed=0)
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation(tf.int32)
    def add_one(x):
        return x + 1

    @tff.tensorflow.computation(tf.int32)
    def slow(steps):  # About 5 ms a step on 2 cores: minutes for a million steps.
        m = tf.random.stateless_uniform([600, 600], seed=[1, 2])
        body = lambda i, a: (i + 1, tf.linalg.matmul(a, m) / 600.0)
        return tf.reduce_sum(tf.while_loop(lambda i, a: i < steps, body, (0, m))[1])

    print(add_one(1), *runtime.worker_pids())
''')


def test_interrupting_cells_leaves_tff_usable():
    kernel = Kernel()
    try:
        out, error, _ = kernel.run(KERNEL_SETUP, timeout_s=300)  # TFF's import is slow on a busy machine.
        assert error is None and out.split()[0] == '2', out
        first_worker = out.split()[1]
        # The stop button during a plain cell: the cell stops, the worker is untouched.
        _, error, seconds = kernel.run("import time; print('running', flush=True); time.sleep(60)",
                                       interrupt_after_s=2)
        assert error == 'KeyboardInterrupt' and seconds < 30
        out, error, _ = kernel.run('print(add_one(2), *runtime.worker_pids())')
        assert error is None and out.split() == ['3', first_worker]
        # The stop button during a long TFF computation: the cell stops at once, and the next
        # computation runs (on a fresh worker) instead of waiting for the abandoned one.
        _, error, seconds = kernel.run("print('running', flush=True); slow(1_000_000)",
                                       interrupt_after_s=3)
        assert error == 'KeyboardInterrupt' and seconds < 30
        kernel.run('print(runtime.worker_pids())')  # Once reaped a dead worker and broke TFF.
        out, error, seconds = kernel.run('print(add_one(3))', timeout_s=60)
        assert error is None and out.strip() == '4' and seconds < 30
        out, error, _ = kernel.run('print(slow(3) != 0.0)')
        assert error is None and out.strip() == 'True'
    finally:
        kernel.close()


KERNEL_WORKERS_SETUP = textwrap.dedent('''
    from helpers import runtime
    runtime.setup(seed=0, workers=2)
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation(tf.int32)
    def slow_step(steps):  # About 5 ms a step on 2 cores: minutes for a million steps.
        m = tf.random.stateless_uniform([600, 600], seed=[1, 2])
        body = lambda i, a: (i + 1, tf.linalg.matmul(a, m) / 600.0)
        return tf.cast(tf.reduce_sum(tf.while_loop(lambda i, a: i < steps, body, (0, m))[1]) > 0, tf.int32)

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def slow(steps):
        return tff.federated_sum(tff.federated_map(slow_step, steps))

    @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
    def total(values):
        return tff.federated_sum(values)

    print(total([1, 2, 3]), *runtime.worker_pids())
''')


def test_interrupting_a_mergeable_computation_leaves_tff_usable():
    kernel = Kernel()
    try:
        out, error, _ = kernel.run(KERNEL_WORKERS_SETUP, timeout_s=300)
        assert error is None and out.split()[0] == '6', out
        workers = out.split()[1:]
        assert len(workers) == 2
        # The stop button during a plain cell: the workers are untouched.
        _, error, seconds = kernel.run("import time; print('running', flush=True); time.sleep(60)",
                                       interrupt_after_s=2)
        assert error == 'KeyboardInterrupt' and seconds < 30
        out, error, _ = kernel.run('print(total([4, 5]), *runtime.worker_pids())')
        assert error is None and out.split() == ['9', *workers]
        # The stop button during a long computation split over both workers: the cell stops at once,
        # and the next computation runs on restarted workers instead of waiting for the old ones.
        _, error, seconds = kernel.run("print('running', flush=True); slow([1_000_000] * 4)",
                                       interrupt_after_s=3)
        assert error == 'KeyboardInterrupt' and seconds < 30
        out, error, seconds = kernel.run('print(total([1, 1, 1]), *runtime.worker_pids())',
                                         timeout_s=90)
        assert error is None and out.split()[0] == '3' and seconds < 60, out
        assert len(out.split()[1:]) == 2 and set(out.split()[1:]).isdisjoint(workers)
        out, error, _ = kernel.run('print(slow([3, 3, 3]))')
        assert error is None and out.strip() == '3'
    finally:
        kernel.close()


def _keras_tff_model():
    """Return a TFF model wrapping the course's linear Keras model (TFF's `_KerasModel`)."""
    import collections

    import tensorflow as tf

    from helpers import models

    spec = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                                   y=tf.TensorSpec([None, 1], tf.int32))
    return models.make_model_fn(models.create_linear_model, spec)()


def _stale_builtin_trigger(monkeypatch):
    """Return issue 14's trigger with a freed, pinned builtins value in the ids AutoGraph recorded."""
    import importlib.util

    from tensorflow.python.autograph.pyct import inspect_utils

    spec = importlib.util.spec_from_file_location('trigger', ROOT / 'tools' / 'issue14_stale_builtin_id.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trigger = module.Trigger()
    recorded = inspect_utils._BUILTIN_FUNCTION_IDS
    # The ids TF records at import, had it been imported while the trigger's method was in builtins.
    monkeypatch.setattr(inspect_utils, '_BUILTIN_FUNCTION_IDS',
                        trigger.record(frozenset(getattr(recorded, 'recorded', recorded))))
    assert trigger.pins and set(trigger.pins) <= trigger.stale_ids
    return trigger


def test_an_object_at_a_freed_builtins_id_is_not_taken_for_a_builtin(tff_runtime, monkeypatch):
    """Issue 14's cause: AutoGraph took any object at the id of a freed builtins value for a builtin."""
    import types

    from tensorflow.python.autograph.pyct import inspect_utils

    trigger = _stale_builtin_trigger(monkeypatch)
    pinned = list(trigger.pins.values())
    assert all(isinstance(m, types.MethodType) for m in pinned)  # Plain bound methods of a test class,
    assert all(inspect_utils.isbuiltin(m) for m in pinned)  # which TF 2.14 alone takes for builtins.
    runtime.ignore_dead_builtin_ids()
    runtime.ignore_dead_builtin_ids()  # Idempotent: TF's record is wrapped once.
    assert isinstance(inspect_utils._BUILTIN_FUNCTION_IDS.recorded, frozenset)
    assert not any(inspect_utils.isbuiltin(m) for m in pinned)
    assert all(inspect_utils.isbuiltin(f) for f in (len, print, range, isinstance, getattr))


def test_fedavg_builds_when_tffs_metric_method_gets_a_freed_builtins_id(tff_runtime, monkeypatch):
    """Issue 14 on demand: TF binds reset_metrics at a freed builtins id; it failed before the fix."""
    import tensorflow_federated as tff

    from helpers import models, training

    model_fn = models.make_model_fn(models.create_linear_model, _keras_tff_model().input_spec)

    def build_until_landed(fixed: bool):
        """Return (the build's result or its AttributeError, trigger) for a build in which TF landed."""
        for _ in range(5):  # The allocator does not always give TF the freed memory; this is rare.
            trigger = _stale_builtin_trigger(monkeypatch)
            if fixed:
                runtime.ignore_dead_builtin_ids()
            trigger.install()
            try:
                result = tff.learning.algorithms.build_weighted_fed_avg(
                    model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.5),
                    loop_implementation=training.LOOP_IMPLEMENTATION)
            except AttributeError as error:
                result = error
            finally:
                trigger.uninstall()
            if trigger.landed:
                return result, trigger
        pytest.fail('TF got a freed builtins id in none of 5 builds')

    failure, _ = build_until_landed(fixed=False)  # TF's record alone, as without runtime.setup().
    assert "'TfMethodTarget' object has no attribute 'get_metrics'" in str(failure)
    process, _ = build_until_landed(fixed=True)  # The same collision, now harmless.
    assert not isinstance(process, Exception), process
    train_metrics = process.next.type_signature.result.metrics.member.client_work['train']
    # make_model_fn's accuracy, then the three metrics TFF adds to every Keras model.
    assert list(tff.structure.name_list(train_metrics)) == ['accuracy', 'loss', 'num_examples', 'num_batches']


def test_skip_autograph_leaves_encodings_unchanged_and_skips_the_rewrite():
    """tensor_encoding encodes the same bytes without AutoGraph (random ones too, from one seed), and
    AutoGraph no longer converts it."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from helpers import runtime
        runtime.setup(seed=0)
        import numpy as np
        import tensorflow as tf
        from tensorflow.python.autograph.impl import conversion
        from tensorflow_model_optimization.python.core.internal import tensor_encoding as te
        from tensorflow_model_optimization.python.core.internal.tensor_encoding.core import simple_encoder

        x = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
        spec = tf.TensorSpec(x.shape, tf.float32)

        def encode():
            encodings = {}
            for name, make in (('uniform', lambda: te.encoders.uniform_quantization(3, stochastic=False)),
                               ('rotated', lambda: te.encoders.hadamard_quantization(2))):
                tf.random.set_seed(0)  # The rotation and stochastic rounding draw from it.
                encoder = te.encoders.as_simple_encoder(make(), spec)
                encoded, _ = encoder.encode(x, encoder.initial_state())
                encodings.update({f'{name}/{k}': v.numpy() for k, v in encoded.items()})
            return encodings

        probe = simple_encoder.SimpleEncoder.__init__
        before_allowlisted = conversion.is_allowlisted(probe)
        before = encode()
        runtime.skip_autograph('tensorflow_model_optimization')
        runtime.skip_autograph('tensorflow_model_optimization')  # Idempotent.
        after = encode()
        from tensorflow.python.autograph.core import config
        rules = [r for r in config.CONVERSION_RULES
                 if getattr(r, '_prefix', None) == 'tensorflow_model_optimization']
        print(before_allowlisted, conversion.is_allowlisted(probe), len(rules),
              sorted(before) == sorted(after) and all(np.array_equal(before[k], after[k]) for k in before))
    """)
    done = subprocess.run([sys.executable, '-c', script, str(ROOT)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-4:] == ['False', 'True', '1', 'True']
