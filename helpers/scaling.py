"""Scaling out (notebook 10): client datasets built inside the workers from files, and round timing.

A round of the examples path sends every client's preprocessed examples from Python to the worker.
The ids path sends only a client id and a shuffle seed per client: the worker reads the client's
file (written once by `write_client_files`, already in the model's input format) and shuffles and
batches it as `data.shuffle_and_batch` does in Python. The files hold whole arrays rather than one
record per example, so that building a dataset needs no `Dataset.map`: with a parsing map function
per record, the first version of notebook 10's ids path was slower than sending the examples (a
measurement made while writing it, not kept as a benchmark).
The teaching copies of `parse_client_file` and `client_dataset_from_file` are in the core of
notebooks/10_scaling_out.ipynb; tests/test_notebooks.py keeps them identical.
"""

from __future__ import annotations

import collections
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from helpers import data, models
from helpers._checks import check_client_data, check_client_ids, check_int, check_path, check_seed

ID_AND_SEED = collections.OrderedDict(client_id=np.str_, seed=np.int64)


def write_client_files(client_data: tff.simulation.datasets.ClientData,
                       directory: str | os.PathLike) -> dict[str, str]:
    """Write each client's examples, as model input, to a file of its own in `directory`; return id -> path.

    A file holds one serialized `tf.train.Example` with the client's whole `x` (float32, [n, 784]) and
    `y` (int32, [n, 1]) as raw bytes: what the examples path sends every round, written once.
    """
    check_client_data('client_data', client_data)
    check_path('directory', directory)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for number, client_id in enumerate(client_data.client_ids):
        arrays = data.client_model_input(client_data, client_id)
        example = tf.train.Example(features=tf.train.Features(feature={
            key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[arrays[key].tobytes()]))
            for key in ('x', 'y')}))
        path = directory / f'client_{number:05d}.example'  # Ids may hold characters paths cannot.
        path.write_bytes(example.SerializeToString())
        paths[client_id] = str(path)
    return paths


def parse_client_file(content: tf.Tensor) -> collections.OrderedDict:
    """Return a client file's content as its model input: x (float32, [n, 784]), y (int32, [n, 1])."""
    features = tf.io.parse_single_example(content, {
        'x': tf.io.FixedLenFeature([], tf.string),
        'y': tf.io.FixedLenFeature([], tf.string)})
    return collections.OrderedDict(
        x=tf.reshape(tf.io.decode_raw(features['x'], tf.float32), [-1, models.NUM_PIXELS]),
        y=tf.reshape(tf.io.decode_raw(features['y'], tf.int32), [-1, 1]))


def client_dataset_from_file(path: tf.Tensor) -> tf.data.Dataset:
    """Return the examples of the client whose file is at `path` (a string tensor), one per element."""
    return tf.data.Dataset.from_tensor_slices(parse_client_file(tf.io.read_file(path)))


def file_client_data(client_files: Mapping[str, str]) -> tff.simulation.datasets.ClientData:
    """Return a ClientData that reads each client's examples from its own file (one per client id)."""
    if not isinstance(client_files, Mapping) or not client_files:
        raise TypeError('client_files must be a non-empty dict of client id -> file path, as '
                        f'write_client_files returns; got {type(client_files).__name__}.')
    for client_id, path in client_files.items():
        if not isinstance(client_id, str) or not isinstance(path, str):
            raise TypeError(f'client_files must map str ids to str paths, got {client_id!r}: {path!r}.')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'client_files[{client_id!r}] names {path}, which does not exist; '
                                    'write the files with write_client_files first.')
    return tff.simulation.datasets.FilePerUserClientData(dict(client_files), client_dataset_from_file)


