"""How many bytes does compressed FedAvg save, and what does it cost in accuracy?

    .venv/bin/python benchmarks/compression.py [--rounds 20] [--clients-per-round 10]

Trains notebook 06's three configurations on the bundled digits with the same clients, seeds and
optimizers — no compression; 8-bit uniform both ways; 3-bit (nearest rounding) broadcast with 2-bit
Hadamard-rotated updates — and measures the bytes the encoders produce in every round. The last line
is a JSON object with, per configuration, bytes per round (down, up, total), compression ratio and
final held-out accuracy, and `bytes_ratio` (uncompressed / best compressed, per round, both
directions), `accuracy_uncompressed` and `accuracy_compressed` for the compressed configuration with
the largest ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import runtime  # noqa: E402

runtime.setup(seed=0)
# tensor_encoding's bit packer warns about temporary memory each time it is traced; harmless here.
logging.getLogger().addFilter(lambda record: 'b/161433177' not in record.getMessage())

import tensorflow_federated as tff  # noqa: E402
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te  # noqa: E402

from helpers import compression, data, models, training  # noqa: E402

CLIENT_LR, SERVER_LR, SERVER_MOMENTUM, LOCAL_EPOCHS = 0.2, 1.0, 0.5, 2


def configs(threshold: int = compression.DEFAULT_THRESHOLD) -> dict:
    """Return notebook 06's (broadcast encoder_fn, aggregation encoder_fn) per configuration."""
    by_size = compression.encoder_by_size
    identity = by_size(te.encoders.identity, 0)
    return {
        'no compression': (identity, identity),
        '8 bits both ways': (
            by_size(lambda: te.encoders.uniform_quantization(8, stochastic=False), threshold),
            by_size(lambda: te.encoders.uniform_quantization(8), threshold)),
        '3 bits down, 2-bit rotated up': (
            by_size(lambda: te.encoders.uniform_quantization(3, stochastic=False), threshold),
            by_size(lambda: te.encoders.hadamard_quantization(2), threshold)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--clients-per-round', type=int, default=10)
    args = parser.parse_args()

    train_data, test_data = data.load_federated_digits(verbose=False)
    spec = data.preprocess(train_data.create_tf_dataset_for_client(train_data.client_ids[0])).element_spec
    model_fn = models.make_model_fn(models.create_cnn_model, spec)
    evaluate = training.make_keras_evaluator(models.create_cnn_model,
                                             training.pooled_test_dataset(test_data))
    results = {}
    for name, (broadcast_fn, aggregation_fn) in configs().items():
        start = time.perf_counter()
        process = compression.build_compressed_fed_avg(
            model_fn, tff.learning.optimizers.build_sgdm(CLIENT_LR),
            tff.learning.optimizers.build_sgdm(SERVER_LR, momentum=SERVER_MOMENTUM),
            broadcast_fn, aggregation_fn)
        _, history = training.train(
            process, train_data, args.rounds, args.clients_per_round, evaluate=evaluate, seed=0,
            preprocess_kwargs=dict(num_epochs=LOCAL_EPOCHS), description=name,
            extra_metrics=compression.bytes_per_round)
        down, up = history['bytes_down'][-1], history['bytes_up'][-1]
        results[name] = {'bytes_down_per_round': int(down), 'bytes_up_per_round': int(up),
                         'bytes_per_round': int(down + up),
                         'cumulative_bytes': int(sum(history['bytes_down']) + sum(history['bytes_up'])),
                         'final_accuracy': round(history['test_accuracy'][-1], 4),
                         'seconds': round(time.perf_counter() - start, 1)}
        print(f"{name}: {int(down + up):,d} bytes/round, accuracy {history['test_accuracy'][-1]:.3f}",
              flush=True)
    baseline = results['no compression']
    for result in results.values():
        result['compression_ratio'] = round(baseline['bytes_per_round'] / result['bytes_per_round'], 3)
    best = max((n for n in results if n != 'no compression'),
               key=lambda n: results[n]['compression_ratio'])
    print(json.dumps({
        'rounds': args.rounds, 'clients_per_round': args.clients_per_round,
        'configurations': results, 'best_compressed': best,
        'bytes_ratio': results[best]['compression_ratio'],
        'accuracy_uncompressed': baseline['final_accuracy'],
        'accuracy_compressed': results[best]['final_accuracy'],
    }))


if __name__ == '__main__':
    main()
