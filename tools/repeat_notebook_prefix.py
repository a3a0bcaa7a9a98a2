"""Runs a notebook's code cells, up to the first that contains a marker, in N fresh kernels; counts failures.

    .venv/bin/python tools/repeat_notebook_prefix.py notebooks/01_data_heterogeneity.ipynb \
        --until build_weighted_fed_avg --runs 25 [--prelude 'import gc; gc.set_threshold(1)']

Written for issue #14's intermittent `'TfMethodTarget' object has no attribute 'get_metrics'` in
notebook 01: each run is a new kernel (as "Restart kernel and run all" gives), runs are sequential
(the machine is shared), and every failure's exception name and message are printed, with the first
failure's traceback in full. `--prelude` runs one extra cell first, `--before-last` one just before
the last cell, and `--after` one after it whose output is printed with the run.
`tools/issue14_stale_builtin_id.py` is a `--prelude` that makes that failure happen every time
without the fix (see its docstring).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def prefix(nb: nbformat.NotebookNode, until: str) -> list[nbformat.NotebookNode]:
    """Return the notebook's code cells up to and including the first whose source contains `until`."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != 'code':
            continue
        cells.append(cell)
        if until in cell.source:
            return cells
    raise SystemExit(f'No code cell contains {until!r}.')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebook', type=Path)
    parser.add_argument('--until', required=True, help='text of the last cell to run')
    parser.add_argument('--runs', type=int, default=25)
    parser.add_argument('--prelude', default='', help='code run in a cell before the notebook')
    parser.add_argument('--before-last', default='', help='code run in a cell just before the last one')
    parser.add_argument('--after', default='', help='code run in a cell after the last one; its output is '
                        'printed with the run')
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    cells = prefix(nb, args.until)
    if args.before_last:
        cells = cells[:-1] + [nbformat.v4.new_code_cell(args.before_last)] + cells[-1:]
    if args.prelude:
        cells = [nbformat.v4.new_code_cell(args.prelude)] + cells
    if args.after:
        cells = cells + [nbformat.v4.new_code_cell(args.after)]
    failures = collections.Counter()
    for run in range(1, args.runs + 1):
        trimmed = nbformat.v4.new_notebook(cells=[nbformat.from_dict(dict(c)) for c in cells],
                                           metadata=nb.metadata)
        began = time.perf_counter()
        client = NotebookClient(trimmed, timeout=900, kernel_name='python3',
                                resources={'metadata': {'path': str(args.notebook.parent)}})
        try:
            client.execute()
            outcome = 'ok'
            if args.after:
                outcome += ': ' + ''.join(o.get('text', '') for o in trimmed.cells[-1].outputs).strip()
        except CellExecutionError as error:
            outcome = f'{error.ename}: {error.evalue}'[:200]
            if not failures:
                print(str(error)[-6000:], flush=True)  # The first failure's traceback, in full.
            failures[outcome] += 1
        print(f'run {run:3d}: {outcome} ({time.perf_counter() - began:.0f} s)', flush=True)
    print(f'{sum(failures.values())} of {args.runs} runs failed', dict(failures))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
