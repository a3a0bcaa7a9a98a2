"""Compression helpers: encoder error bounds, measured sizes against packing arithmetic, identity = FedAvg."""

import math

import numpy as np
import pytest

import tensorflow as tf
# Imported, not importorskip'd: tensorflow-model-optimization is in the lock, and a broken install
# must fail these tests rather than skip them.
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te_module

from helpers import compression


def _roundtrip(make_encoder, x):
    encoder = te_module.encoders.as_simple_encoder(make_encoder(), tf.TensorSpec(x.shape, tf.float32))
    encoded, _ = encoder.encode(tf.constant(x))
    return encoded, encoder.decode(encoded).numpy()


def _packed_bytes(num_values: int, bits: int) -> int:
    """Bytes of `num_values` values of `bits` bits, concatenated into int32 words of 28 used bits."""
    return math.ceil(num_values * bits / 28) * 4


def test_encoded_size_bytes_counts_every_tensor_of_a_nested_value():
    nested = {'a': tf.zeros([3, 4], tf.int32), 'b': [tf.zeros([5], tf.float64), tf.zeros([7], tf.uint8)],
              'c': (tf.zeros([0], tf.float32),)}
    size = compression.encoded_size_bytes(nested)
    assert size.dtype == tf.int64 and int(size) == 3 * 4 * 4 + 5 * 8 + 7 * 1
    assert int(compression.encoded_size_bytes({})) == 0


def _gather_roundtrip(encoder, x, state):
    """Encode `x` with a GatherEncoder-like object and decode it as the server does for one client."""
    encode_params, decode_before, decode_after = encoder.get_params(state)
    encoded, updates = encoder.encode(x, encode_params)
    part = encoder.decode_before_sum(encoded, decode_before)
    return encoded, updates, encoder.decode_after_sum(part, decode_after, 1)


@pytest.mark.parametrize('make_encoder, bits', [(te_module.encoders.identity, None),
                                                (lambda: te_module.encoders.uniform_quantization(8), 8)])
def test_byte_counting_gather_encoder_adds_bytes_and_one_message_to_the_inner_encoder(make_encoder, bits):
    x = tf.constant(np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100))
    spec = tf.TensorSpec(x.shape, tf.float32)
    inner = te_module.encoders.as_gather_encoder(make_encoder(), spec)
    counting = compression.ByteCountingGatherEncoder(
        te_module.encoders.as_gather_encoder(make_encoder(), spec))
    state = counting.initial_state()
    assert len(state) == len(tuple(inner.initial_state())) + 2
    assert [int(t) for t in state[-2:]] == [0, 0]
    assert (list(counting.state_update_aggregation_modes)
            == list(inner.state_update_aggregation_modes) + [te_module.core.StateAggregationMode.SUM] * 2)
    _, updates, decoded = _gather_roundtrip(counting, x, state)
    # float32 values as they are; or 8-bit values packed into int32 words of 28 bits, plus min and max.
    expected_bytes = 1000 * 4 if bits is None else _packed_bytes(1000, bits) + 2 * 4
    assert [int(t) for t in updates[-2:]] == [expected_bytes, 1]
    if bits is None:
        np.testing.assert_array_equal(decoded, x)
    else:  # Decoding goes through the inner encoder: within one quantization step of x (range 2).
        assert decoded.shape == x.shape and np.abs(decoded.numpy() - x.numpy()).max() <= 2 / 255 * 1.0001
    # The counts of a round replace those in the state, whatever they were.
    counts = (tf.constant(7, tf.int64), tf.constant(3, tf.int64))
    new_state = counting.update_state(state, (*updates[:-2], *counts))
    assert [int(t) for t in new_state[-2:]] == [7, 3]
    assert len(new_state) == len(state)


@pytest.fixture(scope='module')
def value_type(tff_runtime):
    tff = tff_runtime
    return tff.StructWithPythonType([tff.TensorType(np.float32, [10, 100]), tff.TensorType(np.float32, [5])],
                                    list)


