"""Federated-program plumbing: tff.program's async calls made synchronous, metric release, resumable training.

The teaching copies of `make_federated_evaluator`, `run_sync`, `make_release_manager`, `TrainingInterrupted`
and `train_resumable` are in notebooks/03_evaluation_logs_checkpoints.ipynb; tests/test_notebooks.py keeps
them identical.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import tensorflow_federated as tff
from tqdm import tqdm

from helpers._checks import (check_callable, check_client_data, check_int, check_kwargs, check_model_fn,
                             check_path, check_seed)
from helpers.data import make_federated_data
from helpers.training import LOOP_IMPLEMENTATION, round_datasets, sample_clients


def run_sync(awaitable: Awaitable) -> Any:
    """Return the result of `awaitable`, also inside Jupyter, whose event loop is already running."""
    if not inspect.isawaitable(awaitable):
        raise TypeError('awaitable must be a coroutine or other awaitable, e.g. '
                        f'state_manager.load_latest(state), got {type(awaitable).__name__}.')

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # No loop in this thread (a script or a test): run one.
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # A loop runs (Jupyter).
        return pool.submit(asyncio.run, wait()).result()


def make_release_manager(log_dir: str | os.PathLike) -> tff.program.GroupingReleaseManager:
    """Return a release manager that writes every released value to TensorBoard and to a CSV file."""
    check_path('log_dir', log_dir)
    log_dir = Path(log_dir)
    return tff.program.GroupingReleaseManager([
        tff.program.TensorBoardReleaseManager(str(log_dir / 'tensorboard')),
        tff.program.CSVFileReleaseManager(str(log_dir / 'metrics.csv')),
    ])


def make_federated_evaluator(model_fn: Callable[[], tff.learning.models.VariableModel],
                             test_data: tff.simulation.datasets.ClientData,
                             batch_size: int = 100
                             ) -> Callable[[tff.learning.models.ModelWeights], dict[str, float]]:
    """Return a function that scores model weights on every test client with build_fed_eval."""
    check_model_fn('model_fn', model_fn)
    check_client_data('test_data', test_data)
    check_int('batch_size', batch_size, minimum=1, example=100)
    eval_process = tff.learning.algorithms.build_fed_eval(model_fn, loop_implementation=LOOP_IMPLEMENTATION)
    initial_state = eval_process.initialize()
    test_datasets = make_federated_data(test_data, test_data.client_ids, batch_size=batch_size,
                                        shuffle_buffer=1)

    def evaluate(model_weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        state = eval_process.set_model_weights(initial_state, model_weights)
        output = eval_process.next(state, test_datasets)
        metrics = output.metrics['client_work']['eval']['current_round_metrics']
        return {name: float(value) for name, value in metrics.items()}

    return evaluate


class TrainingInterrupted(RuntimeError):
    """A simulated crash right after a round's checkpoint; `history` holds the rounds that ran."""

    def __init__(self, round_num: int, history: dict[str, list[float]]):
        super().__init__(f'Simulated interruption after round {round_num} (its checkpoint is saved).')
        self.round_num = round_num
        self.history = history


def train_resumable(process: tff.learning.templates.LearningProcess,
                    train_data: tff.simulation.datasets.ClientData,
                    num_rounds: int,
                    clients_per_round: int,
                    state_manager: tff.program.ProgramStateManager,
                    *,
                    release_manager: tff.program.ReleaseManager | None = None,
                    evaluate: Callable[[Any], Mapping[str, float]] | None = None,
                    seed: int = 0,
                    preprocess_kwargs: Mapping | None = None,
                    interrupt_after_round: int | None = None,
                    description: str = 'rounds'):
    """Train until round `num_rounds`, continuing from the latest checkpoint; return (state, history).

    Every round is checkpointed as version `round` and its metrics released with key `round`. Round r
    always trains on the same clients and shuffles with the same seed, whether or not it follows a
    restart, so an interrupted and resumed run repeats the uninterrupted one. `history` maps 'round'
    and each 'train_<metric>' to one value per round run (empty lists if none ran), and each
    'eval_<metric>' likewise once `evaluate` has run.
    """
    if not isinstance(process, tff.learning.templates.LearningProcess):
        raise TypeError('process must be a tff.learning.templates.LearningProcess, got '
                        f'{type(process).__name__}.')
    if not isinstance(state_manager, tff.program.ProgramStateManager):
        raise TypeError('state_manager must be a tff.program.ProgramStateManager, for example '
                        f'tff.program.FileProgramStateManager(dir), got {type(state_manager).__name__}.')
    check_client_data('train_data', train_data)
    check_int('num_rounds', num_rounds, minimum=1)
    check_seed('seed', seed)
    if interrupt_after_round is not None:
        check_int('interrupt_after_round', interrupt_after_round, minimum=1)
    if evaluate is not None:
        check_callable('evaluate', evaluate, 'a function of the model weights, or None')
    if release_manager is not None and not isinstance(release_manager, tff.program.ReleaseManager):
        raise TypeError('release_manager must be a tff.program.ReleaseManager (e.g. from '
                        f'make_release_manager) or None, got {type(release_manager).__name__}.')
    check_kwargs('preprocess_kwargs', preprocess_kwargs)
    schedule = sample_clients(list(train_data.client_ids), clients_per_round, num_rounds, seed)
    initial_state = process.initialize()
    state, last_round = run_sync(state_manager.load_latest(initial_state))
    if state is None:
        state, last_round = initial_state, 0
        run_sync(state_manager.save(state, version=0))
        print('No checkpoint found: starting from the initial state (saved as version 0).')
    elif last_round >= num_rounds:
        print(f'Found checkpoints up to round {last_round}: no round left to run.')
    else:
        print(f'Found checkpoints up to round {last_round}: resuming with round {last_round + 1}.')
    # One list per key from the start, so that a run with no round left returns empty lists.
    train_type = process.next.type_signature.result.metrics.member.client_work.train
    history = {'round': [], **{f'train_{name}': [] for name in tff.structure.name_list(train_type)}}
    progress = tqdm(desc=description, unit='round', initial=last_round, total=num_rounds)
    try:
        for round_num in range(last_round + 1, num_rounds + 1):
            client_datasets = round_datasets(train_data, schedule[round_num - 1], round_num, seed,
                                             preprocess_kwargs)
            result = process.next(state, client_datasets)
            state = result.state
            released = {'train': {name: float(value)
                                  for name, value in result.metrics['client_work']['train'].items()}}
            if evaluate is not None:
                released['eval'] = dict(evaluate(process.get_model_weights(state)))
            if release_manager is not None:
                run_sync(release_manager.release(released, key=round_num))
            run_sync(state_manager.save(state, version=round_num))
            history['round'].append(round_num)
            for group, metrics in released.items():
                for name, value in metrics.items():
                    history.setdefault(f'{group}_{name}', []).append(float(value))
            progress.update(1)
            if interrupt_after_round == round_num:
                raise TrainingInterrupted(round_num, history)
    finally:
        progress.close()
    return state, history
