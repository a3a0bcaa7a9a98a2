"""Per-client updates extracted from TFF equal an independent NumPy re-computation of local training."""

import numpy as np
import pytest

CLIENT_LR = 0.1
SERVER_LR = 0.7
NUM_EPOCHS = 2
BATCH_SIZE = 8
CLIENT_IDS = ('writer_000', 'writer_001', 'writer_002')


@pytest.fixture(scope='module')
def setup(tff_runtime):
    tff = tff_runtime
    from helpers import client_weights, data, models

    train_data, _ = data.load_federated_digits(verbose=False)
    # No shuffling, so that the NumPy reference sees the batches in the order TFF does.
    datasets = data.make_federated_data(train_data, CLIENT_IDS, num_epochs=NUM_EPOCHS,
                                        batch_size=BATCH_SIZE, shuffle_buffer=1)
    model_fn = models.make_model_fn(models.create_linear_model, datasets[0].element_spec)
    parts = client_weights.build_fed_avg_parts(
        model_fn, tff.learning.optimizers.build_sgdm(CLIENT_LR),
        tff.learning.optimizers.build_sgdm(SERVER_LR))
    local_training = client_weights.build_local_training(parts.client_work)
    rng = np.random.default_rng(0)  # Non-zero starting weights, so that every logit matters.
    start = tff.learning.models.ModelWeights(
        trainable=[rng.normal(0, 0.01, (784, 10)).astype(np.float32),
                   rng.normal(0, 0.1, 10).astype(np.float32)],
        non_trainable=[])
    return dict(tff=tff, parts=parts, local_training=local_training, datasets=datasets, start=start)


def numpy_local_training(start, dataset, learning_rate):
    """Plain SGD on softmax regression in float64; return (update = start - end, examples seen)."""
    kernel = start.trainable[0].astype(np.float64)
    bias = start.trainable[1].astype(np.float64)
    seen = 0
    for batch in dataset.as_numpy_iterator():
        x, y = batch['x'].astype(np.float64), batch['y'].reshape(-1)
        logits = x @ kernel + bias
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        error = probabilities
        error[np.arange(len(y)), y] -= 1.0
        error /= len(y)  # Gradient of the batch-mean cross-entropy with respect to the logits.
        kernel -= learning_rate * (x.T @ error)
        bias -= learning_rate * error.sum(axis=0)
        seen += len(y)
    return [start.trainable[0] - kernel, start.trainable[1] - bias], seen


@pytest.fixture(scope='module')
def expected(setup):
    return [numpy_local_training(setup['start'], d, CLIENT_LR) for d in setup['datasets']]


def assert_update_close(update, reference):
    for tensor, want in zip(update, reference):
        np.testing.assert_allclose(tensor, want, rtol=1e-4, atol=2e-6)


def test_extracted_updates_equal_plain_local_training(setup, expected):
    results = setup['local_training'](setup['start'], setup['datasets'])
    assert isinstance(results, list) and len(results) == len(CLIENT_IDS)
    for result, (update, seen) in zip(results, expected):
        assert_update_close(result.update, update)
        assert result.update_weight == seen
    assert len({r.update_weight for r in results}) == len(CLIENT_IDS), 'clients differ in size'


def test_result_list_follows_the_order_of_the_datasets(setup, expected):
    order = [2, 0, 1]
    results = setup['local_training'](setup['start'], [setup['datasets'][i] for i in order])
    for result, i in zip(results, order):
        assert_update_close(result.update, expected[i][0])
        assert result.update_weight == expected[i][1]


def test_local_model_weights_are_start_minus_update(setup, expected):
    from helpers import client_weights

    update, _ = expected[0]
    local = client_weights.local_model_weights(setup['start'], update)
    for weight, start, delta in zip(local.trainable, setup['start'].trainable, update):
        np.testing.assert_array_equal(weight, start - delta)
    with pytest.raises(ValueError, match='trainable'):
        client_weights.local_model_weights(setup['start'], update[:1])


