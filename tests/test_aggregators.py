"""helpers.aggregators: reported norms, clipping and adaptive norms against NumPy on known updates."""

import collections

import numpy as np
import pytest

NORMS = np.array([0.5, 1.0, 2.5, 4.0, 7.0], dtype=np.float32)
WEIGHTS = np.array([3.0, 1.0, 2.0, 5.0, 4.0], dtype=np.float32)


def make_updates(norms, seed=0):
    """Return one update per norm: a dict of two tensors whose joint L2 norm is exactly that norm."""
    rng = np.random.default_rng(seed)
    updates = []
    for norm in norms:
        direction = rng.normal(size=7)
        flat = (direction / np.linalg.norm(direction) * norm).astype(np.float32)
        updates.append(collections.OrderedDict(a=flat[:3], b=flat[3:].reshape(2, 2)))
    return updates


def flat(update):
    return np.concatenate([np.ravel(update['a']), np.ravel(update['b'])])


@pytest.fixture(scope='module')
def tff(tff_runtime):
    return tff_runtime


@pytest.fixture(scope='module')
def agg(tff):
    from helpers import aggregators

    return aggregators


@pytest.fixture(scope='module')
def value_type(tff):
    return tff.to_type(collections.OrderedDict(a=tff.TensorType(np.float32, [3]),
                                               b=tff.TensorType(np.float32, [2, 2])))


def test_weighted_reports_and_result_match_numpy(tff, agg, value_type):
    clip = 2.0
    updates = make_updates(NORMS)
    process = agg.norm_reporting_clipping(clip).create(value_type, tff.TensorType(np.float32))
    output = process.next(process.initialize(), updates, list(WEIGHTS))
    m = output.measurements

    norms = np.array([np.linalg.norm(flat(u)) for u in updates])
    np.testing.assert_allclose(norms, NORMS, rtol=1e-6)  # The construction is right.
    assert m['clipping_norm'] == pytest.approx(clip)
    assert m['clipped_count'] == int(np.sum(norms > clip))
    assert m['client_norm_min'] == pytest.approx(norms.min(), rel=1e-5)
    assert m['client_norm_mean'] == pytest.approx(norms.mean(), rel=1e-5)
    assert m['client_norm_max'] == pytest.approx(norms.max(), rel=1e-5)

    clipped = np.stack([flat(u) * min(1.0, clip / n) for u, n in zip(updates, norms)])
    expected = (WEIGHTS[:, None] * clipped).sum(axis=0) / WEIGHTS.sum()
    np.testing.assert_allclose(flat(output.result), expected, rtol=1e-5, atol=1e-6)


def test_unweighted_inner_factory_matches_numpy(tff, agg, value_type):
    clip = 3.0
    updates = make_updates(NORMS, seed=1)
    factory = agg.norm_reporting_clipping(clip, tff.aggregators.UnweightedMeanFactory())
    assert isinstance(factory, tff.aggregators.UnweightedAggregationFactory)
    process = factory.create(value_type)
    output = process.next(process.initialize(), updates)
    norms = np.array([np.linalg.norm(flat(u)) for u in updates])
    expected = np.mean([flat(u) * min(1.0, clip / n) for u, n in zip(updates, norms)], axis=0)
    np.testing.assert_allclose(flat(output.result), expected, rtol=1e-5, atol=1e-6)
    assert output.measurements['clipped_count'] == int(np.sum(norms > clip))


def test_clipped_updates_never_exceed_the_norm(tff, agg, value_type):
    clip = 1.5
    updates = make_updates(np.array([0.1, 1.49, 1.5, 1.51, 3.0, 100.0], dtype=np.float32), seed=2)
    # An inner factory that hands every (clipped) client value to the server, to inspect them.
    factory = agg.norm_reporting_clipping(clip, tff.aggregators.UnweightedReservoirSamplingFactory(10))
    process = factory.create(value_type)
    clipped = process.next(process.initialize(), updates).result
    clipped_norms = np.sqrt(np.sum(np.square(clipped['a']), axis=1)
                            + np.sum(np.square(clipped['b']), axis=(1, 2)))
    original = np.array([np.linalg.norm(flat(u)) for u in updates])
    assert len(clipped_norms) == len(updates)
    assert np.all(clipped_norms <= clip * (1 + 1e-6))
    np.testing.assert_allclose(np.sort(clipped_norms), np.sort(np.minimum(original, clip)), rtol=1e-5)


