"""Simulated Colab: notebook 01 with the set-up cell, run by a kernel with Colab's Python and packages.

Hosted Colab cannot be reached from here, nor can uv download a Python build, so this simulates both.
The front kernel runs in a Python 3.13 virtual environment holding only the kernel-side packages of
the hosted Colab runtime at Colab's versions (FRONT_PACKAGES) and nbclient, which drives it as Colab's
notebook would. The set-up cell is told by the variables tools/colab_bridge.py reads: it is on Colab
(FL_COURSE_SIMULATE_COLAB=1), uses this machine's CPython 3.11 (FL_COURSE_PYTHON) instead of uv's,
clones a snapshot of this checkout, uncommitted changes included (FL_COURSE_REPO), and works under a
cached folder (FL_COURSE_COLAB_HOME) whose 3.11 environment is kept between runs, keyed by the lock.
When that environment is built, pip reads the lock's wheels from the Binder test's wheelhouse instead
of PyPI (PIP_NO_INDEX, PIP_FIND_LINKS), so CI downloads them at most once.
Both environments live in ~/.cache/fl-course-tests/ (FL_COURSE_TEST_CACHE), like the Binder test's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT

# Minutes even with both environments cached (notebook 01 itself runs for minutes): `make test` runs
# it, `make test-quick` does not.
pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / 'tools'))
import colab_bridge  # noqa: E402
from execute_notebook import merge_streams  # noqa: E402
from insert_colab_cell import insert_cell  # noqa: E402
from tests.test_binder import wheelhouse  # noqa: E402

# Hosted Colab's kernel side, at the versions Colab publishes for its runtime (IPython, ipykernel,
# jupyter_client); tornado, pyzmq and the rest are what pip resolves with these pins. nbclient
# stands in for Colab's notebook.
# Hosted Colab's Python since August 2026; FL_COURSE_TEST_COLAB_PYTHON=3.12 simulates the one before.
FRONT_PYTHON = os.environ.get('FL_COURSE_TEST_COLAB_PYTHON', '3.13')
FRONT_PACKAGES = ('ipython==7.34.0', 'ipykernel==6.17.1', 'jupyter_client==7.4.9', 'nbclient==0.11.0')
NOTEBOOK = ROOT / 'notebooks' / '01_data_heterogeneity.ipynb'
CACHE = Path(os.environ.get('FL_COURSE_TEST_CACHE', Path.home() / '.cache' / 'fl-course-tests'))
NOT_COPIED = shutil.ignore_patterns('.git', '.venv', '__pycache__', '*.pyc', '.ipynb_checkpoints',
                                    '.pytest_cache', 'build', 'dist', '*.egg-info', 'runs')
DRIVER = '''import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=1800, kernel_name='colab-front', record_timing=True,
                   resources={'metadata': {'path': sys.argv[3]}}).execute()
finally:
    nbformat.write(nb, sys.argv[2])
'''


def run(args, timeout=1800, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    assert result.returncode == 0, f'{args} failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}'
    return result


def python(version: str) -> str:
    """Return a CPython `version` interpreter: pyenv's (CI and these machines), else one on PATH."""
    candidates = []
    if shutil.which('pyenv'):
        prefix = subprocess.run(['pyenv', 'prefix', version], capture_output=True, text=True)
        if prefix.returncode == 0:
            candidates.append(str(Path(prefix.stdout.strip().splitlines()[-1]) / 'bin' / f'python{version}'))
    candidates.append(shutil.which(f'python{version}'))  # pyenv's shim fails unless it is selected.
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, '--version'], capture_output=True).returncode == 0:
            return candidate
    pytest.fail(f'The simulated Colab test needs python{version} (Colab\'s Python): install it, '
                f'e.g. `pyenv install {version}`.')


def front_environment() -> Path:
    """Return a Python 3.13 venv with Colab's kernel-side packages and nbclient, built once."""
    key = hashlib.sha256(' '.join((FRONT_PYTHON, *FRONT_PACKAGES)).encode()).hexdigest()[:16]
    venv = CACHE / f'colab-front-{key}'
    if not (venv / '.complete').exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([python(FRONT_PYTHON), '-m', 'venv', venv])
        run([venv / 'bin' / 'python', '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
             *FRONT_PACKAGES])
        (venv / '.complete').touch()
    return venv


def snapshot(destination: Path) -> Path:
    """Return a git repository holding this checkout as it is now (what the set-up cell clones)."""
    shutil.copytree(ROOT, destination, ignore=NOT_COPIED)
    git = ['git', '-C', destination, '-c', 'user.name=test', '-c', 'user.email=test@example.invalid']
    run([*git, 'init', '--quiet'])
    run([*git, 'add', '--all'])
    run([*git, 'commit', '--quiet', '--no-verify', '-m', 'snapshot'])
    return destination


def course_processes(home: Path) -> list[str]:
    """Return the command lines of running processes started from `home`'s environment."""
    found = []
    for cmdline in Path('/proc').glob('[0-9]*/cmdline'):
        try:
            text = cmdline.read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if str(home / 'venv') in text:
            found.append(text)
    return found


