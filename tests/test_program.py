"""helpers.program: synchronous tff.program calls, metric release, federated evaluation, resumable training."""

import asyncio
import collections
import csv

import numpy as np
import pytest

from helpers import data, models, program


def read_csv(path):
    with open(path, newline='') as file:
        return list(csv.DictReader(file))


def small_client_data(num_clients=4, seed=0):
    """A ClientData of a few clients with random digits, so that TFF computations stay fast."""
    rng = np.random.default_rng(seed)
    sizes = [5 + 4 * i for i in range(num_clients)]
    owners = np.repeat([f'c{i}' for i in range(num_clients)], sizes)
    pixels = rng.random((len(owners), 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, len(owners))
    return data.ArrayClientData(pixels, labels, owners)


def test_run_sync_without_and_inside_a_running_event_loop():
    async def answer():
        await asyncio.sleep(0)
        return 42

    assert program.run_sync(answer()) == 42

    async def inside_a_loop():  # As in Jupyter, where a loop is already running.
        return program.run_sync(answer())

    assert asyncio.run(inside_a_loop()) == 42


def test_release_manager_writes_csv_rows_and_tensorboard_events(tmp_path):
    manager = program.make_release_manager(tmp_path)
    for key in (1, 2):
        program.run_sync(manager.release({'train': {'accuracy': 0.5 * key}}, key=key))
    rows = read_csv(tmp_path / 'metrics.csv')
    assert [(r['key'], float(r['train/accuracy'])) for r in rows] == [('1', 0.5), ('2', 1.0)]
    assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))


@pytest.fixture(scope='module')
def fed_avg(tff_runtime):
    tff = tff_runtime
    return tff.learning.algorithms.build_weighted_fed_avg(
        models.SoftmaxRegression,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1))


def weights_of(process, state):
    return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def test_resume_continues_after_the_last_checkpoint_with_no_round_lost_or_repeated(
        tmp_path, fed_avg, tff_runtime):
    tff = tff_runtime
    train_data = small_client_data()
    kwargs = dict(num_rounds=4, clients_per_round=2, seed=3)

    # Uninterrupted reference run.
    reference_state, reference = program.train_resumable(
        fed_avg, train_data, state_manager=tff.program.FileProgramStateManager(tmp_path / 'ref'),
        **kwargs)
    assert reference['round'] == [1, 2, 3, 4]
    keys = {'round', 'train_num_examples', 'train_loss', 'train_accuracy', 'train_worst_class_recall'}
    assert set(reference) == keys

    # Interrupted after round 2, then resumed by a new manager on the same folder (a restarted program).
    checkpoints, logs = tmp_path / 'ckpt', tmp_path / 'logs'
    kwargs['evaluate'] = lambda weights: {'bias_0': float(weights.trainable[1][0])}
    with pytest.raises(program.TrainingInterrupted) as interrupted:
        program.train_resumable(
            fed_avg, train_data, state_manager=tff.program.FileProgramStateManager(checkpoints),
            release_manager=program.make_release_manager(logs), interrupt_after_round=2, **kwargs)
    assert interrupted.value.history['round'] == [1, 2]
    manager = tff.program.FileProgramStateManager(checkpoints)
    assert program.run_sync(manager.get_versions()) == [0, 1, 2]
    saved_round_2, _ = program.run_sync(manager.load_latest(fed_avg.initialize()))

    state, resumed = program.train_resumable(
        fed_avg, train_data, state_manager=manager,
        release_manager=program.make_release_manager(logs), **kwargs)
    assert resumed['round'] == [3, 4]
    assert interrupted.value.history['train_loss'] + resumed['train_loss'] == pytest.approx(
        reference['train_loss'], rel=1e-6)
    for got, want in zip(weights_of(fed_avg, state), weights_of(fed_avg, reference_state)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    rows = read_csv(logs / 'metrics.csv')
    assert [r['key'] for r in rows] == ['1', '2', '3', '4']
    assert float(rows[-1]['eval/bias_0']) == pytest.approx(float(weights_of(fed_avg, state)[1][0]), rel=1e-6)
    assert resumed['eval_bias_0'][-1] == pytest.approx(float(rows[-1]['eval/bias_0']), rel=1e-6)

    # The resumed run started from exactly what round 2 saved, not from the initial state.
    initial = weights_of(fed_avg, fed_avg.initialize())
    assert not all(np.array_equal(a, b) for a, b in zip(weights_of(fed_avg, saved_round_2), initial))

    # A finished run resumed again runs no round and returns the last checkpoint, and a history whose
    # round and training-metric keys are there, empty (a re-run notebook cell reads them).
    again, nothing = program.train_resumable(fed_avg, train_data, state_manager=manager, **kwargs)
    assert set(nothing) == keys
    assert all(values == [] for values in nothing.values())
    for got, want in zip(weights_of(fed_avg, again), weights_of(fed_avg, state)):
        np.testing.assert_array_equal(got, want)


def test_train_resumable_rejects_what_is_not_a_learning_process(tmp_path, tff_runtime):
    tff = tff_runtime
    with pytest.raises(TypeError, match='LearningProcess'):
        program.train_resumable(lambda: None, small_client_data(), 1, 1,
                                tff.program.FileProgramStateManager(tmp_path))


def test_federated_evaluator_equals_pooled_numpy_accuracy(tff_runtime):
    test_data = small_client_data(num_clients=3, seed=1)
    rng = np.random.default_rng(2)
    kernel = rng.normal(0, 0.1, (models.NUM_PIXELS, 10)).astype(np.float32)
    bias = rng.normal(0, 0.5, 10).astype(np.float32)
    weights = tff_runtime.learning.models.ModelWeights(trainable=[kernel, bias], non_trainable=[])
    metrics = program.make_federated_evaluator(models.SoftmaxRegression, test_data)(weights)

    arrays = data.client_arrays(test_data)
    x = (1.0 - arrays['pixels']).reshape(len(arrays['label']), -1)
    predicted = (x @ kernel + bias).argmax(axis=1)
    assert metrics['num_examples'] == len(arrays['label'])
    assert metrics['accuracy'] == pytest.approx(np.mean(predicted == arrays['label']), abs=1e-6)


def test_federated_evaluator_rejects_a_model_instance(tff_runtime):
    with pytest.raises(TypeError, match='no-argument'):
        program.make_federated_evaluator(models.SoftmaxRegression(), small_client_data())
