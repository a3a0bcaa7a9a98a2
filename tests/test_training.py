"""Client sampling and per-round datasets of helpers.training (the round loop notebook 01 teaches)."""

import numpy as np
import pytest

from helpers import data, training


@pytest.fixture(scope='module')
def train_data():
    return data.load_federated_digits('bundled', verbose=False)[0]


def test_sample_clients_draws_distinct_clients_per_round_and_is_seeded():
    ids = [f'c{i}' for i in range(30)]
    rounds = training.sample_clients(ids, 10, 5, seed=3)
    assert len(rounds) == 5
    assert all(len(r) == len(set(r)) == 10 and set(r) <= set(ids) for r in rounds)
    assert rounds == training.sample_clients(ids, 10, 5, seed=3)
    assert rounds != training.sample_clients(ids, 10, 5, seed=4)
    # Fewer rounds with the same seed are the first rounds of a longer run (notebook 01 relies on it).
    assert training.sample_clients(ids, 10, 2, seed=3) == rounds[:2]


@pytest.mark.parametrize('clients_per_round, num_rounds', [(0, 1), (31, 1), (1, 0)])
def test_sample_clients_rejects_impossible_requests(clients_per_round, num_rounds):
    with pytest.raises(ValueError):
        training.sample_clients([f'c{i}' for i in range(30)], clients_per_round, num_rounds)


def test_round_datasets_are_preprocess_with_the_round_seed(train_data):
    ids = train_data.client_ids[:3]
    got = training.round_datasets(train_data, ids, round_num=2, seed=0,
                                  preprocess_kwargs=dict(num_epochs=3))
    expected = [data.preprocess(train_data.create_tf_dataset_for_client(c), num_epochs=3, seed=2)
                for c in ids]
    for a, b in zip(got, expected, strict=True):
        for batch_a, batch_b in zip(list(a), list(b), strict=True):
            np.testing.assert_array_equal(batch_a['x'], batch_b['x'])
            np.testing.assert_array_equal(batch_a['y'], batch_b['y'])


def test_keras_evaluator_scores_like_a_fresh_model_even_after_a_tff_process_is_built(train_data):
    """The evaluator reuses its Keras model; building a TFF process invalidates it, and it must rebuild."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from helpers import models

    test_batches = data.preprocess(train_data.create_tf_dataset_for_client(train_data.client_ids[0]),
                                   batch_size=7, shuffle_buffer=1)
    evaluate = training.make_keras_evaluator(models.create_linear_model, test_batches)

    def expected(weights):  # Independent: a fresh model and Keras's own metrics over all examples.
        model = models.create_linear_model()
        weights.assign_weights_to(model)
        x = np.concatenate([b['x'] for b in test_batches])
        y = np.concatenate([b['y'] for b in test_batches]).reshape(-1)
        probabilities = model(x, training=False).numpy()
        loss = float(tf.keras.losses.sparse_categorical_crossentropy(y, probabilities).numpy().mean())
        return loss, float(np.mean(probabilities.argmax(axis=-1) == y))

    rng = np.random.default_rng(0)
    model_fn = models.make_model_fn(models.create_linear_model, test_batches.element_spec)
    for step in range(3):
        weights = tff.learning.models.ModelWeights(
            trainable=[rng.normal(size=(784, 10)).astype(np.float32) * 0.05,
                       rng.normal(size=10).astype(np.float32)], non_trainable=[])
        if step == 1:  # Invalidates Keras models made so far (the evaluator's cached one).
            tff.learning.algorithms.build_weighted_fed_avg(model_fn, tff.learning.optimizers.build_sgdm(0.1))
        got = evaluate(weights)
        loss, accuracy = expected(weights)
        assert got['loss'] == pytest.approx(loss, rel=1e-5)
        assert got['accuracy'] == pytest.approx(accuracy)


def test_keras_evaluator_rejects_an_empty_dataset():
    import tensorflow as tf

    from helpers import models

    empty = tf.data.Dataset.from_tensor_slices({'x': np.zeros((0, 784), np.float32),
                                                'y': np.zeros((0, 1), np.int32)}).batch(5)
    with pytest.raises(ValueError, match='dataset is empty'):
        training.make_keras_evaluator(models.create_linear_model, empty)