def test_same_norms_and_counts_as_tff_clipping_factory(tff, agg, value_type):
    updates = make_updates(NORMS, seed=3)
    ours = agg.norm_reporting_clipping(agg.adaptive_clipping_norm(0.5, 1.0, 0.3))
    theirs = tff.aggregators.clipping_factory(
        tff.aggregators.PrivateQuantileEstimationProcess.no_noise(1.0, 0.5, 0.3),
        tff.aggregators.MeanFactory())
    weight_type = tff.TensorType(np.float32)
    p_ours, p_theirs = ours.create(value_type, weight_type), theirs.create(value_type, weight_type)
    s_ours, s_theirs = p_ours.initialize(), p_theirs.initialize()
    for _ in range(4):
        o_ours = p_ours.next(s_ours, updates, list(WEIGHTS))
        o_theirs = p_theirs.next(s_theirs, updates, list(WEIGHTS))
        s_ours, s_theirs = o_ours.state, o_theirs.state
        assert o_ours.measurements['clipping_norm'] == pytest.approx(
            o_theirs.measurements['clipping_norm'])
        assert o_ours.measurements['clipped_count'] == o_theirs.measurements['clipped_count']
        np.testing.assert_allclose(flat(o_ours.result), flat(o_theirs.result), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('quantile', [0.5, 0.8])
def test_adaptive_norm_moves_toward_the_true_quantile(tff, agg, quantile):
    rng = np.random.default_rng(0)
    value_type = tff.TensorType(np.float32, [4])
    initial = 0.05
    process = agg.norm_reporting_clipping(agg.adaptive_clipping_norm(quantile, initial, 0.5),
                                          tff.aggregators.UnweightedMeanFactory()).create(value_type)
    state = process.initialize()
    norms_in_force, fractions_clipped, all_norms = [], [], []
    for _ in range(40):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=50).astype(np.float32)  # Median 1.
        all_norms.append(norms)
        directions = rng.normal(size=(50, 4))
        updates = list((directions / np.linalg.norm(directions, axis=1, keepdims=True)
                        * norms[:, None]).astype(np.float32))
        output = process.next(state, updates)
        state = output.state
        norms_in_force.append(output.measurements['clipping_norm'])
        fractions_clipped.append(np.mean(norms > norms_in_force[-1]))
        assert output.measurements['clipped_count'] == int(np.sum(norms > norms_in_force[-1]))
    true_quantile = np.quantile(np.concatenate(all_norms), quantile)
    assert norms_in_force[0] == pytest.approx(initial)
    final = np.mean(norms_in_force[-10:])
    assert abs(np.log(final / true_quantile)) < 0.15 < abs(np.log(initial / true_quantile))
    assert np.mean(fractions_clipped[-10:]) == pytest.approx(1 - quantile, abs=0.1)


def test_client_norm_samples_bring_every_norm_to_the_server(tff, agg, value_type):
    updates = make_updates(NORMS, seed=4)
    factory = agg.add_client_norm_samples(agg.norm_reporting_clipping(2.0), max_samples=10)
    process = factory.create(value_type, tff.TensorType(np.float32))
    m = process.next(process.initialize(), updates, list(WEIGHTS)).measurements
    np.testing.assert_allclose(np.sort(m['client_norms']), np.sort(NORMS), rtol=1e-5)
    assert m['clipped_count'] == int(np.sum(NORMS > 2.0))

    few = agg.add_client_norm_samples(tff.aggregators.MeanFactory(), max_samples=2)
    process = few.create(value_type, tff.TensorType(np.float32))
    sampled = process.next(process.initialize(), updates, list(WEIGHTS)).measurements['client_norms']
    assert len(sampled) == 2 and all(np.isclose(NORMS, s, rtol=1e-5).any() for s in sampled)


@pytest.mark.parametrize('norm', [-1.0, 0.0, 0, float('nan')])
def test_non_positive_norm_is_rejected(agg, norm):
    with pytest.raises(ValueError, match='positive'):
        agg.norm_reporting_clipping(norm)


