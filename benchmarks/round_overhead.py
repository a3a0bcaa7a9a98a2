"""How much does TFF add to a FedAvg round? The same round done by TFF and by a plain TF loop.

    .venv/bin/python benchmarks/round_overhead.py [--rounds 10] [--clients-per-round 10]

A: `tff.learning.algorithms.build_weighted_fed_avg` (linear model, client SGD, server SGD at 1.0).
B: a hand-written TensorFlow loop doing exactly the same local SGD steps on exactly the same batches,
   then the example-weighted average of the client deltas.
Both start every measured round from the same weights; after a warm-up round each, they alternate
A B A B. The script first checks that one round of each gives the same model (within float
tolerance), then prints the median seconds per round of each and, as its last line, a JSON object
with tff_round_s, plain_round_s and ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import runtime  # noqa: E402

runtime.setup(seed=0)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

from helpers import data, models, training  # noqa: E402

LEARNING_RATE = 0.1
LOCAL_EPOCHS = 1
BATCH_SIZE = 20


def client_datasets(train_data, client_ids, round_num):
    """Return the round's preprocessed client datasets (the same batches for both paths)."""
    return data.make_federated_data(train_data, client_ids, batch_size=BATCH_SIZE,
                                    num_epochs=LOCAL_EPOCHS, seed=round_num)


def make_plain_round():
    """Return a function running one FedAvg round in plain TensorFlow on lists of weights.

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
                kernel.assign_sub(LEARNING_RATE * grads[0])
                bias.assign_sub(LEARNING_RATE * grads[1])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=10, help='measured rounds per path')
    parser.add_argument('--clients-per-round', type=int, default=10)
    args = parser.parse_args()

    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    spec = client_datasets(train_data, train_data.client_ids[:1], 0)[0].element_spec
    process = tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(models.create_linear_model, spec),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LEARNING_RATE),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=training.LOOP_IMPLEMENTATION)
    plain_round = make_plain_round()
    schedule = training.sample_clients(train_data.client_ids, args.clients_per_round,
                                       args.rounds + 2, seed=0)

    # Start both from the same, non-trivial weights: the TFF model after one round.
    state = process.initialize()
    state = process.next(state, client_datasets(train_data, schedule[0], 0)).state
    start = [np.asarray(w) for w in process.get_model_weights(state).trainable]

    def tff_round(client_ids, round_num):
        weights = tff.learning.models.ModelWeights(trainable=list(start), non_trainable=[])
        round_state = process.set_model_weights(state, weights)
        result = process.next(round_state, client_datasets(train_data, client_ids, round_num))
        return [np.asarray(w) for w in process.get_model_weights(result.state).trainable]

    def plain(client_ids, round_num):
        return plain_round(start, client_datasets(train_data, client_ids, round_num))

    # Fairness check (also the warm-up): one round of each on the same clients and batches.
    a, b = tff_round(schedule[1], 1), plain(schedule[1], 1)
    max_diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f'max |TFF - plain| after one round: {max_diff:.2e}')
    if max_diff > 1e-5:
        sys.exit('The two paths do not compute the same round; the timing would not be fair.')

    times = {'tff': [], 'plain': []}
    for i, client_ids in enumerate(schedule[2:], start=2):
        for name, fn in (('tff', tff_round), ('plain', plain)):
            began = time.perf_counter()
            fn(client_ids, i)
            times[name].append(time.perf_counter() - began)
    tff_s, plain_s = statistics.median(times['tff']), statistics.median(times['plain'])

    @tf.function
    def count_examples(datasets):
        total = tf.constant(0)
        for dataset in datasets:
            for batch in iter(dataset):  # An iterator loop, like LoopImplementation.DATASET_ITERATOR.
                total += tf.shape(batch['y'])[0]
        return total

    pipeline = []
    for i, client_ids in enumerate(schedule[2:], start=2):
        datasets = tuple(client_datasets(train_data, client_ids, i))
        began = time.perf_counter()
        count_examples(datasets).numpy()
        pipeline.append(time.perf_counter() - began)
    pipeline_s = statistics.median(pipeline[1:])  # The first call traces.
    examples = np.mean([sum(int(train_data.create_tf_dataset_for_client(c).cardinality())
                            for c in ids) for ids in schedule[2:]])
    print(f'{args.clients_per_round} clients/round, about {examples:.0f} examples/round, '
          f'{args.rounds} rounds each, alternating')
    print(f'TFF round:   median {tff_s * 1000:.1f} ms')
    print(f'plain round: median {plain_s * 1000:.1f} ms, of which only iterating the clients\' '
          f'datasets: {pipeline_s * 1000:.1f} ms')
    print(json.dumps({'tff_round_s': round(tff_s, 4), 'plain_round_s': round(plain_s, 4),
                      'ratio': round(tff_s / plain_s, 2), 'plain_pipeline_s': round(pipeline_s, 4),
                      'max_abs_weight_diff': max_diff}))


if __name__ == '__main__':
    main()
