"""Federated-program plumbing: tff.program's async calls made synchronous, metric release, resumable training.

The teaching copies of `make_federated_evaluator`, `run_sync`, `make_release_manager`, `TrainingInterrupted`
and `train_resumable` are in notebooks/03_evaluation_logs_checkpoints.ipynb; tests/test_notebooks.py keeps
them identical.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import json
import os
import re
import shutil
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
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


def run_signature(process: tff.learning.templates.LearningProcess,
                  train_data: tff.simulation.datasets.ClientData,
                  clients_per_round: int, seed: int,
                  preprocess_kwargs: Mapping | None) -> dict[str, str]:
    """Return the settings that decide a resumable run's results, as strings, to compare on resume."""

    def sha256(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # The first round's clients stand for the data: two partitions of the same examples can share
    # their client ids (client_000, ...), and hashing every client of a large dataset takes long.
    first_round = sample_clients(list(train_data.client_ids), clients_per_round, 1, seed)[0]
    data_hash = hashlib.sha256()
    for client_id in first_round:
        for element in train_data.create_tf_dataset_for_client(client_id).as_numpy_iterator():
            for key in sorted(element):
                data_hash.update(np.ascontiguousarray(element[key]).tobytes())
    ids = sorted(train_data.client_ids)
    return {
        'seed': str(seed),
        'clients_per_round': str(clients_per_round),
        'preprocess_kwargs': repr(sorted(dict(preprocess_kwargs or {}).items())),
        'client_ids': f'{len(ids)} clients, sha256 {sha256(chr(10).join(ids))}',
        'first_round_data': f'sha256 {data_hash.hexdigest()[:16]}',
        'model_weights': str(process.get_model_weights.type_signature.result),
        'process': f'sha256 {sha256(str(process.next.type_signature))}',
    }


class RunRecord:
    """The run's signature and its last released round, kept in a JSON file beside its checkpoints.

    Only a `tff.program.FileProgramStateManager` has a folder to keep them in; with any other state
    manager the record keeps nothing, checks nothing and treats no round as released.
    """

    FILE_NAME = 'train_resumable.json'

    def __init__(self, state_manager: tff.program.ProgramStateManager, signature: dict[str, str]):
        self.released_through = 0
        self._path = None
        if not isinstance(state_manager, tff.program.FileProgramStateManager):
            return
        # FileProgramStateManager has no public accessor for its folder; _root_dir is its attribute
        # in TFF 0.87 (file_program_state_manager.py).
        folder = Path(state_manager._root_dir)
        self._path = folder / self.FILE_NAME
        self._signature = signature
        has_checkpoints = run_sync(state_manager.get_versions()) is not None
        if not has_checkpoints or not self._path.exists():
            self._write()  # A new run (or checkpoints older than this record): nothing to compare.
            return
        try:
            saved = json.loads(self._path.read_text())
            saved_signature, self.released_through = saved['signature'], int(saved['released_through'])
        except (ValueError, KeyError, TypeError) as error:
            raise RuntimeError(f'{self._path} is damaged ({error}); remove the folder {folder} to start '
                               'this run afresh.') from error
        # In the signature's order, so that a changed seed is named rather than the data it picks.
        for field in [*signature, *(f for f in saved_signature if f not in signature)]:
            if signature.get(field) != saved_signature.get(field):
                raise ValueError(
                    f'The checkpoints in {folder} belong to a run with a different {field}: '
                    f'{saved_signature.get(field)!r} then, {signature.get(field)!r} now. Resume with the '
                    f'same {field}, or give this run a new checkpoint folder.')

    def mark_released(self, round_num: int) -> None:
        """Record that the metrics of every round up to `round_num` have been released."""
        self.released_through = max(self.released_through, round_num)
        self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        temporary = self._path.with_suffix('.tmp')
        temporary.write_text(json.dumps({'signature': self._signature,
                                         'released_through': self.released_through}, indent=1))
        os.replace(temporary, self._path)  # Atomic: a crash leaves the old record or the new one.


def load_latest_intact(state_manager: tff.program.ProgramStateManager, structure: Any) -> tuple[Any, int]:
    """Return the newest checkpoint that loads and its version, or (None, 0) if there is none.

    With a `FileProgramStateManager`, first removes the `<prefix><N>_temp<XXXX>` folders a killed save
    leaves, and moves checkpoints newer than the one returned that fail to load (empty or damaged) to
    `damaged_<prefix><N>`, so that their rounds can be saved again; each with a warning. Raises a
    RuntimeError naming the folder when checkpoints exist but none loads.
    """
    folder = prefix = None
    if isinstance(state_manager, tff.program.FileProgramStateManager):
        folder, prefix = Path(state_manager._root_dir), state_manager._prefix  # TFF 0.87's attributes.
        temporary = re.compile(re.escape(prefix) + r'\d+_temp\d+')
        for path in sorted(folder.iterdir()):
            if path.is_dir() and temporary.fullmatch(path.name):
                shutil.rmtree(path)
                warnings.warn(f'Removed {path}, the unfinished folder of a checkpoint save that was '
                              'stopped (a crash or a kill); the checkpoints themselves are intact.',
                              stacklevel=2)
    versions = run_sync(state_manager.get_versions()) or []
    failures = []
    for version in reversed(versions):
        try:
            state = run_sync(state_manager.load(version, structure))
        # Loading a SavedModel that is empty or cut short fails with OSError, ValueError, a
        # tf.errors.OpError or a protobuf DecodeError, depending on which file is missing or damaged.
        except Exception as error:  # noqa: BLE001
            failures.append((version, f'{type(error).__name__}: {str(error).splitlines()[0][:200]}'))
            continue
        for failed, reason in failures:
            if folder is None:
                raise RuntimeError(f'Checkpoint version {failed} does not load ({reason}); remove it '
                                   f'so that training resumes from version {version}.')
            damaged = folder / f'{prefix}{failed}'
            moved = folder / f'damaged_{prefix}{failed}'
            if moved.exists():
                shutil.rmtree(moved)
            damaged.rename(moved)
            warnings.warn(f'Checkpoint {damaged} does not load ({reason}): moved it to {moved.name} '
                          f'and resuming from version {version}.', stacklevel=2)
        return state, version
    if failures:
        where = folder if folder is not None else 'the state manager'
        raise RuntimeError(f'None of the {len(failures)} checkpoints in {where} loads (version '
                           f'{failures[0][0]}: {failures[0][1]}). If they come from a different model, '
                           'use a new folder; otherwise remove this one to start afresh.')
    return None, 0


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
    'eval_<metric>' likewise once `evaluate` has run. Refuses checkpoints that reach beyond
    `num_rounds` or come from a run with other settings (see `run_signature`), skips damaged ones
    (see `load_latest_intact`) and releases a round re-run after a crash only once (see `RunRecord`).
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
    # Refuses checkpoints of a run with other settings; remembers which rounds' metrics are released.
    record = RunRecord(state_manager,
                       run_signature(process, train_data, clients_per_round, seed, preprocess_kwargs))
    state, last_round = load_latest_intact(state_manager, initial_state)
    if state is None:
        state, last_round = initial_state, 0
        run_sync(state_manager.save(state, version=0))
        print('No checkpoint found: starting from the initial state (saved as version 0).')
    elif last_round > num_rounds:
        raise ValueError(f'num_rounds={num_rounds}, but the checkpoints already reach round {last_round}. '
                         f'Ask for at least {last_round} rounds, or use a new checkpoint folder.')
    elif last_round == num_rounds:
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
            # A round re-run after a crash between its release and its checkpoint computes the same
            # metrics again: release them once only (TensorBoard would hold the step twice).
            if release_manager is not None and round_num > record.released_through:
                run_sync(release_manager.release(released, key=round_num))
                record.mark_released(round_num)
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
