"""Keras model builders, the `model_fn` factories TFF's learning algorithms take, and a hand-written model.

`NUM_PIXELS`, `create_linear_model` and `make_model_fn` are taught in
notebooks/01_data_heterogeneity.ipynb, `SoftmaxRegression` and `worst_class_recall` in
notebooks/02_custom_variable_model.ipynb; tests/test_notebooks.py keeps the notebooks' copies and
these identical.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from helpers._checks import check_input_spec, check_int, check_keras_builder, check_seed
from helpers.data import NUM_CLASSES

NUM_PIXELS = 28 * 28


def create_linear_model(num_classes: int = NUM_CLASSES) -> tf.keras.Model:
    """Return a softmax regression on the 784 flattened pixels, started from all-zero weights."""
    num_classes = check_int('num_classes', num_classes, minimum=2, example=NUM_CLASSES)
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(NUM_PIXELS,)),
        tf.keras.layers.Dense(num_classes, kernel_initializer='zeros', activation='softmax'),
    ])


def create_cnn_model(num_classes: int = NUM_CLASSES, seed: int = 0) -> tf.keras.Model:
    """Return a small CNN on the flattened pixels whose four kernels hold 99% of its 19,298 weights."""
    num_classes = check_int('num_classes', num_classes, minimum=2, example=NUM_CLASSES)
    seed = check_seed('seed', seed)
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(NUM_PIXELS,)),
        tf.keras.layers.Reshape((28, 28, 1)),
        tf.keras.layers.Conv2D(8, 4, activation='relu', kernel_initializer=init(seed)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Conv2D(16, 4, activation='relu', kernel_initializer=init(seed + 1)),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation='relu', kernel_initializer=init(seed + 2)),
        tf.keras.layers.Dense(num_classes, activation='softmax', kernel_initializer=init(seed + 3)),
    ])


def make_model_fn(keras_builder: Callable[[], tf.keras.Model],
                  input_spec) -> Callable[[], tff.learning.models.VariableModel]:
    """Return a no-argument `model_fn` that wraps a fresh Keras model for TFF on every call."""
    check_keras_builder('keras_builder', keras_builder)
    check_input_spec('input_spec', input_spec, keras_builder)  # Builds one throwaway model.

    def model_fn() -> tff.learning.models.VariableModel:
        # TFF calls model_fn more than once, inside its own graphs: build a new Keras model each time.
        return tff.learning.models.from_keras_model(
            keras_builder(),
            input_spec=input_spec,  # The type of one batch: an OrderedDict of x and y TensorSpecs.
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),  # Integer labels, probabilities out.
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')])

    return model_fn


class SoftmaxRegression(tff.learning.models.VariableModel):
    """A softmax regression written from raw tf.Variables, with metrics that sum across clients."""

    def __init__(self, num_classes: int = NUM_CLASSES, num_features: int = NUM_PIXELS):
        num_classes = check_int('num_classes', num_classes, minimum=2, example=NUM_CLASSES)
        num_features = check_int('num_features', num_features, minimum=1, example=NUM_PIXELS)
        self._num_classes = num_classes
        self._num_features = num_features
        # Weights: the server sends them out and averages what comes back.
        self._kernel = tf.Variable(tf.zeros([num_features, num_classes]), name='kernel')
        self._bias = tf.Variable(tf.zeros([num_classes]), name='bias')
        # Local statistics: sums over every batch since the last reset_metrics(), never averaged.
        self._num_examples = tf.Variable(0, dtype=tf.int64, trainable=False, name='num_examples')
        self._loss_sum = tf.Variable(0.0, trainable=False, name='loss_sum')
        self._correct_sum = tf.Variable(0.0, trainable=False, name='correct_sum')
        self._class_correct = tf.Variable(tf.zeros([num_classes]), trainable=False,
                                          name='class_correct')
        self._class_count = tf.Variable(tf.zeros([num_classes]), trainable=False, name='class_count')

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return [self._kernel, self._bias]

    @property
    def non_trainable_variables(self) -> list[tf.Variable]:
        return []

    @property
    def local_variables(self) -> list[tf.Variable]:
        return [self._num_examples, self._loss_sum, self._correct_sum, self._class_correct,
                self._class_count]

    @property
    def input_spec(self) -> collections.OrderedDict:
        return collections.OrderedDict(
            x=tf.TensorSpec([None, self._num_features], tf.float32),
            y=tf.TensorSpec([None, 1], tf.int32))

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self._kernel) + self._bias

    @tf.function
    def predict_on_batch(self, x, training=True):
        return tf.nn.softmax(self._logits(x))

    @tf.function
    def forward_pass(self, batch_input, training=True):
        logits = self._logits(batch_input['x'])
        labels = tf.reshape(batch_input['y'], [-1])
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                          tf.float32)
        batch_size = tf.shape(labels)[0]
        self._num_examples.assign_add(tf.cast(batch_size, tf.int64))
        self._loss_sum.assign_add(tf.reduce_sum(losses))
        self._correct_sum.assign_add(tf.reduce_sum(correct))
        self._class_correct.assign_add(
            tf.math.unsorted_segment_sum(correct, labels, self._num_classes))
        self._class_count.assign_add(
            tf.math.unsorted_segment_sum(tf.ones_like(correct), labels, self._num_classes))
        return tff.learning.models.BatchOutput(
            loss=tf.reduce_mean(losses), predictions=tf.nn.softmax(logits), num_examples=batch_size)

    @tf.function
    def report_local_unfinalized_metrics(self) -> collections.OrderedDict:
        count = tf.cast(self._num_examples, tf.float32)
        return collections.OrderedDict(
            num_examples=[self._num_examples.read_value()],
            loss=[self._loss_sum.read_value(), count],
            accuracy=[self._correct_sum.read_value(), count],
            worst_class_recall=[self._class_correct.read_value(), self._class_count.read_value()])

    def metric_finalizers(self) -> collections.OrderedDict:
        return collections.OrderedDict(
            num_examples=lambda values: values[0],
            loss=lambda values: tf.math.divide_no_nan(values[0], values[1]),
            accuracy=lambda values: tf.math.divide_no_nan(values[0], values[1]),
            worst_class_recall=worst_class_recall)

    @tf.function
    def reset_metrics(self) -> None:
        for variable in self.local_variables:
            variable.assign(tf.zeros_like(variable))


def worst_class_recall(values) -> tf.Tensor:
    """Return the lowest recall over the classes present, from summed (correct, count) per class."""
    class_correct, class_count = values
    present = class_count > 0
    recall = tf.math.divide_no_nan(class_correct, class_count)
    lowest = tf.reduce_min(tf.where(present, recall, tf.ones_like(recall)))
    return tf.where(tf.reduce_any(present), lowest, tf.zeros_like(lowest))
