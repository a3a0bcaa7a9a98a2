"""Opening a committed notebook in Jupyter and saving it changes nothing (so `git pull` never conflicts).

Jupyter's server saves notebooks through its contents manager (`nbformat.write`: keys sorted, one-space
indent, sources as lists of lines, a final newline). Each committed notebook is read and saved through
jupyter_server's FileContentsManager, in a temporary copy, and must come back byte for byte.
"""

import difflib
import shutil

import pytest
from jupyter_server.services.contents.filemanager import FileContentsManager
from nbformat.sign import NotebookNotary

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_jupyter_saves_the_committed_notebook_unchanged(path, tmp_path):
    folder = tmp_path / 'notebooks'
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    manager = FileContentsManager(root_dir=str(folder))
    # Saving signs trusted notebooks; keep the signature database out of the user's Jupyter data dir.
    manager.notary = NotebookNotary(data_dir=str(tmp_path), db_file=':memory:')
    model = manager.get(path.name, content=True, type='notebook')
    manager.save({'type': 'notebook', 'format': 'json', 'content': model['content']}, path.name)
    committed, saved = path.read_text(), (folder / path.name).read_text()
    if saved != committed:
        diff = list(difflib.unified_diff(committed.splitlines(), saved.splitlines(), 'committed', 'saved',
                                         lineterm='', n=1))
        pytest.fail(f'Jupyter rewrites {path.name} on save ({len(diff)} diff lines; re-save it with '
                    f'tools/execute_notebook.py):\n' + '\n'.join(diff[:40]))
    assert (folder / path.name).read_bytes() == path.read_bytes()