def outputs_nbval_compares(cell) -> list[tuple[str, str]]:
    """Return a cell's text outputs as nbval compares them: merged streams and plain-text results."""
    texts = []
    for output in merge_streams([dict(o) for o in cell.outputs]):
        if output['output_type'] == 'stream':
            texts.append((output['name'], output['text']))
        elif output['output_type'] == 'execute_result':
            texts.append(('result', output['data'].get('text/plain', '')))
    return texts


def images(cell) -> list[bytes]:
    return [base64.b64decode(o['data']['image/png']) for o in cell.outputs
            if o.get('output_type') in ('display_data', 'execute_result') and 'image/png' in o['data']]


def seconds(cell) -> float:
    """Return how long a cell ran, from nbclient's timing metadata."""
    timing = cell.metadata['execution']
    start, end = (datetime.fromisoformat(timing[k]) for k in ('iopub.execute_input', 'shell.execute_reply'))
    return (end - start).total_seconds()


@pytest.fixture(scope='module')
def simulated_run(tmp_path_factory):
    """Run notebook 01 with the set-up cell (and the cell again at the end) in the simulated Colab."""
    base = tmp_path_factory.mktemp('colab')
    front = front_environment()
    home = CACHE / f'colab-home-{colab_bridge.lock_key(ROOT)}'
    shutil.rmtree(home / 'repo', ignore_errors=True)  # The environment stays; the clone is new.
    warm = any((home / 'venv').glob('.installed-*'))
    kernels = base / 'jupyter' / 'kernels' / 'colab-front'
    kernels.mkdir(parents=True)
    (kernels / 'kernel.json').write_text(json.dumps({
        'argv': [str(front / 'bin' / 'python'), '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Colab (simulated)', 'language': 'python'}))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    insert_cell(nb)
    nb.cells.append(nbformat.v4.new_code_cell(colab_bridge.CELL))  # Run again: must not reinstall.
    source, executed = base / 'in.ipynb', base / 'out.ipynb'
    nbformat.write(nb, source)
    env = {k: v for k, v in os.environ.items()
           if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'JUPYTER_PATH') and not k.startswith('FL_COURSE_')}
    if not warm:  # The lock's wheels from the Binder test's wheelhouse: no second 800 MB download.
        env.update(PIP_NO_INDEX='1', PIP_FIND_LINKS=str(wheelhouse()))
    env.update(FL_COURSE_SIMULATE_COLAB='1', FL_COURSE_PYTHON=getattr(sys, '_base_executable', sys.executable),
               FL_COURSE_REPO=str(snapshot(base / 'repo')), FL_COURSE_COLAB_HOME=str(home),
               JUPYTER_PATH=str(base / 'jupyter'))
    started = time.monotonic()
    result = subprocess.run([front / 'bin' / 'python', '-c', DRIVER, source, executed, base],
                            capture_output=True, text=True, timeout=3600, env=env)
    wall = time.monotonic() - started
    time.sleep(1)
    return {'returncode': result.returncode, 'stderr': result.stderr[-8000:], 'wall': wall,
            'warm': warm, 'home': home, 'nb': nbformat.read(executed, as_version=4),
            'left': course_processes(home)}


def test_every_cell_runs(simulated_run):
    assert simulated_run['returncode'] == 0, simulated_run['stderr']
    cells = [c for c in simulated_run['nb'].cells if c.cell_type == 'code']
    assert all(c.execution_count is not None for c in cells)
    assert not [o for c in cells for o in c.outputs if o['output_type'] == 'error']


def test_the_set_up_cell_reports_and_the_second_run_reinstalls_nothing(simulated_run):
    cells = [c for c in simulated_run['nb'].cells if c.cell_type == 'code']
    first, again = cells[0], cells[-1]
    text = ''.join(o.get('text', '') for o in first.outputs)
    assert 'Ready after' in text, text
    assert ('installing' in text) != simulated_run['warm'], 'installs only when the cache is cold'
    assert 'already running' in ''.join(o.get('text', '') for o in again.outputs)
    assert seconds(again) < 1
    print(f"\nset-up cell: {seconds(first):.1f} s ({'warm' if simulated_run['warm'] else 'cold'} "
          f"environment); whole notebook: {simulated_run['wall']:.0f} s")


def test_cells_run_in_python_311_with_tff(simulated_run):
    setup = [c for c in simulated_run['nb'].cells if c.cell_type == 'code'][1]
    text = ''.join(o.get('text', '') for o in setup.outputs)
    assert re.search(r'^Python 3\.11\.\d+, TensorFlow 2\.14\.1, TFF 0\.87\.0$', text, re.M), text


def test_plots_and_checked_outputs_match_the_committed_notebook(simulated_run):
    # The committed notebook starts with the set-up cell itself; compare the cells after it.
    committed = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == 'code'
                 and not c.source.startswith(colab_bridge.MARKER)]
    ran = [c for c in simulated_run['nb'].cells if c.cell_type == 'code'][1:-1]
    assert [c.source for c in ran] == [c.source for c in committed]
    for before, after in zip(committed, ran):
        assert len(images(after)) == len(images(before)), f'plots of cell {before.source[:60]!r}'
        assert all(png.startswith(b'\x89PNG\r\n\x1a\n') for png in images(after))
        if '# NBVAL_CHECK_OUTPUT' in before.source:
            assert outputs_nbval_compares(after) == outputs_nbval_compares(before), before.source[:60]


def test_no_course_process_is_left_behind(simulated_run):
    assert simulated_run['left'] == []
