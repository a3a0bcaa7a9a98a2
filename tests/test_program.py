"""helpers.program: synchronous tff.program calls, metric release, federated evaluation, resumable training."""

import asyncio
import collections
import csv
import shutil

import numpy as np
import pytest
import tensorflow as tf

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


RUN = dict(num_rounds=4, clients_per_round=2, seed=3)


@pytest.fixture(scope='module')
def reference(fed_avg, tff_runtime, tmp_path_factory):
    """An uninterrupted run of RUN: (its folder, final state, history). Tests must not change the folder."""
    folder = tmp_path_factory.mktemp('reference')
    state, history = program.train_resumable(
        fed_avg, small_client_data(), state_manager=tff_runtime.program.FileProgramStateManager(folder),
        **RUN)
    return folder, state, history


def test_resume_continues_after_the_last_checkpoint_with_no_round_lost_or_repeated(
        tmp_path, fed_avg, tff_runtime, reference):
    tff = tff_runtime
    train_data = small_client_data()
    kwargs = dict(RUN)
    _, reference_state, reference = reference
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


def tensorboard_steps(log_dir):
    """Return how many times each (tag, step) was written to the TensorBoard event files in log_dir."""
    counts = collections.Counter()
    for path in (log_dir / 'tensorboard').glob('events.out.tfevents.*'):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                counts[value.tag, event.step] += 1
    return counts


