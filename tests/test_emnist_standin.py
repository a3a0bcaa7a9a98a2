"""The real-EMNIST code path, offline: TFF's own loader on a stand-in `emnist_all.sqlite`.

`data/build_emnist_standin.py` writes a file in the format TFF 0.87 reads (see its docstring); these
tests check that `load_federated_digits('emnist')` returns what was written, that damaged cache files
get an error naming the file to delete, and that every notebook runs on it with FL_COURSE_DATA=emnist.
"""

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from helpers import data
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / 'notebooks').glob('[0-9][0-9]_*.ipynb'))
CACHE_ROOT = Path.home() / '.cache' / 'fl-course-tests'


def _load_builder():
    spec = importlib.util.spec_from_file_location('build_emnist_standin',
                                                  ROOT / 'data' / 'build_emnist_standin.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


@pytest.fixture(scope='session')
def standin():
    """Return (folder holding emnist_all.sqlite, {split: {writer: count}} as written), built once.

    Building takes about a minute, so the file is kept under ~/.cache/fl-course-tests, keyed by the
    builder's source and the bundled data's checksum; a changed builder builds a new one.
    """
    key = f'{builder.source_hash()[:16]}-{data.BUNDLED_SHA256[:8]}'
    folder = CACHE_ROOT / f'emnist-standin-{key}'
    if not (folder / 'written.json').is_file():
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=CACHE_ROOT, prefix='.building-'))
        written = builder.build(scratch)
        (scratch / 'written.json').write_text(json.dumps(written))
        try:
            scratch.rename(folder)  # Atomic: a concurrent session sees a complete folder or none.
        except OSError:
            shutil.rmtree(scratch)  # Another session finished first; its file is the same.
    return folder, json.loads((folder / 'written.json').read_text())


@pytest.fixture
def emnist_env(standin, monkeypatch):
    """Point FL_COURSE_EMNIST_DIR at the stand-in and select EMNIST."""
    monkeypatch.setenv(data.EMNIST_DIR_ENV_VAR, str(standin[0]))
    monkeypatch.setenv(data.SOURCE_ENV_VAR, 'emnist')
    return standin


def test_standin_has_the_tables_and_columns_tff_reads(standin):
    folder, written = standin
    with sqlite3.connect(folder / builder.FILE_NAME) as connection:
        columns = {table: [row[1] for row in connection.execute(f'PRAGMA table_info({table})')]
                   for table in ('examples', 'client_metadata')}
        splits = dict(connection.execute('SELECT split_name, SUM(num_examples) FROM client_metadata '
                                         'GROUP BY split_name').fetchall())
        example_splits = dict(connection.execute(
            'SELECT split_name, COUNT(*) FROM examples GROUP BY split_name').fetchall())
    assert columns == {'examples': ['split_name', 'client_id', 'serialized_example_proto'],
                       'client_metadata': ['client_id', 'split_name', 'num_examples']}
    assert splits == example_splits == {s: sum(written[s].values()) for s in data.EMNIST_SPLITS}
    train_ids = written['digits_only_train']
    assert len(train_ids) == builder.DEFAULT_WRITERS and set(train_ids) == set(written['digits_only_test'])
    assert all(re.fullmatch(r'f\d{4}_\d{2}', client_id) for client_id in train_ids)
    sizes = np.array(list(train_ids.values())) + np.array([written['digits_only_test'][c] for c in train_ids])
    # EMNIST-like in shape: about real EMNIST's mean per writer, from a few to several hundred.
    assert abs(sizes.mean() / builder.MEAN_DIGITS - 1) < 0.15
    assert sizes.min() < 10 and sizes.max() > 300


