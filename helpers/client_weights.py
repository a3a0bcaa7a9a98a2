"""Per-client (local) model updates out of TFF 0.87 learning processes, and tools to use and save them.

The teaching copies of these functions are in notebooks/06_extracting_client_weights.ipynb;
tests/test_notebooks.py keeps them identical.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow_federated as tff

from helpers import training
from helpers._checks import check_model_fn


class FedAvgParts(NamedTuple):
    """The five building blocks that `tff.learning.templates.compose_learning_process` takes."""

    initial_model_weights_fn: tff.Computation
    distributor: tff.learning.templates.DistributionProcess
    client_work: tff.learning.templates.ClientWorkProcess
    aggregator: tff.templates.AggregationProcess
    finalizer: tff.learning.templates.FinalizerProcess


def build_fed_avg_parts(model_fn, client_optimizer: tff.learning.optimizers.Optimizer,
                        server_optimizer: tff.learning.optimizers.Optimizer) -> FedAvgParts:
    """Return the building blocks of weighted FedAvg (the algorithm of build_weighted_fed_avg)."""
    for name, optimizer in (('client_optimizer', client_optimizer),
                            ('server_optimizer', server_optimizer)):
        if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
            raise TypeError(f'{name} must be a tff.learning.optimizers.Optimizer (for example '
                            f'tff.learning.optimizers.build_sgdm(0.5)), got {type(optimizer).__name__}.')
    check_model_fn('model_fn', model_fn)  # Last: it builds a throwaway model.

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_model_weights_fn.type_signature.result
    client_work = tff.learning.templates.build_model_delta_client_work(
        model_fn, client_optimizer, client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        loop_implementation=training.LOOP_IMPLEMENTATION)
    update_type = client_work.next.type_signature.result.result.member
    aggregator = tff.aggregators.MeanFactory().create(update_type.update, update_type.update_weight)
    return FedAvgParts(
        initial_model_weights_fn=initial_model_weights_fn,
        distributor=tff.learning.templates.build_broadcast_process(weights_type),
        client_work=client_work,
        aggregator=aggregator,
        finalizer=tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type))


def build_local_training(client_work: tff.learning.templates.ClientWorkProcess) -> tff.Computation:
    """Return a computation (global weights, client datasets) -> every client's ClientResult."""
    if not isinstance(client_work, tff.learning.templates.ClientWorkProcess):
        raise TypeError('client_work must be a tff.learning.templates.ClientWorkProcess, for example '
                        'FedAvgParts.client_work.')
    _, weights_at_clients_type, client_data_type = client_work.next.type_signature.parameter
    model_weights_type = weights_at_clients_type.member

    @tff.federated_computation(tff.FederatedType(model_weights_type, tff.SERVER), client_data_type)
    def local_training(global_weights, client_data):
        weights_at_clients = tff.federated_broadcast(global_weights)
        output = client_work.next(client_work.initialize(), weights_at_clients, client_data)
        return output.result  # Placed at CLIENTS: one ClientResult per client.

    return local_training


class RoundOutput(NamedTuple):
    """What one round of `compose_with_client_results` returns: LearningProcessOutput plus clients."""

    state: Any
    metrics: Any
    client_results: Any


def compose_with_client_results(initial_model_weights_fn: tff.Computation,
                                distributor: tff.learning.templates.DistributionProcess,
                                client_work: tff.learning.templates.ClientWorkProcess,
                                aggregator: tff.templates.AggregationProcess,
                                finalizer: tff.learning.templates.FinalizerProcess
                                ) -> tff.templates.IterativeProcess:
    """Return compose_learning_process's algorithm as a process whose rounds also return every ClientResult."""
    templates = tff.learning.templates
    for name, value, kind in [('initial_model_weights_fn', initial_model_weights_fn, tff.Computation),
                              ('distributor', distributor, templates.DistributionProcess),
                              ('client_work', client_work, templates.ClientWorkProcess),
                              ('aggregator', aggregator, tff.templates.AggregationProcess),
                              ('finalizer', finalizer, templates.FinalizerProcess)]:
        if not isinstance(value, kind):
            raise TypeError(f'{name} must be a {kind.__name__} (see FedAvgParts), got '
                            f'{type(value).__name__}.')
    # compose_learning_process checks that the parts fit together; reuse its checks and its state.
    learning_process = tff.learning.templates.compose_learning_process(
        initial_model_weights_fn, distributor, client_work, aggregator, finalizer)
    state_type = learning_process.next.type_signature.parameter[0]
    client_data_type = learning_process.next.type_signature.parameter[1]

    @tff.federated_computation(state_type, client_data_type)
    def next_fn(state, client_data):
        distributor_output = distributor.next(state.distributor, state.global_model_weights)
        client_output = client_work.next(state.client_work, distributor_output.result, client_data)
        aggregator_output = aggregator.next(state.aggregator, client_output.result.update,
                                            client_output.result.update_weight)
        finalizer_output = finalizer.next(state.finalizer, state.global_model_weights,
                                          aggregator_output.result)
        new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
            finalizer_output.result, distributor_output.state, client_output.state,
            aggregator_output.state, finalizer_output.state))
        metrics = tff.federated_zip(collections.OrderedDict(
            distributor=distributor_output.measurements, client_work=client_output.measurements,
            aggregator=aggregator_output.measurements, finalizer=finalizer_output.measurements))
        return RoundOutput(new_state, metrics, client_output.result)

    return tff.templates.IterativeProcess(learning_process.initialize, next_fn)


