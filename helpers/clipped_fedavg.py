"""FedAvg with client-side gradient clipping, composed from TFF's four learning-process building blocks.

The teaching copies of everything defined here are in notebooks/04_composing_clipped_fedavg.ipynb;
tests/test_notebooks.py keeps them identical.

Measurements of the client work, per round: `metrics['client_work']['train']` (the model's metrics,
as in `build_weighted_fed_avg`) and `metrics['client_work']['clipping']` with `mean_gradient_norm`
(the mean pre-clipping norm over every gradient every client computed) and `clipped_fraction` (the
fraction of those gradients whose norm exceeded `clip_norm`). The clip norm is the client work's
state, a hyperparameter: `set_clip_norm` changes it between rounds.

A `gradient_fn(model, batch, clip_norm)` returns (gradients to apply, a 1-D tensor of the
pre-clipping norms it saw, the batch's number of examples as int64); the default,
`clipped_batch_gradient`, clips the batch gradient, so it sees one norm per batch.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from helpers._checks import check_callable, check_float, check_model_fn

GradientFn = Callable[..., tuple]


def check_clip_norm(clip_norm: float) -> float:
    """Return `clip_norm` as a float after checking that it is a positive number (inf: no clipping)."""
    # float32=True: the clip norm is a float32 in the process, where 1e-46 would become 0.
    return check_float('clip_norm', clip_norm, minimum=0, strict_minimum=True, allow_inf=True, float32=True,
                       hint='the largest L2 norm a gradient may have; use math.inf for no clipping')


def clip_gradients(gradients, clip_norm: tf.Tensor):
    """Return `gradients` scaled to a global L2 norm of at most `clip_norm`, and their norm before."""
    norm = tf.linalg.global_norm(tf.nest.flatten(gradients))
    # Scale only when needed, so that gradients below the threshold pass through bit for bit.
    scale = tf.where(norm > clip_norm, clip_norm / norm, tf.ones_like(norm))
    return tf.nest.map_structure(lambda g: g * scale, gradients), norm


def clipped_batch_gradient(model: tff.learning.models.VariableModel, batch, clip_norm: tf.Tensor):
    """Return the batch's loss gradient clipped to `clip_norm`, its norm(s) before, and the batch size."""
    with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
    gradients = tape.gradient(output.loss, model.trainable_variables)
    gradients, norm = clip_gradients(gradients, clip_norm)
    return gradients, tf.reshape(norm, [1]), tf.cast(output.num_examples, tf.int64)


@tf.function
def clipped_client_update(model: tff.learning.models.VariableModel,
                          optimizer: tff.learning.optimizers.Optimizer,
                          server_weights: tff.learning.models.ModelWeights,
                          dataset: tf.data.Dataset,
                          clip_norm: tf.Tensor,
                          gradient_fn: GradientFn = clipped_batch_gradient):
    """Train from `server_weights` on `dataset` with clipped gradients; return the update and statistics."""
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda variable, value: variable.assign(value), weights, server_weights)
    trainable = tuple(weights.trainable)
    optimizer_state = optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))

    def train_on_batch(totals, batch):
        optimizer_state, num_examples, norm_sum, num_gradients, num_clipped = totals
        gradients, norms, batch_size = gradient_fn(model, batch, clip_norm)
        optimizer_state, new_weights = optimizer.next(optimizer_state, trainable, tuple(gradients))
        for variable, value in zip(trainable, new_weights):
            variable.assign(value)
        return (optimizer_state, num_examples + batch_size, norm_sum + tf.reduce_sum(norms),
                num_gradients + tf.size(norms),
                num_clipped + tf.reduce_sum(tf.cast(norms > clip_norm, tf.int32)))

    zero_totals = (optimizer_state, tf.constant(0, tf.int64), tf.constant(0.0), tf.constant(0),
                   tf.constant(0))
    totals = zero_totals
    # An iterator loop rather than dataset.reduce: the same steps, faster in TFF's runtime.
    for batch in iter(dataset):
        totals = train_on_batch(totals, batch)
    _, num_examples, norm_sum, num_gradients, num_clipped = totals
    # The update is the pseudo-gradient, initial minus trained: the server optimizer subtracts it.
    update = tuple(initial - trained for initial, trained in zip(server_weights.trainable, trainable))
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(u)) for u in update])
    # A client whose training diverged sends zeros with zero weight instead of poisoning the mean.
    update = tuple(tf.where(finite, u, tf.zeros_like(u)) for u in update)
    weight = tf.where(finite, tf.cast(num_examples, tf.float32), 0.0)
    statistics = collections.OrderedDict(
        norm_sum=norm_sum, num_gradients=num_gradients, num_clipped=num_clipped)
    return (tff.learning.templates.ClientResult(update=update, update_weight=weight), statistics,
            model.report_local_unfinalized_metrics())


