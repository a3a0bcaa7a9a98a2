"""helpers.own_data: the CSV and image loaders against files read independently, every validation error,
the Dirichlet re-partition, the export/reload round trip, and the byte-for-byte rebuild of the examples."""

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

OWN_DATA = ROOT / 'data' / 'own_data'
CSV_PATH = OWN_DATA / 'digits.csv'
IMAGES = OWN_DATA / 'images'


@pytest.fixture(scope='module')
def own_data(tff_runtime):
    from helpers import own_data

    return own_data


def read_csv_directly() -> tuple[list[str], list[list[int]]]:
    """Return the CSV's header and rows as integers (writer kept as text), with the csv module."""
    with open(CSV_PATH, newline='') as file:
        rows = list(csv.reader(file))
    return rows[0], [[row[0]] + [int(v) for v in row[1:]] for row in rows[1:]]


def examples(client_data, client_id):
    """Return a client's (pixels, labels) as arrays, in dataset order."""
    elements = list(client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator())
    return np.stack([e['pixels'] for e in elements]), np.array([e['label'] for e in elements])


def test_csv_loader_matches_the_file_read_with_the_csv_module(own_data):
    header, rows = read_csv_directly()
    assert header[:3] == ['writer', 'label', 'pixel0'] and len(header) == 2 + 784
    client_data = own_data.load_csv_client_data(CSV_PATH)
    writers = sorted({row[0] for row in rows})
    assert client_data.client_ids == writers
    for writer in writers:
        mine = [row for row in rows if row[0] == writer]
        pixels, labels = examples(client_data, writer)
        assert labels.tolist() == [row[1] for row in mine]
        ink = np.array([row[2:] for row in mine], dtype=np.float64).reshape(-1, 28, 28)
        np.testing.assert_allclose(pixels, 1.0 - ink / 255.0, atol=1e-6)
    assert client_data.element_type_structure == own_data.ELEMENT_SPEC


def test_image_loader_matches_the_pngs_read_with_pillow(own_data):
    client_data = own_data.load_image_client_data(IMAGES)
    folders = sorted(p.name for p in IMAGES.iterdir())
    assert client_data.client_ids == folders
    for folder in folders:
        files = sorted((IMAGES / folder).glob('*.png'), key=lambda p: int(p.stem.split('_')[1]))
        expected = np.stack([np.array(Image.open(f), dtype=np.float64) / 255.0 for f in files])
        pixels, labels = examples(client_data, folder)
        assert labels.tolist() == [int(f.stem.split('_')[0]) for f in files]
        np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_examples_are_the_bundled_digits_of_the_six_writers(own_data):
    from helpers.data import load_bundled_arrays

    arrays = load_bundled_arrays()
    names = arrays['client_ids'][arrays['client']]
    for loader, path, split in ((own_data.load_csv_client_data, CSV_PATH, True),
                                (own_data.load_image_client_data, IMAGES, False)):
        client_data = loader(path)
        for writer in client_data.client_ids:
            chosen = (names == writer) & (arrays['is_train'] == split)
            pixels, labels = examples(client_data, writer)
            assert np.array_equal(labels, arrays['label'][chosen])
            assert np.array_equal(pixels, arrays['pixels'][chosen].astype(np.float32) / 255.0)


def test_all_clients_dataset_works_inside_a_graph(own_data):
    # create_tf_dataset_from_all_clients calls the dataset function with string tensors.
    client_data = own_data.load_image_client_data(IMAGES)
    assert sum(1 for _ in client_data.create_tf_dataset_from_all_clients()) == len(list(IMAGES.glob('*/*.png')))


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, 'w', newline='') as file:
        csv.writer(file).writerows([header] + rows)
    return path


@pytest.fixture
def good_rows():
    header, rows = read_csv_directly()
    return header, [list(r) for r in rows[:4]]


