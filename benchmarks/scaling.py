"""How does a FedAvg round's time grow with clients, examples per client and model size?

    .venv/bin/python benchmarks/scaling.py [--rounds 3]

The bundled train examples are dealt IID into clients of exactly k examples, one ClientData per k.
Five designs of a round: 10, 50 and 150 clients of 20 examples, and 10 clients of 80 and of 320
examples. For the linear model and the notebook CNN it times `build_weighted_fed_avg` (one local
epoch, batches of 20, `DATASET_ITERATOR`), and for the linear model also the plain-TensorFlow round
of `benchmarks/plain_fedavg.py`: `--rounds` rounds per design after a warm-up round, median seconds
per round. Then it fits round time = fixed + per_client * clients + per_example * examples by least
squares, per model and path. The last line is a JSON object with every median and fit.
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
import tensorflow_federated as tff  # noqa: E402

from benchmarks import plain_fedavg  # noqa: E402
from helpers import data, models, training  # noqa: E402

DESIGNS = ((10, 20), (50, 20), (150, 20), (10, 80), (10, 320))  # (clients per round, examples each)
MODELS = {'linear': models.create_linear_model, 'cnn': models.create_cnn_model}
LEARNING_RATE = 0.1


def clients_of_size(pooled: dict, size: int) -> data.ArrayClientData:
    """Return the pooled examples dealt IID into clients of exactly `size` examples (the rest unused)."""
    order = np.random.default_rng(size).permutation(len(pooled['label']))
    order = order[:len(order) // size * size]
    owner = np.array([f'client_{i // size:03d}' for i in range(len(order))])
    return data.ArrayClientData(pooled['pixels'][order], pooled['label'][order], owner)


def time_rounds(run_round, client_data, num_clients: int, rounds: int) -> float:
    """Return the median seconds of `run_round(datasets)` over `rounds` rounds after a warm-up."""
    schedule = training.sample_clients(client_data.client_ids, num_clients, rounds + 1, seed=num_clients)
    times = []
    for i, ids in enumerate(schedule):
        datasets = data.make_federated_data(client_data, ids, seed=i)
        began = time.perf_counter()
        run_round(datasets)
        if i:  # The first round is a warm-up (tracing, caches).
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()

    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    pooled = data.client_arrays(train_data)
    client_data = {size: clients_of_size(pooled, size) for size in sorted({k for _, k in DESIGNS})}
    spec = data.make_federated_data(client_data[20], client_data[20].client_ids[:1])[0].element_spec

    paths = {}
    for model_name, builder in MODELS.items():
        process = tff.learning.algorithms.build_weighted_fed_avg(
            models.make_model_fn(builder, spec),
            client_optimizer_fn=tff.learning.optimizers.build_sgdm(LEARNING_RATE),
            server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
            loop_implementation=training.LOOP_IMPLEMENTATION)
        state = process.initialize()
        paths[f'{model_name} TFF'] = lambda datasets, p=process, s=state: p.next(s, datasets)
    plain_round = plain_fedavg.make_plain_round(LEARNING_RATE)
    zeros = [np.zeros([784, 10], np.float32), np.zeros([10], np.float32)]
    paths['linear plain TF'] = lambda datasets: plain_round(zeros, datasets)

    results = {}
    for path, run_round in paths.items():
        medians = []
        for num_clients, size in DESIGNS:
            median = time_rounds(run_round, client_data[size], num_clients, args.rounds)
            medians.append(median)
            results[f'{path} {num_clients}x{size}_s'] = round(median, 4)
            print(f'{path:16s} {num_clients:3d} clients x {size:3d} examples: '
                  f'median {median * 1000:7.1f} ms/round', flush=True)
        design = np.array([[1.0, n, n * k] for n, k in DESIGNS])
        (fixed, per_client, per_example), *_ = np.linalg.lstsq(design, np.array(medians), rcond=None)
        fit = {'fixed_ms': fixed * 1000, 'per_client_ms': per_client * 1000,
               'per_example_us': per_example * 1e6}
        results[f'{path} fit'] = {k: round(float(v), 2) for k, v in fit.items()}
        print(f'{path:16s} fit: round = {fit["fixed_ms"]:.1f} ms + {fit["per_client_ms"]:.2f} ms per '
              f'client + {fit["per_example_us"]:.0f} µs per example', flush=True)
    print(json.dumps(results))


if __name__ == '__main__':
    main()
