"""FedAvg for the course's linear model written in plain TensorFlow: the baseline TFF is timed against."""

from __future__ import annotations

import tensorflow as tf


def make_plain_round(learning_rate: float):
    """Return a function running one FedAvg round of the linear model in plain TensorFlow.

    It takes the start weights [kernel, bias] and the clients' datasets and returns the new weights:
    each client runs SGD at `learning_rate` over its batches from the start weights; the new model is
    the start plus the example-weighted mean of the clients' changes (server SGD at 1.0).

    The whole round (every client's local SGD and the weighted average) is one `tf.function`, traced
    once per number of clients, looping over each dataset with an iterator: the fastest plain-TF form
    we found (a function call per client, or a plain `for batch in dataset` loop, were 2-3x slower).
    """
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    kernel = tf.Variable(tf.zeros([784, 10]))
    bias = tf.Variable(tf.zeros([10]))

    @tf.function
    def round_fn(start_kernel, start_bias, datasets):
        sum_kernel = tf.zeros_like(start_kernel)
        sum_bias = tf.zeros_like(start_bias)
        total = tf.constant(0.0)
        for dataset in datasets:  # A Python loop: unrolled at trace time, one block per client.
            kernel.assign(start_kernel)
            bias.assign(start_bias)
            num_examples = tf.constant(0, tf.int32)
            for batch in iter(dataset):  # An iterator loop, like LoopImplementation.DATASET_ITERATOR.
                with tf.GradientTape() as tape:
                    probabilities = tf.nn.softmax(tf.matmul(batch['x'], kernel) + bias)
                    loss = loss_fn(batch['y'], probabilities)
                grads = tape.gradient(loss, [kernel, bias])
                kernel.assign_sub(learning_rate * grads[0])
                bias.assign_sub(learning_rate * grads[1])
                num_examples += tf.shape(batch['y'])[0]
            weight = tf.cast(num_examples, tf.float32)
            sum_kernel += weight * (kernel - start_kernel)
            sum_bias += weight * (bias - start_bias)
            total += weight
        return start_kernel + sum_kernel / total, start_bias + sum_bias / total

    def run_round(weights, datasets):
        new_kernel, new_bias = round_fn(tf.constant(weights[0]), tf.constant(weights[1]),
                                        tuple(datasets))
        return [new_kernel.numpy(), new_bias.numpy()]

    run_round.round_fn = round_fn
    return run_round

