"""How does a FedAvg round's time grow with clients, examples and model size?

    .venv/bin/python benchmarks/scaling.py [--rounds 5]

The bundled train examples are dealt IID to 200 clients (about 20 examples each), so that 10, 50
and 200 clients per round are possible. For the linear model and the notebook CNN, and each number
of clients per round, it times `--rounds` rounds of `build_weighted_fed_avg` (after one warm-up round)
and fits round time = fixed + per_client * clients. Every client holds about 20 examples, so this
design measures the cost of a client of that size; it cannot separate per-example from per-client
cost. The last line is a JSON object with the medians and each model's fitted costs.
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

from helpers import data, models, training  # noqa: E402

CLIENT_COUNTS = (10, 50, 200)
MODELS = {'linear': models.create_linear_model, 'cnn': models.create_cnn_model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()

    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    pooled = data.client_arrays(train_data)
    parts = data.partition_iid(len(pooled['label']), max(CLIENT_COUNTS), seed=0)
    owner = np.empty(len(pooled['label']), dtype=object)
    for i, part in enumerate(parts):
        owner[part] = f'client_{i:03d}'
    clients = data.ArrayClientData(pooled['pixels'], pooled['label'], owner)
    spec = data.make_federated_data(clients, clients.client_ids[:1])[0].element_spec

    results = {}
    for model_name, builder in MODELS.items():
        process = tff.learning.algorithms.build_weighted_fed_avg(
            models.make_model_fn(builder, spec),
            client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
            server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
            loop_implementation=training.LOOP_IMPLEMENTATION)
        state = process.initialize()
        xs, ys = [], []
        for count in CLIENT_COUNTS:
            schedule = training.sample_clients(clients.client_ids, count, args.rounds + 1, seed=count)
            times = []
            for i, ids in enumerate(schedule):
                datasets = data.make_federated_data(clients, ids, seed=i)
                began = time.perf_counter()
                state = process.next(state, datasets).state
                if i:  # The first round is a warm-up.
                    times.append(time.perf_counter() - began)
            examples = sum(len(parts[int(c.split('_')[1])]) for c in schedule[1])
            median = statistics.median(times)
            results[f'{model_name}_{count}_clients_s'] = round(median, 4)
            xs.append(count)
            ys.append(median)
            print(f'{model_name:6s} {count:3d} clients/round ({examples:4d} examples): '
                  f'median {median * 1000:7.1f} ms/round', flush=True)
        per_client, fixed = np.polyfit(xs, ys, 1)
        results[f'{model_name}_fixed_s'] = round(float(fixed), 4)
        results[f'{model_name}_per_client_ms'] = round(float(per_client) * 1000, 2)
        print(f'{model_name:6s} fit: round time = {fixed * 1000:.0f} ms + {per_client * 1000:.1f} ms '
              'per client of about 20 examples', flush=True)
    print(json.dumps(results))


if __name__ == '__main__':
    main()