@pytest.mark.parametrize('change, message', [
    (lambda h, r: (h[:0] + h[1:], [row[1:] for row in r]), r"no column 'writer' \(argument `client_column`\).*pass client_column=None"),
    (lambda h, r: (h[:-1], [row[:-1] for row in r]), r"lacks 1 pixel columns, first 'pixel783'"),
    (lambda h, r: (h, r[:1] + [[r[1][0], r[1][1]] + ['x'] + r[1][3:]] + r[2:]),
     r"bad\.csv, row 2, column 'pixel0': 'x' is not a whole number"),
    (lambda h, r: (h, [r[0][:1] + [2.5] + r[0][2:]] + r[1:]), r"row 1, column 'label': 2\.5 is not a whole"),
    (lambda h, r: (h, r[:2] + [r[2][:1] + [10] + r[2][2:]] + r[3:]), r"row 3: label 10 is outside 0\.\.9"),
    (lambda h, r: (h, r[:2] + [r[2][:1] + [-1] + r[2][2:]] + r[3:]), r"row 3: label -1 is outside 0\.\.9"),
    (lambda h, r: (h, r[:3] + [r[3][:2] + [256] + r[3][3:]]), r"row 4, column 'pixel0': 256 is not an ink"),
    (lambda h, r: (h, [[''] + r[0][1:]] + r[1:]), r"row 1: empty 'writer'"),
    (lambda h, r: (h, []), r'has a header but no rows'),
])
def test_csv_validation_errors(own_data, tmp_path, good_rows, change, message):
    header, rows = change(*good_rows)
    path = write_csv(tmp_path / 'bad.csv', header, rows)
    with pytest.raises(ValueError, match=message):
        own_data.load_csv_client_data(path)


def test_csv_with_255_as_background_is_refused(own_data, tmp_path, good_rows):
    header, rows = good_rows
    assert all(v == 0 for v in rows[1][2:2 + 28])  # The bundled row's top edge is background, ink 0.
    rows[1] = rows[1][:2] + [255 - v for v in rows[1][2:]]  # The second data row stored inverted.
    path = write_csv(tmp_path / 'white_ink.csv', header, rows)
    with pytest.raises(ValueError, match=r'white_ink\.csv, row 2: the border is mostly ink \(median border '
                                         r'ink 255 of 255\).*replace each pixel value v by 255 - v'):
        own_data.load_csv_client_data(path)


def test_csv_missing_file_and_other_columns(own_data, tmp_path, good_rows):
    with pytest.raises(FileNotFoundError, match=r'No CSV file at .*nowhere\.csv \(argument `path`\)'):
        own_data.load_csv_client_data(tmp_path / 'nowhere.csv')
    path = write_csv(tmp_path / 'ok.csv', *good_rows)
    with pytest.raises(ValueError, match=r"no column 'owner' \(argument `client_column`\)"):
        own_data.load_csv_client_data(path, client_column='owner')
    by_label = own_data.load_csv_client_data(path, client_column='label')
    assert by_label.client_ids == sorted({str(r[1]) for r in good_rows[1]})


def test_csv_rows_are_counted_without_header_and_blank_lines(own_data, tmp_path, good_rows):
    header, rows = good_rows
    rows[2][1] = 12  # The third data row.
    lines = [','.join(map(str, header)), ''] + [','.join(map(str, r)) for r in rows[:2]] + ['', '']
    lines += [','.join(map(str, r)) for r in rows[2:]]
    (tmp_path / 'gaps.csv').write_text('\n'.join(lines) + '\n')
    assert (tmp_path / 'gaps.csv').read_text().splitlines()[6].split(',')[1] == '12'  # File line 7.
    with pytest.raises(ValueError, match=r'gaps\.csv, row 3: label 12 is outside'):
        own_data.load_csv_client_data(tmp_path / 'gaps.csv')


def test_csv_without_client_column_is_one_pooled_client(own_data, tmp_path):
    header, rows = read_csv_directly()
    path = write_csv(tmp_path / 'no_writer.csv', header[1:], [r[1:] for r in rows])
    pooled = own_data.load_csv_client_data(path, client_column=None)
    assert pooled.client_ids == ['pooled']
    pixels, labels = examples(pooled, 'pooled')
    assert labels.tolist() == [r[1] for r in rows]
    ink = np.array([r[2:] for r in rows], dtype=np.float64).reshape(-1, 28, 28)
    np.testing.assert_allclose(pixels, 1.0 - ink / 255.0, atol=1e-6)
    with pytest.raises(TypeError, match=r'client_column must be a column name \(str\) or None, got 0'):
        own_data.load_csv_client_data(path, client_column=0)


