"""A round loop for TFF learning processes with client sampling, a progress bar and evaluation."""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tqdm import tqdm

from helpers._checks import (check_callable, check_client_data, check_client_ids, check_int,
                             check_keras_builder, check_kwargs, check_seed)
from helpers.data import make_federated_data, preprocess

# How client work loops over a client's dataset. DATASET_ITERATOR gives bit-identical models to TFF's
# default (DATASET_REDUCE) and FedAvg rounds about 2x faster on a 2-core CPU (benchmarks/tuning.py;
# the measured numbers are in README.md, Performance).
LOOP_IMPLEMENTATION = tff.learning.LoopImplementation.DATASET_ITERATOR


def pooled_test_dataset(test_data: tff.simulation.datasets.ClientData,
                        batch_size: int = 500) -> tf.data.Dataset:
    """Return every test client's examples as one unshuffled, batched dataset for central evaluation."""
    check_client_data('test_data', test_data)
    return preprocess(test_data.create_tf_dataset_from_all_clients(), batch_size=batch_size,
                      shuffle_buffer=1)


def make_keras_evaluator(keras_builder: Callable[[], tf.keras.Model], dataset: tf.data.Dataset
                         ) -> Callable[[tff.learning.models.ModelWeights], dict[str, float]]:
    """Return a function that scores global model weights on `dataset` (mean loss and accuracy)."""
    check_keras_builder('keras_builder', keras_builder)
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError('dataset must be a tf.data.Dataset of batches, e.g. pooled_test_dataset(test_data), '
                        f'got {type(dataset).__name__}.')
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(reduction='sum')
    batches = list(dataset)  # The evaluation set is small: keep it in memory.
    if not batches:
        raise ValueError('dataset is empty: pass the batched evaluation examples, e.g. '
                         'pooled_test_dataset(test_data).')
    cache: list[tf.keras.Model] = []

    def scoring_model(model_weights: tff.learning.models.ModelWeights) -> tf.keras.Model:
        # Building the Keras model costs more than scoring a small test set with it, so one model is
        # reused. But building a TFF process creates Keras layers inside graphs, which invalidates
        # every Keras model made before it: Keras then raises "Your Layer or Model is in an invalid
        # state" (a ValueError) on the next call. Only then is the model rebuilt.
        if cache:
            try:
                model_weights.assign_weights_to(cache[0])
                cache[0](batches[0]['x'][:1], training=False)
                return cache[0]
            except ValueError as error:
                if 'invalid state' not in str(error):
                    raise
                cache.clear()
        cache.append(keras_builder())
        model_weights.assign_weights_to(cache[0])
        return cache[0]

    def evaluate(model_weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        model = scoring_model(model_weights)
        loss_sum, correct, count = 0.0, 0, 0
        for batch in batches:
            probabilities = model(batch['x'], training=False)
            labels = tf.reshape(batch['y'], [-1])
            loss_sum += float(loss_fn(labels, probabilities))
            correct += int(tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), labels), tf.int32)))
            count += int(tf.size(labels))
        return {'loss': loss_sum / count, 'accuracy': correct / count}

    return evaluate


def sample_clients(client_ids: list[str], clients_per_round: int, num_rounds: int,
                   seed: int = 0) -> list[list[str]]:
    """Return, for each round, `clients_per_round` distinct client ids drawn uniformly at random."""
    client_ids = check_client_ids('client_ids', client_ids)
    check_int('clients_per_round', clients_per_round, minimum=1, maximum=len(client_ids))
    check_int('num_rounds', num_rounds, minimum=1)
    rng = np.random.default_rng(check_seed('seed', seed))
    return [list(rng.choice(client_ids, size=clients_per_round, replace=False))
            for _ in range(num_rounds)]


def round_datasets(train_data: tff.simulation.datasets.ClientData, client_ids: list[str],
                   round_num: int, seed: int = 0, preprocess_kwargs: Mapping | None = None
                   ) -> list[tf.data.Dataset]:
    """Return round `round_num`'s client datasets, shuffled with that round's own seed."""
    check_int('round_num', round_num, minimum=0)
    check_seed('seed', seed)
    check_kwargs('preprocess_kwargs', preprocess_kwargs)
    kwargs = dict(preprocess_kwargs or {})
    kwargs.setdefault('seed', seed + round_num)
    return make_federated_data(train_data, client_ids, **kwargs)


def train(process: tff.learning.templates.LearningProcess,
          train_data: tff.simulation.datasets.ClientData,
          num_rounds: int,
          clients_per_round: int,
          *,
          evaluate: Callable[[tff.learning.models.ModelWeights], Mapping[str, float]] | None = None,
          seed: int = 0,
          preprocess_kwargs: Mapping | None = None,
          description: str = 'rounds',
          state=None,
          extra_metrics: Callable[[Mapping], Mapping[str, float]] | None = None):
    """Run `num_rounds` rounds of `process`; return the final state and a per-round metrics history.

    History keys: `round`, `train_<metric>` (from metrics['client_work']['train'] when present),
    `test_<metric>` (from `evaluate`) and whatever `extra_metrics(metrics)` returns.
    """
    if not isinstance(process, tff.learning.templates.LearningProcess):
        raise TypeError('process must be a tff.learning.templates.LearningProcess (for example from '
                        f'tff.learning.algorithms.build_weighted_fed_avg), got {type(process).__name__}.')
    check_client_data('train_data', train_data)
    for name, function in (('evaluate', evaluate), ('extra_metrics', extra_metrics)):
        if function is not None:
            check_callable(name, function, 'a function or None')
    check_kwargs('preprocess_kwargs', preprocess_kwargs)
    rounds = sample_clients(list(train_data.client_ids), clients_per_round, num_rounds, seed)
    state = process.initialize() if state is None else state
    history: dict[str, list[float]] = collections.defaultdict(list)
    progress = tqdm(rounds, desc=description, unit='round')
    for round_num, client_ids in enumerate(progress, start=1):
        datasets = round_datasets(train_data, client_ids, round_num, seed, preprocess_kwargs)
        result = process.next(state, datasets)
        state = result.state
        history['round'].append(round_num)
        for name, value in result.metrics.get('client_work', {}).get('train', {}).items():
            history[f'train_{name}'].append(float(value))
        if extra_metrics is not None:
            for name, value in extra_metrics(result.metrics).items():
                history[name].append(float(value))
        if evaluate is not None:
            scores = evaluate(process.get_model_weights(state))
            if not isinstance(scores, Mapping):
                raise TypeError('evaluate must return a dict of metric name -> number, got '
                                f'{type(scores).__name__}.')
            for name, value in scores.items():
                history[f'test_{name}'].append(float(value))
            # Show accuracy if `evaluate` reports it, else its first metric: never fail after a round.
            shown = 'test_accuracy' if 'test_accuracy' in history else next(
                (name for name in history if name.startswith('test_')), None)
            if shown is not None:
                progress.set_postfix({shown: f'{history[shown][-1]:.3f}'})
    return state, dict(history)

