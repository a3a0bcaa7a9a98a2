"""How much does TFF add to a FedAvg round? The same round done by TFF and by a plain TF loop.

    .venv/bin/python benchmarks/round_overhead.py [--rounds 10] [--clients-per-round 10]
        [--tff-input ids|examples] [--plain-metrics | --no-plain-metrics]

A: `tff.learning.algorithms.build_weighted_fed_avg` (linear model, client SGD, server SGD at 1.0).
B: a hand-written TensorFlow loop doing exactly the same local SGD steps on exactly the same batches,
   then the example-weighted average of the client deltas.
Each measured round of either path builds the round's client datasets and runs the round from the
same weights (for TFF, a state made once beforehand); after a warm-up round each, they alternate
A B B A A B ..., so that neither always runs first.

--tff-input ids (the default) sends TFF only each client's id and shuffle seed: the worker builds the
batches from client files (helpers/scaling.py, notebook 10's ids path); `examples` builds the
datasets in Python and sends their examples (the mode of the earlier README table).
--plain-metrics (the default) makes the plain loop compute, on every batch, the training metrics
TFF's FedAvg computes (accuracy, loss, example and batch counts) and return them, so both do the same
work; --no-plain-metrics gives the earlier plain loop, SGD steps only.

The script first checks that one round of each gives the same model (and, with --plain-metrics, the
same metrics), then prints the median seconds per round of each, where TFF's `process.next` spends
its time (from TFF's own tracing spans, in extra rounds; medians per part, so they need not add up
to the median in all), and, as its last line, a JSON object with tff_round_s, plain_round_s, ratio,
the settings and the load average before and after.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import runtime  # noqa: E402

runtime.setup(seed=0)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402
# TFF's tracing hooks (not public API) tell where the time of a call to a computation goes.
from tensorflow_federated.python.common_libs import tracing  # noqa: E402

from benchmarks import plain_fedavg  # noqa: E402
from helpers import data, models, scaling, training  # noqa: E402

LEARNING_RATE = 0.1
LOCAL_EPOCHS = 1
BATCH_SIZE = 20


def client_datasets(train_data, client_ids, round_num):
    """Return the round's preprocessed client datasets (the same batches for both paths)."""
    return data.make_federated_data(train_data, client_ids, batch_size=BATCH_SIZE,
                                    num_epochs=LOCAL_EPOCHS, seed=round_num)


class _SpanTimer(tracing.TracingProvider):
    """Sums the wall time of TFF's traced spans (its executors' own instrumentation) by name."""

    def __init__(self):
        self.totals: collections.Counter = collections.Counter()

    def span(self, scope, sub_scope, nonce, parent_span_yield, fn_args, fn_kwargs, trace_opts):
        began = time.perf_counter()
        yield None
        self.totals[f'{scope}.{sub_scope}'] += time.perf_counter() - began


