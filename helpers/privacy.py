"""Differential privacy for FedAvg: the DP aggregator's clip in the metrics, epsilon with dp_accounting,
and the cohort and population a deployment needs for a target epsilon (09)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import dp_accounting

from helpers._checks import check_float, check_int

SAMPLING = ('poisson', 'fixed_size')
# dp_accounting's default RDP orders up to 32: its fixed-size bound costs O(a^2) per integer order a,
# and the orders above 32 only lower epsilon when it is about 1 or less.
FIXED_SIZE_ORDERS = [a for a in dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS if a <= 32]


def find_dp_clip(aggregator_metrics: Mapping) -> float:
    """Return the clip a DP aggregator reported in a round's metrics['aggregator'] (the next round's norm)."""
    if not isinstance(aggregator_metrics, Mapping):
        raise TypeError("aggregator_metrics must be a round's metrics['aggregator'] (a dict), got "
                        f'{type(aggregator_metrics).__name__}.')
    if 'dp_query_metrics' in aggregator_metrics:
        if 'clip' not in aggregator_metrics['dp_query_metrics']:
            raise KeyError("aggregator_metrics['dp_query_metrics'] has no 'clip': a fixed clip "
                           '(gaussian_fixed) is not reported, it is the clip you passed.')
        return float(aggregator_metrics['dp_query_metrics']['clip'])
    if 'zeroing' in aggregator_metrics:  # tff.learning.dp_aggregator's default zeroing wraps it.
        return find_dp_clip(aggregator_metrics['zeroing'])
    raise KeyError("aggregator_metrics has no 'dp_query_metrics' (nor under 'zeroing'): pass "
                   "metrics['aggregator'] of a process built with an adaptive DP aggregator, got keys "
                   f'{list(aggregator_metrics)}.')


def dp_fedavg_epsilon(noise_multiplier: float, clients_per_round: int, population: int,
                      num_rounds: int, delta: float, sampling: str = 'poisson') -> float:
    """Return the epsilon of `num_rounds` DP-FedAvg rounds at `delta`, from dp_accounting's RDP accountant."""
    noise_multiplier = check_float('noise_multiplier', noise_multiplier, minimum=0,
                                   hint='the noise std divided by the clip norm, e.g. 1.0')
    population = check_int('population', population, minimum=1, example=120)
    clients_per_round = check_int('clients_per_round', clients_per_round, minimum=1,
                                  maximum=population, example=10)
    num_rounds = check_int('num_rounds', num_rounds, minimum=1, example=20)
    delta = check_float('delta', delta, minimum=0, maximum=1, strict_minimum=True, strict_maximum=True,
                        hint='below 1 / population, e.g. 0.1 / population')
    if sampling not in SAMPLING:
        raise ValueError(f'sampling must be one of {SAMPLING}, got {sampling!r}.')
    if noise_multiplier == 0:
        return math.inf  # No noise: no privacy guarantee at all.
    if sampling == 'poisson':
        # Each client joins a round independently with probability q; neighbours add or remove a client.
        round_event = dp_accounting.PoissonSampledDpEvent(
            clients_per_round / population, dp_accounting.GaussianDpEvent(noise_multiplier))
        relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    else:
        # A fixed-size cohort drawn without replacement; neighbours replace one client, which can
        # move the clipped sum by twice the clip, so the noise is half as large relative to it.
        round_event = dp_accounting.SampledWithoutReplacementDpEvent(
            population, clients_per_round, dp_accounting.GaussianDpEvent(noise_multiplier / 2))
        relation = dp_accounting.NeighboringRelation.REPLACE_ONE
    # Fewer orders can only raise epsilon: it stays an upper bound.
    orders = None if sampling == 'poisson' else FIXED_SIZE_ORDERS
    accountant = dp_accounting.rdp.RdpAccountant(orders, neighboring_relation=relation)
    accountant.compose(dp_accounting.SelfComposedDpEvent(round_event, num_rounds))
    return float(accountant.get_epsilon(delta))


def deployment_for_epsilon(target_epsilon: float, noise_on_mean: float, num_rounds: int,
                           populations: Sequence[int], delta_times_population: float = 0.1,
                           sampling: str = 'poisson') -> list[dict]:
    """Return, per population, the smallest cohort that keeps epsilon <= target_epsilon under `sampling`.

    Fixed: the noise std on the averaged update in units of the clip, `noise_on_mean` =
    noise_multiplier / cohort (what the model sees), the rounds, and delta = delta_times_population /
    population. A larger cohort therefore gets a proportionally larger noise multiplier. A row's
    cohort is None when even the whole population per round is not enough. The search assumes that
    epsilon falls as the cohort grows (the larger noise multiplier wins over the higher sampling rate).
    """
    target_epsilon = check_float('target_epsilon', target_epsilon, minimum=0, strict_minimum=True,
                                 hint='e.g. 10.0')
    noise_on_mean = check_float('noise_on_mean', noise_on_mean, minimum=0, strict_minimum=True,
                                hint='noise multiplier / clients per round, e.g. 1.0 / 20')
    num_rounds = check_int('num_rounds', num_rounds, minimum=1, example=20)
    delta_times_population = check_float('delta_times_population', delta_times_population, minimum=0,
                                         maximum=1, strict_minimum=True, strict_maximum=True,
                                         hint='delta must stay below 1 / population, e.g. 0.1')
    if isinstance(populations, (str, bytes)) or not isinstance(populations, Sequence) or not populations:
        raise TypeError(f'populations must be a non-empty list of ints, e.g. [1_000, 100_000], got '
                        f'{populations!r}.')
    populations = [check_int('populations', n, minimum=1, example=1000) for n in populations]
    if sampling not in SAMPLING:
        raise ValueError(f'sampling must be one of {SAMPLING}, got {sampling!r}.')

    rows = []
    for population in populations:
        delta = delta_times_population / population

        def epsilon(cohort: int) -> float:
            return dp_fedavg_epsilon(noise_on_mean * cohort, cohort, population, num_rounds, delta,
                                     sampling=sampling)

        row = dict(population=population, cohort=None, noise_multiplier=None, sampling_rate=None,
                   delta=delta, epsilon=None)
        if epsilon(population) <= target_epsilon:
            # Epsilon falls as the cohort grows (more noise on the sum, at a higher sampling rate):
            # double the cohort until it meets the target, then bisect for the smallest that does.
            high = 1
            while (high_epsilon := epsilon(high)) > target_epsilon:
                high = min(2 * high, population)
            low = high // 2  # Too small (or 0): the loop passed it.
            while high - low > 1:
                middle = (low + high) // 2
                if (middle_epsilon := epsilon(middle)) <= target_epsilon:
                    high, high_epsilon = middle, middle_epsilon
                else:
                    low = middle
            row.update(cohort=high, noise_multiplier=noise_on_mean * high, sampling_rate=high / population,
                       epsilon=high_epsilon)
        rows.append(row)
    return rows