def _client_values(num_clients):
    rng = np.random.default_rng(4)
    return [[rng.normal(size=(10, 100)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
            for _ in range(num_clients)]


def test_measured_encoded_sum_reports_the_bytes_clients_sent(tff_runtime, value_type):
    values = _client_values(3)
    identity = compression.MeasuredEncodedSumFactory(
        compression.encoder_by_size(te_module.encoders.identity, 0))
    process = identity.create(value_type)
    output = process.next(process.initialize(), values)
    for i, total in enumerate(np.sum([v[i] for v in values], axis=0) for i in range(2)):
        np.testing.assert_allclose(output.result[i], total, rtol=1e-6, atol=1e-6)
    assert int(output.measurements['bytes']) == 3 * (1000 + 5) * 4
    assert int(output.measurements['clients']) == 3
    # 8 bits for the large tensor only: each client sends 1,000 packed values, min and max, 5 floats.
    quantize = compression.MeasuredEncodedSumFactory(
        compression.encoder_by_size(lambda: te_module.encoders.uniform_quantization(8), 100))
    process = quantize.create(value_type)
    state = process.initialize()
    for num_clients in (4, 2):  # The second round's counts replace the first's, not add to them.
        output = process.next(state, _client_values(num_clients))
        state = output.state
        assert int(output.measurements['bytes']) == num_clients * (_packed_bytes(1000, 8) + 8 + 5 * 4)
        assert int(output.measurements['clients']) == num_clients


@pytest.mark.parametrize('make_encoder, bits', [(te_module.encoders.identity, None),
                                                (lambda: te_module.encoders.uniform_quantization(8), 8)])
def test_encoded_broadcast_delivers_the_decoded_value_and_counts_bytes_per_client(
        tff_runtime, value_type, make_encoder, bits):
    tff = tff_runtime
    value = _client_values(1)[0]
    process = compression.build_encoded_broadcast_process(
        value_type, compression.encoder_by_size(make_encoder, 100))
    assert process.next.type_signature.result.result.placement is tff.CLIENTS

    # One computation, as TFF cannot pass the empty server state back in from Python; `clients`
    # only sets how many clients there are (3).
    @tff.federated_computation(tff.FederatedType(value_type, tff.SERVER),
                               tff.FederatedType(np.int32, tff.CLIENTS))
    def broadcast(value, clients):
        output = process.next(process.initialize(), value)
        return output.result, output.measurements

    received, measurements = broadcast(value, [0, 0, 0])
    assert len(received) == 3  # What each client decoded.
    for large, small in received:
        np.testing.assert_array_equal(small, value[1])  # 5 elements: below the threshold, not encoded.
        if bits is None:
            np.testing.assert_array_equal(large, value[0])
        else:
            step = (value[0].max() - value[0].min()) / (2 ** bits - 1)
            assert 0 < np.abs(np.asarray(large) - value[0]).max() <= step * 1.0001
    per_client = (1000 + 5) * 4 if bits is None else _packed_bytes(1000, bits) + 2 * 4 + 5 * 4
    assert float(measurements['bytes']) == 3 * per_client
    assert float(measurements['clients']) == 3


def test_bytes_per_round_reads_both_directions_of_the_metrics():
    metrics = {'distributor': {'bytes': np.int64(120), 'clients': np.int64(3)},
               'aggregator': {'mean_value': {'bytes': np.int64(45), 'clients': np.int64(3)},
                              'mean_weight': ()},
               'client_work': {}}
    assert compression.bytes_per_round(metrics) == {'bytes_down': 120.0, 'bytes_up': 45.0,
                                                    'clients_down': 3.0, 'clients_up': 3.0}


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_measured_size_of_a_known_tensor_equals_its_packed_size(bits):
    x = np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)
    encoded, _ = _roundtrip(lambda: te_module.encoders.uniform_quantization(bits), x)
    expected = _packed_bytes(1000, bits) + 2 * 4  # Packed values, then float32 min and max.
    assert int(compression.encoded_size_bytes(encoded)) == expected
    raw = sum(np.asarray(t).nbytes for t in encoded.values())
    assert raw == expected

    encoded, _ = _roundtrip(lambda: te_module.encoders.hadamard_quantization(bits), x)
    # Rotation pads to 1024 values; the random-sign seed (two int64) travels with them.
    assert int(compression.encoded_size_bytes(encoded)) == _packed_bytes(1024, bits) + 8 + 16


def test_serialized_sizes_as_broadcast_and_as_aggregation_client():
    x = np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)
    rotate = compression.encoder_by_size(lambda: te_module.encoders.hadamard_quantization(2), 100)
    measured, raw, serialized = compression.serialized_sizes(rotate, [x])
    # As a SimpleEncoder the encoding carries the rotation seed (two int64) ...
    assert measured == raw == _packed_bytes(1024, 2) + 8 + 16
    assert serialized > measured  # TensorProto headers.
    # ... as a client's GatherEncoder it does not: the server sends the seed with the parameters.
    assert compression.serialized_sizes(rotate, [x], gather=True)[0] == _packed_bytes(1024, 2) + 8
    quantize = compression.encoder_by_size(lambda: te_module.encoders.uniform_quantization(8), 100)
    assert (compression.serialized_sizes(quantize, [x])[0]
            == compression.serialized_sizes(quantize, [x], gather=True)[0] == _packed_bytes(1000, 8) + 8)