def small_folder(root: Path) -> Path:
    for client, labels in (('a', [3, 1]), ('b', [7])):
        (root / client).mkdir(parents=True)
        for number, label in enumerate(labels):
            Image.new('L', (28, 28), 255 - 10 * label).save(root / client / f'{label}_{number}.png')
    return root


def test_image_folder_small_example(own_data, tmp_path):
    client_data = own_data.load_image_client_data(small_folder(tmp_path / 'imgs'))
    pixels, labels = examples(client_data, 'a')
    assert labels.tolist() == [3, 1]
    np.testing.assert_allclose(pixels[:, 0, 0], [(255 - 30) / 255, (255 - 10) / 255], atol=1e-7)


@pytest.mark.parametrize('damage, error, message', [
    (lambda r: Image.new('L', (56, 56), 255).save(r / 'a' / '2_5.png'), ValueError,
     r'2_5\.png is 56x56 pixels; the model needs 28x28'),
    (lambda r: (r / 'c').mkdir(), ValueError, r'Client folder .*/c is empty'),
    (lambda r: (r / 'a' / 'seven.png').write_bytes(b''), ValueError,
     r'seven\.png: expected a file named <label>_<n>\.png'),
    (lambda r: Image.new('L', (28, 28), 255).save(r / 'b' / '12_3.png'), ValueError,
     r'12_3\.png: label 12 is outside 0\.\.9'),
])
def test_image_validation_errors(own_data, tmp_path, damage, error, message):
    root = small_folder(tmp_path / 'imgs')
    damage(root)
    with pytest.raises(error, match=message):
        own_data.load_image_client_data(root)


def test_image_folder_missing_or_without_clients(own_data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'No folder at .*nothing \(argument `folder`\)'):
        own_data.load_image_client_data(tmp_path / 'nothing')
    (tmp_path / 'flat').mkdir()
    with pytest.raises(ValueError, match=r'holds no client folders'):
        own_data.load_image_client_data(tmp_path / 'flat')


def test_rgb_images_are_converted_to_gray(own_data, tmp_path):
    (tmp_path / 'rgb' / 'a').mkdir(parents=True)
    Image.new('RGB', (28, 28), (200, 200, 200)).save(tmp_path / 'rgb' / 'a' / '4_0.png')
    pixels, labels = examples(own_data.load_image_client_data(tmp_path / 'rgb'), 'a')
    assert labels.tolist() == [4]
    np.testing.assert_allclose(pixels, 200 / 255, atol=1e-6)


def digit_image(mode: str, ink, background) -> Image.Image:
    """Return a 28x28 image in `mode` of a filled square of `ink` on `background`."""
    image = Image.new(mode, (28, 28), background)
    image.paste(ink, (8, 8, 20, 20))
    return image


@pytest.mark.parametrize('image, message', [
    (digit_image('L', 255, 0), r'7_0\.png has a dark background \(median border gray 0 of 255\).*Invert'),
    (digit_image('RGB', (250, 250, 250), (20, 20, 20)), r'median border gray 20 of 255'),
    (digit_image('RGBA', (0, 0, 0, 255), (0, 0, 0, 0)), r'7_0\.png has transparent pixels \(alpha down to 0\)'),
    (digit_image('LA', (0, 255), (255, 100)), r'transparent pixels \(alpha down to 100\).*Flatten'),
])
def test_inverted_or_transparent_images_are_refused(own_data, tmp_path, image, message):
    (tmp_path / 'imgs' / 'a').mkdir(parents=True)
    image.save(tmp_path / 'imgs' / 'a' / '7_0.png')
    with pytest.raises(ValueError, match=message):
        own_data.load_image_client_data(tmp_path / 'imgs')


def test_opaque_rgba_images_load_as_gray(own_data, tmp_path):
    (tmp_path / 'imgs' / 'a').mkdir(parents=True)
    digit_image('RGBA', (0, 0, 0, 255), (255, 255, 255, 255)).save(tmp_path / 'imgs' / 'a' / '7_0.png')
    pixels, _ = examples(own_data.load_image_client_data(tmp_path / 'imgs'), 'a')
    expected = np.ones((28, 28))
    expected[8:20, 8:20] = 0.0
    np.testing.assert_array_equal(pixels[0], expected)


