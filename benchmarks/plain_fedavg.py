"""FedAvg for the course's linear model written in plain TensorFlow: the baseline TFF is timed against."""

from __future__ import annotations

import tensorflow as tf


def make_plain_round(learning_rate: float, *, with_metrics: bool = False):
    """Return a function running one FedAvg round of the linear model in plain TensorFlow.

    It takes the start weights [kernel, bias] and the clients' datasets and returns the new weights:
    each client runs SGD at `learning_rate` over its batches from the start weights; the new model is
    the start plus the example-weighted mean of the clients' changes (server SGD at 1.0).

    With `with_metrics=True` it returns (weights, metrics) and, on every batch, also computes the
    training metrics TFF's FedAvg reports for a Keras model (`client_work`'s `train`): accuracy, the
    loss weighted by batch size, and the example and batch counts, summed over all clients and
    finalized (accuracy and loss as means over all examples) as TFF does at the server.

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
        correct = tf.constant(0.0)  # Metric sums over every client's batches, as TFF's federated_sum.
        loss_sum = tf.constant(0.0)
        num_batches = tf.constant(0, tf.int64)
        for dataset in datasets:  # A Python loop: unrolled at trace time, one block per client.
            kernel.assign(start_kernel)
            bias.assign(start_bias)
            num_examples = tf.constant(0, tf.int32)
            for batch in iter(dataset):  # An iterator loop, like LoopImplementation.DATASET_ITERATOR.
                with tf.GradientTape() as tape:
                    probabilities = tf.nn.softmax(tf.matmul(batch['x'], kernel) + bias)
                    loss = loss_fn(batch['y'], probabilities)
                if with_metrics:  # On the predictions before the step, as TFF's forward pass.
                    size = tf.shape(batch['y'])[0]
                    predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
                    correct += tf.reduce_sum(tf.cast(predicted == tf.reshape(batch['y'], [-1]),
                                                     tf.float32))
                    loss_sum += loss * tf.cast(size, tf.float32)
                    num_batches += 1
                grads = tape.gradient(loss, [kernel, bias])
                kernel.assign_sub(learning_rate * grads[0])
                bias.assign_sub(learning_rate * grads[1])
                num_examples += tf.shape(batch['y'])[0]
            weight = tf.cast(num_examples, tf.float32)
            sum_kernel += weight * (kernel - start_kernel)
            sum_bias += weight * (bias - start_bias)
            total += weight
        weights = (start_kernel + sum_kernel / total, start_bias + sum_bias / total)
        if not with_metrics:
            return weights
        metrics = {'accuracy': correct / total, 'loss': loss_sum / total,
                   'num_examples': tf.cast(total, tf.int64), 'num_batches': num_batches}
        return weights, metrics

    def run_round(weights, datasets):
        result = round_fn(tf.constant(weights[0]), tf.constant(weights[1]), tuple(datasets))
        if not with_metrics:
            return [w.numpy() for w in result]
        (new_kernel, new_bias), metrics = result
        return [new_kernel.numpy(), new_bias.numpy()], {k: v.numpy() for k, v in metrics.items()}

    run_round.round_fn = round_fn
    return run_round