def assert_same_run(fed_avg, state, history_parts, reference):
    _, reference_state, reference_history = reference
    losses = [loss for part in history_parts for loss in part['train_loss']]
    assert losses == pytest.approx(reference_history['train_loss'], rel=1e-6)
    for got, want in zip(weights_of(fed_avg, state), weights_of(fed_avg, reference_state)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_damaged_empty_and_unfinished_checkpoints_are_skipped_with_warnings(
        tmp_path, fed_avg, tff_runtime, reference):
    tff = tff_runtime
    folder, logs = tmp_path / 'ckpt', tmp_path / 'logs'
    with pytest.raises(program.TrainingInterrupted):
        program.train_resumable(fed_avg, small_client_data(),
                                state_manager=tff.program.FileProgramStateManager(folder),
                                release_manager=program.make_release_manager(logs),
                                interrupt_after_round=3, **RUN)
    # Round 3's checkpoint damaged, a stray empty program_state_4, and the folder a killed save of
    # round 4 leaves (file_utils.write_saved_model writes <path>_temp<random> and renames it).
    saved_model = folder / 'program_state_3' / 'saved_model.pb'
    saved_model.write_bytes(saved_model.read_bytes()[:100])
    (folder / 'program_state_4').mkdir()
    (folder / 'program_state_4_temp1234' / 'variables').mkdir(parents=True)
    with pytest.warns(UserWarning) as caught:
        state, resumed = program.train_resumable(
            fed_avg, small_client_data(), state_manager=tff.program.FileProgramStateManager(folder),
            release_manager=program.make_release_manager(logs), **RUN)
    messages = [str(w.message) for w in caught]
    assert any('program_state_4_temp1234' in m and 'Removed' in m for m in messages)
    assert any('program_state_4 does not load' in m and 'resuming from version 2' in m for m in messages)
    assert any('program_state_3 does not load' in m and 'resuming from version 2' in m for m in messages)
    assert resumed['round'] == [3, 4]
    assert_same_run(fed_avg, state, [{'train_loss': reference[2]['train_loss'][:2]}, resumed], reference)
    assert sorted(p.name for p in folder.iterdir()) == [
        'damaged_program_state_3', 'damaged_program_state_4', 'program_state_0', 'program_state_1',
        'program_state_2', 'program_state_3', 'program_state_4', program.RunRecord.FILE_NAME]
    # Round 3 ran twice but was released once.
    assert [r['key'] for r in read_csv(logs / 'metrics.csv')] == ['1', '2', '3', '4']
    assert set(tensorboard_steps(logs).values()) == {1}


def test_checkpoints_none_of_which_loads_stop_with_the_folder_to_remove(tmp_path, fed_avg, tff_runtime):
    folder = tmp_path / 'ckpt'
    for version in (0, 1):
        (folder / f'program_state_{version}').mkdir(parents=True)
    with pytest.raises(RuntimeError, match=f'None of the 2 checkpoints in {folder} loads'):
        program.train_resumable(fed_avg, small_client_data(),
                                state_manager=tff_runtime.program.FileProgramStateManager(folder), **RUN)


class SimulatedCrash(Exception):
    """Stands for the program dying at that point."""


def crashing_state_manager(tff, folder, crash_version):
    """Return a FileProgramStateManager on `folder` whose save of `crash_version` crashes."""

    class Crashing(tff.program.FileProgramStateManager):
        async def save(self, program_state, version):
            if version == crash_version:
                raise SimulatedCrash(f'crash before saving version {version}')
            await super().save(program_state, version)

    return Crashing(folder)


def test_a_round_rerun_after_a_crash_between_release_and_save_is_released_once(
        tmp_path, fed_avg, tff_runtime, reference):
    tff = tff_runtime
    folder, logs = tmp_path / 'ckpt', tmp_path / 'logs'
    with pytest.raises(SimulatedCrash, match='version 3'):
        program.train_resumable(fed_avg, small_client_data(),
                                state_manager=crashing_state_manager(tff, folder, crash_version=3),
                                release_manager=program.make_release_manager(logs), **RUN)
    assert [r['key'] for r in read_csv(logs / 'metrics.csv')] == ['1', '2', '3']  # Released, not saved.
    state, resumed = program.train_resumable(
        fed_avg, small_client_data(), state_manager=tff.program.FileProgramStateManager(folder),
        release_manager=program.make_release_manager(logs), **RUN)
    assert resumed['round'] == [3, 4]
    assert_same_run(fed_avg, state, [{'train_loss': reference[2]['train_loss'][:2]}, resumed], reference)
    assert [r['key'] for r in read_csv(logs / 'metrics.csv')] == ['1', '2', '3', '4']
    steps = tensorboard_steps(logs)
    assert {step for _, step in steps} == {1, 2, 3, 4}
    assert set(steps.values()) == {1}, 'a step written twice to TensorBoard'


def test_fewer_rounds_than_checkpointed_is_refused(fed_avg, tff_runtime, reference):
    folder = reference[0]
    with pytest.raises(ValueError, match='num_rounds=2, but the checkpoints already reach round 4'):
        program.train_resumable(fed_avg, small_client_data(), 2, RUN['clients_per_round'],
                                tff_runtime.program.FileProgramStateManager(folder), seed=RUN['seed'])


@pytest.mark.parametrize('change, field', [
    (dict(seed=4), 'seed'),
    (dict(clients_per_round=3), 'clients_per_round'),
    (dict(preprocess_kwargs=dict(num_epochs=2)), 'preprocess_kwargs'),
    (dict(train_data=lambda: small_client_data(seed=1)), 'first_round_data'),  # Same ids, other digits.
    (dict(train_data=lambda: small_client_data(num_clients=5)), 'client_ids'),
])
def test_resuming_with_other_settings_is_refused_naming_the_setting(
        fed_avg, tff_runtime, reference, change, field):
    folder = reference[0]
    kwargs = {**RUN, 'train_data': small_client_data(), **change}
    if callable(kwargs['train_data']):
        kwargs['train_data'] = kwargs['train_data']()
    with pytest.raises(ValueError, match=f'belong to a run with a different {field}:'):
        program.train_resumable(fed_avg, state_manager=tff_runtime.program.FileProgramStateManager(folder),
                                **kwargs)


def test_resuming_with_another_model_is_refused(tff_runtime, reference):
    tff = tff_runtime
    nine_classes = tff.learning.algorithms.build_weighted_fed_avg(
        lambda: models.SoftmaxRegression(num_classes=9),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    with pytest.raises(ValueError, match=r'different model_weights: .*float32\[784,10\].*float32\[784,9\]'):
        program.train_resumable(nine_classes, small_client_data(),
                                state_manager=tff.program.FileProgramStateManager(reference[0]), **RUN)
