"""Runs the course from a hosted Colab notebook: a Python 3.11 kernel that every later cell is sent to.

Hosted Colab runs a newer Python than the 3.9-3.11 that TensorFlow Federated 0.87 has wheels for, and
a Colab notebook cannot choose another kernel. So the notebook's first code cell (`CELL`, the same in
every notebook) clones this repository and calls `start()`, which, under one folder (`home`):

1. gets a CPython 3.11 (`FL_COURSE_PYTHON`, or `uv python install 3.11`),
2. installs the lock into a virtual environment as `make` does (`--no-deps --require-hashes`, then
   this project editable without resolving), once: a stamp keyed by the lock skips it next time,
3. starts an IPython kernel in it with `jupyter_client` and registers an IPython input transformer
   that replaces every later cell with a call that runs the cell's text in that kernel and relays
   what it sends back: streams (as they come, so progress bars rewrite their line), displays, the
   result, and errors with the kernel's own traceback.

Interrupting the Colab cell interrupts the forwarded cell (the kernel runs in a session of its own,
so only this forwarding reaches it, and TFF's worker, in a process group of its own, see
helpers/runtime.py, survives). The kernel exits within a second when the Colab kernel dies.

Existing proxies (jupyter-kernel-proxy and similar) are kernels of their own, which a hosted Colab
notebook cannot select, hence this small in-kernel forwarder. It runs in Colab's kernel, so it uses
only the standard library, IPython and jupyter_client (every Colab runtime has both) and imports
nothing from the lock. The environment variables FL_COURSE_SIMULATE_COLAB, FL_COURSE_PYTHON,
FL_COURSE_REPO and FL_COURSE_COLAB_HOME are the interface tests/test_colab.py simulates Colab with.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# The published repository: the notebooks' Colab and Binder badges and the set-up cell use it.
REPOSITORY = 'tff-course/federated-learning-with-tff'
REPOSITORY_URL = f'https://github.com/{REPOSITORY}'
COLAB_HOME = '/content/fl-course'
KERNEL_NAME = 'fl-course-py311'
# The first line of the set-up cell: cells that start with it run in Colab's own kernel, never forwarded.
MARKER = '# Colab set-up:'

CELL = f'''{MARKER} on Google Colab, this runs the course in Python 3.11 (the first run takes minutes;
# see "Colab" in README.md). Anywhere else it does nothing.
import os, sys
if 'google.colab' in sys.modules or os.environ.get('FL_COURSE_SIMULATE_COLAB') == '1':
    _home = os.environ.get('FL_COURSE_COLAB_HOME', '{COLAB_HOME}')
    if not os.path.isdir(os.path.join(_home, 'repo', '.git')):
        import subprocess
        subprocess.run(['git', 'clone', '--quiet', '--depth', '1', '--no-local',
                        os.environ.get('FL_COURSE_REPO', '{REPOSITORY_URL}'),
                        os.path.join(_home, 'repo')], check=True)
    sys.path.insert(0, os.path.join(_home, 'repo', 'tools'))
    import colab_bridge
    colab_bridge.start(_home)'''

# Run by the 3.11 interpreter as the kernel: like ipykernel_launcher, plus a thread that ends the
# kernel when its parent (Colab's kernel) is gone. jupyter_client starts kernels in a session of
# their own, so nothing else would stop it when Colab restarts its runtime.
KERNEL_LAUNCHER = '''import os, sys, threading, time
if sys.path and sys.path[0] == '':
    del sys.path[0]
parent = os.getppid()
def _watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=_watch_parent, daemon=True).start()
from ipykernel import kernelapp
kernelapp.launch_new_instance()
'''
# Variables that would point the 3.11 kernel at Colab's own packages or backends.
DROPPED_ENV = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'VIRTUAL_ENV', 'MPLBACKEND',
               'FL_COURSE_SIMULATE_COLAB', 'JPY_PARENT_PID')

_bridge: Bridge | None = None


def on_colab() -> bool:
    """Return whether this kernel is Colab's, or a simulation of it (FL_COURSE_SIMULATE_COLAB=1)."""
    return 'google.colab' in sys.modules or os.environ.get('FL_COURSE_SIMULATE_COLAB') == '1'


