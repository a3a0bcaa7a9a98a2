"""Argument checks shared by the public helpers: each names the argument, shows the value, says what to pass.

Hand-written rather than a validation library (pydantic, beartype): the checks are few, must accept
NumPy scalars and refuse bool as a number, and must know float32 (what TFF computes in); a library
would add a dependency to every learner's environment for what fits in this one file.
"""

from __future__ import annotations

import math
import numbers
import os
import weakref
from collections.abc import Mapping, Sequence

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
_good_model_fns: weakref.WeakSet = weakref.WeakSet()  # model_fns that check_model_fn accepted.


def _shown(value) -> str:
    """Return `value` as an error message shows it: its repr (shortened) and its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + '...'
    return f'{text} ({type(value).__name__})'


def is_int(value) -> bool:
    """Return whether `value` is an integer (Python or NumPy), bool excluded."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """Return whether `value` is a real number (Python or NumPy int or float), bool excluded."""
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None,
              example: int | None = None) -> int:
    """Return `value` as an int after checking that it is an integer within [minimum, maximum]."""
    if not is_int(value):
        example = example if example is not None else max(minimum or 0, 1)
        raise TypeError(f'{name} must be an int, for example {name}={example}, got {_shown(value)}.')
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f'{name} must be an int {_bounds(minimum, maximum, False, False)}, got {value}.')
    return value


def _bounds(minimum, maximum, strict_minimum: bool, strict_maximum: bool) -> str:
    """Return the allowed range as words: '>= 1', '> 0', 'between 1 and 5', 'strictly between 0 and 1'."""
    minimum, maximum = _number(minimum), _number(maximum)
    if minimum is not None and maximum is not None:
        if strict_minimum and strict_maximum:
            return f'strictly between {minimum} and {maximum}'
        low = '>' if strict_minimum else '>='
        high = '<' if strict_maximum else '<='
        return f'{low} {minimum} and {high} {maximum}' if (strict_minimum or strict_maximum) else (
            f'between {minimum} and {maximum}')
    if minimum is not None:
        return f'{">" if strict_minimum else ">="} {minimum}'
    return f'{"<" if strict_maximum else "<="} {maximum}'


def _number(value) -> str | None:
    """Return a bound as a message shows it: an int exactly, a float short (0, 1e-06)."""
    return None if value is None else str(int(value)) if is_int(value) else f'{value:g}'


def check_seed(name: str, value, allow_none: bool = False) -> int | None:
    """Return `value` as an int seed (>= 0), or None where None is allowed."""
    if value is None and allow_none:
        return None
    if not is_int(value):
        extra = ' or None (a new shuffle on every pass)' if allow_none else ''
        raise TypeError(f'{name} must be an int >= 0{extra}, for example {name}=0, got '
                        f'{_shown(value)}.')
    return check_int(name, value, minimum=0, maximum=2**63 - 1, example=0)


def check_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False, strict_maximum: bool = False, allow_inf: bool = False,
                float32: bool = False, hint: str = '') -> float:
    """Return `value` as a float after checking type, NaN, infinity, range and float32 representability.

    With `float32=True` the value must also survive conversion to float32 (what TFF computes in): a
    nonzero value must not round to 0 and a finite one must not overflow to infinity.
    """
    hint = f' ({hint})' if hint else ''
    if not is_real(value):
        raise TypeError(f'{name} must be a number{hint}, got {_shown(value)}.')
    number = float(value)
    low_ok = (minimum is None or number > minimum or (number == minimum and not strict_minimum))
    high_ok = (maximum is None or number < maximum or (number == maximum and not strict_maximum))
    bounded = minimum is not None or maximum is not None
    if math.isnan(number) or (bounded and not (low_ok and high_ok)):  # NaN fails every comparison.
        allowed = _bounds(minimum, maximum, strict_minimum, strict_maximum) if bounded else 'a number'
        raise ValueError(f'{name} must be {allowed}{hint}, got {number!r}.')
    if math.isinf(number) and not allow_inf:
        raise ValueError(f'{name} must be finite{hint}, got {number!r}.')
    if float32 and math.isfinite(number):
        if abs(number) > FLOAT32_MAX:  # Checked first: casting it to float32 would warn.
            raise ValueError(f'{name}={number!r} overflows float32, the type TFF computes in: pass '
                             f'a value below {FLOAT32_MAX:g}{hint}.')
        if number != 0 and np.float32(number) == 0:
            smallest = float(np.finfo(np.float32).smallest_subnormal)
            raise ValueError(f'{name}={number!r} rounds to 0 in float32, the type TFF computes in: '
                             f'pass a value of at least {smallest:g}{hint}.')
    return number


def check_callable(name: str, value, what: str) -> None:
    """Check that `value` is callable; `what` says what it should be."""
    if not callable(value):
        raise TypeError(f'{name} must be {what}, got {_shown(value)}.')


def check_bool(name: str, value) -> bool:
    """Return `value` after checking that it is a bool (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f'{name} must be True or False, got {_shown(value)}.')
    return bool(value)


