"""The table of bad inputs at the helpers' public boundaries, shared by tests/test_bad_inputs.py and
tools/probe_bad_inputs.py (which classifies how any version of `helpers` answers each row).

A row calls one public helper with one bad argument and names the exception it must raise and a
regex its message must match: the argument's name (and, where it matters, what to pass instead).
`Ctx` builds the valid objects the rows need (data, a model_fn, a process) once, on first use.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np

NAN, INF = math.nan, math.inf
TINY = 1e-46  # Positive, but 0 in float32.


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[['Ctx'], Any]
    error: type
    match: str
    issue: bool = False  # One of the examples in issue #14's text.
    owner: str = ''  # Non-empty: this row's fix belongs to someone else (the reason), xfail here.
    harmless: bool = False  # Accepting it did no harm before it was refused (for the probe's counts).


class Ctx:
    """Valid objects for the rows, built lazily once (needs runtime.setup() for TFF rows)."""

    def __init__(self, tmp_dir):
        self.tmp_dir = tmp_dir

    @cached_property
    def data(self):
        from helpers import data
        return data

    @cached_property
    def train(self):
        return self.data.load_bundled()[0]

    @cached_property
    def test(self):
        return self.data.load_bundled()[1]

    @cached_property
    def ids(self):
        return list(self.train.client_ids[:2])

    @cached_property
    def spec(self):
        import tensorflow as tf
        return collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32),
                                       y=tf.TensorSpec([None, 1], tf.int32))

    @cached_property
    def model_fn(self):
        from helpers import models
        return models.make_model_fn(models.create_linear_model, self.spec)

    @cached_property
    def sgd(self):
        import tensorflow_federated as tff
        return tff.learning.optimizers.build_sgdm(0.1)

    @cached_property
    def process(self):
        import tensorflow_federated as tff
        return tff.learning.algorithms.build_weighted_fed_avg(self.model_fn, self.sgd)

    @cached_property
    def state_manager(self):
        import tensorflow_federated as tff
        return tff.program.FileProgramStateManager(str(self.tmp_dir / 'checkpoints'))

    @cached_property
    def weights(self):
        import tensorflow_federated as tff
        return tff.learning.models.ModelWeights(
            trainable=[np.zeros((3, 2), np.float32), np.zeros(2, np.float32)], non_trainable=[])

    @cached_property
    def dataset(self):
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            label=np.zeros(4, np.int32), pixels=np.ones((4, 28, 28), np.float32)))

    @cached_property
    def encoder_fn(self):
        from helpers import compression
        return compression.encoder_by_size(compression.te.encoders.identity)

    def pixels(self, n=4, value=1.0):
        return np.full((n, 28, 28), value, np.float32)

    def array_client_data(self, pixels=None, labels=None, owners=None):
        pixels = self.pixels() if pixels is None else pixels
        labels = np.arange(len(pixels)) % 10 if labels is None else labels
        owners = ['a', 'a', 'b', 'b'][:len(pixels)] if owners is None else owners
        return self.data.ArrayClientData(pixels, labels, owners)

    def weights_file(self, keys):
        path = self.tmp_dir / f'weights_{"_".join(keys)}.npz'
        np.savez(path, **{key: np.zeros(2, np.float32) for key in keys})
        return path

    def no_accuracy(self, weights):
        return {'loss': 1.0}


def _d(c):
    return c.data


def _m():
    from helpers import models
    return models


def _t():
    from helpers import training
    return training


def _p():
    from helpers import program
    return program


def _r():
    from helpers import runtime
    return runtime


def _cf():
    from helpers import clipped_fedavg
    return clipped_fedavg


def _a():
    from helpers import aggregators
    return aggregators


def _cw():
    from helpers import client_weights
    return client_weights


def _pl():
    from helpers import plotting
    return plotting


def _co():
    from helpers import compression
    return compression


def _pr():
    from helpers import privacy
    return privacy
def _sc():
    from helpers import scaling
    return scaling


def _tff():
    import tensorflow_federated as tff
    return tff


LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])

ROWS = [
    # --- data: loading -------------------------------------------------------------------------
    Row('load_federated_digits source=123', lambda c: _d(c).load_federated_digits(123, verbose=False),
        TypeError, r'source.*123', issue=True),
    Row('load_federated_digits source=list', lambda c: _d(c).load_federated_digits(['bundled'], verbose=False),
        TypeError, r'source'),
    Row('load_federated_digits source=mnist', lambda c: _d(c).load_federated_digits('mnist', verbose=False),
        ValueError, r'source'),
    Row('load_federated_digits verbose=str', lambda c: _d(c).load_federated_digits('bundled', verbose='no'),
        TypeError, r'verbose', harmless=True),
    Row('load_bundled_arrays path=123', lambda c: _d(c).load_bundled_arrays(123), TypeError, r'path'),
    Row('load_bundled_arrays expected_sha256=123',
        lambda c: _d(c).load_bundled_arrays(expected_sha256=123), TypeError, r'expected_sha256'),
    Row('load_emnist timeout_s=str', lambda c: _d(c).load_emnist(timeout_s='5'), TypeError, r'timeout_s'),
    Row('load_emnist timeout_s=nan', lambda c: _d(c).load_emnist(timeout_s=NAN), ValueError, r'timeout_s'),
    Row('load_emnist timeout_s=-1', lambda c: _d(c).load_emnist(timeout_s=-1), ValueError, r'timeout_s'),
    Row('load_emnist cache_dir=123', lambda c: _d(c).load_emnist(cache_dir=123), TypeError, r'cache_dir'),
    # --- data: ArrayClientData ---------------------------------------------------------------------
    Row('ArrayClientData NaN pixels', lambda c: c.array_client_data(pixels=c.pixels(value=NAN)),
        ValueError, r'pixels.*NaN', issue=True),
    Row('ArrayClientData float labels', lambda c: c.array_client_data(labels=[0.0, 1.5, 2.0, 3.7]),
        TypeError, r'labels', issue=True),
    Row('ArrayClientData label 10', lambda c: c.array_client_data(labels=[0, 1, 2, 10]),
        ValueError, r'labels.*0\.\.9', issue=True),
    Row('ArrayClientData label -1', lambda c: c.array_client_data(labels=[0, 1, 2, -1]),
        ValueError, r'labels'),
    Row('ArrayClientData 2-D labels', lambda c: c.array_client_data(labels=np.zeros((4, 1), int)),
        ValueError, r'labels.*1-D'),
    Row('ArrayClientData pixels [N, 784]', lambda c: c.array_client_data(pixels=np.ones((4, 784))),
        ValueError, r'pixels'),
    Row('ArrayClientData int pixels 0-255', lambda c: c.array_client_data(
        pixels=np.full((4, 28, 28), 255, np.int64)), ValueError, r'pixels'),
    Row('ArrayClientData inf pixels', lambda c: c.array_client_data(pixels=c.pixels(value=INF)),
        ValueError, r'pixels'),
    Row('ArrayClientData owners length', lambda c: c.array_client_data(owners=['a', 'b']),
        ValueError, r'owners'),
    Row('ArrayClientData owners=str', lambda c: c.array_client_data(
        pixels=c.pixels(1), labels=[3], owners='writer'), TypeError, r'owners'),
    Row('ArrayClientData unknown client', lambda c: c.array_client_data().create_tf_dataset_for_client(7),
        ValueError, r'client.id'),
    # --- data: arrays, datasets ----------------------------------------------------------------
    Row('client_arrays client_ids=str', lambda c: _d(c).client_arrays(c.train, 'writer_000'),
        TypeError, r'client_ids.*writer_000'),
    Row('client_arrays client_ids=[]', lambda c: _d(c).client_arrays(c.train, []), ValueError, r'client_ids'),
    Row('client_arrays batch_size=str', lambda c: _d(c).client_arrays(c.train, batch_size='4096'),
        TypeError, r'batch_size'),
    Row('client_arrays batch_size=0', lambda c: _d(c).client_arrays(c.train, batch_size=0),
        ValueError, r'batch_size'),
    Row('client_arrays client_data=str', lambda c: _d(c).client_arrays('train'), TypeError, r'client_data'),
    Row('shuffle_and_batch batch_size=str', lambda c: _d(c).shuffle_and_batch(c.dataset, batch_size='20'),
        TypeError, r'batch_size.*20', issue=True),
    Row('shuffle_and_batch batch_size=2.5', lambda c: _d(c).shuffle_and_batch(c.dataset, batch_size=2.5),
        TypeError, r'batch_size.*2\.5', issue=True),
    Row('shuffle_and_batch batch_size=True', lambda c: _d(c).shuffle_and_batch(c.dataset, batch_size=True),
        TypeError, r'batch_size', harmless=True),
    Row('shuffle_and_batch num_epochs=0', lambda c: _d(c).shuffle_and_batch(c.dataset, num_epochs=0),
        ValueError, r'num_epochs'),
    Row('shuffle_and_batch num_epochs=1.5', lambda c: _d(c).shuffle_and_batch(c.dataset, num_epochs=1.5),
        TypeError, r'num_epochs'),
    Row('shuffle_and_batch shuffle_buffer=str',
        lambda c: _d(c).shuffle_and_batch(c.dataset, shuffle_buffer='200'), TypeError, r'shuffle_buffer'),
    Row('shuffle_and_batch seed=str', lambda c: _d(c).shuffle_and_batch(c.dataset, seed='0'),
        TypeError, r'seed', issue=True),
    Row('shuffle_and_batch seed=1.5', lambda c: _d(c).shuffle_and_batch(c.dataset, seed=1.5),
        TypeError, r'seed', issue=True),
    Row('shuffle_and_batch dataset=str', lambda c: _d(c).shuffle_and_batch('data'), TypeError, r'dataset'),
    Row('preprocess batch_size=str', lambda c: _d(c).preprocess(c.dataset, batch_size='20'),
        TypeError, r'batch_size'),
    Row('preprocess dataset=list', lambda c: _d(c).preprocess([1, 2]), TypeError, r'dataset'),
    Row('make_federated_data client_ids=str', lambda c: _d(c).make_federated_data(c.train, 'writer_000'),
        TypeError, r"client_ids.*\['writer_000'\]", issue=True),
    Row('make_federated_data client_ids=[]', lambda c: _d(c).make_federated_data(c.train, []),
        ValueError, r'client_ids', issue=True),
    Row('make_federated_data unknown id', lambda c: _d(c).make_federated_data(c.train, ['nobody']),
        ValueError, r'client_ids'),
    Row('make_federated_data int ids', lambda c: _d(c).make_federated_data(c.train, [0, 1]),
        TypeError, r'client_ids'),
    Row('make_federated_data batch_size=str',
        lambda c: _d(c).make_federated_data(c.train, c.ids, batch_size='20'), TypeError, r'batch_size'),
    Row('make_federated_data seed=1.5', lambda c: _d(c).make_federated_data(c.train, c.ids, seed=1.5),
        TypeError, r'seed'),
    Row('make_federated_data unknown kwarg', lambda c: _d(c).make_federated_data(c.train, c.ids, bogus=1),
        TypeError, r'bogus'),
    Row('client_model_input client_id=list', lambda c: _d(c).client_model_input(c.train, ['writer_000']),
        TypeError, r'client_id'),
    Row('client_model_input client_id=123', lambda c: _d(c).client_model_input(c.train, 123),
        TypeError, r'client_id'),
    # --- data: partitioners and statistics ---------------------------------------------------------
    Row('partition_iid num_clients=0', lambda c: _d(c).partition_iid(10, 0), ValueError, r'num_clients'),
    Row('partition_iid num_clients=str', lambda c: _d(c).partition_iid(10, '3'), TypeError, r'num_clients'),
    Row('partition_iid num_clients=2.5', lambda c: _d(c).partition_iid(10, 2.5), TypeError, r'num_clients'),
    Row('partition_iid num_clients=True', lambda c: _d(c).partition_iid(10, True), TypeError, r'num_clients', harmless=True),
    Row('partition_iid num_examples<num_clients', lambda c: _d(c).partition_iid(2, 5),
        ValueError, r'num_examples'),
    Row('partition_iid num_examples=10.5', lambda c: _d(c).partition_iid(10.5, 2), TypeError, r'num_examples'),
    Row('partition_iid seed=-1', lambda c: _d(c).partition_iid(10, 2, seed=-1), ValueError, r'seed'),
    Row('partition_iid seed=str', lambda c: _d(c).partition_iid(10, 2, seed='0'), TypeError, r'seed'),
    Row('partition_iid seed=1.5', lambda c: _d(c).partition_iid(10, 2, seed=1.5), TypeError, r'seed'),
    Row('partition_dirichlet alpha=nan', lambda c: _d(c).partition_dirichlet(LABELS, 3, NAN),
        ValueError, r'alpha.*(?i:nan)', issue=True),
    Row('partition_dirichlet alpha=inf', lambda c: _d(c).partition_dirichlet(LABELS, 3, INF),
        ValueError, r'alpha.*partition_iid', issue=True),
    Row('partition_dirichlet alpha=str', lambda c: _d(c).partition_dirichlet(LABELS, 3, '1'),
        TypeError, r'alpha'),
    Row('partition_dirichlet alpha=0', lambda c: _d(c).partition_dirichlet(LABELS, 3, 0), ValueError, r'alpha'),
    Row('partition_dirichlet alpha=True', lambda c: _d(c).partition_dirichlet(LABELS, 3, True),
        TypeError, r'alpha', harmless=True),
    Row('partition_dirichlet 2-D labels', lambda c: _d(c).partition_dirichlet(LABELS.reshape(6, 2), 3, 1.0),
        ValueError, r'labels.*1-D', issue=True),
    Row('partition_dirichlet float labels', lambda c: _d(c).partition_dirichlet(LABELS + 0.5, 3, 1.0),
        TypeError, r'labels'),
    Row('partition_dirichlet num_clients=0', lambda c: _d(c).partition_dirichlet(LABELS, 0, 1.0),
        ValueError, r'num_clients'),
    Row('partition_dirichlet num_clients=2.0', lambda c: _d(c).partition_dirichlet(LABELS, 2.0, 1.0),
        TypeError, r'num_clients'),
    Row('partition_dirichlet labels=[]', lambda c: _d(c).partition_dirichlet([], 1, 1.0), ValueError, r'labels'),
    Row('partition_dirichlet seed=-1', lambda c: _d(c).partition_dirichlet(LABELS, 3, 1.0, seed=-1),
        ValueError, r'seed'),
    Row('label_distribution [12]', lambda c: _d(c).label_distribution([12]), ValueError,
        r'labels.*0\.\.9', issue=True),
    Row('label_distribution []', lambda c: _d(c).label_distribution([]), ValueError, r'labels'),
    Row('label_distribution float labels', lambda c: _d(c).label_distribution([1.5, 2.0]),
        TypeError, r'labels'),
    Row('label_distribution 2-D labels', lambda c: _d(c).label_distribution([[1, 2]]), ValueError,
        r'labels.*1-D'),
    Row('label_distribution num_classes=0', lambda c: _d(c).label_distribution([0], num_classes=0),
        ValueError, r'num_classes'),
    Row('label_distribution num_classes=str', lambda c: _d(c).label_distribution([0], num_classes='10'),
        TypeError, r'num_classes'),
    Row('label_distribution label -1', lambda c: _d(c).label_distribution([-1, 2]), ValueError, r'labels'),
    Row('label_skew []', lambda c: _d(c).label_skew([], np.full(10, 0.1)), ValueError,
        r'client_labels', issue=True),
    Row('label_skew label beyond distribution', lambda c: _d(c).label_skew([1, 2], [0.5, 0.5]),
        ValueError, r'client_labels'),
    Row('label_skew distribution sums to 2', lambda c: _d(c).label_skew([1], np.full(10, 0.2)),
        ValueError, r'global_distribution.*sum'),
    Row('label_skew distribution NaN', lambda c: _d(c).label_skew([1], np.full(10, NAN)),
        ValueError, r'global_distribution'),
    Row('label_skew distribution negative', lambda c: _d(c).label_skew([1], [1.5, -0.5]),
        ValueError, r'global_distribution'),
    Row('mean_image_per_label label 12', lambda c: _d(c).mean_image_per_label(c.pixels(2), [1, 12]),
        ValueError, r'labels'),
    Row('mean_image_per_label length mismatch', lambda c: _d(c).mean_image_per_label(c.pixels(3), [1, 2]),
        ValueError, r'pixels.*labels|labels.*pixels'),
    Row('mean_image_per_label float labels', lambda c: _d(c).mean_image_per_label(c.pixels(2), [1.0, 2.5]),
        TypeError, r'labels'),
    # --- models -------------------------------------------------------------------------------
    Row('create_linear_model 2.5', lambda c: _m().create_linear_model(2.5), TypeError,
        r'num_classes.*2\.5', issue=True),
    Row('create_linear_model str', lambda c: _m().create_linear_model('10'), TypeError, r'num_classes'),
    Row('create_linear_model True', lambda c: _m().create_linear_model(True), TypeError, r'num_classes'),
    Row('create_linear_model 1', lambda c: _m().create_linear_model(1), ValueError, r'num_classes'),
    Row('create_cnn_model seed=-1', lambda c: _m().create_cnn_model(seed=-1), ValueError, r'seed', harmless=True),
    Row('create_cnn_model num_classes=2.5', lambda c: _m().create_cnn_model(2.5), TypeError, r'num_classes'),
    Row('create_cnn_model seed=str', lambda c: _m().create_cnn_model(seed='0'), TypeError, r'seed'),
    Row('make_model_fn builder=5', lambda c: _m().make_model_fn(5, c.spec), TypeError, r'keras_builder'),
    Row('make_model_fn builder=model instance', lambda c: _m().make_model_fn(_m().create_linear_model(), c.spec),
        TypeError, r'keras_builder'),
    Row('make_model_fn input_spec=None', lambda c: _m().make_model_fn(_m().create_linear_model, None),
        TypeError, r'input_spec'),
    Row('make_model_fn input_spec x [None, 10]', lambda c: _m().make_model_fn(
        _m().create_linear_model, collections.OrderedDict(
            x=__import__('tensorflow').TensorSpec([None, 10], 'float32'), y=c.spec['y'])),
        ValueError, r'input_spec.*784', issue=True),
    Row('make_model_fn input_spec y float', lambda c: _m().make_model_fn(
        _m().create_linear_model, collections.OrderedDict(
            x=c.spec['x'], y=__import__('tensorflow').TensorSpec([None, 1], 'float32'))),
        TypeError, r'input_spec'),
    Row('SoftmaxRegression num_classes=2.5', lambda c: _m().SoftmaxRegression(2.5), TypeError, r'num_classes'),
    Row('SoftmaxRegression num_classes=str', lambda c: _m().SoftmaxRegression('10'), TypeError, r'num_classes'),
    Row('SoftmaxRegression num_features=0', lambda c: _m().SoftmaxRegression(num_features=0),
        ValueError, r'num_features'),
    # --- training ----------------------------------------------------------------------------------
    Row('sample_clients client_ids=str', lambda c: _t().sample_clients('writer_000', 1, 1),
        TypeError, r'client_ids'),
    Row('sample_clients clients_per_round=str', lambda c: _t().sample_clients(c.ids, '2', 1),
        TypeError, r'clients_per_round'),
    Row('sample_clients clients_per_round=2.5', lambda c: _t().sample_clients(c.ids, 2.5, 1),
        TypeError, r'clients_per_round'),
    Row('sample_clients clients_per_round=True', lambda c: _t().sample_clients(c.ids, True, 1),
        TypeError, r'clients_per_round'),
    Row('sample_clients num_rounds=str', lambda c: _t().sample_clients(c.ids, 1, '3'), TypeError, r'num_rounds'),
    Row('sample_clients num_rounds=1.5', lambda c: _t().sample_clients(c.ids, 1, 1.5), TypeError, r'num_rounds'),
    Row('sample_clients num_rounds=0', lambda c: _t().sample_clients(c.ids, 1, 0), ValueError, r'num_rounds'),
    Row('sample_clients seed=-1', lambda c: _t().sample_clients(c.ids, 1, 1, seed=-1), ValueError, r'seed'),
    Row('pooled_test_dataset test_data=str', lambda c: _t().pooled_test_dataset('test'),
        TypeError, r'test_data'),
    Row('pooled_test_dataset batch_size=0', lambda c: _t().pooled_test_dataset(c.test, batch_size=0),
        ValueError, r'batch_size'),
    Row('make_keras_evaluator builder=5', lambda c: _t().make_keras_evaluator(5, c.dataset),
        TypeError, r'keras_builder'),
    Row('make_keras_evaluator dataset=str', lambda c: _t().make_keras_evaluator(
        _m().create_linear_model, 'data'), TypeError, r'dataset'),
    Row('make_keras_evaluator empty dataset', lambda c: _t().make_keras_evaluator(
        _m().create_linear_model, _d(c).preprocess(c.dataset).take(0)), ValueError, r'dataset'),
    Row('round_datasets round_num=str', lambda c: _t().round_datasets(c.train, c.ids, '1'),
        TypeError, r'round_num'),
    Row('round_datasets preprocess_kwargs=list', lambda c: _t().round_datasets(
        c.train, c.ids, 1, preprocess_kwargs=[1]), TypeError, r'preprocess_kwargs'),
    Row('round_datasets client_ids=[] (a round with zero clients)',
        lambda c: _t().round_datasets(c.train, [], 1), ValueError, r'client_ids', issue=True),
    Row('train process=5', lambda c: _t().train(5, c.train, 1, 1), TypeError, r'process'),
    Row('train num_rounds=str', lambda c: _t().train(c.process, c.train, '2', 1), TypeError, r'num_rounds'),
    Row('train clients_per_round=0', lambda c: _t().train(c.process, c.train, 1, 0), ValueError,
        r'clients_per_round'),
    Row('train evaluate=str', lambda c: _t().train(c.process, c.train, 1, 1, evaluate='accuracy'),
        TypeError, r'evaluate'),
    Row('train extra_metrics=5', lambda c: _t().train(c.process, c.train, 1, 1, extra_metrics=5),
        TypeError, r'extra_metrics'),
    Row('train train_data=str', lambda c: _t().train(c.process, 'train', 1, 1), TypeError, r'train_data'),
    Row('train preprocess_kwargs batch_size=str', lambda c: _t().train(
        c.process, c.train, 1, 1, preprocess_kwargs={'batch_size': '20'}), TypeError, r'batch_size'),
    # --- program ---------------------------------------------------------------------------------
    Row('run_sync 5', lambda c: _p().run_sync(5), TypeError, r'awaitable'),
    Row('make_release_manager 123', lambda c: _p().make_release_manager(123), TypeError, r'log_dir'),
    Row('make_federated_evaluator Keras builder', lambda c: _p().make_federated_evaluator(
        _m().create_linear_model, c.test), TypeError, r'model_fn.*make_model_fn', issue=True),
    Row('make_federated_evaluator batch_size=str', lambda c: _p().make_federated_evaluator(
        c.model_fn, c.test, batch_size='100'), TypeError, r'batch_size'),
    Row('make_federated_evaluator test_data=str', lambda c: _p().make_federated_evaluator(c.model_fn, 'test'),
        TypeError, r'test_data'),
    Row('train_resumable num_rounds=str', lambda c: _p().train_resumable(
        c.process, c.train, '3', 1, c.state_manager), TypeError, r'num_rounds'),
    Row('train_resumable interrupt_after_round=str', lambda c: _p().train_resumable(
        c.process, c.train, 1, 1, c.state_manager, interrupt_after_round='1'),
        TypeError, r'interrupt_after_round'),
    Row('train_resumable seed=-1', lambda c: _p().train_resumable(
        c.process, c.train, 1, 1, c.state_manager, seed=-1), ValueError, r'seed'),
    Row('train_resumable evaluate=str', lambda c: _p().train_resumable(
        c.process, c.train, 1, 1, c.state_manager, evaluate='accuracy'), TypeError, r'evaluate'),
    Row('train_resumable release_manager=5', lambda c: _p().train_resumable(
        c.process, c.train, 1, 1, c.state_manager, release_manager=5), TypeError, r'release_manager'),
    Row('train_resumable train_data=str', lambda c: _p().train_resumable(
        c.process, 'train', 1, 1, c.state_manager), TypeError, r'train_data'),
    # --- runtime ---------------------------------------------------------------------------------
    Row('set_seeds str', lambda c: _r().set_seeds('0'), TypeError, r'seed'),
    Row('set_seeds True', lambda c: _r().set_seeds(True), TypeError, r'seed'),
    Row('set_seeds -1', lambda c: _r().set_seeds(-1), ValueError, r'seed'),
    Row('setup default_num_clients=True', lambda c: _r().setup(default_num_clients=True),
        TypeError, r'default_num_clients', harmless=True),
    Row('setup default_num_clients=str', lambda c: _r().setup(default_num_clients='1'),
        TypeError, r'default_num_clients'),
    Row('setup max_concurrent_computation_calls=0', lambda c: _r().setup(max_concurrent_computation_calls=0),
        ValueError, r'max_concurrent_computation_calls'),
    Row('setup seed=str', lambda c: _r().setup(seed='0'), TypeError, r'seed'),
    Row('setup quiet=str', lambda c: _r().setup(quiet='no'), TypeError, r'quiet', harmless=True),
    Row('make_interruptible None', lambda c: _r().make_interruptible(None), TypeError, r'context'),
    Row('skip_autograph None', lambda c: _r().skip_autograph(None), TypeError, r'package'),
    Row('skip_autograph missing package', lambda c: _r().skip_autograph('no_such_package_xyz'),
        ValueError, r'package.*installed'),
    Row('skip_autograph dotted', lambda c: _r().skip_autograph('tensorflow_model_optimization.python'),
        ValueError, r'package.*top-level'),
    Row('skip_autograph tensorflow_federated', lambda c: _r().skip_autograph('tensorflow_federated'),
        ValueError, r'package.*AutoGraph'),
    Row('setup workers=0', lambda c: _r().setup(workers=0), ValueError, r'workers must be an int >= 1'),
    Row('setup workers=str', lambda c: _r().setup(workers='2'), TypeError, r'workers'),
    Row('use_context workers=0', lambda c: _r().use_context(0), ValueError, r'workers must be an int >= 1'),
    Row('use_context workers=2.0', lambda c: _r().use_context(2.0), TypeError, r'workers'),
    Row('start_workers count=0', lambda c: _r().start_workers(0), ValueError, r'count'),
    Row('start_workers grpc_max_message_length_megabytes=0', lambda c: _r().start_workers(
        1, grpc_max_message_length_megabytes=0), ValueError, r'grpc_max_message_length_megabytes'),
    Row('mergeable_context str', lambda c: _r().mergeable_context('localhost:8000'), TypeError,
        r'addresses must be a non-empty list'),
    Row('mergeable_context no port', lambda c: _r().mergeable_context(['localhost']), ValueError,
        r'address must be a "host:port"'),
    Row('mergeable_context threaded=str', lambda c: _r().mergeable_context(['localhost:8000'],
                                                                          threaded='y'),
        TypeError, r'threaded'),
    Row('remote_context list', lambda c: _r().remote_context(['localhost:8000']), ValueError,
        r'address must be a "host:port"'),
    Row('remote_context port 0', lambda c: _r().remote_context('localhost:0'), ValueError,
        r'port in 1-65535'),
    Row('remote_context threaded=str', lambda c: _r().remote_context('localhost:8000', threaded='y'),
        TypeError, r'threaded'),
    # --- scaling ---------------------------------------------------------------------------------
    Row('write_client_files str', lambda c: _sc().write_client_files('train', c.tmp_dir), TypeError,
        r'client_data'),
    Row('write_client_files directory=5', lambda c: _sc().write_client_files(c.train, 5), TypeError,
        r'directory'),
    Row('file_client_data {}', lambda c: _sc().file_client_data({}), TypeError, r'client_files'),
    Row('file_client_data missing file', lambda c: _sc().file_client_data({'a': '/nonexistent.tfrecord'}),
        FileNotFoundError, r"client_files\['a'\]"),
    Row('dataset_computation batch_size=0', lambda c: _sc().dataset_computation(c.train, batch_size=0),
        ValueError, r'batch_size'),
    Row('dataset_computation global_seed=-1', lambda c: _sc().dataset_computation(c.train, global_seed=-1),
        ValueError, r'global_seed'),
    Row('ids_process str', lambda c: _sc().ids_process('process', None), TypeError, r'process'),
    Row('ids_process build_datasets=None', lambda c: _sc().ids_process(c.process, None), TypeError,
        r'build_datasets'),
    Row('round_ids round_num=-1', lambda c: _sc().round_ids(c.ids, -1), ValueError, r'round_num'),
    Row('round_ids str', lambda c: _sc().round_ids('writer_000', 1), TypeError, r'client_ids'),
    Row('time_calls repeats=0', lambda c: _sc().time_calls(lambda: None, 0), ValueError, r'repeats'),
    Row('fit_fixed_and_per_client one count', lambda c: _sc().fit_fixed_and_per_client([5, 5], [1.0, 2.0]),
        ValueError, r'two distinct client counts'),
    # --- clipped_fedavg --------------------------------------------------------------------------
    Row('check_clip_norm 1e-46', lambda c: _cf().check_clip_norm(TINY), ValueError,
        r'clip_norm.*float32', issue=True),
    Row('check_clip_norm str', lambda c: _cf().check_clip_norm('1'), TypeError, r'clip_norm'),
    Row('check_clip_norm nan', lambda c: _cf().check_clip_norm(NAN), ValueError, r'clip_norm'),
    Row('check_clip_norm -1', lambda c: _cf().check_clip_norm(-1.0), ValueError, r'clip_norm'),
    Row('build_clipped_fedavg Keras builder', lambda c: _cf().build_clipped_fedavg(
        _m().create_linear_model, 1.0, c.sgd), TypeError, r'model_fn.*make_model_fn', issue=True),
    Row('build_clipped_fedavg clip_norm=1e-46', lambda c: _cf().build_clipped_fedavg(
        c.model_fn, TINY, c.sgd), ValueError, r'clip_norm.*float32', issue=True),
    Row('build_clipped_fedavg optimizer=str', lambda c: _cf().build_clipped_fedavg(c.model_fn, 1.0, 'sgd'),
        TypeError, r'client_optimizer_fn'),
    Row('build_clipped_fedavg model_aggregator=str', lambda c: _cf().build_clipped_fedavg(
        c.model_fn, 1.0, c.sgd, model_aggregator='mean'), TypeError, r'model_aggregator'),
    Row('build_clipped_fedavg gradient_fn=5', lambda c: _cf().build_clipped_fedavg(
        c.model_fn, 1.0, c.sgd, gradient_fn=5), TypeError, r'gradient_fn'),
    Row('build_clipped_client_work Keras builder', lambda c: _cf().build_clipped_client_work(
        _m().create_linear_model, c.sgd, 1.0), TypeError, r'model_fn.*make_model_fn'),
    Row('build_clipped_client_work optimizer=str', lambda c: _cf().build_clipped_client_work(
        c.model_fn, 'sgd', 1.0), TypeError, r'optimizer'),
    Row('set_clip_norm 1e-46', lambda c: _cf().set_clip_norm(c.process, None, TINY),  # Checked first.
        ValueError, r'clip_norm.*float32', issue=True),
    Row('set_clip_norm process=str', lambda c: _cf().set_clip_norm('process', None, 1.0),
        TypeError, r'process'),
    # --- aggregators ------------------------------------------------------------------------------
    Row('adaptive_clipping_norm learning_rate=inf', lambda c: _a().adaptive_clipping_norm(
        0.5, learning_rate=INF), ValueError, r'learning_rate.*inf', issue=True),
    Row('adaptive_clipping_norm learning_rate=1e-46', lambda c: _a().adaptive_clipping_norm(
        0.5, learning_rate=TINY), ValueError, r'learning_rate.*float32'),
    Row('adaptive_clipping_norm initial_norm=inf', lambda c: _a().adaptive_clipping_norm(
        0.5, initial_norm=INF), ValueError, r'initial_norm'),
    Row('adaptive_clipping_norm initial_norm=1e-46', lambda c: _a().adaptive_clipping_norm(
        0.5, initial_norm=TINY), ValueError, r'initial_norm.*float32'),
    Row('adaptive_clipping_norm target_quantile=nan', lambda c: _a().adaptive_clipping_norm(NAN),
        ValueError, r'target_quantile'),
    Row('adaptive_clipping_norm target_quantile=str', lambda c: _a().adaptive_clipping_norm('0.5'),
        TypeError, r'target_quantile'),
    Row('adaptive_clipping_norm target_quantile=1', lambda c: _a().adaptive_clipping_norm(1.0),
        ValueError, r'target_quantile'),
    Row('constant_norm_process 1e-46', lambda c: _a().constant_norm_process(TINY), ValueError,
        r'norm.*float32'),
    Row('constant_norm_process nan', lambda c: _a().constant_norm_process(NAN), ValueError, r'norm'),
    Row('constant_norm_process str', lambda c: _a().constant_norm_process('1'), TypeError, r'norm'),
    Row('norm_reporting_clipping 1e-46', lambda c: _a().norm_reporting_clipping(TINY), ValueError,
        r'clipping_norm.*float32', issue=True),
    Row('norm_reporting_clipping nan', lambda c: _a().norm_reporting_clipping(NAN), ValueError,
        r'clipping_norm'),
    Row('norm_reporting_clipping inner_factory=str', lambda c: _a().norm_reporting_clipping(
        1.0, 'mean'), TypeError, r'inner_factory'),
    Row('norm_reporting_clipping on int32 values', lambda c: _a().norm_reporting_clipping(
        1.0, _tff().aggregators.SumFactory()).create(_tff().TensorType(np.int32, [3])),
        TypeError, r'value_type.*float', issue=True),
    Row('NormReportingFactory inner_factory=str', lambda c: _a().NormReportingFactory(1.0, 'mean'),
        TypeError, r'inner_factory'),
    Row('add_client_norm_samples max_samples=0', lambda c: _a().add_client_norm_samples(
        _tff().aggregators.MeanFactory(), 0), ValueError, r'max_samples'),
    Row('add_client_norm_samples max_samples=2.5', lambda c: _a().add_client_norm_samples(
        _tff().aggregators.MeanFactory(), 2.5), TypeError, r'max_samples'),
    Row('add_client_norm_samples factory=str', lambda c: _a().add_client_norm_samples('mean'),
        TypeError, r'factory'),
    # --- client_weights ---------------------------------------------------------------------------
    Row('build_fed_avg_parts Keras builder', lambda c: _cw().build_fed_avg_parts(
        _m().create_linear_model, c.sgd, c.sgd), TypeError, r'model_fn.*make_model_fn', issue=True),
    Row('build_fed_avg_parts optimizer=str', lambda c: _cw().build_fed_avg_parts(c.model_fn, 'sgd', c.sgd),
        TypeError, r'client_optimizer'),
    Row('build_local_training str', lambda c: _cw().build_local_training('work'), TypeError, r'client_work'),
    Row('compose_with_client_results strs', lambda c: _cw().compose_with_client_results(
        'a', 'b', 'c', 'd', 'e'), TypeError, r'initial_model_weights_fn'),
    Row('local_model_weights wrong length', lambda c: _cw().local_model_weights(
        c.weights, [np.zeros((3, 2))]), ValueError, r'update'),
    Row('local_model_weights global_weights=str', lambda c: _cw().local_model_weights(
        'weights', [np.zeros((3, 2)), np.zeros(2)]), TypeError, r'global_weights'),
    Row('local_model_weights NaN update', lambda c: _cw().local_model_weights(
        c.weights, [np.full((3, 2), NAN), np.zeros(2)]), ValueError, r'update.*NaN|update.*finite'),
    Row('flatten_update []', lambda c: _cw().flatten_update([]), ValueError, r'update'),
    Row('flatten_update str', lambda c: _cw().flatten_update('abc'), TypeError, r'update'),
    Row('cosine_similarity_matrix NaN row', lambda c: _cw().cosine_similarity_matrix(
        [[1.0, 0.0], [NAN, 1.0]]), ValueError, r'vectors.*NaN|vectors.*finite', issue=True),
    Row('cosine_similarity_matrix inf row', lambda c: _cw().cosine_similarity_matrix(
        [[1.0, 0.0], [INF, 1.0]]), ValueError, r'vectors'),
    Row('cosine_similarity_matrix 1-D', lambda c: _cw().cosine_similarity_matrix([1.0, 2.0]),
        ValueError, r'vectors'),
    Row('cosine_similarity_matrix str', lambda c: _cw().cosine_similarity_matrix('abc'), TypeError, r'vectors'),
    Row('save_client_weights .txt', lambda c: _cw().save_client_weights(c.tmp_dir / 'w.txt', c.weights),
        ValueError, r'path'),
    Row('save_client_weights weights=str', lambda c: _cw().save_client_weights(c.tmp_dir / 'w.npz', 'w'),
        TypeError, r'weights'),
    Row('save_client_weights path=123', lambda c: _cw().save_client_weights(123, c.weights),
        TypeError, r'path'),
    Row('load_client_weights gap in numbering', lambda c: _cw().load_client_weights(
        c.weights_file(['trainable_0', 'trainable_2'])), ValueError, r'trainable_1', issue=True),
    Row('load_client_weights path=123', lambda c: _cw().load_client_weights(123), TypeError, r'path'),
    Row('load_client_weights missing file', lambda c: _cw().load_client_weights(c.tmp_dir / 'none.npz'),
        FileNotFoundError, r'save_client_weights'),
    # --- plotting --------------------------------------------------------------------------------
    Row('plot_digit_grid num_columns=str', lambda c: _pl().plot_digit_grid(c.pixels(2), [1, 2], num_columns='10'),
        TypeError, r'num_columns'),
    Row('plot_digit_grid num_columns=2.5', lambda c: _pl().plot_digit_grid(c.pixels(2), [1, 2], num_columns=2.5),
        TypeError, r'num_columns'),
    Row('plot_digit_grid length mismatch', lambda c: _pl().plot_digit_grid(c.pixels(3), [1]),
        ValueError, r'labels'),
    Row('plot_label_histograms label 12', lambda c: _pl().plot_label_histograms({'a': [1, 12]}),
        ValueError, r'labels'),
    Row('plot_label_histograms num_columns=0', lambda c: _pl().plot_label_histograms({'a': [1]}, num_columns=0),
        ValueError, r'num_columns'),
    Row('plot_label_histograms list', lambda c: _pl().plot_label_histograms([[1, 2]]),
        TypeError, r'labels_by_client'),
    Row('plot_mean_images wrong shape', lambda c: _pl().plot_mean_images({'a': np.zeros((3, 28, 28))}),
        ValueError, r'mean_images'),
    Row('series_style True', lambda c: _pl().series_style(True), TypeError, r'index'),
    Row('plot_metric_curves empty', lambda c: _pl().plot_metric_curves({}, 'loss'), ValueError, r'histories'),
    Row('plot_metric_curves no round', lambda c: _pl().plot_metric_curves({'a': {'loss': [1.0]}}, 'loss'),
        KeyError, r'round'),
    Row('plot_metric_curves missing metric', lambda c: _pl().plot_metric_curves(
        {'a': {'round': [1], 'loss': [1.0]}}, 'accuracy'), KeyError, r'accuracy'),
    # --- compression (notebook 07, the lead's) -------------------------------------------------------
    Row('encoder_by_size threshold=2.5', lambda c: _co().encoder_by_size(
        lambda: None, threshold=2.5), TypeError, r'threshold'),
    Row('encoder_by_size threshold=-1', lambda c: _co().encoder_by_size(
        lambda: None, threshold=-1), ValueError, r'threshold'),
    Row('encoder_by_size threshold=True', lambda c: _co().encoder_by_size(
        lambda: None, threshold=True), TypeError, r'threshold'),
    Row('encoder_by_size make_encoder=5', lambda c: _co().encoder_by_size(5), TypeError, r'make_encoder'),
    Row('build_compressed_fed_avg Keras builder', lambda c: _co().build_compressed_fed_avg(
        _m().create_linear_model, c.sgd, c.sgd, c.encoder_fn, c.encoder_fn),
        TypeError, r'model_fn.*Keras builder'),
    Row('bytes_per_round {}', lambda c: _co().bytes_per_round({}), KeyError, r'distributor'),
    # --- privacy (notebook 09) -----------------------------------------------------------------------
    Row('find_dp_clip list', lambda c: _pr().find_dp_clip([0.1]), TypeError, r'aggregator_metrics'),
    Row('find_dp_clip no DP measurements', lambda c: _pr().find_dp_clip({'clipping_norm': 1.0}),
        KeyError, r'aggregator_metrics.*dp_query_metrics'),
    Row('dp_fedavg_epsilon noise -1', lambda c: _pr().dp_fedavg_epsilon(-1.0, 10, 120, 10, 1e-3),
        ValueError, r'noise_multiplier'),
    Row('dp_fedavg_epsilon noise NaN', lambda c: _pr().dp_fedavg_epsilon(NAN, 10, 120, 10, 1e-3),
        ValueError, r'noise_multiplier'),
    Row('dp_fedavg_epsilon noise str', lambda c: _pr().dp_fedavg_epsilon('1', 10, 120, 10, 1e-3),
        TypeError, r'noise_multiplier'),
    Row('dp_fedavg_epsilon cohort > population', lambda c: _pr().dp_fedavg_epsilon(1.0, 200, 120, 10, 1e-3),
        ValueError, r'clients_per_round'),
    Row('dp_fedavg_epsilon cohort 2.5', lambda c: _pr().dp_fedavg_epsilon(1.0, 2.5, 120, 10, 1e-3),
        TypeError, r'clients_per_round'),
    Row('dp_fedavg_epsilon population 0', lambda c: _pr().dp_fedavg_epsilon(1.0, 10, 0, 10, 1e-3),
        ValueError, r'population'),
    Row('dp_fedavg_epsilon rounds 0', lambda c: _pr().dp_fedavg_epsilon(1.0, 10, 120, 0, 1e-3),
        ValueError, r'num_rounds'),
    Row('dp_fedavg_epsilon delta 0', lambda c: _pr().dp_fedavg_epsilon(1.0, 10, 120, 10, 0.0),
        ValueError, r'delta'),
    Row('dp_fedavg_epsilon delta 1', lambda c: _pr().dp_fedavg_epsilon(1.0, 10, 120, 10, 1.0),
        ValueError, r'delta'),
    Row('dp_fedavg_epsilon sampling', lambda c: _pr().dp_fedavg_epsilon(1.0, 10, 120, 10, 1e-3, 'uniform'),
        ValueError, r'sampling'),
    Row('deployment_for_epsilon target 0', lambda c: _pr().deployment_for_epsilon(0.0, 0.02, 10, [1000]),
        ValueError, r'target_epsilon'),
    Row('deployment_for_epsilon noise_on_mean inf', lambda c: _pr().deployment_for_epsilon(10.0, INF, 10, [1000]),
        ValueError, r'noise_on_mean'),
    Row('deployment_for_epsilon rounds 2.0', lambda c: _pr().deployment_for_epsilon(10.0, 0.02, 2.0, [1000]),
        TypeError, r'num_rounds'),
    Row('deployment_for_epsilon populations int', lambda c: _pr().deployment_for_epsilon(10.0, 0.02, 10, 1000),
        TypeError, r'populations'),
    Row('deployment_for_epsilon populations []', lambda c: _pr().deployment_for_epsilon(10.0, 0.02, 10, []),
        TypeError, r'populations'),
    Row('deployment_for_epsilon population 0', lambda c: _pr().deployment_for_epsilon(10.0, 0.02, 10, [0]),
        ValueError, r'populations'),
    Row('deployment_for_epsilon delta_times_population 1', lambda c: _pr().deployment_for_epsilon(
        10.0, 0.02, 10, [1000], delta_times_population=1.0), ValueError, r'delta_times_population'),
    Row('deployment_for_epsilon sampling', lambda c: _pr().deployment_for_epsilon(
        10.0, 0.02, 10, [1000], sampling='uniform'), ValueError, r'sampling'),
]

# Inputs that must be accepted (NumPy scalars where plain numbers work), with what they must return.
ACCEPTED = [
    ('dp_fedavg_epsilon NumPy scalars', lambda c: _pr().dp_fedavg_epsilon(
        np.float32(1.0), np.int64(120), np.int64(120), np.int32(1), np.float64(1e-3)) > 0, True),
    ('check_clip_norm np.float32', lambda c: _cf().check_clip_norm(np.float32(0.5)), 0.5),
    ('constant_norm_process np.float32', lambda c: type(_a().constant_norm_process(np.float32(2.0))).__name__,
     'EstimationProcess'),
    ('adaptive_clipping_norm np.float32', lambda c: isinstance(_a().adaptive_clipping_norm(
        np.float32(0.5), np.float64(1.0), np.float32(0.2)), _tff().templates.EstimationProcess), True),
    ('norm_reporting_clipping np.float32', lambda c: type(_a().norm_reporting_clipping(
        np.float32(1.0))).__name__, 'WeightedNormReportingFactory'),
    ('add_client_norm_samples np.int64', lambda c: isinstance(_a().add_client_norm_samples(
        _tff().aggregators.MeanFactory(), np.int64(5)), _tff().aggregators.WeightedAggregationFactory), True),
    ('set_seeds np.int64', lambda c: _r().set_seeds(np.int64(3)), None),
    ('encoder_by_size np.int64 threshold', lambda c: _co().encoder_by_size(
        _co().te.encoders.identity, threshold=np.int64(100))(_co().tf.TensorSpec([99])).__class__.__name__,
     'Encoder'),
    ('partition_iid np.int64', lambda c: [len(p) for p in _d(c).partition_iid(
        np.int64(10), np.int32(2), seed=np.uint8(1))], [5, 5]),
    ('partition_dirichlet np.float32 alpha', lambda c: sum(len(p) for p in _d(c).partition_dirichlet(
        LABELS, np.int64(3), np.float32(0.5))), len(LABELS)),
    ('create_linear_model np.int64', lambda c: _m().create_linear_model(np.int64(3)).output_shape, (None, 3)),
    ('label_distribution np.int64 num_classes', lambda c: list(_d(c).label_distribution(
        np.array([0, 1], np.uint8), np.int64(2))), [0.5, 0.5]),
    ('sample_clients np.int64', lambda c: len(_t().sample_clients(c.ids, np.int64(1), np.int32(2))), 2),
    ('series_style np.int64', lambda c: _pl().series_style(np.int64(1))['linestyle'], '--'),
    # Not a NumPy scalar: an `evaluate` without 'accuracy' must not fail after the round has run.
    ('train evaluate without accuracy', lambda c: _t().train(
        c.process, c.train, 1, 1, evaluate=c.no_accuracy)[1]['test_loss'], [1.0]),
]
