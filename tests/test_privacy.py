"""helpers.privacy: epsilon against a closed form dp_accounting did not compute, the DP clip against
the adaptive rule on constructed norms, and the deployment search against its own definition."""

import collections
import math

import numpy as np
import pytest

from helpers import privacy

# dp_accounting's default RDP orders (rdp_privacy_accountant.DEFAULT_RDP_ORDERS), written out.
ORDERS = np.array([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024],
                  dtype=np.float64)


def closed_form_epsilon(noise_multiplier: float, num_rounds: int, delta: float) -> float:
    """Epsilon of `num_rounds` Gaussian mechanisms without sampling, from RDP(a) = T a / (2 z^2).

    Converted with Proposition 12 of Canonne, Kamath, Steinke (arXiv 2004.00010), the conversion
    dp_accounting's RDP accountant uses: eps = min_a RDP(a) + log(1 - 1/a) - log(delta a) / (a - 1).
    """
    rdp = num_rounds * ORDERS / (2 * noise_multiplier ** 2)
    usable = ORDERS > 1.01  # dp_accounting skips orders this close to 1 (numerically unstable).
    a, r = ORDERS[usable], rdp[usable]
    return float(max(0.0, np.min(r + np.log1p(-1 / a) - np.log(delta * a) / (a - 1))))


@pytest.mark.parametrize('noise_multiplier, num_rounds, delta', [
    (1.0, 10, 1e-3), (0.8, 50, 1e-5), (2.0, 100, 1e-6), (5.0, 1, 1e-5)])
def test_epsilon_without_sampling_is_the_gaussian_closed_form(noise_multiplier, num_rounds, delta):
    # Every client in every round (cohort = population): q = 1, a plain Gaussian mechanism per round.
    got = privacy.dp_fedavg_epsilon(noise_multiplier, 50, 50, num_rounds, delta)
    assert got == pytest.approx(closed_form_epsilon(noise_multiplier, num_rounds, delta), rel=1e-9)


def test_fixed_size_sampling_of_everyone_doubles_the_sensitivity():
    # Replace-one neighbours: the clipped sum moves by up to 2C, i.e. the noise multiplier halves.
    got = privacy.dp_fedavg_epsilon(2.0, 30, 30, 20, 1e-5, sampling='fixed_size')
    assert got == pytest.approx(closed_form_epsilon(1.0, 20, 1e-5), rel=1e-9)


def test_sampling_lowers_epsilon_and_no_noise_gives_none():
    full = privacy.dp_fedavg_epsilon(1.0, 100, 100, 20, 1e-5)
    sampled = privacy.dp_fedavg_epsilon(1.0, 100, 10_000, 20, 1e-5)
    assert sampled < full / 5
    assert privacy.dp_fedavg_epsilon(0.0, 10, 100, 5, 1e-3) == math.inf


def test_poisson_epsilon_matches_abadi_et_al_order_of_magnitude():
    # Abadi et al. (2016), section 5: q = 0.01, sigma = 4, delta = 1e-5, 10,000 steps (100 epochs)
    # report epsilon about 1.26 with the moments accountant; RDP is at least as tight, not far below.
    got = privacy.dp_fedavg_epsilon(4.0, 1, 100, 10_000, 1e-5)
    assert 0.8 < got <= 1.26


def _adaptive_rule(clip, norms, target_quantile, learning_rate, clients_per_round):
    """The geometric update of TF Privacy's QuantileEstimatorQuery without noise, from its source."""
    below = np.sum(np.asarray(norms) <= clip) / clients_per_round  # Records <= estimate, normalized.
    below = min(1.0, max(0.0, below))
    return clip * math.exp(-learning_rate * (below - target_quantile))


def _update(norm, size=4, seed=0):
    direction = np.random.default_rng(seed).normal(size=size)
    return (direction / np.linalg.norm(direction) * norm).astype(np.float32)


