"""Compressed FedAvg: tensor_encoding encoders per variable, an encoded broadcast, bytes on the wire.

The teaching copies of these builders are in notebooks/07_compression.ipynb; tests/test_notebooks.py
keeps them identical.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff
import tree
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

from helpers import training
from helpers._checks import check_int, check_model_fn

DEFAULT_THRESHOLD = 100
EncoderFn = Callable[[tf.TensorSpec], te.core.Encoder]


def encoded_size_bytes(encoded) -> tf.Tensor:
    """Return the number of bytes of every tensor in the (nested) encoded value, as an int64 tensor."""
    sizes = [tf.size(t, out_type=tf.int64) * t.dtype.size for t in tf.nest.flatten(encoded)]
    return tf.add_n(sizes) if sizes else tf.constant(0, tf.int64)


def serialized_sizes(encoder_fn: EncoderFn, tensors, gather: bool = False) -> tuple[int, int, int]:
    """Encode each tensor eagerly; return (measured bytes, raw NumPy bytes, tf.io.serialize_tensor bytes).

    gather=False encodes as the broadcast does (a SimpleEncoder: the encoding carries all it needs);
    gather=True as a client does in the aggregation (a GatherEncoder, whose parameters, such as a
    rotation seed, come from the server and are not part of the encoding).
    """
    measured = raw = serialized = 0
    for tensor in tf.nest.flatten(tensors):
        tensor = tf.convert_to_tensor(tensor)
        spec = tf.TensorSpec(tensor.shape, tensor.dtype)
        if gather:
            gather_encoder = te.encoders.as_gather_encoder(encoder_fn(spec), spec)
            encode_params, _, _ = gather_encoder.get_params(gather_encoder.initial_state())
            encoded, _ = gather_encoder.encode(tensor, encode_params)
        else:
            encoded, _ = te.encoders.as_simple_encoder(encoder_fn(spec), spec).encode(tensor)
        measured += int(encoded_size_bytes(encoded))
        raw += sum(t.numpy().nbytes for t in tf.nest.flatten(encoded))
        serialized += sum(len(tf.io.serialize_tensor(t).numpy()) for t in tf.nest.flatten(encoded))
    return measured, raw, serialized


def encoder_by_size(make_encoder: Callable[[], te.core.Encoder],
                    threshold: int = DEFAULT_THRESHOLD) -> EncoderFn:
    """Return an encoder_fn that compresses tensors with >= `threshold` elements and leaves others as is."""
    if not callable(make_encoder):
        raise TypeError('make_encoder must be a function returning a new tensor_encoding Encoder, for '
                        'example lambda: te.encoders.uniform_quantization(8).')
    threshold = check_int('threshold', threshold, minimum=0, example=DEFAULT_THRESHOLD)

    def encoder_fn(spec: tf.TensorSpec) -> te.core.Encoder:
        if spec.shape.num_elements() >= threshold:
            return make_encoder()
        return te.encoders.identity()

    return encoder_fn


class ByteCountingGatherEncoder:
    """A GatherEncoder that also sums, over clients, the bytes of the encoded tensors it produced."""

    def __init__(self, encoder: te.core.GatherEncoder):
        self._encoder = encoder

    @property
    def state_update_aggregation_modes(self):
        return list(self._encoder.state_update_aggregation_modes) + [te.core.StateAggregationMode.SUM] * 2

    def initial_state(self):
        zero = tf.constant(0, tf.int64)
        return tuple(self._encoder.initial_state()) + (zero, zero)

    def get_params(self, state):
        return self._encoder.get_params(tuple(state)[:-2])

    def encode(self, x, encode_params):
        encoded_x, state_update_tensors = self._encoder.encode(x, encode_params)
        counts = (encoded_size_bytes(encoded_x), tf.constant(1, tf.int64))  # bytes, messages
        return encoded_x, tuple(state_update_tensors) + counts

    def decode_before_sum(self, encoded_x, decode_before_sum_params):
        return self._encoder.decode_before_sum(encoded_x, decode_before_sum_params)

    def decode_after_sum(self, part_decoded_x, decode_after_sum_params, num_summands):
        return self._encoder.decode_after_sum(part_decoded_x, decode_after_sum_params, num_summands)

    def update_state(self, state, state_update_tensors):
        state_update_tensors = tuple(state_update_tensors)
        inner = self._encoder.update_state(tuple(state)[:-2], state_update_tensors[:-2])
        # The counts of this round replace those of the previous round.
        return tuple(inner) + state_update_tensors[-2:]


class MeasuredEncodedSumFactory(tff.aggregators.EncodedSumFactory):
    """EncodedSumFactory that reports the bytes clients sent (summed over clients) as measurements."""

    def __init__(self, encoder_fn: EncoderFn):
        super().__init__(lambda spec: ByteCountingGatherEncoder(
            te.encoders.as_gather_encoder(encoder_fn(spec), spec)))

    def create(self, value_type) -> tff.templates.AggregationProcess:
        process = super().create(value_type)
        specs = tff.types.type_to_tf_tensor_specs(value_type)

        @tff.tensorflow.computation(process.state_type.member)
        def count(state):
            per_variable = tree.flatten_up_to(specs, state)  # Each: (*encoder state, bytes, clients).
            return collections.OrderedDict(bytes=tf.add_n([s[-2] for s in per_variable]),
                                           clients=per_variable[0][-1])

        @tff.federated_computation(process.next.type_signature.parameter)
        def next_fn(state, value):
            output = process.next(state, value)
            return tff.templates.MeasuredProcessOutput(
                state=output.state, result=output.result,
                measurements=tff.federated_map(count, output.state))

        return tff.templates.AggregationProcess(process.initialize, next_fn)


def build_encoded_broadcast_process(value_type: tff.Type, encoder_fn: EncoderFn
                                    ) -> tff.learning.templates.DistributionProcess:
    """Return a DistributionProcess that encodes `value_type` on the server and decodes it on clients."""
    specs = tff.types.type_to_tf_tensor_specs(value_type)
    encoders = tf.nest.map_structure(
        lambda spec: te.encoders.as_simple_encoder(encoder_fn(spec), spec), specs)

    @tff.tensorflow.computation(value_type)
    def encode(value):
        return tree.map_structure_up_to(encoders, lambda e, x: e.encode(x)[0], encoders, value)

    @tff.tensorflow.computation(encode.type_signature.result)
    def decode(encoded):
        return tree.map_structure_up_to(encoders, lambda e, x: e.decode(x), encoders, encoded)

    @tff.tensorflow.computation(encode.type_signature.result)
    def count(encoded):
        return collections.OrderedDict(bytes=encoded_size_bytes(encoded),
                                       clients=tf.constant(1, tf.int64))

    @tff.federated_computation()
    def initialize():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(initialize.type_signature.result,
                               tff.FederatedType(value_type, tff.SERVER))
    def next_fn(state, value):
        encoded = tff.federated_broadcast(tff.federated_map(encode, value))
        return tff.templates.MeasuredProcessOutput(
            state=state, result=tff.federated_map(decode, encoded),
            measurements=tff.federated_sum(tff.federated_map(count, encoded)))

    return tff.learning.templates.DistributionProcess(initialize, next_fn)


def build_compressed_fed_avg(model_fn: Callable[[], tff.learning.models.VariableModel],
                             client_optimizer: tff.learning.optimizers.Optimizer,
                             server_optimizer: tff.learning.optimizers.Optimizer,
                             broadcast_encoder_fn: EncoderFn,
                             aggregation_encoder_fn: EncoderFn
                             ) -> tff.learning.templates.LearningProcess:
    """Return FedAvg whose broadcast and mean of updates go through the given per-variable encoders."""
    check_model_fn('model_fn', model_fn)
    if not (callable(broadcast_encoder_fn) and callable(aggregation_encoder_fn)):
        raise TypeError('broadcast_encoder_fn and aggregation_encoder_fn must map a tf.TensorSpec to a '
                        'tensor_encoding Encoder; build them with encoder_by_size.')
    weights_type = tff.learning.models.weights_type_from_model(model_fn)
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer, server_optimizer,
        model_distributor=build_encoded_broadcast_process(weights_type, broadcast_encoder_fn),
        model_aggregator=tff.aggregators.MeanFactory(
            value_sum_factory=MeasuredEncodedSumFactory(aggregation_encoder_fn)),
        loop_implementation=training.LOOP_IMPLEMENTATION)


def bytes_per_round(metrics) -> dict[str, float]:
    """Return the bytes clients received (down) and sent (up) this round, summed over clients."""
    down, up = metrics['distributor'], metrics['aggregator']['mean_value']
    return {'bytes_down': float(down['bytes']), 'bytes_up': float(up['bytes']),
            'clients_down': float(down['clients']), 'clients_up': float(up['clients'])}


TOLERANCE = 0.01  # The target: at most 1 point lower.


def verdict(drop: float, standard_error: float) -> str:
    """Return 'undecided' if `drop` lies within two standard errors of TOLERANCE, else 'met' or 'missed'."""
    if not (math.isfinite(drop) and math.isfinite(standard_error) and standard_error >= 0):
        raise ValueError('drop and standard_error must be finite, standard_error >= 0 (accuracy points as '
                         f'fractions); got {drop!r} and {standard_error!r}.')
    if abs(drop - TOLERANCE) < 2 * standard_error:
        return 'undecided'
    return 'met' if drop <= TOLERANCE else 'missed'
