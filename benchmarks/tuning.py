"""Compares the execution settings tried for speed on the same FedAvg rounds.

    .venv/bin/python benchmarks/tuning.py [--rounds 10]

For the linear model and the notebook-06 CNN it builds `build_weighted_fed_avg` (10 bundled clients
per round, 3 local epochs, client SGD 0.1) once per setting, runs the same rounds on the same batches
through each, interleaved round by round, and prints the median milliseconds per round after two
warm-up rounds, plus the largest weight difference from TFF's default at the end (0 means the same
model). Settings: TFF's default loop (DATASET_REDUCE), DATASET_ITERATOR, and each of them with
prefetching client datasets. Then, for the linear model with the iterator loop, it compares building
the client datasets by converting every round against the cached model input of
`data.make_federated_data`, and TFF's execution-context settings (`max_concurrent_computation_calls`,
`stream_structs`). The last line is a JSON object with every median.
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

LOOPS = tff.learning.LoopImplementation
SETTINGS = {  # name: (loop implementation, prefetch the client datasets)
    'reduce (TFF default)': (LOOPS.DATASET_REDUCE, False),
    'iterator': (LOOPS.DATASET_ITERATOR, False),
    'reduce + prefetch': (LOOPS.DATASET_REDUCE, True),
    'iterator + prefetch': (LOOPS.DATASET_ITERATOR, True),
}


def build_fed_avg(keras_builder, spec, loop=training.LOOP_IMPLEMENTATION):
    """Return the FedAvg process every comparison here times: client SGD 0.1, server SGD 1.0."""
    return tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(keras_builder, spec),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=loop)


def max_weight_difference(weights, reference) -> float:
    """Return the largest absolute difference between two lists of weight arrays (0: the same model)."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(weights, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=10)
    args = parser.parse_args()
    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    spec = data.make_federated_data(train_data, train_data.client_ids[:1])[0].element_spec
    schedule = training.sample_clients(train_data.client_ids, 10, args.rounds + 2, seed=0)
    results = {}
    for model_name, builder in (('linear', models.create_linear_model),
                                ('cnn', models.create_cnn_model)):
        processes = {name: build_fed_avg(builder, spec, loop) for name, (loop, _) in SETTINGS.items()}
        states = {name: p.initialize() for name, p in processes.items()}
        times = {name: [] for name in processes}
        for i, client_ids in enumerate(schedule):
            for name, process in processes.items():
                datasets = data.make_federated_data(train_data, client_ids, seed=i, num_epochs=3)
                if SETTINGS[name][1]:
                    datasets = [d.prefetch(tf.data.AUTOTUNE) for d in datasets]
                began = time.perf_counter()
                states[name] = process.next(states[name], datasets).state
                times[name].append(time.perf_counter() - began)
        default = states['reduce (TFF default)'].global_model_weights.trainable
        for name in processes:
            diff = max_weight_difference(states[name].global_model_weights.trainable, default)
            median = statistics.median(times[name][2:])
            results[f'{model_name} {name}'] = round(median * 1000, 1)
            print(f'{model_name:6s} {name:22s} median {median * 1000:6.1f} ms/round, '
                  f'max weight difference from default {diff:.1e}', flush=True)
    results.update(compare_client_input(train_data, spec, schedule))
    results.update(compare_contexts(train_data, spec, schedule))
    print(json.dumps(results))


CONTEXTS = {  # name: keyword arguments of tff.backends.native.create_sync_local_cpp_execution_context
    'context default (no call limit)': {},
    'context max_concurrent_computation_calls=1': dict(max_concurrent_computation_calls=1),
    'context max_concurrent_computation_calls=2': dict(max_concurrent_computation_calls=2),
    'context stream_structs': dict(stream_structs=True),
}


