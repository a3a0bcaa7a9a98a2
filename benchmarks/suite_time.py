"""Times every notebook the way nbval runs it: headless, top to bottom, a fresh kernel each.

    .venv/bin/python benchmarks/suite_time.py [notebooks/NN_slug.ipynb ...]

Per notebook it reports the wall time (kernel start to last cell), the part spent in the setup cell
(which imports TensorFlow Federated), and the peak resident memory of the kernel and of the TFF worker
process it started (VmHWM from /proc). The notebooks are not modified. The last line is a JSON object
with total_s and a per-notebook map.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
import json, os
def _peak_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmHWM'))
from helpers import runtime as _runtime
print('SUITE_TIME_PROBE', json.dumps({'kernel_kib': _peak_kib(os.getpid()),
      'worker_kib': sum(_peak_kib(p) for p in _runtime.worker_pids())}))
'''


def _seconds(cell, start_key: str, end_key: str) -> float:
    timing = cell.metadata.get('execution', {})
    start, end = timing.get(start_key), timing.get(end_key)
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00'))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: Path) -> dict:
    """Execute a copy of the notebook at `path`; return its timings and peak memory."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=900, kernel_name='python3', record_timing=True,
                            resources={'metadata': {'path': str(path.parent)}})
    began = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - began
    # The setup cell is the one that calls runtime.setup (the Colab set-up cell, a no-op here, comes first).
    setup = next(c for c in nb.cells if c.cell_type == 'code' and 'runtime.setup(' in c.source)
    probe = next(o for o in nb.cells[-1].outputs if o.get('name') == 'stdout')['text']
    memory = json.loads(probe.split('SUITE_TIME_PROBE', 1)[1])
    return {'wall_s': round(wall, 1),
            'setup_cell_s': round(_seconds(setup, 'iopub.execute_input', 'shell.execute_reply'), 1),
            'kernel_peak_mib': round(memory['kernel_kib'] / 1024),
            'worker_peak_mib': round(memory['worker_kib'] / 1024)}


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / 'notebooks').glob('[0-9][0-9]_*.ipynb'))
    results = {}
    print(f"{'notebook':40s} {'wall s':>7s} {'setup s':>8s} {'beyond s':>9s} {'kernel MiB':>11s} "
          f"{'worker MiB':>11s}")
    for path in paths:
        r = results[path.name] = time_notebook(path.resolve())
        print(f"{path.name:40s} {r['wall_s']:7.1f} {r['setup_cell_s']:8.1f} "
              f"{r['wall_s'] - r['setup_cell_s']:9.1f} {r['kernel_peak_mib']:11d} {r['worker_peak_mib']:11d}",
              flush=True)
    total = round(sum(r['wall_s'] for r in results.values()), 1)
    print(f'total: {total:.1f} s for {len(results)} notebooks')
    print(json.dumps({'total_s': total, 'notebooks': results}))


if __name__ == '__main__':
    main()
