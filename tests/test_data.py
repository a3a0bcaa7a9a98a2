"""The bundled dataset, its loader, the partitioners and preprocessing."""

import collections
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from helpers import data
from tests.conftest import ROOT


@pytest.fixture(scope='module')
def arrays():
    return data.load_bundled_arrays()


@pytest.fixture(scope='module')
def bundled():
    return data.load_federated_digits('bundled', verbose=False)


def test_build_script_reproduces_the_file_byte_for_byte(tmp_path):
    output = tmp_path / 'rebuilt.npz'
    subprocess.run([sys.executable, str(ROOT / 'data' / 'build_dataset.py'), str(output)], check=True,
                   capture_output=True)
    assert output.read_bytes() == data.BUNDLED_PATH.read_bytes()
    assert hashlib.sha256(output.read_bytes()).hexdigest() == data.BUNDLED_SHA256


def pickled_members(path):
    """Return the members of an .npz file whose .npy header declares Python objects (stored pickled)."""
    found = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as member:
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[np.lib.format.read_magic(member)]
                _, _, dtype = read_header(member)
                if dtype.hasobject:
                    found.append(name)
    return found


def test_file_is_a_plain_npz_without_pickles(tmp_path):
    # The headers are read from the file itself: the loader's allow_pickle=False would raise on a
    # pickled member, so the loaded arrays cannot show one.
    assert pickled_members(data.BUNDLED_PATH) == []
    with_pickle = tmp_path / 'with_pickle.npz'
    np.savez(with_pickle, plain=np.arange(3), objects=np.array([{'a': 1}, None], dtype=object))
    assert pickled_members(with_pickle) == ['objects.npy']


def test_dataset_is_federated_the_way_the_issue_asks(arrays):
    clients, is_train, labels = arrays['client'], arrays['is_train'], arrays['label']
    assert len(arrays['client_ids']) >= 100
    # Each source digit is used once, so no source image is in both splits.
    assert len(np.unique(arrays['source'])) == len(arrays['source']) == 5000
    assert not set(arrays['source'][is_train]) & set(arrays['source'][~is_train])
    sizes = np.bincount(clients)
    assert sizes.min() >= 8 and sizes.max() >= 5 * np.median(sizes)  # Quantity skew.
    for writer in range(len(arrays['client_ids'])):  # Every writer has train and test examples.
        mine = clients == writer
        assert is_train[mine].any() and (~is_train[mine]).any()
    global_mix = data.label_distribution(labels)
    skews = [data.label_skew(labels[clients == w], global_mix) for w in range(len(sizes))]
    assert np.mean(skews) > 0.3  # Label skew: an IID split of this size gives about 0.2.
    for style in ('rotation_deg', 'slant', 'scale', 'thickness', 'ink'):  # Feature skew.
        assert np.std(arrays[f'style_{style}']) > 0


