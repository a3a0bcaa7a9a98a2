"""Writes the "your own data" examples of notebook 08 (a CSV file and a folder of PNGs), byte for byte.

Run from the repository root with the locked environment:  python data/build_own_data_examples.py
(`--out DIR` writes them elsewhere; the default is data/own_data/, where notebook 08 reads them).

Both are made from the bundled federated digits (helpers/_data/federated_digits.npz), so they need no
download. The script is not in the `helpers` wheel: take it from the repository. It needs the course
environment (the lock and `helpers`; `helpers.data` imports TensorFlow Federated), not only Pillow:
- `digits.csv`: the training digits of writers writer_000 to writer_005, one row per digit, in the
  layout of the popular MNIST CSV files: `writer`, `label`, then `pixel0` ... `pixel783` with
  0 = background and 255 = full ink (the bundled file stores the opposite, 255 = background).
- `images/<writer>/<label>_<n>.png`: the test digits of the same six writers, 8-bit grayscale 28x28
  PNGs as scanned paper looks (255 = white background); <n> numbers one writer's digits from 0.
See data/README.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Run as a script from a checkout: import this checkout's helpers.
    sys.path.insert(0, str(ROOT))

from helpers.data import load_bundled_arrays  # noqa: E402

WRITERS = tuple(f'writer_{i:03d}' for i in range(6))
OUTPUT = ROOT / 'data' / 'own_data'
CSV_NAME, IMAGES_NAME = 'digits.csv', 'images'
PIXEL_COLUMNS = tuple(f'pixel{i}' for i in range(28 * 28))


def selected_digits(is_train: bool) -> list[tuple[str, int, np.ndarray]]:
    """Return (writer, label, uint8[28, 28] image with 255 = background) of WRITERS' digits of one split."""
    arrays = load_bundled_arrays()
    names = arrays['client_ids'][arrays['client']]
    rows = []
    for writer in WRITERS:  # Writer by writer, each in the bundled file's order.
        for index in np.flatnonzero((names == writer) & (arrays['is_train'] == is_train)):
            rows.append((writer, int(arrays['label'][index]), arrays['pixels'][index]))
    return rows


def csv_bytes() -> bytes:
    """Return the content of digits.csv: header, then one row per training digit, ink 0-255."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(('writer', 'label') + PIXEL_COLUMNS)
    for name, label, image in selected_digits(is_train=True):
        ink = 255 - image.astype(np.int64).reshape(-1)  # 0 = background, as in MNIST CSV files.
        writer.writerow([name, label] + ink.tolist())
    return buffer.getvalue().encode('ascii')


def png_bytes(image: np.ndarray) -> bytes:
    """Return one uint8[28, 28] image as an 8-bit grayscale PNG with no metadata (so it is reproducible)."""
    buffer = io.BytesIO()
    # Pillow writes no timestamp or text chunks unless asked, and zlib at a fixed level is deterministic
    # for a fixed zlib (the lock pins Pillow, whose wheel bundles its zlib).
    Image.fromarray(image, mode='L').save(buffer, format='PNG', optimize=False, compress_level=9)
    return buffer.getvalue()


def build(out_dir: str | Path = OUTPUT) -> list[Path]:
    """Write digits.csv and images/ into `out_dir` (replacing earlier PNGs); return the files written."""
    out_dir = Path(out_dir)
    images_dir = out_dir / IMAGES_NAME
    if images_dir.exists():  # Drop PNGs of an older recipe so the folder holds exactly this build.
        for old in sorted(images_dir.glob('*/*.png')):
            old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / CSV_NAME]
    written[0].write_bytes(csv_bytes())
    counters: dict[str, int] = {}
    for name, label, image in selected_digits(is_train=False):
        number = counters.get(name, 0)
        counters[name] = number + 1
        path = images_dir / name / f'{label}_{number}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(image))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(OUTPUT), help=f'folder to write into (default {OUTPUT})')
    written = build(parser.parse_args().out)
    size = sum(p.stat().st_size for p in written)
    print(f'Wrote {len(written)} files ({size / 1024:.0f} KiB) under {parser.parse_args().out}.')


if __name__ == '__main__':
    main()
