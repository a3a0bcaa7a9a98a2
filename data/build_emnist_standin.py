"""Builds a stand-in for TFF's federated EMNIST cache file, `emnist_all.sqlite`, from the bundled digits.

Run from the repository root with the locked environment:

    python data/build_emnist_standin.py DIR               # 400 writers, about 45,000 digits (the tests)
    python data/build_emnist_standin.py DIR --full-size   # 3,383 writers, real EMNIST's digit counts

Then `FL_COURSE_EMNIST_DIR=DIR FL_COURSE_DATA=emnist` makes every notebook read it through
`tff.simulation.datasets.emnist.load_data()`, exactly as it reads the real file.

Real EMNIST cannot be downloaded offline, so the tests exercise the real code path on this file.
It has the format TFF reads (tensorflow_federated/python/simulation/datasets/emnist.py and
sql_client_data.py in TFF 0.87): a SQLite database with the tables TFF's own
`sql_client_data_utils.save_to_sql_client_data` creates,

    examples(split_name TEXT, client_id TEXT, serialized_example_proto BLOB)
    client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)

with the splits `digits_only_train` and `digits_only_test`, one serialized `tf.train.Example` per
digit with the features `pixels` (784 floats, 1.0 = background) and `label` (one int64), and
EMNIST-style writer ids such as `f0123_45`. Every writer has at least one digit in each split, as
TFF's documentation of load_data says of real EMNIST.

The data design was chosen up front, not fitted to anything (the notebooks' results were not looked
at): each writer's number of digits is 2 + Gamma(shape 1.5) with the mean of real EMNIST, (341,873 +
40,832) / 3,383, about 113 digits, so sizes range from a few to several hundred; each digit goes to
the test split with real EMNIST's test fraction, 40,832 / 382,705; each writer draws its labels from
its own Dirichlet(2) mix over the ten digits (mild label skew) and, for each label, a digit of that
label from the 5,000 bundled digits, with replacement. The full-size mode scales the sizes so the
totals are exactly real EMNIST's 341,873 train and 40,832 test digits (numbers from load_data's
docstring). No index is created, as TFF's own writer creates none.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SEED = 20261130
FILE_NAME = 'emnist_all.sqlite'  # The name TFF's load_data looks for in its cache folder.
TRAIN_SPLIT, TEST_SPLIT = 'digits_only_train', 'digits_only_test'
# Real federated EMNIST digits, from the docstring of tff.simulation.datasets.emnist.load_data.
REAL_WRITERS, REAL_TRAIN, REAL_TEST = 3383, 341_873, 40_832
MEAN_DIGITS = (REAL_TRAIN + REAL_TEST) / REAL_WRITERS
TEST_FRACTION = REAL_TEST / (REAL_TRAIN + REAL_TEST)
SIZE_SHAPE = 1.5  # Gamma shape of the digits per writer: a long right tail, a few writers tiny.
MIN_DIGITS = 2  # One per split at least.
LABEL_ALPHA = 2.0
DEFAULT_WRITERS = 400


def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return the bundled digits as float32 pixels in [0, 1] (1.0 = background) and int64 labels."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from helpers import data  # The bundled file, checked against its SHA-256.

    arrays = data.load_bundled_arrays()
    return arrays['pixels'].astype(np.float32) / 255.0, arrays['label'].astype(np.int64)


def writer_ids(rng: np.random.Generator, num_writers: int) -> list[str]:
    """Return `num_writers` distinct ids in EMNIST's style, 'f' + 4 digits + '_' + 2 digits."""
    codes = rng.choice(10_000 * 100, size=num_writers, replace=False)
    return [f'f{code // 100:04d}_{code % 100:02d}' for code in codes]