def load_build_script():
    spec = importlib.util.spec_from_file_location('build_dataset', ROOT / 'data' / 'build_dataset.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_writers_style_is_in_its_pixels(arrays):
    pixels = arrays['pixels']
    assert pixels.dtype == np.uint8 and np.median(pixels) == 255  # The background stays white.
    clients, ink = arrays['client'], arrays['style_ink']
    # Ink strength scales every stroke, so no pixel of a writer is darker than its ink allows.
    darkest = np.array([255 - pixels[clients == w].min() for w in range(len(ink))])
    assert np.all(darkest <= np.round(ink * 255) + 1)
    assert np.corrcoef(darkest, ink)[0, 1] > 0.9
    # Thicker strokes cover more pixels: the writers of the thickest style ink more of the image.
    thickness, covered = arrays['style_thickness'], (pixels < 128).mean(axis=(1, 2))
    per_writer = np.array([covered[clients == w].mean() for w in range(len(ink))])
    thickest, thinnest = thickness == thickness.max(), thickness == thickness.min()
    assert per_writer[thickest].mean() > 1.5 * per_writer[thinnest].mean()


def test_styles_change_the_pixels(arrays):
    # A sample of stored digits is the MNIST source digit redrawn in its writer's style: not the
    # source itself, and not what another writer's style gives.
    build = load_build_script()
    images, labels = build.load_source()
    rng = np.random.default_rng(build.SEED)  # The build's draws, in its order, up to the styles.
    build.assign_digits(rng, labels, build.writer_sizes(rng, len(labels)))
    styles = build.writer_styles(rng)  # float64: the file stores them as float32.
    for name, values in styles.items():
        np.testing.assert_array_equal(arrays[f'style_{name}'], values.astype(np.float32))
    neutral = dict(rotation_deg=0.0, slant=0.0, scale=1.0, thickness=0, ink=1.0)
    for index in np.random.default_rng(0).choice(len(arrays['source']), 20, replace=False):
        source, writer = images[arrays['source'][index]], arrays['client'][index]
        stored_ink = 255 - arrays['pixels'][index]
        own = {name: values[writer] for name, values in styles.items()}
        other = {name: values[(writer + 1) % len(values)] for name, values in styles.items()}
        np.testing.assert_array_equal(stored_ink, build.apply_style(source, **own))
        assert not np.array_equal(stored_ink, source)
        assert not np.array_equal(stored_ink, build.apply_style(source, **other))
        np.testing.assert_array_equal(build.apply_style(source, **neutral), source)


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    damaged = tmp_path / 'federated_digits.npz'
    shutil.copy(data.BUNDLED_PATH, damaged)
    content = bytearray(damaged.read_bytes())
    content[1000] ^= 0xFF
    damaged.write_bytes(bytes(content))
    with pytest.raises(data.ChecksumError, match='rebuild it with') as raised:
        data.load_bundled_arrays(damaged)
    assert 'git checkout helpers/_data/federated_digits.npz' in str(raised.value)


def test_missing_file_says_how_to_rebuild(tmp_path):
    with pytest.raises(FileNotFoundError, match='build_dataset.py'):
        data.load_bundled_arrays(tmp_path / 'nothing.npz')


def test_client_data_has_emnist_structure(bundled):
    train, test = bundled
    assert train.client_ids == test.client_ids and len(train.client_ids) >= 100
    expected = collections.OrderedDict(label=tf.TensorSpec([], tf.int32),
                                       pixels=tf.TensorSpec([28, 28], tf.float32))
    assert train.element_type_structure == expected
    element = next(iter(train.create_tf_dataset_for_client(train.client_ids[0])))
    assert list(element) == ['label', 'pixels']
    assert element['label'].dtype == tf.int32 and element['pixels'].shape == (28, 28)
    pixels = element['pixels'].numpy()
    assert 0.0 <= pixels.min() and pixels.max() == 1.0


def test_client_data_matches_the_arrays(bundled, arrays):
    train, _ = bundled
    client = arrays['client_ids'][7]
    mine = (arrays['client'] == 7) & arrays['is_train']
    got = list(train.create_tf_dataset_for_client(client))
    assert len(got) == mine.sum()
    np.testing.assert_array_equal([int(e['label']) for e in got], arrays['label'][mine])
    np.testing.assert_allclose(got[0]['pixels'].numpy(), arrays['pixels'][mine][0] / 255.0, rtol=1e-6)


def test_serializable_dataset_fn_works_in_graph(bundled, arrays):
    train, _ = bundled

    @tf.function  # As TFF calls it: inside a graph, with the client id as a string tensor.
    def all_of(client_id):
        return train.serializable_dataset_fn(client_id).batch(10_000).get_single_element()

    names = arrays['client_ids'][arrays['client']]
    for client_id in (train.client_ids[0], train.client_ids[57], train.client_ids[-1]):
        got = all_of(tf.constant(client_id))
        mine = (names == client_id) & arrays['is_train']
        np.testing.assert_array_equal(got['label'].numpy(), arrays['label'][mine])
        np.testing.assert_allclose(got['pixels'].numpy(), arrays['pixels'][mine] / 255.0, rtol=1e-6)
    # The union over every client is exactly the train split: each train digit once, none missing.
    everything = train.create_tf_dataset_from_all_clients().batch(10_000).get_single_element()
    train_labels = arrays['label'][arrays['is_train']]
    assert sorted(everything['label'].numpy().tolist()) == sorted(train_labels.tolist())
    np.testing.assert_allclose(np.sort(everything['pixels'].numpy().sum(axis=(1, 2))),
                               np.sort((arrays['pixels'][arrays['is_train']] / 255.0).sum(axis=(1, 2))),
                               rtol=1e-5)


def test_unknown_source_and_client_are_clear_errors(bundled, monkeypatch):
    with pytest.raises(ValueError, match="'bundled', 'emnist'"):
        data.load_federated_digits('mnist')
    monkeypatch.setenv(data.SOURCE_ENV_VAR, 'nope')
    with pytest.raises(ValueError, match=data.SOURCE_ENV_VAR):
        data.load_federated_digits()
    with pytest.raises(ValueError, match='Unknown client id'):
        bundled[0].create_tf_dataset_for_client('writer_999')


def test_the_environment_variable_chooses_the_source_and_the_loader_says_which(bundled, capsys,
                                                                               monkeypatch):
    fake_emnist = (bundled[1], bundled[0])  # Any pair that is not what the bundled loader returns.
    monkeypatch.setattr(data, 'load_emnist', lambda: fake_emnist)
    monkeypatch.delenv(data.SOURCE_ENV_VAR, raising=False)
    train, _ = data.load_federated_digits()
    assert 'bundled federated digits' in capsys.readouterr().out
    assert train.client_ids == bundled[0].client_ids
    monkeypatch.setenv(data.SOURCE_ENV_VAR, ' EMNIST ')
    train, test = data.load_federated_digits()
    assert train is fake_emnist[0] and test is fake_emnist[1]
    assert 'federated EMNIST digits' in capsys.readouterr().out
    assert data.load_federated_digits('bundled', verbose=False)[0] is not fake_emnist[0]  # The argument wins.
    monkeypatch.setenv(data.SOURCE_ENV_VAR, 'bundled')
    data.load_federated_digits()
    assert 'bundled federated digits' in capsys.readouterr().out


def test_real_emnist_fails_fast_without_network(tmp_path, monkeypatch):
    # No cache and (here, as in CI) no route to the download host: a clear error within seconds.
    monkeypatch.setattr(data, 'EMNIST_HOST', 'storage.googleapis.com.invalid')
    monkeypatch.setenv(data.SOURCE_ENV_VAR, 'emnist')
    start = time.monotonic()
    with pytest.raises(ConnectionError, match='bundled data'):
        data.load_emnist(cache_dir=tmp_path, timeout_s=2.0)
    assert time.monotonic() - start < 5.0


def test_a_hanging_connection_attempt_is_abandoned_in_time(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(5)
        raise TimeoutError('simulated connect timeout')

    monkeypatch.setattr(data.socket, 'create_connection', hang)
    start = time.monotonic()
    assert not data._host_reachable('example.invalid', 443, timeout_s=1.0)
    assert time.monotonic() - start < 3.0


def test_count_examples_uses_or_computes_the_size(arrays, bundled):
    train, _ = bundled
    client_id = train.client_ids[0]
    expected = int(np.sum((arrays['client'] == 0) & arrays['is_train']))
    assert data.count_examples(train.create_tf_dataset_for_client(client_id)) == expected
    unknown = tf.data.Dataset.range(7).filter(lambda x: x % 2 == 0)  # cardinality -2
    assert data.count_examples(unknown) == 4
    with pytest.raises(ValueError, match='infinite'):
        data.count_examples(tf.data.Dataset.range(3).repeat())
    with pytest.raises(TypeError, match='tf.data.Dataset'):
        data.count_examples([1, 2, 3])


def test_partition_iid_sizes_and_determinism():
    parts = data.partition_iid(1003, 10, seed=3)
    assert sorted(len(p) for p in parts) == [100] * 7 + [101] * 3
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1003))
    again = data.partition_iid(1003, 10, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, data.partition_iid(1003, 10, seed=4)))


