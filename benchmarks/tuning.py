"""Compares the execution settings tried for speed on the same FedAvg rounds.

    .venv/bin/python benchmarks/tuning.py [--rounds 10]

For the linear model and the notebook-06 CNN it builds `build_weighted_fed_avg` (10 bundled clients
per round, 3 local epochs, client SGD 0.1) once per setting, runs the same rounds on the same batches
through each, interleaved round by round, and prints the median milliseconds per round after two
warm-up rounds, plus the largest weight difference from TFF's default at the end (0 means the same
model). Settings: TFF's default loop (DATASET_REDUCE), DATASET_ITERATOR, and the default loop with
prefetching client datasets. The last line is a JSON object with every median.
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
}


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
        processes = {name: tff.learning.algorithms.build_weighted_fed_avg(
            models.make_model_fn(builder, spec),
            client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
            server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
            loop_implementation=loop) for name, (loop, _) in SETTINGS.items()}
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
        default = processes['reduce (TFF default)'].get_model_weights(states['reduce (TFF default)'])
        for name, process in processes.items():
            weights = process.get_model_weights(states[name])
            diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                       for a, b in zip(weights.trainable, default.trainable))
            median = statistics.median(times[name][2:])
            results[f'{model_name} {name}'] = round(median * 1000, 1)
            print(f'{model_name:6s} {name:22s} median {median * 1000:6.1f} ms/round, '
                  f'max weight difference from default {diff:.1e}', flush=True)
    print(json.dumps(results))


if __name__ == '__main__':
    main()