def split_sizes(rng: np.random.Generator, num_writers: int, full_size: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return each writer's number of train and test digits (each at least 1)."""
    sizes = MIN_DIGITS + rng.gamma(SIZE_SHAPE, (MEAN_DIGITS - MIN_DIGITS) / SIZE_SHAPE, num_writers)
    sizes = np.maximum(MIN_DIGITS, np.round(sizes)).astype(np.int64)
    test = 1 + rng.binomial(sizes - MIN_DIGITS, TEST_FRACTION)
    train = sizes - test
    if full_size:  # Scale to real EMNIST's totals exactly, keeping at least one digit per split.
        train, test = (_scale_to_total(train, REAL_TRAIN), _scale_to_total(test, REAL_TEST))
    return train, test


def _scale_to_total(counts: np.ndarray, total: int) -> np.ndarray:
    """Return `counts` scaled to sum to `total`, each at least 1, rounding handed to the largest."""
    scaled = np.maximum(1, np.floor(counts * (total / counts.sum()))).astype(np.int64)
    order = np.argsort(-counts, kind='stable')
    step = 1 if scaled.sum() < total else -1
    i = 0
    while scaled.sum() != total:
        writer = order[i % len(order)]
        if scaled[writer] + step >= 1:
            scaled[writer] += step
        i += 1
    return scaled


def serialize(pixels: np.ndarray, label: int) -> bytes:
    """Return one digit as the serialized tf.train.Example TFF's EMNIST parser reads."""
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        'pixels': tf.train.Feature(float_list=tf.train.FloatList(value=pixels.ravel())),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    })).SerializeToString()


def build(directory: str | os.PathLike, num_writers: int = DEFAULT_WRITERS, full_size: bool = False,
          seed: int = SEED) -> dict[str, dict[str, int]]:
    """Write `directory`/emnist_all.sqlite; return {split: {writer id: number of digits}}."""
    if full_size:
        num_writers = REAL_WRITERS
    if num_writers < 1:
        raise ValueError(f'num_writers must be >= 1, got {num_writers}.')
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pixels, labels = source_digits()
    by_label = [np.flatnonzero(labels == c) for c in range(10)]
    rng = np.random.default_rng(seed)
    ids = writer_ids(rng, num_writers)
    train_sizes, test_sizes = split_sizes(rng, num_writers, full_size)
    mixes = rng.dirichlet(np.full(10, LABEL_ALPHA), size=num_writers)
    written: dict[str, dict[str, int]] = {TRAIN_SPLIT: {}, TEST_SPLIT: {}}
    # Written to a temporary name in the same folder and renamed when complete, so an interrupted
    # build never leaves a partial file under the name TFF reads.
    handle, scratch = tempfile.mkstemp(dir=directory, prefix='.emnist_standin_', suffix='.sqlite')
    os.close(handle)
    try:
        with sqlite3.connect(scratch) as connection:
            connection.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
                               'serialized_example_proto BLOB NOT NULL);')
            connection.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, '
                               'split_name TEXT NOT NULL, num_examples INTEGER NOT NULL);')
            for writer, client_id in enumerate(ids):
                for split, count in ((TRAIN_SPLIT, train_sizes[writer]), (TEST_SPLIT, test_sizes[writer])):
                    drawn_labels = rng.choice(10, size=count, p=mixes[writer])
                    rows = [(split, client_id, serialize(pixels[rng.choice(by_label[c])], c))
                            for c in drawn_labels]
                    connection.executemany('INSERT INTO examples VALUES (?, ?, ?);', rows)
                    connection.execute('INSERT INTO client_metadata VALUES (?, ?, ?);',
                                       (client_id, split, int(count)))
                    written[split][client_id] = int(count)
        os.chmod(scratch, 0o644)  # mkstemp's 0600 would hide it from other users of a shared cache.
        os.replace(scratch, directory / FILE_NAME)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    return written


def source_hash() -> str:
    """Return a SHA-256 of this script, to key caches of the files it builds."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('directory', help=f'folder to write {FILE_NAME} into (FL_COURSE_EMNIST_DIR)')
    parser.add_argument('--writers', type=int, default=DEFAULT_WRITERS, help='number of writers')
    parser.add_argument('--full-size', action='store_true',
                        help=f'{REAL_WRITERS:,} writers with real EMNIST\'s digit counts')
    args = parser.parse_args()
    began = time.perf_counter()
    written = build(args.directory, args.writers, args.full_size)
    path = Path(args.directory) / FILE_NAME
    print(f'wrote {path}: {len(written[TRAIN_SPLIT]):,} writers, '
          f'{sum(written[TRAIN_SPLIT].values()):,} train and {sum(written[TEST_SPLIT].values()):,} test '
          f'digits, {path.stat().st_size / 2**20:,.0f} MiB, in {time.perf_counter() - began:.0f} s')


if __name__ == '__main__':
    main()
