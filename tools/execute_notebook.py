"""Re-executes notebooks top to bottom in a fresh kernel and saves them normalised.

    .venv/bin/python tools/execute_notebook.py notebooks/01_data_heterogeneity.ipynb [...]

Saved exactly as Jupyter's server saves a notebook (`nbformat.write`: keys sorted, one-space
indentation, sources as lists of lines, a final newline), so that opening a committed notebook in
JupyterLab and saving it changes nothing. Notebook metadata keeps the kernelspec and the
`language_info` the kernel reported; cell metadata keeps the keys Jupyter itself defines (tags,
hidden sources and outputs, ...) and drops execution timings. Progress-bar output is merged as a
terminal shows it. Prints each notebook's wall time (including TFF's import).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# The cell metadata keys of the nbformat 4 schema that Jupyter front ends read (not 'execution',
# whose timestamps would change on every run).
KEEP_CELL_METADATA = ('tags', 'jupyter', 'collapsed', 'scrolled', 'editable', 'deletable', 'name')


def collapse_carriage_returns(text: str) -> str:
    """Return `text` as a terminal shows it: on each line, only what follows the last carriage return."""
    return '\n'.join(line.rsplit('\r', 1)[-1] for line in text.split('\n'))


def merge_streams(outputs: list) -> list:
    """Return outputs with consecutive stream outputs of the same name merged, as Jupyter shows them."""
    merged = []
    for output in outputs:
        if (output.get('output_type') == 'stream' and merged
                and merged[-1].get('output_type') == 'stream' and merged[-1]['name'] == output['name']):
            merged[-1]['text'] += output['text']
        else:
            merged.append(output)
    for output in merged:
        if output.get('output_type') == 'stream':
            output['text'] = collapse_carriage_returns(output['text'])
    return [o for o in merged if o.get('output_type') != 'stream' or o['text'].strip()]


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the notebook with trimmed metadata and merged progress-bar output."""
    nb.metadata = nbformat.from_dict({'kernelspec': nb.metadata.get('kernelspec', {}),
                                      'language_info': nb.metadata.get('language_info',
                                                                       {'name': 'python'})})
    for cell in nb.cells:
        cell.metadata = nbformat.from_dict(
            {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA})
        if cell.cell_type == 'code':
            cell.outputs = merge_streams(cell.outputs)
    return nb


def save(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write `nb` to `path` byte for byte as jupyter_server's contents manager would save it."""
    nbformat.validate(nb)
    nbformat.write(nb, str(path), version=nbformat.NO_CONVERT)  # ends the file with a newline


def execute(path: Path, timeout_s: int = 900) -> float:
    """Execute the notebook at `path` in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name='python3', record_timing=False,
                   resources={'metadata': {'path': str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    save(normalise(nb), path)
    return elapsed


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f'{name}: executed in {execute(Path(name)):.1f} s')
