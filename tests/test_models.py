"""The hand-written SoftmaxRegression: its metrics against NumPy, its variables, its federated metrics."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from helpers import models


def numpy_metrics(x, y, kernel, bias, num_classes=10):
    """Loss, accuracy, count and worst-class recall of a softmax regression, computed in NumPy."""
    logits = x.astype(np.float64) @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    correct = logits.argmax(axis=1) == y
    recalls = [correct[y == c].mean() for c in range(num_classes) if np.any(y == c)]
    return {'num_examples': len(y), 'loss': -log_probabilities[np.arange(len(y)), y].mean(),
            'accuracy': correct.mean(), 'worst_class_recall': min(recalls)}


def finalize(model):
    unfinalized = model.report_local_unfinalized_metrics()
    return {name: finalizer(unfinalized[name]).numpy()
            for name, finalizer in model.metric_finalizers().items()}


def random_batch(rng, size, num_classes=10, labels=None):
    x = rng.random((size, models.NUM_PIXELS)).astype(np.float32)
    y = rng.integers(0, num_classes, size) if labels is None else np.asarray(labels)
    return collections.OrderedDict(x=x, y=y.reshape(-1, 1).astype(np.int32))


@pytest.fixture
def weighted_model():
    """A model with random (seeded) weights, so predictions differ between classes."""
    rng = np.random.default_rng(1)
    model = models.SoftmaxRegression()
    kernel = rng.normal(0, 0.05, (models.NUM_PIXELS, 10)).astype(np.float32)
    bias = rng.normal(0, 0.5, 10).astype(np.float32)
    model.trainable_variables[0].assign(kernel)
    model.trainable_variables[1].assign(bias)
    return model, kernel, bias


def test_finalized_metrics_equal_numpy_on_the_same_batches(weighted_model):
    model, kernel, bias = weighted_model
    rng = np.random.default_rng(2)
    batches = [random_batch(rng, 37), random_batch(rng, 5)]
    for batch in batches:
        model.forward_pass(batch)
    x = np.concatenate([b['x'] for b in batches])
    y = np.concatenate([b['y'][:, 0] for b in batches])
    expected = numpy_metrics(x, y, kernel, bias)
    finalized = finalize(model)
    assert set(finalized) == set(expected)
    assert finalized['num_examples'] == expected['num_examples']
    for name in ('loss', 'accuracy', 'worst_class_recall'):
        np.testing.assert_allclose(finalized[name], expected[name], rtol=1e-5, err_msg=name)


def test_batch_output_is_the_mean_loss_of_the_batch(weighted_model):
    model, kernel, bias = weighted_model
    batch = random_batch(np.random.default_rng(3), 16)
    output = model.forward_pass(batch)
    expected = numpy_metrics(batch['x'], batch['y'][:, 0], kernel, bias)
    np.testing.assert_allclose(output.loss.numpy(), expected['loss'], rtol=1e-5)
    assert int(output.num_examples) == 16
    np.testing.assert_allclose(output.predictions.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_predict_on_batch_is_softmax_and_leaves_metrics_alone(weighted_model):
    model, kernel, bias = weighted_model
    x = random_batch(np.random.default_rng(4), 8)['x']
    logits = x.astype(np.float64) @ kernel + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_on_batch(x, training=False).numpy(), expected,
                               rtol=1e-4, atol=1e-6)
    assert all(not np.any(v.numpy()) for v in model.local_variables)


def test_reset_metrics_zeroes_every_local_variable(weighted_model):
    model, _, _ = weighted_model
    model.forward_pass(random_batch(np.random.default_rng(5), 10))
    assert any(np.any(v.numpy()) for v in model.local_variables)
    model.reset_metrics()
    assert all(not np.any(v.numpy()) for v in model.local_variables)
    assert finalize(model)['accuracy'] == 0.0


def test_summed_client_metrics_finalize_to_the_pooled_values_not_the_mean_of_clients(weighted_model):
    model, kernel, bias = weighted_model
    rng = np.random.default_rng(6)
    clients = [random_batch(rng, 50), random_batch(rng, 3), random_batch(rng, 9)]
    reports = []
    for batch in clients:
        model.reset_metrics()
        model.forward_pass(batch)
        reports.append(model.report_local_unfinalized_metrics())
    summed = {name: [sum(r[name][i] for r in reports) for i in range(len(reports[0][name]))]
              for name in reports[0]}
    finalizers = model.metric_finalizers()
    x = np.concatenate([b['x'] for b in clients])
    y = np.concatenate([b['y'][:, 0] for b in clients])
    pooled = numpy_metrics(x, y, kernel, bias)
    for name in ('loss', 'accuracy', 'worst_class_recall'):
        np.testing.assert_allclose(finalizers[name](summed[name]).numpy(), pooled[name], rtol=1e-5)
    per_client = [numpy_metrics(b['x'], b['y'][:, 0], kernel, bias)['accuracy'] for b in clients]
    assert not np.isclose(np.mean(per_client), pooled['accuracy'])


def test_worst_class_recall_ignores_absent_classes_and_handles_no_examples():
    correct = tf.constant([3.0, 0.0, 1.0])
    count = tf.constant([4.0, 0.0, 2.0])
    assert models.worst_class_recall([correct, count]).numpy() == pytest.approx(0.5)
    assert models.worst_class_recall([tf.zeros(3), tf.zeros(3)]).numpy() == 0.0


def test_variables_and_input_spec():
    model = models.SoftmaxRegression(num_classes=3, num_features=5)
    assert [v.shape.as_list() for v in model.trainable_variables] == [[5, 3], [3]]
    assert model.non_trainable_variables == []
    assert len(model.local_variables) == 5
    assert all(not v.trainable for v in model.local_variables)
    assert model.input_spec['x'].shape.as_list() == [None, 5]
    assert model.input_spec['y'].shape.as_list() == [None, 1]
    assert set(model.report_local_unfinalized_metrics()) == set(model.metric_finalizers())


def test_input_spec_matches_the_course_preprocessing():
    from helpers import data

    dataset = data.preprocess(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        label=np.zeros(3, np.int32), pixels=np.ones((3, 28, 28), np.float32))))
    spec = models.SoftmaxRegression().input_spec
    for key in ('x', 'y'):
        assert spec[key].is_compatible_with(dataset.element_spec[key])


@pytest.mark.parametrize('name, value', [('num_classes', 1), ('num_features', 0)])
def test_rejects_impossible_shapes(name, value):
    with pytest.raises(ValueError, match=f'{name} must be an int >= '):
        models.SoftmaxRegression(**{name: value})
