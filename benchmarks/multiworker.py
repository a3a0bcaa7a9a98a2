"""One FedAvg round on TFF's default context against the mergeable context over 1 and N workers.

    .venv/bin/python benchmarks/multiworker.py [--clients 50 100] [--rounds 6] [--workers 2]

Settings (each a FedAvg round of the linear model, `DATASET_ITERATOR` loop, client SGD at 0.1,
server SGD at 1.0, from the same state on the same sampled clients):
  default       TFF's default context (one worker), client batches built in Python and sent;
  mergeable_1   the mergeable context over one worker, the same batches;
  mergeable_n   the mergeable context over N workers (`runtime.use_context(N)`), the same batches;
  ids           the default context, sending client ids (the worker builds the batches from files,
                helpers.scaling);
  ids_n         the mergeable context over N workers, sending client ids.
Every timed round builds its arguments (the examples path converts nothing again: the arrays are
cached before timing, as in benchmarks/round_overhead.py). After one warm-up round per setting and
size, the settings take turns A B ... then ... B A, `--rounds` times at each size. The script checks
that every setting trains the model `default` trains, fits round time = fixed + per-client cost per
setting, splits the mergeable context's time into its calls (up to merge, merge, after merge), and
prints as its last line a JSON object with the medians at the largest size and the projection.

The projection (`projected_speedup_8_hosts`) is not a measurement. It assumes 8 hosts, each with
this machine's cores and one worker, and a kernel on one of them: the kernel's own per-client work
(building and serializing the clients' arguments, measured here without any worker) stays serial;
the workers' per-client work (the fitted per-client cost of `mergeable_1` minus the kernel's share)
is divided by 8; the fixed cost of `mergeable_1` stays; and each of the 7 extra sub-rounds adds one
merge call (measured). Network transfer between hosts is taken as loopback's, which is optimistic
for examples and immaterial for ids. It divides the default context's median at the largest size
by that projected round time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import runtime  # noqa: E402

runtime.setup(seed=0)

import numpy as np  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

from helpers import data, models, scaling, training  # noqa: E402

LEARNING_RATE = 0.1
HOSTS = 8


class CallTimer:
    """Wraps the async contexts of a mergeable context and sums the seconds of each kind of call."""

    def __init__(self, context, form):
        self.totals: collections.Counter = collections.Counter()
        self.counts: collections.Counter = collections.Counter()
        names = {id(form.up_to_merge): 'up_to_merge', id(form.merge): 'merge',
                 id(form.after_merge): 'after_merge'}
        for sub_context in context._async_execution_contexts:
            original = sub_context.invoke

            async def invoke(comp, arg, original=original):
                began = time.perf_counter()
                try:
                    return await original(comp, arg)
                finally:
                    name = names.get(id(comp), 'other')
                    self.totals[name] += time.perf_counter() - began
                    self.counts[name] += 1

            sub_context.invoke = invoke


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--clients', type=int, nargs='+', default=[50, 100],
                        help='clients per round (at least two sizes; the last is reported)')
    parser.add_argument('--rounds', type=int, default=6, help='measured rounds per setting and size')
    parser.add_argument('--workers', type=int, default=2, help='N, the workers of mergeable_n')
    args = parser.parse_args()
    if len(set(args.clients)) < 2:
        sys.exit('--clients needs at least two different sizes to fit fixed + per-client costs.')

    train_data, _ = data.load_federated_digits('bundled', verbose=False)
    largest = max(args.clients)
    if largest > len(train_data.client_ids):
        sys.exit(f'--clients at most {len(train_data.client_ids)} (the bundled writers).')
    sampled = training.sample_clients(train_data.client_ids, largest, 1, seed=0)[0]
    for client_id in sampled:  # Convert once, outside every timed round.
        data.client_model_input(train_data, client_id)
    spec = training.round_datasets(train_data, sampled[:1], 1)[0].element_spec
    process = tff.learning.algorithms.build_weighted_fed_avg(
        models.make_model_fn(models.create_linear_model, spec),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LEARNING_RATE),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=training.LOOP_IMPLEMENTATION)
    files = scaling.write_client_files(train_data, tempfile.mkdtemp(prefix='multiworker-'))
    ids_process = scaling.ids_process(
        process, scaling.dataset_computation(scaling.file_client_data(files)))
    state = process.initialize()

    settings = {'default': (None, 'examples'), 'mergeable_1': (1, 'examples'),
                'mergeable_n': (args.workers, 'examples'), 'ids': (None, 'ids'),
                'ids_n': (args.workers, 'ids')}

    def run(name: str, clients: int):
        workers, path = settings[name]
        runtime.use_context(workers)
        if path == 'examples':
            return process.next(state, training.round_datasets(train_data, sampled[:clients], 1))
        return ids_process.next(state, scaling.round_ids(sampled[:clients], 1))

    # Warm-up (compiles each computation for each context) and the check that all train one model.
    reference = None
    max_difference = 0.0
    for clients in sorted(args.clients):
        for name in settings:
            weights = (process if settings[name][1] == 'examples' else ids_process).get_model_weights(
                run(name, clients).state)
            if clients == largest:
                if reference is None:
                    reference = weights
                max_difference = max(max_difference, scaling.max_weight_difference(reference, weights))
    print(f'largest weight difference to the default context: {max_difference:.1e}')

    seconds = {name: collections.defaultdict(list) for name in settings}
    loads = [os.getloadavg()[0]]
    for repeat in range(args.rounds):
        for clients in args.clients:
            order = list(settings) if repeat % 2 == 0 else list(settings)[::-1]  # A B ..., ... B A.
            for name in order:
                began = time.perf_counter()
                run(name, clients)
                seconds[name][clients].append(time.perf_counter() - began)
        loads.append(os.getloadavg()[0])
    medians = {name: {c: statistics.median(v) for c, v in by_size.items()}
               for name, by_size in seconds.items()}
    fits = {name: scaling.fit_fixed_and_per_client(
        [c for c, v in by_size.items() for _ in v], [s for v in by_size.values() for s in v])
        for name, by_size in seconds.items()}

    # The kernel's own per-client work: building the batches and serializing them as TFF does.
    parameter = process.next.type_signature.parameter[1]
    kernel = []
    for _ in range(max(3, args.rounds)):
        began = time.perf_counter()
        scaling.argument_bytes(training.round_datasets(train_data, sampled, 1), parameter)
        kernel.append(time.perf_counter() - began)
    kernel_per_client = statistics.median(kernel) / largest
    bytes_examples = scaling.argument_bytes(training.round_datasets(train_data, sampled, 1), parameter)
    bytes_ids = scaling.argument_bytes(scaling.round_ids(sampled, 1),
                                       ids_process.next.type_signature.parameter[1])

    # Where the mergeable context's time goes: its calls, timed on each worker's context.
    breakdown = {}
    for name in ('mergeable_1', 'mergeable_n'):
        context = runtime.use_context(settings[name][0])
        form = context._compiler_pipeline.compile(process.next)
        timer = CallTimer(context, form)
        began = time.perf_counter()
        for _ in range(max(2, args.rounds // 2)):
            run(name, largest)
        total = (time.perf_counter() - began) / max(2, args.rounds // 2)
        rounds = max(2, args.rounds // 2)
        breakdown[name] = {kind: timer.totals[kind] / rounds for kind in timer.totals}
        breakdown[name]['calls_per_round'] = {k: timer.counts[k] // rounds for k in timer.counts}
        breakdown[name]['round'] = total
    after_merge_arg = str(form.after_merge.type_signature.parameter)
    runtime.use_context(None)

    merge_s = breakdown['mergeable_n'].get('merge', 0.0) / max(1, args.workers - 1)
    fixed_1, per_client_1 = fits['mergeable_1']
    worker_per_client = max(0.0, per_client_1 - kernel_per_client)
    projected = (fixed_1 + kernel_per_client * largest + worker_per_client * largest / HOSTS
                 + (HOSTS - 1) * merge_s)
    default_s = medians['default'][largest]

    print(f'{args.rounds} rounds per setting and size, alternating; load average '
          f'{min(loads):.1f}-{max(loads):.1f} (2 cores)')
    print(f'{"setting":12s} ' + ' '.join(f'{c:>7d} cl' for c in args.clients)
          + '   fixed s  per-client ms')
    for name in settings:
        fixed, per_client = fits[name]
        print(f'{name:12s} ' + ' '.join(f'{medians[name][c]:8.3f}s' for c in args.clients)
              + f'   {fixed:7.3f}  {per_client * 1000:9.2f}')
    print(f'client data per round at {largest} clients: examples {bytes_examples:,d} bytes, '
          f'ids {bytes_ids:,d} bytes; kernel builds and serializes the examples in '
          f'{kernel_per_client * 1000:.2f} ms per client')
    print('mergeable context, seconds per round in each kind of call (summed over sub-rounds):')
    for name, parts in breakdown.items():
        print(f'  {name}: ' + ', '.join(f'{k} {v:.3f}' if isinstance(v, float) else f'{k} {v}'
                                       for k, v in parts.items()))
    print(f'after_merge receives the original argument again: {after_merge_arg[:120]}...')
    print(f'projection (not measured): {HOSTS} hosts like this one, {largest} clients: '
          f'{projected:.3f} s per round against {default_s:.3f} s on the default context')
    print(json.dumps({
        'clients_per_round': largest,
        'workers': args.workers,
        'rounds_per_setting': args.rounds,
        'load_average': [round(min(loads), 1), round(max(loads), 1)],
        'round_s_default': round(default_s, 4),
        'round_s_mergeable_1': round(medians['mergeable_1'][largest], 4),
        'round_s_mergeable_n': round(medians['mergeable_n'][largest], 4),
        'round_s_ids': round(medians['ids'][largest], 4),
        'round_s_ids_n': round(medians['ids_n'][largest], 4),
        'mergeable_overhead': round(medians['mergeable_1'][largest] / default_s, 3),
        'ids_speedup': round(default_s / medians['ids'][largest], 3),
        'max_weight_difference': max_difference,
        'fits_fixed_s_per_client_s': {k: [round(v[0], 4), round(v[1], 5)] for k, v in fits.items()},
        'client_bytes_examples': bytes_examples,
        'client_bytes_ids': bytes_ids,
        'mergeable_breakdown_s': {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv)
                                      for kk, vv in v.items()} for k, v in breakdown.items()},
        'projected_speedup_8_hosts': round(default_s / projected, 2),
        'projection': 'not measured: fixed(mergeable_1) + kernel per-client x n + worker per-client '
                      'x n / 8 + 7 merges, each host with this machine\'s cores',
    }))


if __name__ == '__main__':
    main()