@pytest.mark.parametrize('alpha', [0.05, 1.0, 100.0])
def test_partition_dirichlet_covers_every_example_once(alpha):
    labels = np.random.default_rng(0).integers(0, 10, 2000)
    parts = data.partition_dirichlet(labels, 50, alpha, seed=0)
    assert len(parts) == 50 and all(len(p) >= 1 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(2000))
    again = data.partition_dirichlet(labels, 50, alpha, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_partition_dirichlet_skew_falls_as_alpha_grows():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    global_mix = data.label_distribution(labels)

    def mean_skew(alpha):
        parts = data.partition_dirichlet(labels, 50, alpha, seed=0)
        return np.mean([data.label_skew(labels[p], global_mix) for p in parts])

    skews = [mean_skew(a) for a in (0.05, 0.5, 5.0, 500.0)]
    assert skews == sorted(skews, reverse=True)
    assert skews[0] > 0.7 and skews[-1] < 0.15


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_clients=0, alpha=1.0), 'num_clients'),
    (dict(num_clients=5, alpha=0.0), 'alpha'),
    (dict(num_clients=500, alpha=1.0), 'num_clients'),
])
def test_partition_dirichlet_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.partition_dirichlet(np.zeros(100, dtype=int), **kwargs)


def test_label_skew_extremes():
    uniform = np.full(10, 0.1)
    assert data.label_skew(np.arange(10).repeat(3), uniform) == pytest.approx(0.0)
    assert data.label_skew(np.zeros(7, dtype=int), uniform) == pytest.approx(0.9)


def test_preprocess_shapes_values_and_epochs(bundled):
    train, _ = bundled
    raw = train.create_tf_dataset_for_client(train.client_ids[0])
    n = int(raw.cardinality())
    batches = list(data.preprocess(raw, batch_size=8, num_epochs=2, seed=1))
    assert sum(int(b['y'].shape[0]) for b in batches) == 2 * n
    assert batches[0]['x'].shape[1:] == (784,) and batches[0]['y'].shape[1:] == (1,)
    first = next(iter(raw))
    unshuffled = next(iter(data.preprocess(raw, batch_size=1, shuffle_buffer=1)))
    np.testing.assert_allclose(unshuffled['x'].numpy()[0], 1.0 - first['pixels'].numpy().ravel())
    with pytest.raises(ValueError, match='batch_size'):
        data.preprocess(raw, batch_size=0)


