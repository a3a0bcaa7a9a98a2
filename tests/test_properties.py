"""Property-based tests (hypothesis) of the argument checks and the partitioners, over their whole domain."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import _checks, data

FAST = settings(max_examples=60, deadline=None)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)

ints = st.integers(min_value=-2**70, max_value=2**70)
numpy_ints = st.builds(np.int64, st.integers(min_value=-2**63, max_value=2**63 - 1))
not_numbers = st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2),
                        st.builds(np.bool_, st.booleans()))


@FAST
@given(value=st.one_of(ints, numpy_ints), low=st.integers(-100, 100), span=st.integers(0, 200))
def test_check_int_accepts_exactly_the_integers_in_range(value, low, span):
    high = low + span
    if low <= int(value) <= high:
        assert _checks.check_int('n', value, minimum=low, maximum=high) == int(value)
        assert type(_checks.check_int('n', value, minimum=low, maximum=high)) is int
    else:
        with pytest.raises(ValueError, match=r'\bn\b.*got'):
            _checks.check_int('n', value, minimum=low, maximum=high)


@FAST
@given(value=st.one_of(not_numbers, st.floats(allow_nan=True)))
def test_check_int_refuses_every_non_integer(value):
    with pytest.raises(TypeError, match=r'^count must be an int'):
        _checks.check_int('count', value)


@FAST
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), ints,
                       st.builds(np.float32, st.floats(width=32))),
       allow_inf=st.booleans(), float32=st.booleans())
def test_check_float_accepts_exactly_positive_representable_numbers(value, allow_inf, float32):
    number = float(value)
    valid = (not math.isnan(number) and number > 0 and (allow_inf or math.isfinite(number))
             and not (float32 and math.isfinite(number)
                      and (number > FLOAT32_MAX or np.float32(number) == 0)))
    if valid:
        assert _checks.check_float('lr', value, minimum=0, strict_minimum=True, allow_inf=allow_inf,
                                   float32=float32) == number
    else:
        with pytest.raises(ValueError, match=r'\blr\b'):
            _checks.check_float('lr', value, minimum=0, strict_minimum=True, allow_inf=allow_inf,
                                float32=float32)


@FAST
@given(value=not_numbers)
def test_check_float_refuses_every_non_number(value):
    with pytest.raises(TypeError, match=r'^rate must be a number'):
        _checks.check_float('rate', value)


@FAST
@given(labels=st.lists(st.integers(-3, 14), max_size=30), num_classes=st.integers(1, 12))
def test_check_labels_accepts_exactly_labels_in_range(labels, num_classes):
    if labels and all(0 <= label < num_classes for label in labels):
        assert _checks.check_labels('labels', labels, num_classes).tolist() == labels
    else:
        with pytest.raises(ValueError, match=r'^labels'):
            _checks.check_labels('labels', labels, num_classes)


@FAST
@given(num_examples=st.integers(1, 400), data_=st.data(), seed=st.integers(0, 2**32 - 1))
def test_partition_iid_puts_every_index_in_exactly_one_near_equal_part(num_examples, data_, seed):
    num_clients = data_.draw(st.integers(1, num_examples))
    parts = data.partition_iid(num_examples, num_clients, seed=seed)
    assert len(parts) == num_clients
    assert sorted(np.concatenate(parts).tolist()) == list(range(num_examples))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    again = data.partition_iid(num_examples, num_clients, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@FAST
@given(labels=st.lists(st.integers(0, 9), min_size=1, max_size=300), data_=st.data(),
       alpha=st.floats(min_value=1e-3, max_value=1e4), seed=st.integers(0, 2**32 - 1))
def test_partition_dirichlet_puts_every_index_in_exactly_one_nonempty_part(labels, data_, alpha, seed):
    num_clients = data_.draw(st.integers(1, min(len(labels), 20)))
    parts = data.partition_dirichlet(np.array(labels), num_clients, alpha, seed=seed)
    assert len(parts) == num_clients
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    assert all(len(p) >= 1 for p in parts)
    again = data.partition_dirichlet(np.array(labels), num_clients, alpha, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@FAST
@given(alpha=st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan)))
def test_partition_dirichlet_refuses_every_alpha_outside_the_positive_finite_numbers(alpha):
    with pytest.raises(ValueError, match=r'^alpha'):
        data.partition_dirichlet(np.arange(10) % 3, 2, alpha)


@FAST
@given(labels=st.lists(st.integers(0, 9), min_size=1, max_size=200), num_classes=st.integers(10, 15))
def test_label_distribution_is_the_class_fractions(labels, num_classes):
    distribution = data.label_distribution(np.array(labels), num_classes)
    assert distribution.shape == (num_classes,)
    assert math.isclose(distribution.sum(), 1.0)
    assert all(math.isclose(distribution[c], labels.count(c) / len(labels)) for c in range(num_classes))


@FAST
@given(client=st.lists(st.integers(0, 9), min_size=1, max_size=100),
       pool=st.lists(st.integers(0, 9), min_size=1, max_size=100))
def test_label_skew_is_a_total_variation_distance(client, pool):
    global_distribution = data.label_distribution(np.array(pool))
    skew = data.label_skew(np.array(client), global_distribution)
    assert 0.0 <= skew <= 1.0 + 1e-12
    assert data.label_skew(np.array(pool), global_distribution) == pytest.approx(0.0, abs=1e-12)
