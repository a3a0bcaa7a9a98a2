"""The locked environment starts what the Quick start promises: JupyterLab and a kernel's IPython."""

import subprocess
import sys


def test_jupyterlab_app_imports():
    # `make lab` runs jupyter lab; a lock that pairs it with an incompatible dependency fails at import.
    result = subprocess.run([sys.executable, '-c', 'import jupyterlab.labapp'], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_ipython_starts_with_tffs_typing_extensions():
    # TFF pins typing-extensions 4.5; IPython 8.23+ fails to import with it and the kernel dies.
    result = subprocess.run([sys.executable, '-c', 'import IPython, ipykernel.kernelapp'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