class SetupError(RuntimeError):
    """A set-up step failed; the message says what to do."""


class RemoteError(Exception):
    """An error raised by a forwarded cell, shown with the course kernel's own traceback."""

    def __init__(self, ename: str, evalue: str, traceback: list[str]):
        super().__init__(evalue)
        self.ename, self.evalue, self.traceback_lines = ename, evalue, traceback

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of the bridge's own frames.
        return self.traceback_lines


_error_classes: dict[str, type] = {}


def _remote_error(ename: str, evalue: str, traceback: list[str]) -> RemoteError:
    """Return a RemoteError whose class carries the remote name, so Colab reports e.g. ZeroDivisionError."""
    if ename not in _error_classes:
        _error_classes[ename] = type(ename if ename.isidentifier() else 'RemoteError', (RemoteError,), {})
    return _error_classes[ename](ename, evalue, traceback)


class RemoteResult:
    """A forwarded cell's result: IPython displays its MIME bundle as this cell's Out[n]."""

    def __init__(self, data: dict, metadata: dict):
        self.data, self.metadata = data, metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return self.data.get('text/plain', '')


def _run(args: list[str], what: str, env: dict | None = None, timeout: float = 3600) -> str:
    """Run a set-up command; on failure raise a SetupError with its output and what to do."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SetupError(f'Colab set-up could not {what}: {error}. Run the set-up cell again; if it '
                         'fails again, use a local runtime (see "Colab" in README.md).') from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise SetupError(f'Colab set-up could not {what} (exit code {result.returncode}):\n{output}\n'
                         'Run the set-up cell again; if it fails again, choose Runtime > "Disconnect '
                         'and delete runtime" and Run all, or use a local runtime (see "Colab" in '
                         'README.md).')
    return result.stdout


def _say(message: str) -> None:
    print(message, flush=True)


def find_python(home: Path) -> str:
    """Return a CPython 3.11: FL_COURSE_PYTHON, else one that uv installs under `home`."""
    given = os.environ.get('FL_COURSE_PYTHON')
    if given:
        if not shutil.which(given):
            raise SetupError(f'FL_COURSE_PYTHON={given!r} is not an executable; set it to the path '
                             'of a python3.11, or unset it to let uv install one.')
        return given
    env = dict(os.environ, UV_PYTHON_INSTALL_DIR=str(home / 'python'), UV_CACHE_DIR=str(home / 'uv-cache'))
    uv = shutil.which('uv')
    if uv is None:
        _say('  installing uv from PyPI ...')
        _run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-cache-dir', '--target',
              str(home / 'uv'), 'uv'], 'install uv')
        uv = str(home / 'uv' / 'bin' / 'uv')
    _say('  getting CPython 3.11 with `uv python install 3.11` ...')
    _run([uv, 'python', 'install', '3.11'], 'download CPython 3.11 with uv', env=env)
    return _run([uv, 'python', 'find', '3.11'], 'find uv\'s CPython 3.11',
                env=env).strip()


def lock_key(repo: Path) -> str:
    """Return a key that changes whenever what the environment installs changes."""
    digest = hashlib.sha256()
    for name in ('requirements.txt', 'pyproject.toml'):
        digest.update((repo / name).read_bytes())
    return digest.hexdigest()[:16]


def install_environment(home: Path, repo: Path) -> Path:
    """Install the lock and `helpers` into `home`/venv as `make` does, unless done already; return its python."""
    venv = home / 'venv'
    python = venv / 'bin' / 'python'
    stamp = venv / f'.installed-{lock_key(repo)}'
    if stamp.exists():
        return python
    if not python.exists():
        interpreter = find_python(home)
        version = _run([interpreter, '-c', 'import sys; print(sys.version_info[:2] == (3, 11))'],
                       f'run {interpreter}').strip()
        if version != 'True':
            raise SetupError(f'{interpreter} is not CPython 3.11, which this course needs; set '
                             'FL_COURSE_PYTHON to a python3.11 or unset it.')
        _run([interpreter, '-m', 'venv', str(venv)], 'create a virtual environment')
    _say('  installing TensorFlow Federated 0.87 and the course\'s other packages from the lock '
         '(about 820 MB of wheels) ...')
    pip = [str(python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-cache-dir',
           '--no-deps']
    _run([*pip, '--require-hashes', '-r', str(repo / 'requirements.txt')], 'install requirements.txt')
    _run([*pip, '--no-build-isolation', '-e', str(repo)], 'install the course\'s helpers')
    for old in venv.glob('.installed-*'):
        old.unlink()
    stamp.touch()
    return python


def write_kernelspec(home: Path, python: Path | str) -> Path:
    """Write the kernel spec of the course's kernel under `home`; return the folder of kernel specs."""
    kernels = home / 'kernels'
    folder = kernels / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {'argv': [str(python), '-c', KERNEL_LAUNCHER, '-f', '{connection_file}'],
            'display_name': 'Python 3.11 (fl-course)', 'language': 'python',
            'interrupt_mode': 'signal'}
    (folder / 'kernel.json').write_text(json.dumps(spec, indent=1))
    return kernels