def compare_contexts(train_data, spec, schedule) -> dict[str, float]:
    """Time the same linear FedAvg rounds under each execution-context setting, interleaved.

    Each context starts its own TFF worker; `max_concurrent_computation_calls` limits how many client
    computations the worker runs at once (TFF's default: no limit).
    """
    process = build_fed_avg(models.create_linear_model, spec)
    contexts = {name: tff.backends.native.create_sync_local_cpp_execution_context(**kwargs)
                for name, kwargs in CONTEXTS.items()}
    # With several contexts alive, TFF's remote values sometimes ask a worker to dispose of a value it
    # has already dropped (gRPC NOT_FOUND, "cannot dispose") from a garbage-collection finalizer.
    # Harmless, but each prints a long traceback: count them instead.
    ignored = []
    default_hook = sys.unraisablehook

    def hook(unraisable):
        if 'cannot dispose' in str(unraisable.exc_value):
            ignored.append(unraisable)
        else:
            default_hook(unraisable)

    sys.unraisablehook = hook
    stack = tff.framework.get_context_stack()
    original = stack.current
    states, times = {}, {name: [] for name in contexts}
    try:
        for i, client_ids in enumerate(schedule):
            datasets = data.make_federated_data(train_data, client_ids, seed=i, num_epochs=3)
            for name, context in contexts.items():
                stack.set_default_context(context)
                state = states.get(name) or process.initialize()
                began = time.perf_counter()
                states[name] = process.next(state, datasets).state
                times[name].append(time.perf_counter() - began)
    finally:
        stack.set_default_context(original)
    default = states['context default (no call limit)'].global_model_weights.trainable
    results = {}
    for name in contexts:
        diff = max_weight_difference(states[name].global_model_weights.trainable, default)
        median = statistics.median(times[name][2:]) * 1000
        results[f'linear {name}'] = round(median, 1)
        print(f'linear {name:42s} median {median:6.1f} ms/round, max weight difference {diff:.1e}',
              flush=True)
    if ignored:
        print(f'(ignored {len(ignored)} "cannot dispose" notices from TFF\'s value finalizers)')
    return results


def compare_client_input(train_data, spec, schedule) -> dict[str, float]:
    """Time building each round's client datasets, and the round, with and without the input cache.

    'convert every round' applies `data.preprocess` to each client's raw dataset (one `.map` per client
    per round, which is what the course first did); 'cached model input' is `data.make_federated_data`,
    which converts a client's examples once and then only shuffles and batches them. Both give the
    same batches, so the rounds must give the same weights: the last round's are compared.
    """
    process = build_fed_avg(models.create_linear_model, spec)
    routes = {
        'convert every round': lambda ids, i: [
            data.preprocess(train_data.create_tf_dataset_for_client(c), seed=i, num_epochs=3) for c in ids],
        'cached model input': lambda ids, i: data.make_federated_data(train_data, ids, seed=i, num_epochs=3),
    }
    for ids in schedule:  # Fill the cache first: its one-off cost is not part of a round.
        data.make_federated_data(train_data, ids)
    state = process.initialize()
    build = {name: [] for name in routes}
    rounds = {name: [] for name in routes}
    last = {}
    for i, client_ids in enumerate(schedule):
        for name, route in routes.items():
            began = time.perf_counter()
            datasets = route(client_ids, i)
            built = time.perf_counter()
            last[name] = process.next(state, datasets).state.global_model_weights.trainable
            build[name].append(built - began)
            rounds[name].append(time.perf_counter() - built)
    diff = max_weight_difference(*last.values())
    print(f'max weight difference between the two inputs after the last round: {diff:.1e}')
    results = {}
    for name in routes:
        build_ms = statistics.median(build[name][2:]) * 1000
        round_ms = statistics.median(rounds[name][2:]) * 1000
        results[f'linear {name} build'] = round(build_ms, 1)
        results[f'linear {name} round'] = round(round_ms, 1)
        print(f'linear {name:22s} build datasets {build_ms:6.1f} ms + round {round_ms:6.1f} ms',
              flush=True)
    return results


if __name__ == '__main__':
    main()