def test_constant_norm_process_reports_its_norm_and_checks_it(tff, agg):
    process = agg.constant_norm_process(2.5)
    state = process.next(process.initialize(), [1.0, 9.0])
    assert process.report(state) == pytest.approx(2.5)
    with pytest.raises(ValueError, match='positive'):
        agg.constant_norm_process(-2.5)
    with pytest.raises(TypeError, match='number'):
        agg.constant_norm_process('2.5')


@pytest.mark.parametrize('bad', ['1.0', None, True])
def test_norm_of_wrong_type_is_rejected(agg, bad):
    with pytest.raises(TypeError, match='clipping_norm must be'):
        agg.norm_reporting_clipping(bad)


def test_inner_factory_of_wrong_type_is_rejected(agg):
    with pytest.raises(TypeError, match='inner_factory must be'):
        agg.norm_reporting_clipping(1.0, inner_factory='mean')


@pytest.mark.parametrize('quantile', [0.0, 1.0, -0.1, 1.5, float('nan')])
def test_quantile_outside_open_unit_interval_is_rejected(agg, quantile):
    with pytest.raises(ValueError, match='strictly between 0 and 1'):
        agg.adaptive_clipping_norm(quantile)


@pytest.mark.parametrize('kwargs, message', [
    (dict(initial_norm=-1.0), 'initial_norm must be > 0'),
    (dict(initial_norm=0.0), 'initial_norm must be > 0'),
    (dict(learning_rate=0.0), 'learning_rate must be > 0'),
])
def test_bad_estimator_settings_are_rejected(agg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        agg.adaptive_clipping_norm(0.5, **kwargs)


def test_non_numeric_quantile_is_rejected(agg):
    with pytest.raises(TypeError, match='target_quantile must be a number'):
        agg.adaptive_clipping_norm('0.5')


@pytest.mark.parametrize('bad, error', [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_sample_size_is_rejected(tff, agg, bad, error):
    with pytest.raises(error, match='max_samples'):
        agg.add_client_norm_samples(tff.aggregators.MeanFactory(), max_samples=bad)


def test_dp_aggregator_reports_the_next_rounds_clip(tff):
    """Notebook 05 §5: gaussian_adaptive's `clip` measurement is the norm the following round uses."""
    process = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        noise_multiplier=0.0, clients_per_round=1.0).create(tff.TensorType(np.float32, [4]))
    state, update = process.initialize(), np.full(4, 3.5, np.float32)  # L2 norm 7, always clipped.
    used, reported = [], []
    for _ in range(3):
        output = process.next(state, [update])
        state = output.state
        used.append(np.linalg.norm(output.result))  # One client, denominator 1: the clipped update.
        reported.append(output.measurements['dp_query_metrics']['clip'])
    assert used[0] == pytest.approx(0.1)  # initial_l2_norm_clip
    np.testing.assert_allclose(used[1:], reported[:-1], rtol=1e-5)
    assert reported[0] == pytest.approx(0.1 * np.exp(0.2 * 0.5), rel=1e-5)


def test_dp_aggregator_puts_its_clip_under_zeroing(tff):
    measurements = tff.learning.dp_aggregator(0.5, 10).create(
        tff.TensorType(np.float32, [4])).next.type_signature.result.measurements.member
    assert str(measurements.zeroing.dp_query_metrics) == '<clip=float32>'


@pytest.mark.parametrize('quantile, expected_clipped', [(0.0, 3), (1.0, 0)])
def test_quantiles_0_and_1_stop_where_all_or_no_clients_are_clipped(tff, quantile, expected_clipped):
    """Why adaptive_clipping_norm refuses 0 and 1: TFF accepts them, but they do not track a quantile."""
    norms = [2.0, 3.0, 5.0]
    estimator = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(4.0, quantile, 0.5)
    state = estimator.initialize()
    for _ in range(15):
        state = estimator.next(state, norms)
    final = estimator.report(state)
    assert sum(n > final for n in norms) == expected_clipped
    assert estimator.report(estimator.next(state, norms)) == pytest.approx(final)  # It stopped.