def check_labels(name: str, labels, num_classes: int | None, allow_empty: bool = False) -> np.ndarray:
    """Return `labels` as a 1-D int64 array after checking dtype, shape and range (0..num_classes - 1).

    With `num_classes=None` any non-negative integer label is accepted.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f'{name} must be a 1-D array of integer class labels, got shape '
                         f'{array.shape}; flatten it with np.ravel (one label per example).')
    if array.size == 0:
        if allow_empty:
            return array.astype(np.int64)
        raise ValueError(f'{name} is empty: pass at least one label.')
    classes = 'non-negative' if num_classes is None else f'0..{num_classes - 1}'
    if not np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        raise TypeError(f'{name} must hold integer class labels {classes}, got dtype '
                        f'{array.dtype} (e.g. {array.flat[0]!r}); convert whole-number labels with '
                        '.astype(int) and check that none is fractional.')
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise ValueError(f'{name} must be {classes} class labels, got a label {low}.')
    if num_classes is not None and high >= num_classes:
        raise ValueError(f'{name} must lie in {classes} (num_classes={num_classes}), got a label '
                         f'{high}; pass num_classes > {high} or fix the labels.')
    return array.astype(np.int64)


def check_distribution(name: str, distribution) -> np.ndarray:
    """Return `distribution` as a float64 array after checking it is finite class fractions summing to 1."""
    array = np.asarray(distribution, dtype=np.float64)
    if (array.ndim != 1 or array.size == 0 or not np.isfinite(array).all() or (array < 0).any()
            or not np.isclose(array.sum(), 1.0)):
        raise ValueError(f'{name} must be class fractions (>= 0, summing to 1) such as '
                         f'label_distribution returns, got {array}.')
    return array


def check_client_ids(name: str, client_ids, known: Sequence[str] | None = None,
                     allow_empty: bool = False) -> list[str]:
    """Return `client_ids` as a list after checking that it is a sequence of known string ids."""
    if isinstance(client_ids, (str, bytes)):
        raise TypeError(f'{name} must be a list of client ids, got the single string '
                        f'{client_ids!r}; pass [{client_ids!r}].')
    try:
        ids = list(client_ids)
    except TypeError:
        raise TypeError(f'{name} must be a list of client id strings, got '
                        f'{_shown(client_ids)}.') from None
    wrong = [i for i in ids if not isinstance(i, (str, np.str_))]
    if wrong:
        raise TypeError(f'{name} must hold client id strings, got {_shown(wrong[0])}; pick ids '
                        'from client_data.client_ids.')
    if not ids and not allow_empty:
        raise ValueError(f'{name} is empty: pass at least one client id (a round needs clients).')
    if known is not None:
        known_set = set(known)
        unknown = [i for i in ids if i not in known_set]
        if unknown:
            raise ValueError(f'{name} has unknown client ids {sorted(set(unknown))[:5]}; pick from '
                             'client_data.client_ids.')
    return [str(i) for i in ids]


def check_keras_builder(name: str, keras_builder) -> None:
    """Check that `keras_builder` is a function that builds a Keras model, not a built model."""
    import tensorflow as tf

    if isinstance(keras_builder, tf.keras.Model) or not callable(keras_builder):
        raise TypeError(f'{name} must be a function that returns a new tf.keras.Model (pass '
                        f'create_linear_model, not create_linear_model()), got {_shown(keras_builder)}.')


def check_input_spec(name: str, input_spec, keras_builder) -> None:
    """Check that `input_spec` is the (x, y) type of one batch and that x fits the model's input."""
    import tensorflow as tf

    if isinstance(input_spec, Mapping) and set(input_spec) == {'x', 'y'}:
        x, y = input_spec['x'], input_spec['y']
    elif isinstance(input_spec, (tuple, list)) and len(input_spec) == 2:
        x, y = input_spec
    else:
        raise TypeError(f'{name} must be the type of one batch, OrderedDict(x=tf.TensorSpec(...), '
                        f'y=tf.TensorSpec(...)), e.g. a preprocessed dataset\'s .element_spec; got '
                        f'{_shown(input_spec)}.')
    if isinstance(y, tf.TensorSpec) and not y.dtype.is_integer:
        raise TypeError(f"{name}'s y must have an integer dtype (class labels for "
                        f'SparseCategoricalCrossentropy), got {y.dtype.name}.')
    with tf.Graph().as_default():  # A throwaway model, only to read its input shape.
        model = keras_builder()
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f'keras_builder must return a tf.keras.Model, got {_shown(model)}.')
    if isinstance(x, tf.TensorSpec) and isinstance(model.input_shape, tuple):
        wanted = tf.TensorShape(model.input_shape)
        if not wanted.is_compatible_with(x.shape):
            raise ValueError(f"{name}'s x has shape {x.shape.as_list()} but the model takes inputs of "
                             f'shape {wanted.as_list()}: pass the .element_spec of the batches this '
                             'model trains on.')