class Bridge:
    """A Python 3.11 kernel, and the input transformer that sends every cell of this shell to it."""

    def __init__(self, kernels: Path, cwd: Path | str, startup_timeout: float = 120):
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        self.manager = KernelManager(kernel_name=KERNEL_NAME,
                                     kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as error:
            self.shutdown()
            raise SetupError(f'The Python 3.11 kernel did not start: {error}. Run the set-up cell '
                             'again; if it fails again, choose Runtime > "Disconnect and delete '
                             'runtime" and Run all.') from None
        self.shell = None

    def attach(self, shell) -> None:
        """Forward every later cell of `shell` (Colab's IPython) to the course kernel."""
        self.shell = shell
        shell.user_ns['_fl_course_bridge'] = self
        # First of the clean-up transformers: it sees the cell's text before IPython parses magics.
        shell.input_transformers_cleanup.insert(0, self.transform)

    def detach(self) -> None:
        """Stop forwarding cells."""
        if self.shell is not None and self.transform in self.shell.input_transformers_cleanup:
            self.shell.input_transformers_cleanup.remove(self.transform)
            self.shell.user_ns.pop('_fl_course_bridge', None)

    def transform(self, lines: list[str]) -> list[str]:
        """Replace a cell's lines by a call that runs them in the course kernel (set-up cells stay)."""
        code = ''.join(lines)
        if code.lstrip().startswith(MARKER) or not code.strip():
            return lines
        return [f'_fl_course_bridge.run({code!r})\n']

    def run(self, code: str):
        """Run `code` in the course kernel, relaying its output; return its result or raise its error."""
        if not self.manager.is_alive():
            raise SetupError('The Python 3.11 kernel has stopped (out of memory?). Run the set-up '
                             'cell again to start a new one, then the cells you need.')
        self._result, self._interrupted_at, self._idle, self._stop = None, None, False, False
        # Colab's stop button sends SIGINT. Raised as KeyboardInterrupt inside jupyter_client's
        # receive (asyncio-based in jupyter_client 8), it can lose the next message, so while a cell
        # is forwarded SIGINT only sets a flag, and the loop below passes the interrupt on.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main else None
        try:
            # stop_on_error=False: by default a kernel whose cell failed skips ("aborts") the
            # execute requests that reach it in the next moments, replying 'aborted' without running
            # them; the bridge raises as soon as the error arrives, so the next cell often came that
            # soon (13 of 30 cells right after an error did not run, in tests/test_colab.py's kernels).
            # Colab itself stops Run all at the failing cell, so nothing else needs aborting.
            msg_id = self.client.execute(code, allow_stdin=False, stop_on_error=False)
            while not self._idle:
                self._relay_next(msg_id)
                if self._stop and self._interrupted_at is None:
                    self.manager.interrupt_kernel()
                    self._interrupted_at = time.monotonic()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self._check_not_aborted(msg_id)
        return self._result

    def _check_not_aborted(self, msg_id: str) -> None:
        """Raise if the course kernel answered `msg_id` with 'aborted' (it did not run the cell)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                reply = self.client.get_shell_msg(timeout=0.5)
            except queue.Empty:
                continue
            if reply['parent_header'].get('msg_id') != msg_id:
                continue  # The reply to an earlier cell that ended in an error.
            if reply['content'].get('status') == 'aborted':
                raise SetupError('The Python 3.11 kernel skipped this cell without running it; '
                                 'run the cell again.')
            return

    def _on_sigint(self, signum, frame) -> None:
        """Ask the loop in `run` to interrupt the course kernel; a second stop gives up waiting."""
        if self._stop:
            raise KeyboardInterrupt
        self._stop = True

    def _relay_next(self, msg_id: str) -> None:
        """Relay the course kernel's next message about `msg_id`; raise its error if it is one."""
        try:
            msg = self.client.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            if not self.manager.is_alive():
                raise SetupError('The Python 3.11 kernel died while running this cell (out of '
                                 'memory?). Run the set-up cell again, then the cells you need.') from None
            if self._interrupted_at and time.monotonic() - self._interrupted_at > 30:
                raise KeyboardInterrupt('The Python 3.11 kernel did not stop within 30 s of the '
                                        'interrupt; run the set-up cell again if it stays busy.') from None
            return
        if msg['parent_header'].get('msg_id') != msg_id:
            return
        kind, content = msg['msg_type'], msg['content']
        if kind == 'status':
            self._idle = content['execution_state'] == 'idle'
        elif kind == 'stream':
            stream = sys.stdout if content['name'] == 'stdout' else sys.stderr
            stream.write(content['text'])
            stream.flush()  # Keeps stdout and stderr in the order the kernel sent them.
        elif kind in ('display_data', 'update_display_data'):
            self._publish(content, update=kind == 'update_display_data')
        elif kind == 'clear_output':
            from IPython.display import clear_output
            clear_output(wait=content.get('wait', False))
        elif kind == 'execute_result':
            self._result = RemoteResult(content['data'], content.get('metadata', {}))
        elif kind == 'error':
            sys.stdout.flush()
            sys.stderr.flush()
            raise _remote_error(content['ename'], content['evalue'], content['traceback'])

    @staticmethod
    def _publish(content: dict, update: bool) -> None:
        """Show a display message of the course kernel in this notebook."""
        from IPython.display import publish_display_data

        sys.stdout.flush()
        sys.stderr.flush()
        publish_display_data(content['data'], content.get('metadata', {}),
                             transient=content.get('transient') or None, update=update)

    def shutdown(self) -> None:
        """Stop forwarding and stop the course kernel."""
        self.detach()
        try:
            self.client.stop_channels()
        except AttributeError:
            pass
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=True)


