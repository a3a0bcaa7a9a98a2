"""Re-executes notebooks top to bottom in a fresh kernel and saves them normalised.

    .venv/bin/python tools/execute_notebook.py notebooks/01_data_heterogeneity.ipynb [...]

Normalised: keys sorted, one-space indentation, notebook metadata trimmed to kernelspec and
language, cell metadata trimmed to tags, so that diffs show only real changes. Prints each
notebook's wall time (including TFF's import).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KEEP_CELL_METADATA = ('tags',)


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


def normalise(nb: nbformat.NotebookNode) -> dict:
    """Return the notebook as a plain dict with trimmed metadata and merged progress-bar output."""
    nb.metadata = {'kernelspec': nb.metadata.get('kernelspec', {}),
                   'language_info': {'name': 'python'}}
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        if cell.cell_type == 'code':
            cell.outputs = merge_streams(cell.outputs)
    return json.loads(json.dumps(nb))


def execute(path: Path, timeout_s: int = 900) -> float:
    """Execute the notebook at `path` in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name='python3',
                   resources={'metadata': {'path': str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    path.write_text(json.dumps(normalise(nb), indent=1, sort_keys=True, ensure_ascii=False) + '\n')
    return elapsed


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(f'{name}: executed in {execute(Path(name)):.1f} s')
