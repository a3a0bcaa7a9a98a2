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


def numpy_metrics(start, datasets, learning_rate):
    """Return FedAvg's training metrics in float64 NumPy: each batch scored before its SGD step."""
    correct = loss_sum = examples = batches = 0
    for dataset in datasets:
        kernel, bias = (np.asarray(w, np.float64).copy() for w in start)
        for batch in dataset:
            x, y = batch['x'].numpy().astype(np.float64), batch['y'].numpy().ravel()
            logits = x @ kernel + bias
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            correct += int(np.sum(p.argmax(axis=1) == y))
            loss_sum += float(-np.log(p[np.arange(len(y)), y]).sum())
            examples += len(y)
            batches += 1
            p[np.arange(len(y)), y] -= 1.0
            kernel -= learning_rate * x.T @ p / len(y)
            bias -= learning_rate * p.sum(axis=0) / len(y)
    return {'accuracy': correct / examples, 'loss': loss_sum / examples, 'num_examples': examples,
            'num_batches': batches}


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


def test_plain_round_with_metrics_computes_fedavgs_training_metrics(datasets):
    rng = np.random.default_rng(6)
    start = [rng.normal(0, 0.05, (784, 10)).astype(np.float32), np.zeros(10, np.float32)]
    weights, metrics = plain_fedavg.make_plain_round(0.1, with_metrics=True)(start, datasets)
    for got, want in zip(weights, numpy_round(start, datasets, 0.1)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    expected = numpy_metrics(start, datasets, 0.1)
    assert metrics['num_examples'] == expected['num_examples'] == 13 + 40 + 71
    assert metrics['num_batches'] == expected['num_batches'] == 1 + 2 + 4
    assert metrics['accuracy'] == pytest.approx(expected['accuracy'], abs=1e-6)
    assert metrics['loss'] == pytest.approx(expected['loss'], rel=1e-5)


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
    _, plain_metrics = plain_fedavg.make_plain_round(0.1, with_metrics=True)(zeros, datasets)
    tff_metrics = result.metrics['client_work']['train']
    assert set(tff_metrics) == set(plain_metrics)  # accuracy, loss, num_examples, num_batches.
    for name, value in plain_metrics.items():
        assert float(value) == pytest.approx(float(tff_metrics[name]), rel=1e-5), name


def test_round_overhead_benchmark_runs_with_ids_and_plain_metrics():
    """benchmarks/round_overhead.py, at tiny settings: same model and metrics, its JSON keys."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'round_overhead.py'), '--rounds', '1',
         '--clients-per-round', '2'], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['tff_input'] == 'ids' and report['plain_metrics'] is True
    assert report['max_abs_weight_diff'] < 1e-5 and report['max_abs_metric_diff'] < 1e-4
    assert report['ratio'] == pytest.approx(report['tff_round_s'] / report['plain_round_s'], abs=0.02)
    assert len(report['load_average_before']) == 3


def test_multiworker_benchmark_runs_and_reports_its_keys():
    """benchmarks/multiworker.py, at tiny settings: every key of issue 16, and the models match."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'multiworker.py'), '--clients', '3', '6',
         '--rounds', '1', '--workers', '2'], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ('clients_per_round', 'round_s_default', 'round_s_mergeable_1', 'round_s_mergeable_n',
                'workers', 'mergeable_overhead', 'max_weight_difference', 'round_s_ids',
                'projected_speedup_8_hosts'):
        assert key in report, key
    assert report['clients_per_round'] == 6 and report['workers'] == 2
    assert report['max_weight_difference'] < 1e-5
    assert report['mergeable_overhead'] == pytest.approx(
        report['round_s_mergeable_1'] / report['round_s_default'], rel=0.01)
    assert report['client_bytes_ids'] < report['client_bytes_examples'] / 100
    breakdown = report['mergeable_breakdown_s']['mergeable_n']['calls_per_round']
    assert breakdown == {'up_to_merge': 2, 'merge': 1, 'after_merge': 1}  # Two sub-rounds, one merge.
