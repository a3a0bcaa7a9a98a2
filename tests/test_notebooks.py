"""Every notebook follows the template, is committed executed, and keeps its helper copies identical.

nbval (see pytest.ini) executes the notebooks themselves; these checks read the committed files.
"""

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / 'tools'))
from colab_bridge import CELL as COLAB_CELL, MARKER as COLAB_MARKER, REPOSITORY  # noqa: E402

NOTEBOOKS = sorted((ROOT / 'notebooks').glob('[0-9][0-9]_*.ipynb'))
EXPORT = re.compile(r'^#\| export: (\S+)\s*$')
REPO = REPOSITORY  # The one place: tools/colab_bridge.py, which the set-up cell clones from.


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb['cells'] if c['cell_type'] == 'code' and source(c).strip()]


def is_colab_cell(cell: dict) -> bool:
    return cell['cell_type'] == 'code' and source(cell).lstrip().startswith(COLAB_MARKER)


def markdown(nb: dict) -> str:
    return '\n'.join(source(c) for c in nb['cells'] if c['cell_type'] == 'markdown')


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == '01_data_heterogeneity.ipynb'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_title_and_badges_point_at_this_file(path):
    nb = load(path)
    first = source(nb['cells'][0])
    assert first.startswith('# '), 'the first cell is the title'
    colab = f'https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{path.name}'
    binder = f'https://mybinder.org/v2/gh/{REPO}/main?labpath=notebooks%2F{path.name}'
    assert f']({colab})' in first, f'Colab badge must link to {colab}'
    assert f']({binder})' in first, f'Binder badge must link to {binder}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_template_sections(path):
    nb = load(path)
    text = markdown(nb)
    overview = re.search(r'^## Overview$(.*?)^## ', text, re.S | re.M)
    assert overview, 'an "## Overview" section comes after the title'
    for needle in ('You will learn', 'Prerequisites', 'Run time'):
        assert needle in overview.group(1), f'the overview says "{needle}"'
    assert re.search(r'2-core CPU', overview.group(1)), 'run time is stated for a 2-core CPU'
    assert re.search(r'^## Setup$', text, re.M)
    assert re.search(r'^## 1\. ', text, re.M), 'numbered sections start at "## 1. "'
    assert re.search(r'^## Summary$', text, re.M)
    assert re.search(r'^## Exercises$', text, re.M)
    assert re.search(r'^### Solutions$', text, re.M)
    solutions_at = next(i for i, c in enumerate(nb['cells'])
                        if c['cell_type'] == 'markdown' and '### Solutions' in source(c))
    assert any(c['cell_type'] == 'code' for c in nb['cells'][solutions_at:]), 'solutions run'


HEADING = re.compile(r'^#{1,6} ')
FENCE = re.compile(r'^(```|~~~)')
# Workshop size (a 45-60 minute slot): limits on the core path and on the whole notebook.
CORE_MAX_WORDS, CORE_MAX_CODE_CELLS, TOTAL_MAX_WORDS = 2000, 30, 3000


def prose_lines(text: str) -> list[str]:
    """Return the lines of a markdown cell outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def prose_words(text: str) -> int:
    """Count a markdown cell's words without its code blocks and link targets."""
    prose = '\n'.join(prose_lines(text))
    prose = re.sub(r'\]\([^)]*\)', ']', prose)
    return len(prose.split())


def sections(nb: dict) -> list[tuple[str, list[dict]]]:
    """Split the cells into (heading line, cells) at every heading cell; the title cell opens the first."""
    parts = []
    for cell in nb['cells']:
        text = source(cell).strip()
        if cell['cell_type'] == 'markdown' and HEADING.match(text):
            parts.append((text.splitlines()[0], [cell]))
        else:
            parts[-1][1].append(cell)
    return parts