def build_clipped_client_work(model_fn: Callable[[], tff.learning.models.VariableModel],
                              optimizer: tff.learning.optimizers.Optimizer,
                              clip_norm: float,
                              gradient_fn: GradientFn = clipped_batch_gradient
                              ) -> tff.learning.templates.ClientWorkProcess:
    """Return a ClientWorkProcess running `clipped_client_update`; its state (an hparam) is clip_norm."""
    clip_norm = check_clip_norm(clip_norm)
    check_model_fn('model_fn', model_fn)
    if not isinstance(optimizer, tff.learning.optimizers.Optimizer):
        raise TypeError('optimizer must be a tff.learning.optimizers.Optimizer such as '
                        'tff.learning.optimizers.build_sgdm(learning_rate=0.5), got '
                        f'{type(optimizer).__name__}.')
    check_callable('gradient_fn', gradient_fn, 'a function like clipped_batch_gradient')
    with tf.Graph().as_default():  # Build a throwaway model only to read its types.
        model = model_fn()
        aggregate_metrics = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
        weights_type = tff.learning.models.weights_type_from_model(model)
        data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))

    @tff.federated_computation
    def initialize_fn():
        return tff.federated_value(
            collections.OrderedDict(clip_norm=np.float32(clip_norm)), tff.SERVER)

    state_type = initialize_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update_fn(state, server_weights, dataset):
        return clipped_client_update(model_fn(), optimizer, server_weights, dataset,
                                     state['clip_norm'], gradient_fn)

    statistics_type = client_update_fn.type_signature.result[1]

    @tff.tensorflow.computation(statistics_type)
    def summarize(statistics):
        count = tf.cast(statistics['num_gradients'], tf.float32)
        return collections.OrderedDict(
            mean_gradient_norm=tf.math.divide_no_nan(statistics['norm_sum'], count),
            clipped_fraction=tf.math.divide_no_nan(
                tf.cast(statistics['num_clipped'], tf.float32), count))

    @tff.federated_computation(initialize_fn.type_signature.result,
                               tff.FederatedType(weights_type, tff.CLIENTS),
                               tff.FederatedType(data_type, tff.CLIENTS))
    def next_fn(state, server_weights, client_data):
        state_at_clients = tff.federated_broadcast(state)
        result, statistics, model_metrics = tff.federated_map(
            client_update_fn, (state_at_clients, server_weights, client_data))
        clipping = tff.federated_map(summarize, tff.federated_sum(statistics))
        measurements = tff.federated_zip(collections.OrderedDict(
            train=aggregate_metrics(model_metrics), clipping=clipping))
        return tff.templates.MeasuredProcessOutput(state, result, measurements)

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return state

    @tff.tensorflow.computation(state_type, state_type)
    def set_hparams_fn(state, hparams):
        del state  # The whole state is the hyperparameters.
        return hparams

    return tff.learning.templates.ClientWorkProcess(
        initialize_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn)


def build_clipped_fedavg(model_fn: Callable[[], tff.learning.models.VariableModel],
                         clip_norm: float,
                         client_optimizer_fn: tff.learning.optimizers.Optimizer,
                         server_optimizer_fn: tff.learning.optimizers.Optimizer | None = None,
                         *,
                         model_aggregator: tff.aggregators.WeightedAggregationFactory
                         | tff.aggregators.UnweightedAggregationFactory | None = None,
                         gradient_fn: GradientFn = clipped_batch_gradient
                         ) -> tff.learning.templates.LearningProcess:
    """Return FedAvg (weighted by examples) whose clients clip every gradient to `clip_norm`."""
    clip_norm = check_clip_norm(clip_norm)
    check_model_fn('model_fn', model_fn)
    check_callable('gradient_fn', gradient_fn, 'a function like clipped_batch_gradient')
    if server_optimizer_fn is None:
        server_optimizer_fn = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    for name, value in [('client_optimizer_fn', client_optimizer_fn),
                        ('server_optimizer_fn', server_optimizer_fn)]:
        if not isinstance(value, tff.learning.optimizers.Optimizer):
            raise TypeError(f'{name} must be a tff.learning.optimizers.Optimizer such as '
                            f'tff.learning.optimizers.build_sgdm(learning_rate=0.5), got '
                            f'{type(value).__name__}.')
    if model_aggregator is None:
        model_aggregator = tff.aggregators.MeanFactory()
    if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
        model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
    if not isinstance(model_aggregator, tff.aggregators.WeightedAggregationFactory):
        raise TypeError('model_aggregator must be a tff.aggregators aggregation factory such as '
                        f'tff.aggregators.MeanFactory(), got {type(model_aggregator).__name__}.')

    @tff.tensorflow.computation
    def initial_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_weights_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    client_work = build_clipped_client_work(model_fn, client_optimizer_fn, clip_norm, gradient_fn)
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer_fn, weights_type)
    return tff.learning.templates.compose_learning_process(
        initial_weights_fn, distributor, client_work, aggregator, finalizer)


def set_clip_norm(process: tff.learning.templates.LearningProcess, state, clip_norm: float):
    """Return `state` of a `build_clipped_fedavg` process with its clip norm set to `clip_norm`."""
    clip_norm = check_clip_norm(clip_norm)
    if not isinstance(process, tff.learning.templates.LearningProcess):
        raise TypeError('process must be the LearningProcess from build_clipped_fedavg, got '
                        f'{type(process).__name__}.')
    hparams = process.get_hparams(state)
    if 'clip_norm' not in hparams.get('client_work', {}):
        raise ValueError('process has no client_work clip_norm hyperparameter: build it with '
                         'build_clipped_fedavg.')
    hparams['client_work']['clip_norm'] = np.float32(clip_norm)
    return process.set_hparams(state, hparams)