def dataset_computation(client_data: tff.simulation.datasets.ClientData, *, batch_size: int = 20,
                        num_epochs: int = 1, shuffle_buffer: int = 200, global_seed: int = 0):
    """Return a TFF computation (client id, shuffle seed) -> the client's batches, built where it runs.

    The batches are those `data.make_federated_data` builds in Python with the same seed, provided the
    kernel's global TF seed is `global_seed` (what `runtime.setup(seed=...)` sets).
    """
    check_client_data('client_data', client_data)
    batch_size = check_int('batch_size', batch_size, minimum=1, example=20)
    num_epochs = check_int('num_epochs', num_epochs, minimum=1)
    shuffle_buffer = check_int('shuffle_buffer', shuffle_buffer, minimum=0, example=200)
    global_seed = check_seed('global_seed', global_seed)
    raw_dataset_fn = client_data.serializable_dataset_fn

    @tff.tensorflow.computation(ID_AND_SEED)
    def build(client_id, seed):
        # The computation is traced in a graph of its own: give it the kernel's global seed, so that
        # `shuffle(seed=...)` draws the order the examples path draws in Python.
        tf.random.set_seed(global_seed)
        dataset = raw_dataset_fn(client_id).repeat(num_epochs)
        if shuffle_buffer > 1:  # As data.shuffle_and_batch does, with the seed as a tensor.
            dataset = dataset.shuffle(shuffle_buffer, seed=seed)
        return dataset.batch(batch_size)

    return build


def ids_process(process: tff.learning.templates.LearningProcess, build_datasets
                ) -> tff.learning.templates.LearningProcess:
    """Return `process` taking client (id, seed) pairs instead of datasets, via `build_datasets`."""
    if not isinstance(process, tff.learning.templates.LearningProcess):
        raise TypeError('process must be a tff.learning.templates.LearningProcess, got '
                        f'{type(process).__name__}.')
    if not isinstance(build_datasets, tff.Computation):
        raise TypeError('build_datasets must be the tff.Computation dataset_computation returns, got '
                        f'{type(build_datasets).__name__}.')
    return tff.simulation.compose_dataset_computation_with_learning_process(build_datasets, process)


def round_ids(client_ids: Sequence[str], round_num: int, seed: int = 0) -> list[collections.OrderedDict]:
    """Return a round's client arguments for the ids path: each id with that round's shuffle seed."""
    client_ids = check_client_ids('client_ids', client_ids)
    round_num = check_int('round_num', round_num, minimum=0)
    seed = check_seed('seed', seed)
    return [collections.OrderedDict(client_id=cid, seed=np.int64(seed + round_num))
            for cid in client_ids]


def max_weight_difference(first: tff.learning.models.ModelWeights,
                          second: tff.learning.models.ModelWeights) -> float:
    """Return the largest absolute difference between two models' trainable weights."""
    pairs = zip(first.trainable, second.trainable)
    return float(max(np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in pairs))


def time_calls(function: Callable[[], object], repeats: int) -> list[float]:
    """Return the wall seconds of `repeats` calls of `function()`."""
    repeats = check_int('repeats', repeats, minimum=1, example=3)
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    return seconds


def fit_fixed_and_per_client(clients: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """Return (fixed, per_client) seconds of the least-squares line seconds = fixed + per_client * n."""
    clients, seconds = np.asarray(clients, float), np.asarray(seconds, float)
    if clients.shape != seconds.shape or len(set(clients.tolist())) < 2:
        raise ValueError('clients and seconds must be of one length with at least two distinct '
                         f'client counts, got {clients.tolist()} and {seconds.tolist()}.')
    per_client, fixed = np.polyfit(clients, seconds, 1)
    return float(fixed), float(per_client)


def median(values: Sequence[float]) -> float:
    """Return the median of `values` (a thin wrapper so notebooks need not import statistics)."""
    return float(statistics.median(values))


def argument_bytes(value, type_spec) -> int:
    """Return the size in bytes of `value` serialized as TFF sends it to a worker (one CreateValue)."""
    return int(tff.framework.serialize_value(value, type_spec)[0].ByteSize())


def listening_addresses(port: int) -> list[str]:
    """Return the local addresses on which some process listens on TCP `port` (Linux /proc/net)."""
    port = check_int('port', port, minimum=1, maximum=65535, example=8000)
    found = []
    for table, width in (('/proc/net/tcp', 8), ('/proc/net/tcp6', 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(':')
            if state == '0A' and int(hex_port, 16) == port:  # 0A: LISTEN.
                if address == '0' * width:
                    found.append('0.0.0.0 (every IPv4 interface)' if width == 8
                                 else ':: (every interface)')
                else:
                    found.append(address)
    return found
