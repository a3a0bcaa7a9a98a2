"""Aggregators that clip client model updates and report the clipping norm and client-update norms.

Every definition here is taught in notebooks/05_norm_reporting_aggregators.ipynb, in cells that
tests/test_notebooks.py keeps identical to this file.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from helpers._checks import check_float, check_int

NORM_DTYPE = np.float32
COUNT_DTYPE = np.int32


def adaptive_clipping_norm(target_quantile: float, initial_norm: float = 1.0,
                           learning_rate: float = 0.2) -> tff.templates.EstimationProcess:
    """Return a noise-free estimator that moves a clipping norm toward a quantile of client norms."""
    # float32=True: the estimator computes in float32, where 1e-46 is 0 and 1e39 is infinite.
    target_quantile = check_float('target_quantile', target_quantile, minimum=0, maximum=1,
                                  strict_minimum=True, strict_maximum=True, hint='at 0 every client '
                                  'ends up clipped, at 1 none; 0.5 tracks the median client norm')
    initial_norm = check_float('initial_norm', initial_norm, minimum=0, strict_minimum=True,
                               float32=True, hint='a positive norm such as 1.0')
    learning_rate = check_float('learning_rate', learning_rate, minimum=0, strict_minimum=True,
                                float32=True, hint='0.2 is a common choice')
    return tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
        initial_estimate=float(initial_norm), target_quantile=float(target_quantile),
        learning_rate=float(learning_rate))


def global_l2_norm(value) -> tf.Tensor:
    """Return the L2 norm of a whole structure of float tensors, as if flattened into one vector."""
    squares = [tf.reduce_sum(tf.square(tf.cast(t, NORM_DTYPE))) for t in tf.nest.flatten(value)]
    return tf.sqrt(tf.add_n(squares))


def constant_norm_process(norm: float) -> tff.templates.EstimationProcess:
    """Return an EstimationProcess whose report is always `norm` (a fixed clipping norm)."""
    norm = check_float('norm', norm, minimum=0, strict_minimum=True, allow_inf=True, float32=True,
                       hint='a positive clipping norm; math.inf: no clipping')

    @tff.federated_computation()
    def initialize():
        return tff.federated_value((), tff.SERVER)  # Nothing to remember.

    @tff.federated_computation(initialize.type_signature.result,
                               tff.FederatedType(NORM_DTYPE, tff.CLIENTS))
    def next_fn(state, client_norms):
        return state  # Ignores the client norms: the norm never moves.

    @tff.federated_computation(initialize.type_signature.result)
    def report(state):
        return tff.federated_value(NORM_DTYPE(norm), tff.SERVER)

    return tff.templates.EstimationProcess(initialize, next_fn, report)


def build_clip_fn(value_type) -> tff.Computation:
    """Return a TF computation (value, clipping_norm) -> (clipped value, its norm before, 1 if clipped)."""

    @tff.tensorflow.computation(value_type, NORM_DTYPE)
    def clip(value, clipping_norm):
        norm = global_l2_norm(value)
        scale = tf.minimum(1.0, clipping_norm / tf.maximum(norm, 1e-12))
        clipped = tf.nest.map_structure(lambda t: t * tf.cast(scale, t.dtype), value)
        return clipped, norm, tf.cast(norm > clipping_norm, COUNT_DTYPE)

    return clip


class NormReportingFactory:
    """Clip each client's update to an L2 norm, delegate to an inner factory, report norm statistics.

    Use `norm_reporting_clipping`, which returns the weighted or unweighted variant that matches the
    inner factory.
    """

    def __init__(self, clipping_norm: float | tff.templates.EstimationProcess,
                 inner_factory: tff.aggregators.AggregationFactory):
        if not isinstance(inner_factory, (tff.aggregators.WeightedAggregationFactory,
                                          tff.aggregators.UnweightedAggregationFactory)):
            raise TypeError('inner_factory must be a tff.aggregators aggregation factory such as '
                            f'MeanFactory(), got {type(inner_factory).__name__}.')
        if not isinstance(clipping_norm, tff.templates.EstimationProcess):
            clipping_norm = constant_norm_process(clipping_norm)
        self._norm_process = clipping_norm
        self._inner_factory = inner_factory

    def _create(self, value_type, weight_type=None) -> tff.templates.AggregationProcess:
        """Return the AggregationProcess for client values of `value_type` (weighted if weight_type)."""
        # Clipping scales the values: integer tensors would be cast to 0 without a word.
        if not all(spec.dtype.is_floating
                   for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))):
            raise TypeError(f'value_type must hold float tensors only (clipping scales them), got '
                            f'{value_type}.')
        if weight_type is None:
            inner_process = self._inner_factory.create(value_type)
        else:
            inner_process = self._inner_factory.create(value_type, weight_type)
        norm_process = self._norm_process
        clip = build_clip_fn(value_type)

        @tff.federated_computation()
        def initialize():
            return tff.federated_zip(collections.OrderedDict(
                clipping_norm=norm_process.initialize(), inner=inner_process.initialize()))

        def aggregate(state, value, weight):
            norm_in_force = norm_process.report(state.clipping_norm)
            clipped, norms, was_clipped = tff.federated_map(
                clip, (value, tff.federated_broadcast(norm_in_force)))
            if weight is None:
                inner_output = inner_process.next(state.inner, clipped)
            else:
                inner_output = inner_process.next(state.inner, clipped, weight)
            new_state = collections.OrderedDict(
                clipping_norm=norm_process.next(state.clipping_norm, norms),
                inner=inner_output.state)
            measurements = collections.OrderedDict(
                clipping_norm=norm_in_force,
                clipped_count=tff.federated_sum(was_clipped),
                client_norm_min=tff.federated_min(norms),
                client_norm_mean=tff.federated_mean(norms),
                client_norm_max=tff.federated_max(norms),
                inner=inner_output.measurements)
            return tff.templates.MeasuredProcessOutput(
                state=tff.federated_zip(new_state), result=inner_output.result,
                measurements=tff.federated_zip(measurements))

        state_type = initialize.type_signature.result
        value_at_clients = tff.FederatedType(value_type, tff.CLIENTS)
        if weight_type is None:
            @tff.federated_computation(state_type, value_at_clients)
            def next_fn(state, value):
                return aggregate(state, value, None)
        else:
            @tff.federated_computation(state_type, value_at_clients,
                                       tff.FederatedType(weight_type, tff.CLIENTS))
            def next_fn(state, value, weight):
                return aggregate(state, value, weight)

        return tff.templates.AggregationProcess(initialize, next_fn)


class WeightedNormReportingFactory(NormReportingFactory, tff.aggregators.WeightedAggregationFactory):
    """A `NormReportingFactory` around a weighted inner factory (for `build_weighted_fed_avg`)."""

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        return self._create(value_type, weight_type)


class UnweightedNormReportingFactory(NormReportingFactory,
                                     tff.aggregators.UnweightedAggregationFactory):
    """A `NormReportingFactory` around an unweighted inner factory."""

    def create(self, value_type) -> tff.templates.AggregationProcess:
        return self._create(value_type)


def norm_reporting_clipping(clipping_norm: float | tff.templates.EstimationProcess,
                            inner_factory: tff.aggregators.AggregationFactory | None = None
                            ) -> tff.aggregators.AggregationFactory:
    """Return a factory that clips client updates, aggregates them with `inner_factory`, reports norms."""
    if not isinstance(clipping_norm, tff.templates.EstimationProcess):
        clipping_norm = check_float(
            'clipping_norm', clipping_norm, minimum=0, strict_minimum=True, float32=True,
            hint='a positive number or an EstimationProcess such as adaptive_clipping_norm(0.5); for '
                 'no clipping use the inner factory on its own')
    if inner_factory is None:
        inner_factory = tff.aggregators.MeanFactory()
    if isinstance(inner_factory, tff.aggregators.WeightedAggregationFactory):
        return WeightedNormReportingFactory(clipping_norm, inner_factory)
    if isinstance(inner_factory, tff.aggregators.UnweightedAggregationFactory):
        return UnweightedNormReportingFactory(clipping_norm, inner_factory)
    raise TypeError('inner_factory must be a tff.aggregators.WeightedAggregationFactory or '
                    f'UnweightedAggregationFactory (e.g. MeanFactory()), got {type(inner_factory).__name__}.')


def add_client_norm_samples(factory: tff.aggregators.AggregationFactory, max_samples: int = 100
                            ) -> tff.aggregators.AggregationFactory:
    """Return `factory` also reporting up to `max_samples` individual client-update norms (not private)."""
    max_samples = check_int('max_samples', max_samples, minimum=1, example=100)
    if not isinstance(factory, (tff.aggregators.WeightedAggregationFactory,
                                tff.aggregators.UnweightedAggregationFactory)):
        raise TypeError('factory must be a tff.aggregators aggregation factory such as '
                        f'norm_reporting_clipping(1.0), got {type(factory).__name__}.')

    def sample_norms(value):
        norm_fn = tff.tensorflow.computation(global_l2_norm, value.type_signature.member)
        norms = tff.federated_map(norm_fn, value)
        return tff.federated_zip(collections.OrderedDict(
            client_norms=tff.aggregators.federated_sample(norms, max_num_samples=max_samples)))

    if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
        return tff.aggregators.add_measurements(
            factory, client_measurement_fn=lambda value, weight: sample_norms(value))
    return tff.aggregators.add_measurements(factory, client_measurement_fn=sample_norms)
