"""Your own data as federated data: a CSV file or a folder of images to a ClientData, checked on the way in.

The teaching copies of `ELEMENT_SPEC`, `client_data_from_arrays` and
`check_element_structure` are in notebooks/08_own_data_model_out.ipynb; tests/test_notebooks.py keeps
them identical. Elements follow the course's contract (helpers/data.py):
`OrderedDict(label=int32 scalar, pixels=float32[28, 28])`, pixels in [0, 1] with 1.0 = background.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_federated as tff
from PIL import Image

from helpers.data import NUM_CLASSES, client_arrays, partition_dirichlet

IMAGE_SHAPE = (28, 28)
PIXEL_COLUMNS = tuple(f'pixel{i}' for i in range(IMAGE_SHAPE[0] * IMAGE_SHAPE[1]))
IMAGE_NAME = re.compile(r'^(?P<label>\d+)_(?P<number>\d+)\.png$')
POOLED = 'pooled'  # The one client id of a CSV read with client_column=None.
# An image whose border's median gray is below this has a dark background: light ink on black.
DARK_BORDER = 128
# Pillow modes whose convert('L') gives the right 8-bit gray; 16-bit gray ('I;16', 'I') is clipped to 255.
GRAY_MODES = ('1', 'L', 'P', 'RGB', 'RGBA', 'LA', 'PA')
ELEMENT_SPEC = collections.OrderedDict(label=tf.TensorSpec([], tf.int32),
                                       pixels=tf.TensorSpec(list(IMAGE_SHAPE), tf.float32))


def client_data_from_arrays(pixels: np.ndarray, labels: np.ndarray,
                            owners: Sequence[str]) -> tff.simulation.datasets.ClientData:
    """Return a ClientData with one client per distinct owner (ids sorted) over in-memory examples."""
    pixels = np.asarray(pixels, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    owners = np.asarray(owners, dtype=str)
    if not len(pixels) == len(labels) == len(owners) > 0:
        raise ValueError('pixels, labels and owners must be non-empty and of one length, got '
                         f'{len(pixels)}, {len(labels)} and {len(owners)}.')
    client_ids = sorted(set(owners.tolist()))

    def serializable_dataset_fn(client_id) -> tf.data.Dataset:
        # Only TensorFlow ops: TFF may call this with a string tensor inside a graph.
        every_example = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            owner=owners, label=labels, pixels=pixels))
        mine = every_example.filter(lambda example: tf.equal(example['owner'], client_id))
        return mine.map(lambda example: collections.OrderedDict(
            label=example['label'], pixels=example['pixels']))

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(client_ids, serializable_dataset_fn)


def read_digits_csv(path: str | os.PathLike, client_column: str | None = 'writer', label_column: str = 'label',
                    num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pixels in [0, 1] with 1 = background, labels, owners) from a CSV of 0-255 ink values."""
    # client_column=None: a file without a client column, read as one client, POOLED.
    # Errors name the data row: 1 is the first row after the header; blank lines, which pandas skips,
    # are not counted, so a row number stays right where a line number would not.
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No CSV file at {path} (argument `path`).')
    if client_column is not None and not isinstance(client_column, str):
        raise TypeError(f'client_column must be a column name (str) or None, got {client_column!r}.')
    table = pd.read_csv(path, dtype={} if client_column is None else {client_column: str})
    for column, argument in ((client_column, 'client_column'), (label_column, 'label_column')):
        if column is not None and column not in table.columns:
            raise ValueError(f'{path.name} has no column {column!r} (argument `{argument}`); its first '
                             f'columns are {list(table.columns[:5])}. Without a client column pass '
                             'client_column=None.')
    missing = [c for c in PIXEL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f'{path.name} lacks {len(missing)} pixel columns, first {missing[0]!r}: a 28x28 '
                         "image needs columns 'pixel0' to 'pixel783'.")
    if table.empty:
        raise ValueError(f'{path.name} has a header but no rows.')
    if client_column is None:
        owners = np.full(len(table), POOLED)
    else:
        blank = table[client_column].isna() | (table[client_column].str.strip() == '')
        if blank.any():
            raise ValueError(f'{path.name}, row {int(np.argmax(blank)) + 1}: empty {client_column!r}, so the '
                             'example belongs to no client. Fill it in or drop the row.')
        owners = table[client_column].to_numpy(dtype=str)
    labels = _integer_column(table, label_column, path)
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(np.argmax((labels < 0) | (labels >= num_classes)))
        raise ValueError(f'{path.name}, row {bad + 1}: label {labels[bad]} is outside 0..{num_classes - 1} '
                         f'(column {label_column!r}, argument `num_classes`={num_classes}).')
    ink = np.stack([_integer_column(table, c, path) for c in PIXEL_COLUMNS], axis=1)
    if ink.min() < 0 or ink.max() > 255:
        row, column = np.argwhere((ink < 0) | (ink > 255))[0]
        raise ValueError(f'{path.name}, row {row + 1}, column {PIXEL_COLUMNS[column]!r}: '
                         f'{ink[row, column]} is not an ink value in 0..255.')
    gray = (255 - ink).reshape((-1,) + IMAGE_SHAPE)
    dark = np.array([_border_median(image) < DARK_BORDER for image in gray])
    if dark.any():
        row = int(np.argmax(dark))
        raise ValueError(f'{path.name}, row {row + 1}: the border is mostly ink (median border ink '
                         f'{255 - _border_median(gray[row]):g} of 255), so the file seems to store 255 = '
                         'background. The CSV needs ink values, 0 = background: replace each pixel value '
                         'v by 255 - v.')
    pixels = gray.astype(np.float32) / np.float32(255.0)
    return pixels, labels.astype(np.int32), owners


