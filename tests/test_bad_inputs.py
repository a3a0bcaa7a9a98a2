"""Every public helper refuses bad input with a ValueError/TypeError that names the argument.

The rows live in tests/bad_inputs.py, one per bad input (every example of issue #14 included);
tools/probe_bad_inputs.py runs the same table against any version of `helpers` and counts outcomes.
"""

import matplotlib
import pytest

from tests.bad_inputs import ACCEPTED, ROWS, Ctx

matplotlib.use('Agg')


@pytest.fixture(scope='module')
def ctx(tff_runtime, tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp('bad_inputs'))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close('all')


def _param(row):
    marks = [pytest.mark.xfail(strict=True, reason=row.owner)] if row.owner else []
    return pytest.param(row, id=row.id, marks=marks)


def test_rows_have_unique_ids_and_cover_the_issue():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))
    assert sum(row.issue for row in ROWS) >= 25  # Every example in issue #14's section 1.


@pytest.mark.parametrize('row', [_param(row) for row in ROWS])
def test_bad_input_is_refused_clearly(ctx, row):
    with pytest.raises(row.error, match=row.match):
        row.call(ctx)


@pytest.mark.parametrize('name, call, expected', ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_numpy_scalars_are_accepted(ctx, name, call, expected):
    assert call(ctx) == expected

