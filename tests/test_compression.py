"""Compression helpers: encoder error bounds, measured sizes against packing arithmetic, identity = FedAvg."""

import math

import numpy as np
import pytest

te_module = pytest.importorskip('tensorflow_model_optimization.python.core.internal.tensor_encoding')


def _roundtrip(make_encoder, x):
    import tensorflow as tf

    encoder = te_module.encoders.as_simple_encoder(make_encoder(), tf.TensorSpec(x.shape, tf.float32))
    encoded, _ = encoder.encode(tf.constant(x))
    return encoded, encoder.decode(encoded).numpy()


def _packed_bytes(num_values: int, bits: int) -> int:
    """Bytes of `num_values` values of `bits` bits, concatenated into int32 words of 28 used bits."""
    return math.ceil(num_values * bits / 28) * 4


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_uniform_quantization_error_is_at_most_one_step(bits):
    x = np.random.default_rng(bits).normal(size=(40, 50)).astype(np.float32)
    _, decoded = _roundtrip(lambda: te_module.encoders.uniform_quantization(bits), x)
    step = (x.max() - x.min()) / (2 ** bits - 1)  # Stochastic rounding moves a value by < 1 step.
    assert decoded.shape == x.shape
    assert np.abs(decoded - x).max() <= step * (1 + 1e-5)


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_deterministic_uniform_quantization_error_is_at_most_half_a_step(bits):
    x = np.random.default_rng(10 + bits).uniform(-3, 5, size=1000).astype(np.float32)
    _, decoded = _roundtrip(
        lambda: te_module.encoders.uniform_quantization(bits, stochastic=False), x)
    step = (x.max() - x.min()) / (2 ** bits - 1)
    assert np.abs(decoded - x).max() <= step / 2 * (1 + 1e-4)


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_hadamard_quantization_rms_error_matches_its_bit_width(bits):
    # A rotation keeps iid N(0, 1) values iid N(0, 1), so the rotated range is within +-5 and each
    # coordinate's stochastic rounding error has RMS at most step / 2 (padding adds zero coordinates).
    dim, padded = 3000, 4096
    x = np.random.default_rng(20 + bits).normal(size=dim).astype(np.float32)
    _, decoded = _roundtrip(lambda: te_module.encoders.hadamard_quantization(bits), x)
    step = 10.0 / (2 ** bits - 1)
    rms = np.sqrt(np.mean((decoded - x) ** 2))
    assert rms <= step / 2 * np.sqrt(padded / dim)
    assert rms > 0  # Lossy, not accidentally the identity.


def test_identity_encoder_is_exact():
    x = np.random.default_rng(0).normal(size=(7, 11)).astype(np.float32)
    _, decoded = _roundtrip(te_module.encoders.identity, x)
    np.testing.assert_array_equal(decoded, x)


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_measured_size_of_a_known_tensor_equals_its_packed_size(bits):
    from helpers import compression

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
    from helpers import compression

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
    import tensorflow as tf

    from helpers import compression

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
    from helpers import compression

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
    from helpers import compression

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