def _border_median(gray: np.ndarray) -> float:
    """Return the median of the outermost pixels of a 2-D gray image (255 = white)."""
    return float(np.median(np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])))


def _integer_column(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Return a CSV column as int64, or raise naming the first data row that is not a whole number."""
    values = pd.to_numeric(table[column], errors='coerce')
    bad = values.isna() | (values != np.round(values))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise ValueError(f'{path.name}, row {row + 1}, column {column!r}: {table[column].iloc[row]!r} is '
                         'not a whole number.')
    return values.to_numpy().astype(np.int64)


def load_csv_client_data(path: str | os.PathLike, client_column: str | None = 'writer',
                         label_column: str = 'label') -> tff.simulation.datasets.ClientData:
    """Return a ClientData from a digits CSV, one client per value of `client_column` (None: one client)."""
    return client_data_from_arrays(*read_digits_csv(path, client_column, label_column))


def read_image_folder(folder: str | os.PathLike, num_classes: int = NUM_CLASSES
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pixels, labels, owners) from `folder/<client>/<label>_<n>.png` dark-on-white images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'No folder at {folder} (argument `folder`).')
    client_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not client_dirs:
        raise ValueError(f'{folder} holds no client folders: expected {folder}/<client>/<label>_<n>.png.')
    pixels, labels, owners = [], [], []
    for client_dir in client_dirs:
        files = [p for p in client_dir.iterdir() if not p.name.startswith('.')]
        if not files:
            raise ValueError(f'Client folder {client_dir} is empty: every client needs at least one '
                             'image (remove the folder or add images).')
        for file in files:
            if not IMAGE_NAME.match(file.name):
                raise ValueError(f'{file}: expected a file named <label>_<n>.png, such as 7_0.png.')
        # By number, then by name, so that ties such as 3_1.png and 3_01.png keep one order everywhere.
        for file in sorted(files, key=lambda p: (int(IMAGE_NAME.match(p.name)['number']), p.name)):
            label = int(IMAGE_NAME.match(file.name)['label'])
            if label >= num_classes:
                raise ValueError(f'{file}: label {label} is outside 0..{num_classes - 1} '
                                 f'(argument `num_classes`={num_classes}).')
            with Image.open(file) as image:
                if image.size != IMAGE_SHAPE[::-1]:
                    raise ValueError(f'{file} is {image.size[0]}x{image.size[1]} pixels; the model '
                                     f'needs {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}. Resize it first.')
                gray = _opaque_gray(image, file)
            if _border_median(gray) < DARK_BORDER:
                raise ValueError(f'{file} has a dark background (median border gray {_border_median(gray):g} '
                                 'of 255), but the course needs dark ink on white, 255 = background. '
                                 'Invert it first, e.g. with PIL.ImageOps.invert.')
            pixels.append(gray.astype(np.float32) / np.float32(255.0))
            labels.append(label)
            owners.append(client_dir.name)
    return np.stack(pixels), np.array(labels, dtype=np.int32), np.array(owners, dtype=str)


def _opaque_gray(image: Image.Image, file: Path) -> np.ndarray:
    """Return an image as uint8 gray (255 = white), refusing any transparency, which 'L' would drop."""
    if image.mode not in GRAY_MODES:
        raise ValueError(f'{file} has Pillow mode {image.mode!r}, which Pillow does not convert to 8-bit gray '
                         f'faithfully (16-bit gray is clipped to white); the loader reads modes '
                         f'{", ".join(GRAY_MODES)}. Save it as 8-bit first, for 16-bit gray '
                         'Image.fromarray((np.asarray(image) // 257).astype(np.uint8)).')
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info:
        alpha = np.asarray(image.convert('RGBA'))[..., 3]
        if alpha.min() < 255:
            raise ValueError(f'{file} has transparent pixels (alpha down to {alpha.min()}); converting it '
                             'to gray would drop the transparency and show what lies under it. Flatten '
                             'it onto a white background first and save it without alpha.')
    return np.asarray(image.convert('L'))


def load_image_client_data(folder: str | os.PathLike) -> tff.simulation.datasets.ClientData:
    """Return a ClientData from a folder of image folders, one client per sub-folder."""
    return client_data_from_arrays(*read_image_folder(folder))


def dirichlet_client_data(client_data: tff.simulation.datasets.ClientData, num_clients: int,
                          alpha: float, seed: int = 0) -> tff.simulation.datasets.ClientData:
    """Return the pooled examples of `client_data` re-split into `num_clients` Dirichlet(alpha) clients."""
    arrays = client_arrays(client_data)
    parts = partition_dirichlet(arrays['label'], num_clients, alpha, seed)
    owners = np.empty(len(arrays['label']), dtype=object)
    for number, part in enumerate(parts):
        owners[part] = f'client_{number:02d}'
    return client_data_from_arrays(arrays['pixels'], arrays['label'], owners.astype(str))


def check_element_structure(client_data: tff.simulation.datasets.ClientData) -> None:
    """Raise unless the elements of `client_data` are the course's OrderedDict(label, pixels) contract."""
    actual = client_data.element_type_structure
    if not isinstance(actual, collections.OrderedDict) or list(actual) != list(ELEMENT_SPEC):
        raise ValueError(f'Elements must be an OrderedDict with keys {list(ELEMENT_SPEC)}, got {actual}.')
    for key, spec in ELEMENT_SPEC.items():
        # Exact shapes: spec.is_compatible_with would let an unknown dimension (None) pass as 28.
        got = actual[key]
        if not isinstance(got, tf.TensorSpec) or got.shape != spec.shape or got.dtype != spec.dtype:
            unknown = isinstance(got, tf.TensorSpec) and not got.shape.is_fully_defined()
            hint = ' Set its unknown (None) dimensions in the dataset function, e.g. with tf.ensure_shape.'
            raise ValueError(f'Element {key!r} must be {spec}, got {got}.{hint if unknown else ""}')
