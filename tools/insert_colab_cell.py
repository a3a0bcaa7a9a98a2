"""Puts the Colab set-up cell (colab_bridge.CELL) first among a notebook's code cells, or updates it.

    .venv/bin/python tools/insert_colab_cell.py notebooks/*.ipynb

The cell goes right before the Setup cell, under the "## Setup" heading. A notebook that has it
already gets its text replaced by the current one. Re-execute the notebook afterwards
(tools/execute_notebook.py): the new cell has no execution count until then.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_bridge import CELL, MARKER  # noqa: E402
from execute_notebook import save  # noqa: E402


def insert_cell(nb: nbformat.NotebookNode) -> bool:
    """Put CELL first among `nb`'s code cells, or update it; return whether `nb` changed."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code']
    if not code:
        raise ValueError('the notebook has no code cell; the set-up cell goes before its Setup cell.')
    first = nb.cells[code[0]]
    if first.source.lstrip().startswith(MARKER):
        if first.source == CELL:
            return False
        first.source = CELL
        return True
    nb.cells.insert(code[0], nbformat.v4.new_code_cell(CELL))
    return True


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        nb = nbformat.read(path, as_version=4)
        if insert_cell(nb):
            save(nb, path)
            print(f'{path}: set-up cell written; re-execute it with tools/execute_notebook.py')
        else:
            print(f'{path}: set-up cell already current')


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
