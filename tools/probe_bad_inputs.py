"""Call every row of tests/bad_inputs.py and classify how `helpers` answers it.

    python tools/probe_bad_inputs.py [--helpers DIR] [--out FILE]

--helpers DIR puts another copy of the package first on sys.path (DIR contains `helpers/`), so the
same table can be run against an older version (e.g. one extracted with `git archive`).
Outcomes: clear (ValueError/TypeError/LookupError whose message matches the row's regex, which names
the argument), unclear (any other exception, or a message that does not name the argument), silent
(returned a result: the bad input was accepted), harmless (accepted, and the row says that did no
harm). Accepted inputs (NumPy scalars) are checked too.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def classify(row, ctx) -> tuple[str, str]:
    """Return (outcome, what happened) for one row."""
    try:
        result = row.call(ctx)
    except Exception as error:  # noqa: BLE001 - classifying every exception is the point.
        text = f'{type(error).__name__}: {error}'.splitlines()[0][:160]
        named = re.search(row.match, str(error))
        if isinstance(error, (ValueError, TypeError, LookupError, OSError)) and named:
            return 'clear', text
        return 'unclear', text
    return ('harmless' if row.harmless else 'silent'), f'returned {type(result).__name__}'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--helpers', type=Path, help='directory containing the helpers package to probe')
    parser.add_argument('--out', type=Path, help='also write the table here')
    args = parser.parse_args()
    if args.helpers:
        sys.path.insert(0, str(args.helpers.resolve()))
    sys.path.insert(1 if args.helpers else 0, str(ROOT))
    import helpers
    from helpers import runtime

    runtime.setup(seed=0)
    import matplotlib
    matplotlib.use('Agg')
    from tests.bad_inputs import ACCEPTED, ROWS, Ctx

    print(f'helpers from {Path(helpers.__file__).parent}', file=sys.stderr)
    lines, counts = [], collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(Path(tmp))
        for row in ROWS:
            outcome, text = classify(row, ctx)
            counts[outcome] += 1
            lines.append(f'{outcome:8} | {row.id} | {text}')
            print(lines[-1], flush=True)
        for name, call, expected in ACCEPTED:
            try:
                got = call(ctx)
                outcome = 'accepted' if got == expected else 'silent'
                text = f'returned {got!r}'
            except Exception as error:  # noqa: BLE001
                outcome, text = 'unclear', f'{type(error).__name__}: {error}'.splitlines()[0][:160]
            counts[f'numpy-scalar {outcome}'] += 1
            lines.append(f'{outcome:8} | {name} | {text}')
            print(lines[-1], flush=True)
    outcomes = ', '.join(f'{counts[k]} {k}' for k in ('clear', 'unclear', 'silent', 'harmless'))
    accepted = ', '.join(f'{v} {k.split()[-1]}' for k, v in counts.items() if k.startswith('numpy'))
    summary = (f'{len(ROWS)} bad inputs: {outcomes}; {len(ACCEPTED)} inputs that must be accepted '
               f'(NumPy scalars, an evaluate without accuracy): {accepted}')
    print(summary)
    if args.out:
        args.out.write_text('\n'.join(lines + [summary]) + '\n')


if __name__ == '__main__':
    main()