def core_and_optional(nb: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Return (core cells, Solutions cells, Going further cells) as the shape rules define them."""
    core, solutions, further, part = [], [], [], None
    for heading, cells in sections(nb):
        if heading == '### Solutions':
            part = solutions
        elif heading == '## Going further (optional)':
            part = further
        elif heading.startswith('## ') or heading.startswith('# '):
            part = core
        elif part is None:
            part = core
        part.extend(cells)
    return core, solutions, further


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_every_heading_starts_its_own_cell(path):
    for index, cell in enumerate(load(path)['cells']):
        if cell['cell_type'] != 'markdown':
            continue
        later = [line for line in prose_lines(source(cell).strip())[1:] if HEADING.match(line)]
        assert not later, f'cell {index}: heading {later[0]!r} must start a cell of its own'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_workshop_sized(path):
    nb = load(path)
    core, _, _ = core_and_optional(nb)
    core_words = sum(prose_words(source(c)) for c in core if c['cell_type'] == 'markdown')
    total_words = sum(prose_words(source(c)) for c in nb['cells'] if c['cell_type'] == 'markdown')
    # The Colab set-up cell is the same machinery in every notebook, not part of the lesson.
    core_code = [c for c in core if c['cell_type'] == 'code' and source(c).strip() and not is_colab_cell(c)]
    assert core_words <= CORE_MAX_WORDS, f'core path has {core_words} words of prose'
    assert len(core_code) <= CORE_MAX_CODE_CELLS, f'core path has {len(core_code)} code cells'
    assert total_words <= TOTAL_MAX_WORDS, f'notebook has {total_words} words of prose'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_closing_sections_in_order(path):
    headings = [h for h, _ in sections(load(path)) if h.startswith('## ') or h == '### Solutions']
    tail = headings[headings.index('## Summary'):]
    expected = ['## Summary', '## Exercises', '### Solutions']
    if '## Going further (optional)' in tail:
        expected.append('## Going further (optional)')
    assert tail == expected + ['## References'], f'closing sections are {tail}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_are_collapsed_until_opened(path):
    _, solutions, _ = core_and_optional(load(path))
    code = [c for c in solutions if c['cell_type'] == 'code']
    assert code, 'solutions have code that runs'
    for cell in solutions[1:]:  # Everything under the "### Solutions" heading, text and results too.
        hidden = cell['metadata'].get('jupyter', {})
        assert hidden.get('source_hidden') is True, (
            f'solution cell {source(cell)[:40]!r} must have "jupyter": {{"source_hidden": true}}')
        if cell['cell_type'] == 'code':
            assert hidden.get('outputs_hidden') is True, (
                f'solution cell {source(cell)[:40]!r} must hide its outputs too')


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_references_section_has_links(path):
    parts = dict(sections(load(path)))
    assert '## References' in parts
    text = '\n'.join(source(c) for c in parts['## References'])
    assert len(re.findall(r'\]\(https?://', text)) >= 2, 'References link at least two sources'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_one_setup_cell_first(path):
    cells = [c for c in code_cells(load(path)) if not is_colab_cell(c)]
    setup = source(cells[0])
    assert 'runtime.setup(' in setup, 'the first code cell is the setup cell and calls runtime.setup'
    assert not any('runtime.setup(' in source(c) for c in cells[1:]), 'only one setup cell'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_colab_set_up_cell_first_and_current(path):
    cells = code_cells(load(path))
    assert source(cells[0]) == COLAB_CELL, (
        'the first code cell is the Colab set-up cell, as tools/colab_bridge.py writes it: run '
        f'tools/insert_colab_cell.py {path.relative_to(ROOT)}, then re-execute the notebook')
    assert not any(is_colab_cell(c) for c in cells[1:]), 'only one Colab set-up cell'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_in_order_without_errors(path):
    cells = code_cells(load(path))
    counts = [c['execution_count'] for c in cells]
    assert None not in counts, 'every code cell is executed (nbval fails on null counts)'
    assert counts == list(range(1, len(counts) + 1)), 'executed top to bottom in one fresh kernel'
    errors = [o for c in cells for o in c['outputs'] if o['output_type'] == 'error']
    assert not errors


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_some_outputs_are_compared_by_nbval(path):
    assert any('# NBVAL_CHECK_OUTPUT' in source(c) for c in code_cells(load(path)))


def _definitions(text: str) -> dict[str, str]:
    """Return the source of each top-level def, class and simple assignment in `text`, by name."""
    tree = ast.parse(text)
    lines = text.splitlines()
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            # Include decorators: a lost @tf.function changes behaviour but not the def's text.
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[node.name] = '\n'.join(lines[first - 1:node.end_lineno])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ast.get_source_segment(text, node)
    return found


def _exports():
    for path in NOTEBOOKS:
        for cell in code_cells(load(path)):
            text = source(cell)
            match = EXPORT.match(text.splitlines()[0])
            if match:
                yield pytest.param(path, match.group(1), text, id=f'{path.name}->{match.group(1)}')


EXPORTS = list(_exports())


def test_notebook_01_exports_its_teaching_code():
    assert any(p.values[0].name.startswith('01_') for p in EXPORTS)


@pytest.mark.parametrize('path, module, text', EXPORTS)
def test_exported_cells_equal_the_helpers(path, module, text):
    module_defs = _definitions((ROOT / module).read_text())
    cell_defs = _definitions(text)
    assert cell_defs, 'an export cell defines something'
    for name, cell_source in cell_defs.items():
        assert name in module_defs, f'{name} is taught in {path.name} but missing from {module}'
        assert cell_source == module_defs[name], f'{name} differs between {path.name} and {module}'