def test_sixteen_bit_gray_is_refused_not_clipped(own_data, tmp_path):
    (tmp_path / 'imgs' / 'a').mkdir(parents=True)
    gray = np.full((28, 28), 255, np.uint8)
    gray[8:20, 8:20] = 42
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / 'imgs' / 'a' / '7_0.png')
    with Image.open(tmp_path / 'imgs' / 'a' / '7_0.png') as image:
        assert image.mode == 'I;16'  # Pillow reads it as 16-bit gray, which convert('L') clips to 255.
        assert np.asarray(image.convert('L')).min() == 255
    with pytest.raises(ValueError, match=r"7_0\.png has Pillow mode 'I;16'.*clipped to white.*as 8-bit"):
        own_data.load_image_client_data(tmp_path / 'imgs')
    with Image.open(tmp_path / 'imgs' / 'a' / '7_0.png') as image:  # The message's fix.
        Image.fromarray((np.asarray(image) // 257).astype(np.uint8)).save(tmp_path / 'imgs' / 'a' / '7_0.png')
    pixels, _ = examples(own_data.load_image_client_data(tmp_path / 'imgs'), 'a')
    np.testing.assert_array_equal(pixels[0], gray / np.float32(255.0))


@pytest.mark.parametrize('listing_order', [sorted, lambda paths: sorted(paths, reverse=True)])
def test_equal_numbers_are_ordered_by_name(own_data, tmp_path, monkeypatch, listing_order):
    (tmp_path / 'imgs' / 'a').mkdir(parents=True)
    for name in ('3_1.png', '5_01.png', '2_0.png', '4_001.png'):
        Image.new('L', (28, 28), 255).save(tmp_path / 'imgs' / 'a' / name)
    # The order the file system lists a folder in must not matter: try it sorted and reversed.
    iterdir = Path.iterdir
    monkeypatch.setattr(Path, 'iterdir', lambda self: iter(listing_order(iterdir(self))))
    _, labels = examples(own_data.load_image_client_data(tmp_path / 'imgs'), 'a')
    # Numbers 0, 1, 1, 1; the three 1s by name: '3_1.png' < '4_001.png' < '5_01.png'.
    assert labels.tolist() == [2, 3, 4, 5]


def test_from_arrays_rejects_mismatched_lengths(own_data):
    with pytest.raises(ValueError, match=r'non-empty and of one length, got 2, 1 and 2'):
        own_data.client_data_from_arrays(np.ones((2, 28, 28)), [1], ['a', 'b'])


def test_check_element_structure(own_data):
    import collections

    import tensorflow as tf
    import tensorflow_federated as tff

    def make(**columns):
        return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
            ['a'], lambda cid: tf.data.Dataset.from_tensor_slices(collections.OrderedDict(**columns)))

    own_data.check_element_structure(make(label=np.int32([1]), pixels=np.ones((1, 28, 28), np.float32)))
    with pytest.raises(ValueError, match=r"Element 'pixels' must be .*float32.*got .*uint8, name=None\)\.$"):
        own_data.check_element_structure(make(label=np.int32([1]), pixels=np.ones((1, 28, 28), np.uint8)))
    with pytest.raises(ValueError, match=r"Element 'pixels' must be .*shape=\(28, 28\).*got .*\(14, 14\)"):
        own_data.check_element_structure(make(label=np.int32([1]), pixels=np.ones((1, 14, 14), np.float32)))

    def declared(pixels_shape):
        """Return a ClientData of one 32x32 example whose pixels are declared with `pixels_shape`."""
        signature = collections.OrderedDict(label=tf.TensorSpec([], tf.int32),
                                            pixels=tf.TensorSpec(pixels_shape, tf.float32))
        example = collections.OrderedDict(label=np.int32(1), pixels=np.ones((32, 32), np.float32))
        return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(['a'], lambda cid: (
            tf.data.Dataset.from_generator(lambda: iter([example]), output_signature=signature)))

    for shape, shown in (([None, None], r'\(None, None\)'), (None, r'<unknown>')):
        client_data = declared(shape)
        pixels_spec = client_data.element_type_structure['pixels']
        assert tf.TensorSpec([28, 28], tf.float32).is_compatible_with(pixels_spec)  # The old check passed.
        with pytest.raises(ValueError, match=r"Element 'pixels' must be .*shape=\(28, 28\).*got .*shape="
                                             rf'{shown}.*tf\.ensure_shape'):
            own_data.check_element_structure(client_data)
        # The hint works: tf.ensure_shape in the dataset function makes the shape known.
        own_data.check_element_structure(client_data.preprocess(lambda dataset: dataset.map(
            lambda e: collections.OrderedDict(label=e['label'],
                                              pixels=tf.ensure_shape(e['pixels'], [28, 28])))))
    with pytest.raises(ValueError, match=r"keys \['label', 'pixels'\], got"):
        own_data.check_element_structure(make(y=np.int32([1]), x=np.ones((1, 28, 28), np.float32)))


def test_dirichlet_partition_keeps_every_example_once(own_data):
    from helpers.data import client_arrays, partition_dirichlet

    natural = own_data.load_csv_client_data(CSV_PATH)
    pooled = client_arrays(natural)
    split = own_data.dirichlet_client_data(natural, num_clients=4, alpha=0.5, seed=3)
    assert split.client_ids == ['client_00', 'client_01', 'client_02', 'client_03']
    # The same index arrays partition_dirichlet gives on the pooled labels.
    for number, part in enumerate(partition_dirichlet(pooled['label'], 4, 0.5, seed=3)):
        pixels, labels = examples(split, f'client_{number:02d}')
        assert np.array_equal(labels, pooled['label'][part])
        assert np.array_equal(pixels, pooled['pixels'][part])
    with pytest.raises(ValueError, match=r'alpha must be > 0'):
        own_data.dirichlet_client_data(natural, num_clients=4, alpha=0.0)


PREDICT = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    folder = sys.argv[1]
    x = np.load(folder + '/x.npy')
    keras_model = tf.keras.models.load_model(folder + '/model.keras')
    exported = tf.saved_model.load(folder + '/saved_model')
    np.savez(folder + '/out.npz', keras=keras_model(x, training=False).numpy(),
             saved_model=exported.serve(tf.constant(x)).numpy())
    assert 'tensorflow_federated' not in sys.modules
''')


def test_export_and_reload_in_a_fresh_process(tff_runtime, tmp_path):
    import tensorflow as tf

    from helpers.models import create_linear_model

    # Non-trivial global weights, put in through TFF's ModelWeights as the notebook does.
    rng = np.random.default_rng(0)
    weights = tff_runtime.learning.models.ModelWeights(
        trainable=[rng.normal(size=(784, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)],
        non_trainable=[])
    model = create_linear_model()
    weights.assign_weights_to(model)
    model.save(tmp_path / 'model.keras')
    model.export(str(tmp_path / 'saved_model'))
    x = rng.uniform(size=(32, 784)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    subprocess.run([sys.executable, '-c', PREDICT, str(tmp_path)], check=True, capture_output=True)
    expected = model(tf.constant(x), training=False).numpy()
    reloaded = np.load(tmp_path / 'out.npz')
    assert sorted(reloaded.files) == ['keras', 'saved_model']
    for name in reloaded.files:
        assert np.array_equal(reloaded[name].argmax(1), expected.argmax(1))
        np.testing.assert_allclose(reloaded[name], expected, rtol=0, atol=1e-6)
    assert len(set(expected.argmax(1))) > 1, 'the weights must give varied predictions to test anything'


def test_examples_rebuild_byte_for_byte(tmp_path):
    sys.path.insert(0, str(ROOT / 'data'))
    try:
        import build_own_data_examples as build
    finally:
        sys.path.remove(str(ROOT / 'data'))
    written = build.build(tmp_path)
    committed = sorted(p.relative_to(OWN_DATA) for p in OWN_DATA.rglob('*') if p.is_file())
    rebuilt = sorted(p.relative_to(tmp_path) for p in written)
    assert rebuilt == committed
    for relative in committed:
        assert (tmp_path / relative).read_bytes() == (OWN_DATA / relative).read_bytes(), relative
    assert (OWN_DATA / 'digits.csv').stat().st_size < 500_000 and len(committed) <= 300