def connect(kernels: Path, cwd: Path | str) -> Bridge:
    """Start the course kernel from the specs in `kernels` and forward this shell's later cells to it."""
    global _bridge
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise SetupError('The Colab set-up runs inside a notebook kernel (IPython); this is plain Python.')
    if _bridge is not None:
        _bridge.shutdown()
    _bridge = Bridge(kernels, cwd)
    _bridge.attach(shell)
    import atexit
    atexit.register(_bridge.shutdown)
    return _bridge


def start(home: str | os.PathLike) -> None:
    """Set the course up under `home` (once per Colab VM) and forward every later cell to Python 3.11."""
    if not isinstance(home, (str, os.PathLike)) or not str(home):
        raise TypeError(f'home must be a folder path, got {home!r}; pass FL_COURSE_COLAB_HOME or '
                        f'{COLAB_HOME!r}.')
    home = Path(home).resolve()
    repo = home / 'repo'
    if not (repo / 'requirements.txt').exists():
        raise SetupError(f'{repo} does not hold the course (no requirements.txt); delete {home} and '
                         'run the set-up cell again.')
    if _bridge is not None and _bridge.manager.is_alive():
        _say('The course kernel (Python 3.11) is already running: every later cell runs in it.')
        return
    started = time.monotonic()
    fresh = not any((home / 'venv').glob('.installed-*'))
    _say('Colab set-up: running this course in Python 3.11, which TensorFlow Federated 0.87 needs.' +
         (' This first run downloads and installs about 820 MB of packages, which takes several minutes; '
          'later runs take seconds.' if fresh else ''))
    python = install_environment(home, repo)
    _say('  starting the Python 3.11 kernel ...')
    connect(write_kernelspec(home, python), repo / 'notebooks')
    _say(f'Ready after {time.monotonic() - started:.0f} s: every later cell runs in Python 3.11 in '
         f'{home}. Restarting the Colab session stops it; then run this cell again.')
