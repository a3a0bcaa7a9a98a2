"""`helpers` is a pip-installable package (pyproject.toml) whose wheel carries the bundled dataset."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT

DATA_IN_PACKAGE = 'helpers/_data/federated_digits.npz'


def run(args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f'{args} failed:\n{result.stdout}\n{result.stderr}'
    return result


def copy_project(destination: Path) -> Path:
    """Copy what pyproject.toml packages, so building leaves no build/ or *.egg-info in the checkout."""
    destination.mkdir()
    shutil.copy(ROOT / 'pyproject.toml', destination)
    shutil.copytree(ROOT / 'helpers', destination / 'helpers',
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return destination


def test_wheel_ships_the_data_and_loads_it_from_any_directory(tmp_path):
    project = copy_project(tmp_path / 'project')
    wheels = tmp_path / 'wheels'
    # Offline: the build backend (setuptools, wheel) is in the lock, so no build isolation is needed.
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index', '--no-build-isolation',
         '--wheel-dir', wheels, project], cwd=tmp_path)
    (wheel,) = wheels.glob('*.whl')
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        packaged = archive.read(DATA_IN_PACKAGE)
    assert packaged == (ROOT / DATA_IN_PACKAGE).read_bytes()
    assert {n.split('/')[0] for n in names if not n.startswith('fl_course_helpers-')} == {'helpers'}

    # Installed without --no-deps and without an index: the wheel declares nothing pip must fetch,
    # so a plain `pip install .` works next to the lock.
    target = tmp_path / 'site'
    run([sys.executable, '-m', 'pip', 'install', '--no-index', '--target', target, wheel], cwd=tmp_path)

    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    script = (
        'import hashlib, json, helpers, helpers.data as d\n'
        'arrays = d.load_bundled_arrays()\n'
        'print(json.dumps({"package": helpers.__file__, "path": str(d.BUNDLED_PATH),\n'
        '                  "sha256": hashlib.sha256(d.BUNDLED_PATH.read_bytes()).hexdigest(),\n'
        '                  "clients": len(arrays["client_ids"]), "digits": len(arrays["label"])}))\n')
    env = {**os.environ, 'PYTHONPATH': str(target)}
    result = run([sys.executable, '-c', script], cwd=elsewhere, env=env)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # The installed copy, not the checkout's (which the venv's editable install also offers).
    assert Path(loaded['package']).is_relative_to(target), loaded
    assert Path(loaded['path']) == target / DATA_IN_PACKAGE, loaded
    assert loaded['sha256'] == hashlib.sha256(packaged).hexdigest()
    assert (loaded['clients'], loaded['digits']) == (120, 5000)


def test_the_environment_has_helpers_as_an_editable_install(tmp_path):
    # `make` installs the project with `pip install --no-deps -e .` (no .pth file of its own): from
    # any directory, `import helpers` is the checkout's package, and its loader finds the checkout's
    # data file without depending on the current directory.
    script = ('import helpers, helpers.data as d\n'
              'print(helpers.__file__); print(d.BUNDLED_PATH); print(len(d.load_bundled_arrays()["label"]))\n')
    result = run([sys.executable, '-c', script], cwd=tmp_path,
                 env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    package, path, count = result.stdout.strip().splitlines()[-3:]
    assert Path(package) == ROOT / 'helpers' / '__init__.py'
    assert Path(path) == ROOT / DATA_IN_PACKAGE and count == '5000'
    shown = run([sys.executable, '-m', 'pip', 'show', 'fl-course-helpers'], cwd=tmp_path).stdout
    assert 'Editable project location:' in shown, shown
    site_packages = Path(sys.executable).parent.parent / 'lib'
    assert not list(site_packages.glob('python*/site-packages/fl_course.pth'))


def test_pyproject_declares_no_dependency_pip_cannot_resolve():
    import tomllib

    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    assert project['dependencies'] == []  # TFF 0.87.0 pins jaxlib 0.4.14, gone from PyPI.
    assert 'tensorflow-federated==0.87.0' in project['optional-dependencies']['tff']
    lock = (ROOT / 'requirements.txt').read_text()
    for backend in ('setuptools==', 'wheel=='):  # --no-build-isolation builds with the lock's.
        assert f'\n{backend}' in lock, backend