def test_load_federated_digits_reads_the_standin_through_tff(emnist_env, capsys):
    folder, written = emnist_env
    train, test = data.load_federated_digits()  # source and folder from the environment
    assert 'federated EMNIST' in capsys.readouterr().out
    for client_data, split in ((train, 'digits_only_train'), (test, 'digits_only_test')):
        assert sorted(client_data.client_ids) == sorted(written[split])
    sizes = written['digits_only_train']
    smallest, largest = min(sizes, key=sizes.get), max(sizes, key=sizes.get)
    for client_id in (smallest, largest, train.client_ids[len(train.client_ids) // 2]):
        examples = list(train.create_tf_dataset_for_client(client_id))
        assert len(examples) == sizes[client_id]
    assert sum(1 for _ in test.create_tf_dataset_from_all_clients()) == sum(
        written['digits_only_test'].values())
    element = examples[0]
    assert element['label'].dtype.name == 'int32' and element['label'].shape == ()
    assert element['pixels'].dtype.name == 'float32' and element['pixels'].shape == (28, 28)
    pixels = element['pixels'].numpy()
    assert pixels.min() >= 0.0 and pixels.max() == 1.0 and np.median(pixels) == 1.0  # white background


def test_count_examples_counts_clients_whose_size_tff_does_not_know(emnist_env):
    train, _ = data.load_federated_digits(verbose=False)
    client_id = train.client_ids[0]
    dataset = train.create_tf_dataset_for_client(client_id)
    assert int(dataset.cardinality()) == -2  # tf.data.UNKNOWN_CARDINALITY: why the helper exists
    assert data.count_examples(dataset) == emnist_env[1]['digits_only_train'][client_id]


def test_home_still_selects_the_cache_folder(standin, tmp_path, monkeypatch):
    # Without FL_COURSE_EMNIST_DIR, TFF's default ~/.tff is used, and ~ follows HOME.
    (tmp_path / '.tff').mkdir()
    (tmp_path / '.tff' / builder.FILE_NAME).symlink_to(standin[0] / builder.FILE_NAME)
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv(data.EMNIST_DIR_ENV_VAR, raising=False)
    assert data.emnist_cache_dir() == tmp_path / '.tff'
    train, _ = data.load_federated_digits('emnist', verbose=False)
    assert sorted(train.client_ids) == sorted(standin[1]['digits_only_train'])


@pytest.fixture(scope='module')
def small_file(tmp_path_factory):
    """Return a complete stand-in with five writers, to damage in copies."""
    folder = tmp_path_factory.mktemp('small-emnist')
    builder.build(folder, num_writers=5)
    return folder / builder.FILE_NAME


def _truncated(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def _random_bytes(source: Path, target: Path) -> None:
    target.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())


def _empty(source: Path, target: Path) -> None:
    target.write_bytes(b'')


def _without_table(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with sqlite3.connect(target) as connection:
        connection.execute('DROP TABLE client_metadata')


def _without_test_split(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with sqlite3.connect(target) as connection:
        connection.execute("DELETE FROM client_metadata WHERE split_name = 'digits_only_test'")


@pytest.mark.parametrize('damage, reason', [
    (_truncated, 'header says'), (_random_bytes, 'SQLite header'), (_empty, 'empty'),
    (_without_table, 'no table client_metadata'), (_without_test_split, 'no clients in the split'),
], ids=['truncated', 'random bytes', 'empty', 'missing table', 'missing split'])
def test_a_damaged_cache_file_names_the_file_to_delete(small_file, tmp_path, damage, reason):
    damage(small_file, tmp_path / builder.FILE_NAME)
    target = tmp_path / builder.FILE_NAME
    with pytest.raises(data.EmnistCacheError, match=re.escape(reason)) as raised:
        data.load_emnist(cache_dir=tmp_path)
    assert f'rm "{target}"' in str(raised.value)
    assert not isinstance(raised.value, sqlite3.DatabaseError)
    assert target.exists()  # The loader names the file; deleting it is the learner's decision.


def test_tff_alone_does_not_name_the_file_of_a_truncated_download(small_file, tmp_path):
    # Why the check exists: on the same file TFF raises SQLite's own words, without a path.
    import tensorflow_federated as tff

    _truncated(small_file, tmp_path / builder.FILE_NAME)
    with pytest.raises(sqlite3.DatabaseError, match='database disk image is malformed') as raised:
        tff.simulation.datasets.emnist.load_data(cache_dir=str(tmp_path))
    assert builder.FILE_NAME not in str(raised.value)


def test_the_loader_indexes_the_file_by_client_once(small_file, tmp_path):
    shutil.copyfile(small_file, tmp_path / builder.FILE_NAME)

    def indexes():
        with sqlite3.connect(tmp_path / builder.FILE_NAME) as connection:
            return connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()

    assert indexes() == []  # As TFF's own writer leaves it.
    train, _ = data.load_emnist(cache_dir=tmp_path)
    assert indexes() == [(data.EMNIST_INDEX,)]
    assert not data.index_emnist_file(tmp_path / builder.FILE_NAME)  # Already there: nothing to do.
    counts = {c: sum(1 for _ in train.create_tf_dataset_for_client(c)) for c in train.client_ids}
    with sqlite3.connect(small_file) as connection:
        expected = dict(connection.execute("SELECT client_id, num_examples FROM client_metadata "
                                           "WHERE split_name = 'digits_only_train'").fetchall())
    assert counts == expected


@pytest.mark.notebooks
@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_emnist(emnist_env, path, tmp_path):
    # Executed in a copy (outputs are not compared and not written back), from a folder whose
    # parent takes the runs/ the notebooks write. Every cell must run without an error.
    folder = tmp_path / 'notebooks'
    folder.mkdir()
    # Notebooks read the repository's data files as ../data/... (notebook 08's own-data examples).
    (tmp_path / 'data').symlink_to(ROOT / 'data')
    nb = nbformat.read(path, as_version=4)
    began = time.perf_counter()
    NotebookClient(nb, timeout=1200, kernel_name='python3', record_timing=False,
                   resources={'metadata': {'path': str(folder)}}).execute()
    printed = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    if any('load_federated_digits(' in c.source for c in nb.cells if c.cell_type == 'code'):
        # Notebooks on the course's digits must load the stand-in (08 reads its own example files).
        assert 'federated EMNIST digits' in printed, 'the notebook loaded the bundled data, not the stand-in'
    print(f'{path.name} ran on the EMNIST stand-in in {time.perf_counter() - began:.0f} s')
