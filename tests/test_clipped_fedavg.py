"""helpers.clipped_fedavg: clipping bounds every step, the reported statistics are right, arguments are checked.

The reference is plain NumPy: softmax regression trained by SGD with the same per-batch clipping.
"""

import collections
import functools
import math

import numpy as np
import pytest
import tensorflow as tf

from helpers import clipped_fedavg, models

NUM_PIXELS, NUM_CLASSES = 784, 10
INPUT_SPEC = collections.OrderedDict(x=tf.TensorSpec([None, NUM_PIXELS], tf.float32),
                                     y=tf.TensorSpec([None, 1], tf.int32))


def make_batches(seed: int, sizes, scales) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return random (x, y) batches; a larger scale makes larger pixel values, so larger gradients."""
    rng = np.random.default_rng(seed)
    return [((rng.uniform(0, 1, (n, NUM_PIXELS)) * s).astype(np.float32),
             rng.integers(0, NUM_CLASSES, (n, 1)).astype(np.int32)) for n, s in zip(sizes, scales)]


def as_dataset(batches) -> tf.data.Dataset:
    """Return the batches, in order, as a dataset of {'x', 'y'} elements."""
    datasets = [tf.data.Dataset.from_tensors(collections.OrderedDict(x=x, y=y)) for x, y in batches]
    return functools.reduce(lambda a, b: a.concatenate(b), datasets)


def numpy_gradient(kernel, bias, x, y):
    """Return the gradient of the mean softmax cross-entropy with respect to (kernel, bias)."""
    logits = x.astype(np.float64) @ kernel + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    residual = (probabilities - np.eye(NUM_CLASSES)[y[:, 0]]) / len(x)
    return x.T.astype(np.float64) @ residual, residual.sum(axis=0)


def numpy_clipped_sgd(batches, clip_norm, learning_rate, kernel=None, bias=None):
    """Return final (kernel, bias) and the pre-clipping gradient norms of clipped SGD over the batches."""
    kernel = np.zeros((NUM_PIXELS, NUM_CLASSES)) if kernel is None else kernel.astype(np.float64)
    bias = np.zeros(NUM_CLASSES) if bias is None else bias.astype(np.float64)
    norms = []
    for x, y in batches:
        g_kernel, g_bias = numpy_gradient(kernel, bias, x, y)
        norm = math.sqrt((g_kernel ** 2).sum() + (g_bias ** 2).sum())
        scale = clip_norm / norm if norm > clip_norm else 1.0
        kernel = kernel - learning_rate * scale * g_kernel
        bias = bias - learning_rate * scale * g_bias
        norms.append(norm)
    return kernel, bias, np.array(norms)


def model_fn():
    return models.make_model_fn(models.create_linear_model, INPUT_SPEC)()


@functools.lru_cache
def sgd(learning_rate):
    """Return plain SGD; one object per learning rate, so the eager tests do not retrace."""
    import tensorflow_federated as tff

    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)


def start_weights(seed):
    """Return random global weights as ModelWeights and as NumPy arrays."""
    import tensorflow_federated as tff

    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.05, (NUM_PIXELS, NUM_CLASSES)).astype(np.float32)
    bias = rng.normal(0, 0.05, NUM_CLASSES).astype(np.float32)
    weights = tff.learning.models.ModelWeights(
        trainable=[tf.constant(kernel), tf.constant(bias)], non_trainable=[])
    return weights, kernel, bias


@pytest.fixture(scope='module')
def linear_model():
    """One model for the eager tests: the client update loads the start weights into it every call."""
    return model_fn()


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('clip_norm', [0.05, 0.5, 2.0, 1e6])
def test_a_single_step_never_applies_a_gradient_above_clip_norm(linear_model, seed, clip_norm):
    batches = make_batches(seed, sizes=[16], scales=[0.02 + 0.1 * seed])
    weights, kernel, bias = start_weights(seed)
    result, statistics, _ = clipped_fedavg.clipped_client_update(
        linear_model, sgd(1.0), weights, as_dataset(batches), tf.constant(clip_norm))
    applied = [u.numpy() for u in result.update]  # learning rate 1: update = applied gradient
    applied_norm = math.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in applied))
    assert applied_norm <= clip_norm * (1 + 1e-6)

    g_kernel, g_bias = numpy_gradient(kernel, bias, *batches[0])
    norm = math.sqrt((g_kernel ** 2).sum() + (g_bias ** 2).sum())
    scale = min(1.0, clip_norm / norm)
    np.testing.assert_allclose(applied[0], scale * g_kernel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(applied[1], scale * g_bias, rtol=1e-3, atol=1e-6)
    assert float(statistics['norm_sum']) == pytest.approx(norm, rel=1e-4)
    assert int(statistics['num_clipped']) == int(norm > clip_norm)
    assert float(result.update_weight) == 16.0


def test_client_update_matches_numpy_clipped_sgd_over_several_steps(linear_model):
    batches = make_batches(0, sizes=[5, 9, 3, 12, 7], scales=[0.03, 0.2, 0.05, 0.3, 0.1])
    weights, kernel, bias = start_weights(1)
    result, statistics, _ = clipped_fedavg.clipped_client_update(
        linear_model, sgd(0.5), weights, as_dataset(batches), tf.constant(1.5))
    final_kernel, final_bias, norms = numpy_clipped_sgd(batches, 1.5, 0.5, kernel, bias)
    np.testing.assert_allclose(result.update[0].numpy(), kernel - final_kernel, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(result.update[1].numpy(), bias - final_bias, rtol=1e-3, atol=1e-5)
    assert int(statistics['num_gradients']) == len(batches)
    assert int(statistics['num_clipped']) == int((norms > 1.5).sum())
    assert float(result.update_weight) == sum(len(x) for x, _ in batches)


def test_per_step_clipping_caps_each_step_but_not_the_whole_update(linear_model):
    # Every step is clipped to length learning_rate * clip_norm, yet the steps add up: the update
    # exceeds one step's cap and is bounded only by num_steps * learning_rate * clip_norm.
    learning_rate, clip_norm = 0.5, 0.1
    batches = make_batches(4, sizes=[10] * 6, scales=[0.5] * 6)
    weights, kernel, bias = start_weights(4)
    result, statistics, _ = clipped_fedavg.clipped_client_update(
        linear_model, sgd(learning_rate), weights, as_dataset(batches), tf.constant(clip_norm))
    assert int(statistics['num_clipped']) == int(statistics['num_gradients']) == len(batches)
    update_norm = float(tf.linalg.global_norm(list(result.update)))
    assert learning_rate * clip_norm < update_norm <= len(batches) * learning_rate * clip_norm * (1 + 1e-6)


def test_reported_clipped_fraction_matches_an_independent_count(tff_runtime):
    clip_norm, learning_rate = 1.0, 0.1
    clients = [make_batches(1, sizes=[4, 10, 6, 8], scales=[0.02, 0.3, 0.06, 0.25]),
               make_batches(2, sizes=[7, 5, 9], scales=[0.2, 0.03, 0.4]),
               make_batches(3, sizes=[6, 6], scales=[0.025, 0.035])]
    expected = [numpy_clipped_sgd(batches, clip_norm, learning_rate) for batches in clients]
    norms = np.concatenate([e[2] for e in expected])
    assert np.min(np.abs(norms - clip_norm)) > 0.05, 'the constructed data must not sit on the threshold'
    assert 0 < (norms > clip_norm).sum() < len(norms), 'some steps must be clipped and some not'

    process = clipped_fedavg.build_clipped_fedavg(model_fn, clip_norm, sgd(learning_rate), sgd(1.0))
    output = process.next(process.initialize(), [as_dataset(batches) for batches in clients])
    clipping = output.metrics['client_work']['clipping']
    assert clipping['clipped_fraction'] == pytest.approx((norms > clip_norm).mean(), abs=1e-6)
    assert clipping['mean_gradient_norm'] == pytest.approx(norms.mean(), rel=1e-4)
    assert output.metrics['client_work']['train']['num_examples'] == sum(
        len(x) for batches in clients for x, _ in batches)

    # FedAvg: the update is initial minus trained weights (a pseudo-gradient) and the server's SGD
    # with learning rate 1 subtracts it, so the new global model is the example-weighted mean of
    # the clients' trained models.
    counts = np.array([sum(len(x) for x, _ in batches) for batches in clients], dtype=np.float64)
    mean_kernel = sum(c * e[0] for c, e in zip(counts, expected)) / counts.sum()
    mean_bias = sum(c * e[1] for c, e in zip(counts, expected)) / counts.sum()
    global_weights = process.get_model_weights(output.state).trainable
    np.testing.assert_allclose(global_weights[0], mean_kernel, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(global_weights[1], mean_bias, rtol=1e-3, atol=1e-6)


def test_huge_clip_norm_reproduces_weighted_fed_avg_and_the_clip_norm_is_a_hyperparameter(tff_runtime):
    tff = tff_runtime
    clients = [as_dataset(make_batches(seed, sizes=[5, 8, 6], scales=[0.1, 0.2, 0.05]))
               for seed in range(3)]
    ours = clipped_fedavg.build_clipped_fedavg(model_fn, 1e9, sgd(0.5), sgd(1.0))
    reference = tff.learning.algorithms.build_weighted_fed_avg(model_fn, sgd(0.5), sgd(1.0))
    our_state, reference_state = ours.initialize(), reference.initialize()
    assert our_state._fields == reference_state._fields
    for _ in range(2):
        our_output = ours.next(our_state, clients)
        our_state = our_output.state
        reference_state = reference.next(reference_state, clients).state
    for a, b in zip(ours.get_model_weights(our_state).trainable,
                    reference.get_model_weights(reference_state).trainable):
        np.testing.assert_array_equal(a, b)
    assert our_output.metrics['client_work']['clipping']['clipped_fraction'] == 0.0

    tight = clipped_fedavg.set_clip_norm(ours, our_state, 1e-2)
    assert ours.get_hparams(tight)['client_work']['clip_norm'] == pytest.approx(1e-2)
    assert ours.next(tight, clients).metrics['client_work']['clipping']['clipped_fraction'] > 0.5


@pytest.mark.parametrize('bad', [0, 0.0, -1.0, -math.inf, math.nan])
def test_non_positive_clip_norm_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match='clip_norm must be > 0'):
        clipped_fedavg.check_clip_norm(bad)
    with pytest.raises(ValueError, match='clip_norm must be > 0'):
        clipped_fedavg.build_clipped_fedavg(model_fn, bad, sgd(0.5), sgd(1.0))
    with pytest.raises(ValueError, match='clip_norm must be > 0'):
        clipped_fedavg.build_clipped_client_work(model_fn, sgd(0.5), bad)
    with pytest.raises(ValueError, match='clip_norm must be > 0'):
        clipped_fedavg.set_clip_norm(None, None, bad)


@pytest.mark.parametrize('bad', ['1.0', None, True, [1.0]])
def test_non_numeric_clip_norm_is_a_type_error(bad):
    with pytest.raises(TypeError, match='clip_norm must be a number'):
        clipped_fedavg.build_clipped_fedavg(model_fn, bad, sgd(0.5), sgd(1.0))


def test_positive_clip_norms_are_accepted_including_infinity():
    assert clipped_fedavg.check_clip_norm(2) == 2.0
    assert clipped_fedavg.check_clip_norm(np.float32(0.5)) == 0.5
    assert clipped_fedavg.check_clip_norm(math.inf) == math.inf


def test_wrong_optimizers_and_aggregators_are_type_errors():
    with pytest.raises(TypeError, match='client_optimizer_fn must be a tff.learning.optimizers'):
        clipped_fedavg.build_clipped_fedavg(model_fn, 1.0, tf.keras.optimizers.SGD(0.1), sgd(1.0))
    with pytest.raises(TypeError, match='server_optimizer_fn must be a tff.learning.optimizers'):
        clipped_fedavg.build_clipped_fedavg(model_fn, 1.0, sgd(0.1), lambda: sgd(1.0))
    with pytest.raises(TypeError, match='model_aggregator must be'):
        clipped_fedavg.build_clipped_fedavg(model_fn, 1.0, sgd(0.1), model_aggregator='mean')
    with pytest.raises(TypeError, match='model_fn must be'):
        clipped_fedavg.build_clipped_fedavg(model_fn(), 1.0, sgd(0.1))
