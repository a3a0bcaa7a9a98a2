"""Keras model builders and the `model_fn` factories TFF's learning algorithms take."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from helpers.data import NUM_CLASSES

NUM_PIXELS = 28 * 28


def create_linear_model(num_classes: int = NUM_CLASSES) -> tf.keras.Model:
    """Return a softmax regression on the 784 flattened pixels, started from all-zero weights."""
    if num_classes < 2:
        raise ValueError(f'num_classes must be >= 2, got {num_classes}.')
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(NUM_PIXELS,)),
        tf.keras.layers.Dense(num_classes, kernel_initializer='zeros', activation='softmax'),
    ])


def create_cnn_model(num_classes: int = NUM_CLASSES, seed: int = 0) -> tf.keras.Model:
    """Return a small CNN on the flattened pixels whose 5x5 kernels hold most of its weights."""
    if num_classes < 2:
        raise ValueError(f'num_classes must be >= 2, got {num_classes}.')
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(NUM_PIXELS,)),
        tf.keras.layers.Reshape((28, 28, 1)),
        tf.keras.layers.Conv2D(16, 5, activation='relu', kernel_initializer=init(seed)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Conv2D(32, 5, activation='relu', kernel_initializer=init(seed + 1)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(num_classes, activation='softmax', kernel_initializer=init(seed + 2)),
    ])


def make_model_fn(keras_builder: Callable[[], tf.keras.Model],
                  input_spec) -> Callable[[], tff.learning.models.VariableModel]:
    """Return a no-argument `model_fn` that wraps a fresh Keras model for TFF on every call."""
    if not callable(keras_builder):
        raise TypeError('keras_builder must be a function that returns a new tf.keras.Model, got '
                        f'{type(keras_builder).__name__}.')

    def model_fn() -> tff.learning.models.VariableModel:
        return tff.learning.models.from_keras_model(
            keras_builder(),
            input_spec=input_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')])

    return model_fn