def test_make_federated_data_keeps_order_and_rejects_unknown_ids(bundled):
    train, _ = bundled
    ids = [train.client_ids[5], train.client_ids[2]]
    datasets = data.make_federated_data(train, ids, shuffle_buffer=1, batch_size=1000)
    for client_id, dataset in zip(ids, datasets):
        expected = [int(e['label']) for e in train.create_tf_dataset_for_client(client_id)]
        assert next(iter(dataset))['y'].numpy().ravel().tolist() == expected
    with pytest.raises(ValueError, match='unknown client ids'):
        data.make_federated_data(train, ['nobody'])


def _old_preprocess(dataset, batch_size=20, num_epochs=1, shuffle_buffer=200, seed=0):
    """The course's first preprocessing (shuffle, then convert each element): the reference order."""
    def convert(element):
        return collections.OrderedDict(x=tf.reshape(1.0 - element['pixels'], [-1]),
                                       y=tf.reshape(element['label'], [1]))

    dataset = dataset.repeat(num_epochs)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    return dataset.map(convert).batch(batch_size)


@pytest.mark.parametrize('kwargs', [dict(), dict(num_epochs=3, seed=7), dict(batch_size=7, shuffle_buffer=1)])
def test_cached_client_input_gives_the_batches_of_converting_every_round(bundled, kwargs):
    train, _ = bundled
    ids = train.client_ids[:6]
    cached = data.make_federated_data(train, ids, **kwargs)
    for client_id, dataset in zip(ids, cached):
        raw = train.create_tf_dataset_for_client(client_id)
        for routes in zip(dataset, data.preprocess(raw, **kwargs), _old_preprocess(raw, **kwargs), strict=True):
            for key in ('x', 'y'):
                np.testing.assert_array_equal(routes[0][key], routes[1][key])
                np.testing.assert_array_equal(routes[0][key], routes[2][key])


def test_client_model_input_converts_once_and_evicts_least_recently_used(bundled, monkeypatch):
    train, _ = bundled
    client_data = data.load_bundled()[0]  # A fresh ClientData: its own, empty cache.
    created = []
    original = client_data.create_tf_dataset_for_client
    monkeypatch.setattr(client_data, 'create_tf_dataset_for_client',
                        lambda cid: created.append(cid) or original(cid))
    a, b, c = client_data.client_ids[:3]
    first = data.client_model_input(client_data, a)
    assert data.client_model_input(client_data, a) is first and created == [a]
    assert first['x'].shape == (len(first['y']), 784) and first['x'].dtype == np.float32
    data.client_model_input(client_data, b)
    data.client_model_input(client_data, a)  # Now b is the least recently used.
    # Room for a and c only: caching c must drop b and keep a.
    size_c = int(train.create_tf_dataset_for_client(c).cardinality())
    monkeypatch.setattr(data, 'MAX_CACHED_EXAMPLES', len(first['y']) + size_c)
    data.client_model_input(client_data, c)
    created.clear()
    for client_id in (a, c, b):
        data.client_model_input(client_data, client_id)
    assert created == [b]


def test_client_model_input_rejects_an_empty_client():
    empty = tff.simulation.datasets.TestClientData({'nobody': collections.OrderedDict(
        label=np.zeros([0], np.int32), pixels=np.zeros([0, 28, 28], np.float32))})
    with pytest.raises(ValueError, match='no examples'):
        data.client_model_input(empty, 'nobody')


def test_shuffle_and_batch_rejects_bad_sizes():
    dataset = tf.data.Dataset.range(5)
    with pytest.raises(ValueError, match='num_epochs'):
        data.shuffle_and_batch(dataset, num_epochs=0)
    assert [len(b) for b in data.shuffle_and_batch(dataset, batch_size=2, shuffle_buffer=1)] == [2, 2, 1]


@pytest.mark.parametrize('batch_size', [1, 7, 4096])
def test_client_arrays_returns_every_example_whatever_the_batch_size(bundled, batch_size):
    # Reading only a first batch would silently drop the rest of a client larger than that batch.
    train, _ = bundled
    ids = train.client_ids[:3]
    got = data.client_arrays(train, ids, batch_size=batch_size)
    expected = np.concatenate([list(e['label'].numpy() for e in train.create_tf_dataset_for_client(c))
                               for c in ids])
    np.testing.assert_array_equal(got['label'], expected)
    assert got['pixels'].shape == (len(expected), 28, 28)
    assert list(got['client']) == [c for c in ids for _ in range(
        int(train.create_tf_dataset_for_client(c).cardinality()))]
    with pytest.raises(ValueError, match='batch_size'):
        data.client_arrays(train, ids, batch_size=0)