def tff_breakdown(process, state, rounds_datasets) -> dict[str, float]:
    """Return the median seconds per part of `process.next(state, datasets)` over the rounds given.

    Parts: serializing the arguments in Python; sending them to TFF's worker process; the worker running
    the round (the create_call request returns when the round is done); fetching and deserializing the
    result; everything else in the call (compilation cache, type checks, glue).
    """
    timer = _SpanTimer()
    tracing.set_tracing_providers([timer])
    parts = collections.defaultdict(list)
    try:
        for datasets in rounds_datasets:
            timer.totals.clear()
            began = time.perf_counter()
            process.next(state, datasets)
            total = time.perf_counter() - began
            t = timer.totals
            serialize = t['<locals>.serialize_value']
            shares = {
                'serialize arguments in Python': serialize,
                'send them to the worker': t['RemoteExecutor.create_value'] - serialize,
                'worker runs the round': t['RemoteExecutor.create_call'],
                'fetch and deserialize the result': t['RemoteExecutor._compute'],
            }
            shares['everything else'] = total - sum(shares.values())
            shares['process.next in all'] = total
            for name, seconds in shares.items():
                parts[name].append(seconds)
    finally:
        tracing.set_tracing_providers([tracing.LoggingTracingProvider()])  # TFF's default.
    return {name: statistics.median(values) for name, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=10, help='measured rounds per path')
    parser.add_argument('--clients-per-round', type=int, default=10)
    parser.add_argument('--tff-input', choices=('ids', 'examples'), default='ids',
                        help='what a TFF round sends: client ids (batches built in the worker from '
                             'files) or the examples built in Python')
    parser.add_argument('--plain-metrics', action=argparse.BooleanOptionalAction, default=True,
                        help='the plain loop also computes TFF\'s training metrics on every batch')
    args = parser.parse_args()
    load_before = os.getloadavg()

    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    spec = client_datasets(train_data, train_data.client_ids[:1], 0)[0].element_spec
    process = tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(models.create_linear_model, spec),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LEARNING_RATE),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=training.LOOP_IMPLEMENTATION)
    plain_round = plain_fedavg.make_plain_round(LEARNING_RATE, with_metrics=args.plain_metrics)
    if args.tff_input == 'ids':
        files_dir = tempfile.mkdtemp(prefix='round-overhead-')
        atexit.register(shutil.rmtree, files_dir, ignore_errors=True)  # The files go with the run.
        files = scaling.write_client_files(train_data, files_dir)
        tff_process = scaling.ids_process(process, scaling.dataset_computation(
            scaling.file_client_data(files), batch_size=BATCH_SIZE, num_epochs=LOCAL_EPOCHS))
    else:
        tff_process = process

    def tff_arguments(client_ids, round_num):
        """Return a TFF round's client arguments: ids and seeds, or the datasets built in Python."""
        if args.tff_input == 'ids':
            return scaling.round_ids(client_ids, round_num)  # Seed round_num, as client_datasets.
        return client_datasets(train_data, client_ids, round_num)
    schedule = training.sample_clients(train_data.client_ids, args.clients_per_round,
                                       args.rounds + 2, seed=0)

    # Convert every scheduled client's examples once (data.client_model_input caches them), so that
    # neither path pays that one-off cost inside a timed round.
    for client_ids in schedule:
        client_datasets(train_data, client_ids, 0)

    # Start both from the same, non-trivial weights: the TFF model after one round.
    state = process.initialize()
    state = process.next(state, client_datasets(train_data, schedule[0], 0)).state
    start = [np.asarray(w) for w in process.get_model_weights(state).trainable]

    # The state each measured round starts from, made once: outside the timed work, like `start`.
    round_state = process.set_model_weights(
        state, tff.learning.models.ModelWeights(trainable=list(start), non_trainable=[]))

    def tff_round(client_ids, round_num):
        result = tff_process.next(round_state, tff_arguments(client_ids, round_num))
        # The new state and metrics are already Python values; reading them needs no TFF call.
        weights = [np.asarray(w) for w in result.state.global_model_weights.trainable]
        return weights, dict(result.metrics['client_work']['train'])

    def plain(client_ids, round_num):
        result = plain_round(start, client_datasets(train_data, client_ids, round_num))
        return result if args.plain_metrics else (result, None)

    # Fairness check (also the warm-up): one round of each on the same clients and batches.
    (a, tff_metrics), (b, plain_metrics) = tff_round(schedule[1], 1), plain(schedule[1], 1)
    max_diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f'max |TFF - plain| after one round: {max_diff:.2e}')
    if max_diff > 1e-5:
        sys.exit('The two paths do not compute the same round; the timing would not be fair.')
    metric_diff = None
    if args.plain_metrics:
        metric_diff = max(abs(float(tff_metrics[name]) - float(plain_metrics[name]))
                          for name in ('accuracy', 'loss', 'num_examples', 'num_batches'))
        print(f'TFF metrics {({k: round(float(v), 5) for k, v in tff_metrics.items()})}; '
              f'largest |TFF - plain| metric: {metric_diff:.2e}')
        if metric_diff > 1e-4:
            sys.exit('The two paths do not compute the same training metrics; the timing would not be fair.')

    times = {'tff': [], 'plain': []}
    for i, client_ids in enumerate(schedule[2:], start=2):
        order = (('tff', tff_round), ('plain', plain))
        for name, fn in order if i % 2 == 0 else order[::-1]:  # A B B A ...: neither always first.
            began = time.perf_counter()
            fn(client_ids, i)
            times[name].append(time.perf_counter() - began)
    tff_s, plain_s = statistics.median(times['tff']), statistics.median(times['plain'])

    build = []
    for i, client_ids in enumerate(schedule[2:], start=2):
        began = time.perf_counter()
        client_datasets(train_data, client_ids, i)
        build.append(time.perf_counter() - began)
    build_s = statistics.median(build)

    breakdown = tff_breakdown(tff_process, round_state, [
        tff_arguments(ids, i) for i, ids in enumerate(schedule[2:], start=2)])
    examples = np.mean([sum(int(train_data.create_tf_dataset_for_client(c).cardinality())
                            for c in ids) for ids in schedule[2:]])
    load_after = os.getloadavg()
    built_by = ('the plain loop builds the round\'s datasets in Python, TFF\'s worker from files'
                if args.tff_input == 'ids' else 'both include building the round\'s datasets')
    print(f'{args.clients_per_round} clients/round, about {examples:.0f} examples/round, '
          f'{args.rounds} rounds each, alternating; TFF sends {args.tff_input}; plain loop '
          f'{"with" if args.plain_metrics else "without"} TFF\'s training metrics; {built_by} '
          f'(in Python: {build_s * 1000:.1f} ms)')
    print(f'TFF round:   median {tff_s * 1000:6.1f} ms')
    print(f'plain round: median {plain_s * 1000:6.1f} ms')
    print(f'ratio TFF / plain: {tff_s / plain_s:.2f}')
    print('Where process.next spends its time (medians over extra rounds, from TFF\'s tracing spans):')
    for part, seconds in breakdown.items():
        print(f'  {part:45s} {seconds * 1000:6.1f} ms')
    print(json.dumps({'tff_round_s': round(tff_s, 4), 'plain_round_s': round(plain_s, 4),
                      'ratio': round(tff_s / plain_s, 2), 'build_datasets_s': round(build_s, 4),
                      'tff_next_breakdown_s': {k: round(v, 4) for k, v in breakdown.items()},
                      'max_abs_weight_diff': max_diff, 'max_abs_metric_diff': metric_diff,
                      'tff_input': args.tff_input, 'plain_metrics': args.plain_metrics,
                      'clients_per_round': args.clients_per_round, 'rounds': args.rounds,
                      'load_average_before': [round(x, 2) for x in load_before],
                      'load_average_after': [round(x, 2) for x in load_after]}))

if __name__ == '__main__':
    main()
