"""The benchmarks' plain-TensorFlow baseline computes the round TFF computes, so timing them is fair."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import plain_fedavg
from helpers import models, training

INPUT_SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                                     y=tf.TensorSpec([None, 1], tf.int32))


def client_dataset(seed: int, num_examples: int) -> tf.data.Dataset:
    """Return random digits-like batches of 20 for one client."""
    rng = np.random.default_rng(seed)
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=rng.uniform(0, 1, (num_examples, 784)).astype(np.float32),
        y=rng.integers(0, 10, (num_examples, 1)).astype(np.int32))).batch(20)


def numpy_round(start, datasets, learning_rate):
    """Return FedAvg's new weights computed in float64 NumPy: per-batch SGD, example-weighted mean."""
    kernel0, bias0 = (np.asarray(w, np.float64) for w in start)
    deltas, weights = [], []
    for dataset in datasets:
        kernel, bias, count = kernel0.copy(), bias0.copy(), 0
        for batch in dataset:
            x, y = batch['x'].numpy().astype(np.float64), batch['y'].numpy().ravel()
            logits = x @ kernel + bias
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1.0  # d(mean cross-entropy)/d(logits), times the batch size.
            kernel -= learning_rate * x.T @ p / len(y)
            bias -= learning_rate * p.sum(axis=0) / len(y)
            count += len(y)
        deltas.append((kernel - kernel0, bias - bias0))
        weights.append(count)
    weights = np.array(weights, np.float64) / sum(weights)
    return [kernel0 + sum(w * d[0] for w, d in zip(weights, deltas)),
            bias0 + sum(w * d[1] for w, d in zip(weights, deltas))]


@pytest.fixture(scope='module')
def datasets():
    return [client_dataset(seed, n) for seed, n in enumerate((13, 40, 71))]


def test_plain_round_is_fedavg(datasets):
    rng = np.random.default_rng(5)
    start = [rng.normal(0, 0.01, (784, 10)).astype(np.float32), np.zeros(10, np.float32)]
    plain = plain_fedavg.make_plain_round(0.1)(start, datasets)
    expected = numpy_round(start, datasets, 0.1)
    for got, want in zip(plain, expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_plain_round_matches_tff_build_weighted_fed_avg(tff_runtime, datasets):
    tff = tff_runtime
    process = tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(models.create_linear_model, INPUT_SPEC),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=training.LOOP_IMPLEMENTATION)
    result = process.next(process.initialize(), datasets)
    tff_weights = result.state.global_model_weights.trainable
    zeros = [np.zeros((784, 10), np.float32), np.zeros(10, np.float32)]
    plain = plain_fedavg.make_plain_round(0.1)(zeros, datasets)
    for got, want in zip(plain, tff_weights):
        np.testing.assert_allclose(got, want, atol=1e-6)