def check_model_fn(name: str, model_fn) -> None:
    """Check that `model_fn` is a no-argument function returning a TFF VariableModel (not Keras)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    what = ('a no-argument function returning a new tff.learning.models.VariableModel, such as '
            'helpers.models.make_model_fn(create_linear_model, input_spec)')
    check_callable(name, model_fn, what)
    try:
        if model_fn in _good_model_fns:  # Building a model takes about 0.3 s: check each model_fn once.
            return
    except TypeError:  # Not hashable or not weak-referenceable: check it every time.
        pass
    with tf.Graph().as_default():  # A throwaway model, only to see what model_fn returns.
        model = model_fn()
    if isinstance(model, tf.keras.Model):
        raise TypeError(f'{name} returned a tf.keras.Model, so it is a Keras builder: wrap it as '
                        f'{name}=make_model_fn({getattr(model_fn, "__name__", "builder")}, input_spec) '
                        '(helpers.models.make_model_fn).')
    if not isinstance(model, tff.learning.models.VariableModel):
        raise TypeError(f'{name} must be {what}; it returned {_shown(model)}.')
    try:
        _good_model_fns.add(model_fn)
    except TypeError:
        pass


def check_path(name: str, path) -> None:
    """Check that `path` is a file path (str or os.PathLike)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f'{name} must be a file path (str or pathlib.Path), got {_shown(path)}.')


def check_kwargs(name: str, kwargs) -> None:
    """Check that `kwargs` is None or a mapping of keyword arguments."""
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"{name} must be a dict of keyword arguments, e.g. {{'batch_size': 20}}, or None; "
                        f'got {_shown(kwargs)}.')


def check_client_data(name: str, client_data) -> None:
    """Check that `client_data` is a tff.simulation.datasets.ClientData."""
    import tensorflow_federated as tff

    if not isinstance(client_data, tff.simulation.datasets.ClientData):
        raise TypeError(f'{name} must be a tff.simulation.datasets.ClientData such as the train or test '
                        f'data from load_federated_digits(), got {_shown(client_data)}.')