def local_model_weights(global_weights: tff.learning.models.ModelWeights,
                        update: Sequence[np.ndarray]) -> tff.learning.models.ModelWeights:
    """Return a client's local model: the global weights it started from minus its model delta."""
    if not hasattr(global_weights, 'trainable') or not hasattr(global_weights, 'non_trainable'):
        raise TypeError('global_weights must be a tff.learning.models.ModelWeights, got '
                        f'{type(global_weights).__name__}.')
    trainable = list(global_weights.trainable)
    if len(update) != len(trainable):
        raise ValueError(f'update has {len(update)} tensors but the model has {len(trainable)} '
                         'trainable ones: pass ClientResult.update of a client that trained this model.')
    for weight, delta in zip(trainable, update):
        if np.shape(weight) != np.shape(delta):
            raise ValueError(f'update tensor of shape {np.shape(delta)} does not match the weight of '
                             f'shape {np.shape(weight)}.')
        if not np.isfinite(delta).all():
            raise ValueError('update has NaN or infinite values (the client diverged): its local model '
                             'is undefined; leave that client out.')
    return tff.learning.models.ModelWeights(
        trainable=[np.asarray(w) - np.asarray(d) for w, d in zip(trainable, update)],
        non_trainable=[np.asarray(w) for w in global_weights.non_trainable])


def flatten_update(update: Sequence[np.ndarray]) -> np.ndarray:
    """Return a model update (a list of tensors) as one float64 vector."""
    if isinstance(update, (str, bytes)) or not isinstance(update, (Sequence, np.ndarray)):
        raise TypeError('update must be a list of tensors (ClientResult.update), got '
                        f'{type(update).__name__}.')
    if len(update) == 0:
        raise ValueError('update is empty: pass ClientResult.update, a list of tensors.')
    try:
        return np.concatenate([np.ravel(np.asarray(tensor, dtype=np.float64)) for tensor in update])
    except (TypeError, ValueError):
        raise TypeError('update must hold numeric tensors (ClientResult.update), got '
                        f'{[type(t).__name__ for t in update][:3]}.') from None


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of every pair of rows of `vectors` (a [num, dim] array)."""
    try:
        vectors = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError('vectors must be a numeric [num_vectors, dim] array, e.g. of flatten_update '
                        f'rows, got {type(vectors).__name__}.') from None
    if vectors.ndim != 2:
        raise ValueError(f'vectors must be a 2-D array [num_vectors, dim], got shape {vectors.shape}.')
    if not np.isfinite(vectors).all():
        rows = sorted(set(np.nonzero(~np.isfinite(vectors))[0].tolist()))
        raise ValueError(f'vectors has NaN or infinite values in rows {rows[:10]}: their similarity is '
                         'undefined; drop those rows (clients whose training diverged).')
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError('A vector is all zeros, so its cosine similarity is undefined: drop it '
                         '(a client whose training diverged gets an all-zero update).')
    unit = vectors / norms
    return np.clip(unit @ unit.T, -1.0, 1.0)


_KEY = re.compile(r'^(trainable|non_trainable)_(\d+)$')


def save_client_weights(path: str | os.PathLike, weights: tff.learning.models.ModelWeights) -> Path:
    """Write model weights to an uncompressed .npz file (exact float bits) and return its path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'path must be a file path ending in .npz, got {type(path).__name__} {path!r}.')
    path = Path(path)
    if path.suffix != '.npz':
        raise ValueError(f'path must be a file name ending in .npz, got {path.name!r}.')
    if not hasattr(weights, 'trainable') or not hasattr(weights, 'non_trainable'):
        raise TypeError('weights must be a tff.learning.models.ModelWeights (or have .trainable and '
                        f'.non_trainable), got {type(weights).__name__}.')
    arrays = {f'trainable_{i}': np.asarray(w) for i, w in enumerate(weights.trainable)}
    arrays.update({f'non_trainable_{i}': np.asarray(w) for i, w in enumerate(weights.non_trainable)})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_client_weights(path: str | os.PathLike) -> tff.learning.models.ModelWeights:
    """Read model weights written by `save_client_weights`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'path must be a file path (str or pathlib.Path), got {type(path).__name__} '
                        f'{path!r}.')
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No weights file at {path}; write one with save_client_weights.')
    groups: dict[str, dict[int, np.ndarray]] = {'trainable': {}, 'non_trainable': {}}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            match = _KEY.match(key)
            if not match:
                raise ValueError(f'{path} has an array named {key!r}: it was not written by '
                                 'save_client_weights.')
            groups[match.group(1)][int(match.group(2))] = archive[key]
    for group, arrays in groups.items():  # A gap would silently shift every later tensor.
        missing = sorted(set(range(len(arrays))) - set(arrays))
        if missing:
            raise ValueError(f'{path} lacks {group}_{missing[0]} (it has {group} indices '
                             f'{sorted(arrays)}): the file is incomplete; write it again with '
                             'save_client_weights.')
    return tff.learning.models.ModelWeights(
        trainable=[groups['trainable'][i] for i in sorted(groups['trainable'])],
        non_trainable=[groups['non_trainable'][i] for i in sorted(groups['non_trainable'])])
