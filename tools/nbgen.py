"""Writes a notebook from a list of (kind, source) cells with stable ids and trimmed metadata."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat

KERNEL = {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'}


def md(text: str) -> tuple[str, str]:
    return ('markdown', textwrap.dedent(text).strip('\n'))


def code(text: str) -> tuple[str, str]:
    return ('code', textwrap.dedent(text).strip('\n'))


def write(path: str | Path, cells: list[tuple[str, str]]) -> None:
    """Write the cells to `path` as an unexecuted notebook with ids derived from the file name."""
    path = Path(path)
    stem = re.sub(r'[^a-z0-9]+', '-', path.stem.lower())
    nb = nbformat.v4.new_notebook()
    nb.metadata = nbformat.from_dict({'kernelspec': KERNEL, 'language_info': {'name': 'python'}})
    for number, (kind, source) in enumerate(cells):
        make = nbformat.v4.new_markdown_cell if kind == 'markdown' else nbformat.v4.new_code_cell
        cell = make(source)
        cell.id = f'{stem[:40]}-{number:03d}'
        nb.cells.append(cell)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))  # the form Jupyter saves
