"""helpers.scaling and runtime.use_context: the ids path and N workers train the same model.

The references are independent of the code under test: the examples path (client batches built in
Python by `data.make_federated_data`) for the ids path; TFF's default single-worker context for the
mergeable context over several workers; NumPy for the fitted costs.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf

from helpers import data, models, runtime, scaling, training

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                               y=tf.TensorSpec([None, 1], tf.int32))


@pytest.fixture(scope='module')
def setting(tff_runtime, tmp_path_factory):
    tff = tff_runtime
    train, _ = data.load_bundled()
    process = tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(models.create_linear_model, SPEC),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=training.LOOP_IMPLEMENTATION,
        model_aggregator=tff.aggregators.clipping_factory(0.5, tff.aggregators.MeanFactory()))
    files = scaling.write_client_files(train, tmp_path_factory.mktemp('clients'))
    ids_process = scaling.ids_process(
        process, scaling.dataset_computation(scaling.file_client_data(files)))
    yield train, process, ids_process, files
    runtime.use_context(None)


def test_files_hold_every_example_as_model_input(setting):
    train, _, _, files = setting
    from_files = scaling.file_client_data(files)
    assert from_files.client_ids == sorted(train.client_ids)
    for client_id in train.client_ids[:5]:
        raw = list(train.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        got = list(from_files.create_tf_dataset_for_client(client_id).as_numpy_iterator())
        assert len(got) == len(raw) > 0
        for a, b in zip(got, raw):  # x = 1 - pixels, flattened (1 = ink); y = [label].
            assert a['y'].tolist() == [b['label']]
            assert np.array_equal(a['x'], 1.0 - b['pixels'].reshape(-1))


def test_ids_path_trains_the_same_model_as_the_examples_path(setting):
    train, process, ids_process, _ = setting
    runtime.use_context(None)
    # The examples path draws its shuffle seeds from this kernel's global TF seed (other tests change
    # it); the dataset computation was built for global seed 0, as runtime.setup(seed=0) sets.
    runtime.set_seeds(0)
    client_ids = list(train.client_ids[:6])
    state, ids_state = process.initialize(), ids_process.initialize()
    for round_num in (1, 2):  # Two rounds: the per-round shuffle seeds must match too.
        result = process.next(state, training.round_datasets(train, client_ids, round_num))
        ids_result = ids_process.next(ids_state, scaling.round_ids(client_ids, round_num))
        state, ids_state = result.state, ids_result.state
        assert result.metrics['client_work'] == ids_result.metrics['client_work']
    assert scaling.max_weight_difference(process.get_model_weights(state),
                                         ids_process.get_model_weights(ids_state)) == 0.0


def test_two_workers_train_the_same_model_and_report_the_same_clipping(setting):
    train, process, _, _ = setting
    client_ids = list(train.client_ids[:7])  # Odd: the two sub-rounds get 4 and 3 clients.
    datasets = training.round_datasets(train, client_ids, 1)
    state = process.initialize()
    runtime.use_context(None)
    single = process.next(state, datasets)
    runtime.use_context(2)
    split = process.next(state, datasets)
    assert scaling.max_weight_difference(process.get_model_weights(single.state),
                                         process.get_model_weights(split.state)) < 1e-5
    for key in ('clipping_norm', 'clipped_count'):
        assert split.metrics['aggregator'][key] == single.metrics['aggregator'][key]
    assert split.metrics['client_work']['train']['num_examples'] == sum(
        len(list(train.create_tf_dataset_for_client(c))) for c in client_ids)


def test_fit_recovers_a_known_line():
    clients = [10, 10, 50, 50, 100]
    fixed, per_client = scaling.fit_fixed_and_per_client(clients, [0.2 + 0.01 * n for n in clients])
    assert fixed == pytest.approx(0.2) and per_client == pytest.approx(0.01)


@pytest.mark.parametrize('threaded', [True, False], ids=['threaded', 'unthreaded'])
def test_mergeable_context_sends_after_merge_no_clients_threaded_or_not(setting, threaded):
    import tensorflow_federated as tff

    train, process, _, _ = setting
    datasets = training.round_datasets(train, list(train.client_ids[:5]), 1)
    state = process.initialize()
    runtime.use_context(None)
    single = process.next(state, datasets)
    runtime.use_context(2)  # Starts the two local workers if no earlier test did.
    context = runtime.mergeable_context(runtime.start_workers(2), threaded=threaded)
    calls = []
    for sub_context in context._async_execution_contexts:  # Record what reaches TFF's own context.
        async def spy(comp, arg, invoke=sub_context.inner.invoke):
            calls.append((comp, arg))
            return await invoke(comp, arg)
        sub_context.inner.invoke = spy
    with tff.framework.get_context_stack().install(context):
        split = process.next(state, datasets)
    assert scaling.max_weight_difference(process.get_model_weights(single.state),
                                         process.get_model_weights(split.state)) < 1e-5
    after_merge = [arg for comp, arg in calls if runtime._lean_after_merge.get(id(comp)) is comp]
    assert len(after_merge) == 1 and len(calls) == 4  # Up to merge twice, merge, after merge.
    original_argument = after_merge[0][0]  # (original argument, merge result)
    assert len(original_argument[1]) == 0  # (state, client datasets): no client's dataset sent again.