def test_round_returns_client_results_and_the_fed_avg_state(setup, expected):
    from helpers import client_weights

    tff, parts = setup['tff'], setup['parts']
    process = client_weights.compose_with_client_results(*parts)
    reference = tff.learning.templates.compose_learning_process(*parts)
    state = reference.set_model_weights(reference.initialize(), setup['start'])
    output = process.next(state, setup['datasets'])
    assert len(output.client_results) == len(CLIENT_IDS)
    for result, (update, seen) in zip(output.client_results, expected):
        assert_update_close(result.update, update)
    # FedAvg's server step, recomputed in NumPy from the independent client updates.
    total = sum(seen for _, seen in expected)
    for k, start in enumerate(setup['start'].trainable):
        mean_update = sum(seen * update[k] for update, seen in expected) / total
        np.testing.assert_allclose(output.state.global_model_weights.trainable[k],
                                   start - SERVER_LR * mean_update, rtol=1e-4, atol=2e-6)
    # And the same new state as TFF's own composition of the same parts.
    tff_output = reference.next(state, setup['datasets'])
    for ours, theirs in zip(output.state.global_model_weights.trainable,
                            tff_output.state.global_model_weights.trainable):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert output.metrics['client_work'] == tff_output.metrics['client_work']


def test_exported_weights_round_trip_exactly(setup, tmp_path):
    from helpers import client_weights, models

    tff = setup['tff']
    rng = np.random.default_rng(1)
    weights = tff.learning.models.ModelWeights(
        trainable=[rng.normal(size=(784, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)],
        non_trainable=[np.arange(3, dtype=np.int64)])
    path = client_weights.save_client_weights(tmp_path / 'sub' / 'client.npz', weights)
    loaded = client_weights.load_client_weights(path)
    assert len(loaded.trainable) == 2 and len(loaded.non_trainable) == 1
    for original, back in zip(list(weights.trainable) + list(weights.non_trainable),
                              list(loaded.trainable) + list(loaded.non_trainable)):
        assert back.dtype == original.dtype
        np.testing.assert_array_equal(back, original)
    # Loaded into Keras, the exported weights predict exactly what the originals do.
    keras_weights = tff.learning.models.ModelWeights(trainable=weights.trainable, non_trainable=[])
    x = rng.uniform(size=(5, 784)).astype(np.float32)
    predictions = []
    for w in (keras_weights, client_weights.load_client_weights(
            client_weights.save_client_weights(tmp_path / 'keras.npz', keras_weights))):
        model = models.create_linear_model()
        w.assign_weights_to(model)
        predictions.append(model(x).numpy())
    np.testing.assert_array_equal(predictions[0], predictions[1])


def test_export_errors_say_what_to_do(setup, tmp_path):
    from helpers import client_weights

    with pytest.raises(ValueError, match='.npz'):
        client_weights.save_client_weights(tmp_path / 'client.h5', setup['start'])
    with pytest.raises(TypeError, match='ModelWeights'):
        client_weights.save_client_weights(tmp_path / 'client.npz', [np.zeros(2)])
    with pytest.raises(FileNotFoundError):
        client_weights.load_client_weights(tmp_path / 'missing.npz')
    np.savez(tmp_path / 'other.npz', kernel=np.zeros(2))
    with pytest.raises(ValueError, match='save_client_weights'):
        client_weights.load_client_weights(tmp_path / 'other.npz')


def test_flatten_and_cosine_similarity():
    from helpers import client_weights

    vectors = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-2.0, 0.0, 0.0]])
    similarity = client_weights.cosine_similarity_matrix(vectors)
    np.testing.assert_allclose(similarity, [[1, 1 / np.sqrt(2), -1],
                                            [1 / np.sqrt(2), 1, -1 / np.sqrt(2)],
                                            [-1, -1 / np.sqrt(2), 1]])
    flat = client_weights.flatten_update([np.ones((2, 3), np.float32), np.arange(2)])
    np.testing.assert_array_equal(flat, [1, 1, 1, 1, 1, 1, 0, 1])
    with pytest.raises(ValueError, match='all zeros'):
        client_weights.cosine_similarity_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match='2-D'):
        client_weights.cosine_similarity_matrix(np.zeros(3))


def test_builders_reject_wrong_arguments(setup):
    from helpers import client_weights

    tff = setup['tff']
    with pytest.raises(TypeError, match='build_sgdm'):
        client_weights.build_fed_avg_parts(lambda: None, 0.5, tff.learning.optimizers.build_sgdm(1.0))
    with pytest.raises(TypeError, match='model_fn'):
        client_weights.build_fed_avg_parts(None, tff.learning.optimizers.build_sgdm(0.5),
                                           tff.learning.optimizers.build_sgdm(1.0))
    with pytest.raises(TypeError, match='ClientWorkProcess'):
        client_weights.build_local_training(setup['parts'].aggregator)
