"""Client sampling and per-round datasets of helpers.training (the round loop notebook 01 teaches)."""

import numpy as np
import pytest

from helpers import data, training


@pytest.fixture(scope='module')
def train_data():
    return data.load_federated_digits('bundled', verbose=False)[0]


def test_sample_clients_draws_distinct_clients_per_round_and_is_seeded():
    ids = [f'c{i}' for i in range(30)]
    rounds = training.sample_clients(ids, 10, 5, seed=3)
    assert len(rounds) == 5
    assert all(len(r) == len(set(r)) == 10 and set(r) <= set(ids) for r in rounds)
    assert rounds == training.sample_clients(ids, 10, 5, seed=3)
    assert rounds != training.sample_clients(ids, 10, 5, seed=4)
    # Fewer rounds with the same seed are the first rounds of a longer run (notebook 01 relies on it).
    assert training.sample_clients(ids, 10, 2, seed=3) == rounds[:2]


@pytest.mark.parametrize('clients_per_round, num_rounds', [(0, 1), (31, 1), (1, 0)])
def test_sample_clients_rejects_impossible_requests(clients_per_round, num_rounds):
    with pytest.raises(ValueError):
        training.sample_clients([f'c{i}' for i in range(30)], clients_per_round, num_rounds)


def test_round_datasets_are_preprocess_with_the_round_seed(train_data):
    ids = train_data.client_ids[:3]
    got = training.round_datasets(train_data, ids, round_num=2, seed=0,
                                  preprocess_kwargs=dict(num_epochs=3))
    expected = [data.preprocess(train_data.create_tf_dataset_for_client(c), num_epochs=3, seed=2)
                for c in ids]
    for a, b in zip(got, expected, strict=True):
        for batch_a, batch_b in zip(list(a), list(b), strict=True):
            np.testing.assert_array_equal(batch_a['x'], batch_b['x'])
            np.testing.assert_array_equal(batch_a['y'], batch_b['y'])