@pytest.mark.parametrize('target_quantile, learning_rate', [(0.5, 0.2), (0.8, 0.5)])
def test_reported_clip_is_the_adaptive_rule_on_constructed_norms(tff_runtime, target_quantile, learning_rate):
    tff = tff_runtime
    rounds = [[0.05, 0.5, 2.0, 3.0], [0.3, 0.6, 0.9, 5.0], [0.1, 0.2, 0.3, 0.4], [4.0, 4.0, 4.0, 0.01]]
    factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        noise_multiplier=0.0, clients_per_round=4, initial_l2_norm_clip=1.0,
        target_unclipped_quantile=target_quantile, learning_rate=learning_rate)
    process = factory.create(tff.TensorType(np.float32, [4]))
    state, clip = process.initialize(), 1.0
    for r, norms in enumerate(rounds):
        updates = [_update(n, seed=10 * r + i) for i, n in enumerate(norms)]
        output = process.next(state, updates)
        state = output.state
        # The round used `clip`: no noise, so the result is the mean of the updates clipped to it.
        expected_mean = np.mean([u * min(1.0, clip / np.linalg.norm(u)) for u in updates], axis=0)
        np.testing.assert_allclose(output.result, expected_mean, rtol=1e-5, atol=1e-6)
        # The reported clip is the next round's: the rule applied to this round's norms.
        clip = _adaptive_rule(clip, norms, target_quantile, learning_rate, 4)
        assert privacy.find_dp_clip(output.measurements) == pytest.approx(clip, rel=1e-5)


def test_find_dp_clip_reads_one_level_down_under_zeroing(tff_runtime):
    tff = tff_runtime
    process = tff.learning.dp_aggregator(noise_multiplier=0.0, clients_per_round=3).create(
        tff.TensorType(np.float32, [4]))
    norms = [0.05, 0.08, 2.0]  # Default initial clip 0.1: two of three fit under it.
    output = process.next(process.initialize(), [_update(n, seed=i) for i, n in enumerate(norms)])
    assert 'zeroing' in output.measurements
    assert privacy.find_dp_clip(output.measurements) == pytest.approx(
        _adaptive_rule(0.1, norms, 0.5, 0.2, 3), rel=1e-5)


def test_find_dp_clip_on_plain_dicts():
    assert privacy.find_dp_clip({'dp_query_metrics': {'clip': 0.25}, 'dp': ()}) == 0.25
    nested = collections.OrderedDict(zeroing={'dp_query_metrics': {'clip': 0.5}}, zeroing_norm=3.0)
    assert privacy.find_dp_clip(nested) == 0.5
    with pytest.raises(KeyError, match='dp_query_metrics'):
        privacy.find_dp_clip({'clipping_norm': 1.0})


def test_deployment_rows_are_the_smallest_cohorts_that_meet_the_target():
    rows = privacy.deployment_for_epsilon(5.0, noise_on_mean=0.02, num_rounds=10,
                                          populations=[20, 1_000, 100_000])
    assert [row['population'] for row in rows] == [20, 1_000, 100_000]
    assert rows[0]['cohort'] is None  # Even all 20 every round (z = 0.4) is not private enough.
    assert privacy.dp_fedavg_epsilon(0.02 * 20, 20, 20, 10, 0.1 / 20) > 5.0
    for row in rows[1:]:
        n, m = row['population'], row['cohort']
        assert row['delta'] == pytest.approx(0.1 / n) and row['sampling_rate'] == pytest.approx(m / n)
        assert row['noise_multiplier'] == pytest.approx(0.02 * m)
        assert row['epsilon'] <= 5.0
        assert privacy.dp_fedavg_epsilon(0.02 * (m - 1), m - 1, n, 10, 0.1 / n) > 5.0


def test_fixed_size_deployment_rows_are_the_smallest_fixed_size_cohorts():
    rows = privacy.deployment_for_epsilon(10.0, noise_on_mean=0.025, num_rounds=6,
                                          populations=[120, 10_000], sampling='fixed_size')
    for row in rows:
        n, m = row['population'], row['cohort']
        assert row['epsilon'] == pytest.approx(privacy.dp_fedavg_epsilon(
            0.025 * m, m, n, 6, 0.1 / n, sampling='fixed_size')) and row['epsilon'] <= 10.0
        assert privacy.dp_fedavg_epsilon(0.025 * (m - 1), m - 1, n, 6, 0.1 / n, sampling='fixed_size') > 10.0
        # The same noise on the mean meets the target with a smaller Poisson-sampled cohort.
        assert m > privacy.deployment_for_epsilon(10.0, 0.025, 6, [n])[0]['cohort']