def test_encoder_by_size_leaves_small_tensors_alone():
    encoder_fn = compression.encoder_by_size(lambda: te_module.encoders.uniform_quantization(8), 100)
    small = encoder_fn(tf.TensorSpec([99], tf.float32))
    large = encoder_fn(tf.TensorSpec([10, 10], tf.float32))
    x = np.arange(99, dtype=np.float32)
    assert compression.encoded_size_bytes(
        te_module.encoders.as_simple_encoder(small, tf.TensorSpec([99])).encode(x)[0]) == 99 * 4
    assert compression.encoded_size_bytes(te_module.encoders.as_simple_encoder(
        large, tf.TensorSpec([10, 10])).encode(np.ones((10, 10), np.float32))[0]) == 29 * 4 + 8
    with pytest.raises(ValueError, match='threshold'):
        compression.encoder_by_size(te_module.encoders.identity, -1)
    with pytest.raises(TypeError, match='make_encoder'):
        compression.encoder_by_size(te_module.encoders.identity(), 10)


@pytest.fixture(scope='module')
def small_federation(tff_runtime):
    from helpers import data, models

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 1, size=(60, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, size=60)
    owners = np.repeat(['a', 'b', 'c'], 20)
    client_data = data.ArrayClientData(pixels, labels, owners)
    federated = data.make_federated_data(client_data, ['a', 'b', 'c'], batch_size=10)
    model_fn = models.make_model_fn(models.create_linear_model, federated[0].element_spec)
    return model_fn, federated


def _optimizers(tff):
    return tff.learning.optimizers.build_sgdm(0.1), tff.learning.optimizers.build_sgdm(1.0)


def test_identity_encoders_give_exactly_the_fedavg_model(tff_runtime, small_federation):
    tff = tff_runtime
    te = te_module
    model_fn, federated = small_federation
    plain = tff.learning.algorithms.build_weighted_fed_avg(model_fn, *_optimizers(tff))
    identity = compression.encoder_by_size(te.encoders.identity, 0)
    compressed = compression.build_compressed_fed_avg(model_fn, *_optimizers(tff), identity, identity)
    plain_weights = plain.get_model_weights(plain.next(plain.initialize(), federated).state)
    result = compressed.next(compressed.initialize(), federated)
    weights = compressed.get_model_weights(result.state)
    for expected, actual in zip(plain_weights.trainable, weights.trainable):
        np.testing.assert_array_equal(actual, expected)
    assert not np.all(weights.trainable[0] == 0)  # The round did change the model.
    # Uncompressed float32: 7,850 weights * 4 bytes, to and from each of the 3 clients.
    sizes = compression.bytes_per_round(result.metrics)
    assert sizes == {'bytes_down': 3 * 7850 * 4, 'bytes_up': 3 * 7850 * 4,
                     'clients_down': 3, 'clients_up': 3}


def test_measured_bytes_per_round_equal_the_packed_sizes(tff_runtime, small_federation):
    tff = tff_runtime
    te = te_module
    model_fn, federated = small_federation
    process = compression.build_compressed_fed_avg(
        model_fn, *_optimizers(tff),
        compression.encoder_by_size(lambda: te.encoders.uniform_quantization(8), 100),
        compression.encoder_by_size(lambda: te.encoders.hadamard_quantization(2), 100))
    sizes = compression.bytes_per_round(process.next(process.initialize(), federated).metrics)
    kernel_8bit = _packed_bytes(7840, 8) + 8  # The 784x10 kernel; the 10 biases stay float32.
    # In the aggregation the server picks the rotation seed and sends it down with the encoding
    # parameters, so clients send only the packed, padded values and their min and max.
    kernel_hadamard_2bit = _packed_bytes(8192, 2) + 8
    assert sizes['bytes_down'] == 3 * (kernel_8bit + 40)
    assert sizes['bytes_up'] == 3 * (kernel_hadamard_2bit + 40)


@pytest.mark.parametrize('drop, standard_error, expected', [
    (0.0, 0.001, 'met'),          # 1 point inside the tolerance, 5 standard errors away
    (0.01, 0.0, 'met'),           # exactly the tolerance: "at most 1 point lower" holds
    (0.02, 0.001, 'missed'),      # 1 point beyond it, 5 standard errors away
    (0.011, 0.001, 'undecided'),  # 1 standard error beyond it
    (0.008, 0.0015, 'undecided'), # 1.33 standard errors inside it
    (0.005, 0.0024, 'met'),       # 2.08 standard errors inside it
    (-0.05, 0.01, 'met'),         # the compressed run is better
])
def test_verdict_needs_two_standard_errors_from_the_tolerance(drop, standard_error, expected):
    from helpers import compression

    assert compression.TOLERANCE == 0.01
    assert compression.verdict(drop, standard_error) == expected


@pytest.mark.parametrize('drop, standard_error', [(float('nan'), 0.01), (0.0, float('inf')), (0.0, -0.01)])
def test_verdict_rejects_meaningless_numbers(drop, standard_error):
    from helpers import compression

    with pytest.raises(ValueError, match='drop and standard_error must be finite'):
        compression.verdict(drop, standard_error)
