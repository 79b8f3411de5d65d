"""The stride, expand_as and blow-up explorers and the parts every explorer shares, driven headless the way a learner
drives them: set every control across its range and its edge values, click elements, type shapes; assert what the view
shows. Also what holds for every explorer module: the widgets extra, named when missing, and no pyplot. No browser (see
test_browser.py)."""
import itertools
import re
import textwrap

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import BIN, EXPLORER_MODULES, PNG, plotted, run, skip_without_widgets

skip_without_widgets()
from mini_nn.broadcasting import broadcast_shapes, storage_index, storage_values
from mini_nn.init import activation_stats
from mini_nn.explorer_base import cell_colour, grid_html, parse_ints, storage_html
from mini_nn.stride_explorer import STRIDE_OPS, stride_view
from mini_nn.expand_explorer import broadcast_html, expand_html
from mini_nn.widgets import blowup_explorer, expand_explorer, stride_explorer  # the one import a learner uses


# ---- reading the views back -----------------------------------------------------------------------------------------

def _ix(s): return tuple(int(i) for i in s.split(',') if i)

def drawn_cells(h):
    "{index: storage cell} of every element `grid_html` drew."
    return {_ix(ix): int(k) for ix, k in re.findall(r'data-index="([^"]*)" data-cell="(\d+)"', h)}

def drawn_values(h):
    "{index: shown value text} of every element `grid_html` drew."
    return {_ix(ix): v for ix, v in re.findall(r'data-index="([^"]*)" data-cell="\d+" style="[^"]*">([^<]*)', h)}

def reads(h):
    "{cell: how many elements read it} from `storage_html`."
    return {int(k): int(n) for k, n in re.findall(r'data-cell="(\d+)" data-reads="(\d+)"', h)}

def outlined_cells(h):
    "The storage cells `storage_html` outlined."
    return [int(k) for k in re.findall(r'class="mn-sel" data-cell="(\d+)"', h)]

def selected_buttons(sx):
    return [ix for ix, b in sx.buttons.items() if b.layout.border.startswith('3px')]


# ---- every explorer module: the extra, and no pyplot ----------------------------------------------------------------

LESSONS = 'mini_nn.matmul, mini_nn.broadcasting, mini_nn.init, mini_nn.backprop, mini_nn.module, mini_nn.gradient_stats'

@pytest.mark.parametrize('missing', ['ipywidgets', 'matplotlib'])
def test_import_without_the_extra_names_it(missing):
    "With ipywidgets or matplotlib unimportable, importing any explorer module raises ImportError naming the extra."
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{missing!r}] = None  # makes `import {missing}` raise ImportError, as if it were not installed
        for m in {EXPLORER_MODULES!r}:
            try:
                __import__(m)
            except ImportError as e:
                print(m, 'ImportError:', e)
        import {LESSONS}  # the lessons still import fine
        print('lessons ok')
    """)
    out = run(BIN/'python', '-c', code).stdout
    for m in EXPLORER_MODULES:
        assert f'{m} ImportError: the explorers (mini_nn.widgets) need ipywidgets and matplotlib: pip install "mini_nn[widgets]"' in out
    assert 'lessons ok' in out


def test_lessons_do_not_import_the_explorers_and_the_explorers_use_no_pyplot():
    code = (f"import sys, {LESSONS}\n"
            f"print(sorted(m for m in {EXPLORER_MODULES + ['ipywidgets', 'matplotlib']!r} if m in sys.modules))\n"
            "import mini_nn.widgets as w, mini_nn.backward_explorer as b, mini_nn.gradient_explorer as g\n"
            "w.blowup_explorer(); w.stride_explorer(); w.expand_explorer(); w.backward_explorer(); w.gradient_explorer(n_layers=3)\n"
            "b.graph_figure(); b.step_error_figure([0.1, 0.01], {'e': [1e-3, 1e-5]}); g.depth_figure({('kaiming', True): g.gradient_stats(3)})\n"
            "print('pyplot', 'matplotlib.pyplot' in sys.modules)")
    assert run(BIN/'python', '-c', code).stdout.split() == ['[]', 'pyplot', 'False']


def test_widgets_is_the_one_import_of_every_explorer():
    import mini_nn.widgets as w
    assert w.__all__ == ['stride_explorer', 'expand_explorer', 'blowup_explorer', 'backward_explorer', 'gradient_explorer']
    for name in w.__all__:
        assert getattr(w, name) is getattr(__import__(f'mini_nn.{name}', fromlist=[name]), name)


# ---- shared pieces --------------------------------------------------------------------------------------------------

def test_cell_colours_are_distinct_and_stable():
    cs = [cell_colour(k) for k in range(100)]
    assert len(set(cs)) == 100 and all(re.fullmatch(r'#[0-9a-f]{6}', c) for c in cs)
    assert cell_colour(7) == cs[7]


@pytest.mark.parametrize('v', [torch.arange(24.).reshape(2, 3, 4), torch.arange(24.).reshape(2, 3, 4).permute(2, 0, 1),
                               torch.arange(6.)[::2], torch.tensor(3.), torch.arange(6.).reshape(2, 3).T,
                               torch.tensor([1., 2, 3])[:, None].expand(3, 4), torch.arange(9.).as_strided((2, 2), (0, 3), 2)])
def test_grid_and_storage_show_storage_index(v):
    idx = storage_index(v)
    h = grid_html(v)
    assert drawn_cells(h) == {ix: int(idx[ix]) for ix in itertools.product(*map(range, v.shape))}
    assert drawn_values(h) == {ix: f'{float(v[ix]):g}' for ix in itertools.product(*map(range, v.shape))}
    counts = torch.bincount(idx.flatten(), minlength=len(storage_values(v)))
    assert reads(storage_html(v)) == dict(enumerate(counts.tolist()))
    for ix in itertools.product(*map(range, v.shape)):
        assert outlined_cells(storage_html(v, ix)) == [int(idx[ix])]


def test_grid_marks_nan_and_inf_instead_of_failing():
    v = torch.tensor([[float('nan'), float('inf')], [-float('inf'), 1.]])
    assert drawn_values(grid_html(v)) == {(0, 0): 'nan', (0, 1): 'inf', (1, 0): '-inf', (1, 1): '1'}
    assert 'nan' in storage_html(v)


# ---- stride explorer ------------------------------------------------------------------------------------------------

def check_view(sx):
    "Every element of the explorer's view: its button, the outlined storage cell and the formula agree with storage_index."
    v = sx.view
    idx, vals = storage_index(v), storage_values(v)
    assert set(sx.buttons) == set(itertools.product(*map(range, v.shape)))
    for ix, b in sx.buttons.items():
        b.click()
        k = int(idx[ix])
        assert sx.selected == ix and selected_buttons(sx) == [ix]
        assert outlined_cells(sx.storage.value) == [k]
        assert f'= <b class="mn-cell">{k}</b>' in sx.info.value
        assert b.style.button_color == cell_colour(k) and b.description == f'{float(vals[k]):g}'
        assert vals[k] == v[ix]


@pytest.mark.parametrize('shape', [(1, 1), (1, 6), (6, 1), (3, 4), (6, 6)])
@pytest.mark.parametrize('op', list(STRIDE_OPS))
def test_stride_explorer_every_op_every_element(op, shape):
    sx = stride_explorer(shape=shape, op=op)
    if op == 'as_strided' and shape[0] * shape[1] < 5:  # the default (3, 3), (1, 1) reads cells 0 to 4
        assert 'out of bounds' in sx.info.value and sx.buttons == {}
        return
    assert 'mn-error' not in sx.info.value, sx.info.value
    t, v, expr = stride_view(shape, op, 0, 2, 1, 1, 0, 'row')
    assert sx.expr == expr and torch.equal(sx.view, v)
    check_view(sx)


def test_stride_explorer_layout_facts():
    sx = stride_explorer()
    want = {'contiguous': ((3, 4), (4, 1), 0, True), 'transpose': ((4, 3), (1, 4), 0, False),
            'copy': ((4, 3), (3, 1), 0, True), 'slice': ((2, 3), (8, 1), 1, False),
            'unsqueeze': ((1, 3, 4), (12, 4, 1), 0, True), 'expand': ((3, 4), (0, 1), 0, False),
            'as_strided': ((3, 3), (1, 1), 0, False)}
    for op, (shape, stride, offset, contiguous) in want.items():
        sx.op.value = op
        h = sx.info.value
        for key, val in [('shape', shape), ('stride()', stride), ('storage_offset()', offset), ('is_contiguous()', contiguous)]:
            assert f'<code>v.{key}</code></td><td><code>{val}</code>' in h, (op, key, h)
        assert ('A copy' in h) == (op == 'copy') and ('shares t' in h) == (op != 'copy')


def test_stride_explorer_controls_across_their_ranges():
    sx = stride_explorer()
    for rows, cols in itertools.product(range(1, 7), repeat=2):
        sx.rows.value, sx.cols.value = rows, cols
        for op in STRIDE_OPS:
            sx.op.value = op
            if op == 'as_strided' and rows * cols < 5: assert 'out of bounds' in sx.info.value; continue
            assert 'mn-error' not in sx.info.value, (rows, cols, op, sx.info.value)
            assert len(sx.buttons) == sx.view.numel()
            assert sx.selected in sx.buttons if sx.view.numel() else sx.selected is None  # slice 1: of 1 column: empty
    sx.rows.value, sx.cols.value, sx.op.value = 4, 5, 'slice'
    for r0, rs, c0, cs in itertools.product(range(0, 7), range(1, 4), range(0, 7), range(1, 4)):
        sx.row_start.value, sx.row_step.value, sx.col_start.value, sx.col_step.value = r0, rs, c0, cs
        t = torch.arange(10., 210., 10.).reshape(4, 5)
        assert torch.equal(sx.view, t[r0::rs, c0::cs]) and sx.expr == stride_view((4, 5), 'slice', r0, rs, c0, cs)[2]
        if sx.view.numel() == 0: assert sx.buttons == {} and sx.selected is None and 'no elements' in sx.grid.children[0].value
        else: assert outlined_cells(sx.storage.value) == [int(storage_index(sx.view)[sx.selected])]
    sx.op.value = 'unsqueeze'
    for d, shape in [(0, (1, 4, 5)), (1, (4, 1, 5)), (2, (4, 5, 1))]:
        sx.dim.value = d
        assert tuple(sx.view.shape) == shape and len(sx.grid.children) == shape[0]  # one block per index of dim 0
        check_view(sx)


def test_stride_explorer_stride_zero_rows_are_the_same_cells():
    sx = stride_explorer(shape=(3, 4), op='expand')
    colours = [[sx.buttons[(i, j)].style.button_color for j in range(4)] for i in range(3)]
    assert colours == [[cell_colour(j) for j in range(4)]] * 3
    assert reads(sx.storage.value) == {k: 3 if k < 4 else 0 for k in range(12)}
    assert 'Stride 0 along dim 0' in sx.info.value and 'all 3 positions' in sx.info.value
    sx.buttons[(2, 1)].click()
    assert outlined_cells(sx.storage.value) == [1]
    sx.expand.value = 'column'
    assert sx.view.stride() == (4, 0) and 'Stride 0 along dim 1' in sx.info.value
    assert [[sx.buttons[(i, j)].cell for j in range(4)] for i in range(3)] == [[0] * 4, [4] * 4, [8] * 4]
    sx.expand.value = 'new dim'
    assert sx.view.stride() == (0, 4, 1) and reads(sx.storage.value) == {k: 2 for k in range(12)}
    check_view(sx)


@pytest.mark.parametrize('size, stride, offset, shows', [
    ('(3, 3)', '(1, 1)', 0, None), ('2 2', '0 0', 11, None), ('()', '()', 5, None), ('4', '3', 0, None),
    ('(2, 2, 2)', '(6, 3, 1)', 0, None), ('(6, 6)', '(0, 0)', 0, None),
    ('(3, 3)', '(5, 5)', 0, 'out of bounds'), ('(3, 3)', '(-1, 1)', 0, 'Negative strides'),
    ('(3, 3)', '(1,)', 0, 'mismatch in length of strides and shape'), ('three', '(1, 1)', 0, "size 'three' is not a list"),
    ('(3, 3)', '1.5, 1', 0, "stride '1.5, 1' is not a list"), ('(9, 9)', '(0, 0)', 0, 'draws at most 64'),
    ('(1, 1, 1, 1)', '(1, 1, 1, 1)', 0, 'at most 3'), ('(0, 3)', '(1, 1)', 12, None)])
def test_stride_explorer_as_strided_shows_errors_as_messages(size, stride, offset, shows):
    sx = stride_explorer(op='as_strided')
    sx.as_size.value, sx.as_stride.value, sx.as_offset.value = size, stride, offset
    if shows is None:
        assert 'mn-error' not in sx.info.value, sx.info.value
        if sx.view.numel(): check_view(sx)
    else:
        assert 'mn-error' in sx.info.value and shows in sx.info.value, sx.info.value
        assert sx.buttons == {} and sx.view is None and sx.storage.value == ''
        sx.as_size.value, sx.as_stride.value, sx.as_offset.value = '(2, 2)', '(1, 2)', 3  # and it recovers
        assert sx.view.stride() == (1, 2) and 'mn-error' not in sx.info.value


def test_stride_explorer_selection_and_bad_arguments():
    sx = stride_explorer(shape=(4, 4))
    sx.select((3, 2))
    sx.op.value = 'transpose'  # (3, 2) is still an element: kept
    assert sx.selected == (3, 2) and outlined_cells(sx.storage.value) == [2 * 4 + 3]
    sx.rows.value = 2  # t.T is now 4×2: (3, 2) is gone, the first element is selected
    assert sx.selected == (0, 0)
    with pytest.raises(IndexError, match=r'\[0, 5\] is not an element of v = t.T, shape \(4, 2\)'): sx.select((0, 5))
    sx.op.value = 'copy'
    check_view(sx)
    assert [b.description for b in sx.buttons.values()] == ['10', '50', '20', '60', '30', '70', '40', '80']
    with pytest.raises(ValueError, match="op must be one of"): stride_explorer(op='view')
    with pytest.raises(ValueError, match='each an int from 1 to 6'): stride_explorer(shape=(0, 3))
    with pytest.raises(ValueError, match='each an int from 1 to 8'): stride_explorer(shape=(3, 9), max_side=8)
    assert stride_explorer(shape=(8, 8), max_side=8).view.shape == (8, 8)


# ---- expand explorer ------------------------------------------------------------------------------------------------

def test_expand_explorer_row_and_column():
    c, m = torch.tensor([10., 20, 30]), torch.tensor([[1., 2, 3], [4, 5, 6], [7, 8, 9]])
    ex = expand_explorer()
    for case, src, stride in [('row', c, (0, 1)), ('column', c.unsqueeze(1), (1, 0)), ('row', c, (0, 1))]:
        ex.case.value = case
        h = ex.picture.value
        assert h == expand_html(case)
        e_part = h.split('<code>e = ')[1].split('<code>m</code>')[0]
        e = src.expand_as(m)
        assert f'stride {stride}' in h and e.stride() == stride
        assert drawn_cells(e_part) == {ix: int(storage_index(e)[ix]) for ix in itertools.product(range(3), range(3))}
        assert reads(h) == {0: 3, 1: 3, 2: 3}  # c's 3 cells, each read by 3 elements
        s_part = h.split(f'<code>m + ')[1]
        assert {ix: float(x) for ix, x in drawn_values(s_part).items()} == {
            ix: float((m + src)[ix]) for ix in itertools.product(range(3), range(3))}
        assert 'Stride 0 along dim ' + str(stride.index(0)) in h


SHAPES = ['3', '3, 3', '1', '', '3, 1', '1, 3', '2', '4, 3', '0', '2, 0', '8, 1, 6, 1', '7, 1, 5', '5, 1, 4', '1, 1, 1']

@pytest.mark.parametrize('vector, matrix', list(itertools.product(SHAPES, repeat=2)))
def test_expand_explorer_broadcast_check_agrees_with_torch(vector, matrix):
    ex = expand_explorer()
    ex.vector.value, ex.matrix.value = vector, matrix
    vs, ms = parse_ints(vector), parse_ints(matrix)
    try: want = torch.broadcast_shapes(ms, vs)
    except RuntimeError: want = None
    h = ex.verdict.value
    if want is None:
        assert 'mn-error' in h and 'mn-ok' not in h and 'mn-clash' in h
        with pytest.raises(ValueError) as e: broadcast_shapes(ms, vs)
        assert str(e.value) in h.replace('&gt;', '>')  # the message from broadcast_shapes, shown as is
    else:
        assert f'vector {vs} and matrix {ms} broadcast to {tuple(want)}.' in h and 'mn-error' not in h
        if len(want):
            strides = torch.empty(vs).expand(want).stride()
            assert f'the vector is read with strides {strides}' in h


@pytest.mark.parametrize('text, shows', [('abc', "'abc' is not one"), ('3, , x', None), ('-2', 'must be an int >= 0, got -2'),
                                         ('1' * 30, 'differ'), ('3.5', "'3.5' is not one"), ('None', "'None' is not one"),
                                         (', '.join(['1'] * 13), '13 dimensions'), ('[[3]]', None), ('3 3 3 3 3 3', None)])
def test_expand_explorer_odd_text_gives_a_message(text, shows):
    ex = expand_explorer()
    ex.vector.value = text
    if shows: assert shows in ex.verdict.value.replace('&gt;', '>'), ex.verdict.value
    assert ('mn-error' in ex.verdict.value) == (shows is not None)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=20), st.text(alphabet='0123456789,()[] x-', max_size=16))
def test_broadcast_check_never_raises(vector, matrix):
    h = broadcast_html(vector, matrix)
    assert ('mn-error' in h) != ('mn-ok' in h)


def test_expand_explorer_bad_case():
    with pytest.raises(ValueError, match="case must be 'row' or 'column'"): expand_explorer('diag')
    assert expand_explorer('column').picture.value == expand_html('column')


# ---- blow-up explorer -----------------------------------------------------------------------------------------------

def marks(bx):
    return {t.get_gid(): t.get_text() for t in bx.figure.axes[0].texts if t.get_gid()}

def check_blowup(bx, n_layers, width, init, relu, seed=0):
    "The explorer shows `activation_stats` for these settings: lines, marks and words."
    want = activation_stats(n_layers, width, init, relu, seed=seed)
    s = bx.stats
    assert torch.equal(s.mean.nan_to_num(7.), want.mean.nan_to_num(7.)) and s.first_nonfinite == want.first_nonfinite
    for gid, y in [('std', want.std), ('|mean|', want.mean.abs())]:
        ok = y.isfinite() & (y > 0)
        got = plotted(bx.figure, gid)
        assert torch.equal(got[ok], y[ok]) and got[~ok].isnan().all()  # 0, inf and nan are gaps, never a crash
    zero = ((want.std == 0) & (want.mean == 0)).nonzero()
    expect = {}
    if want.first_nonfinite is not None: expect['nonfinite-label'] = f'inf/nan from layer {want.first_nonfinite}'
    if len(zero): expect['zero-label'] = f'all 0 from layer {int(zero[0])}'
    assert marks(bx) == expect
    if want.first_nonfinite is not None:
        assert f'inf/nan from layer {want.first_nonfinite}</b>' in bx.summary.value
    assert bx.plot.value[:8] == PNG


def test_blowup_layers_slider_across_its_range():
    bx = blowup_explorer()
    for n in [*range(1, 11), *range(20, 100, 20), 99, 100]:  # the low end step by step, then across to the top
        bx.layers.value = n
        assert len(bx.stats.std) == n + 1 and len(plotted(bx.figure, 'std')) == n + 1
    check_blowup(bx, 100, 100, 'plain', False)
    bx.layers.value = 1
    check_blowup(bx, 1, 100, 'plain', False)


@pytest.mark.parametrize('init', ['plain', 'lecun', 'kaiming', 'custom'])
@pytest.mark.parametrize('relu', [False, True])
def test_blowup_every_init_and_activation(init, relu):
    bx = blowup_explorer()
    bx.init.value, bx.activation.value = init, relu
    assert bx.scale.disabled == (init != 'custom')
    for n, width in [(1, 100), (50, 100), (100, 100), (100, 1), (3, 2), (20, 500)]:
        bx.layers.value, bx.width.value = n, width
        check_blowup(bx, n, width, 0.01 if init == 'custom' else init, relu)


def test_blowup_custom_scale_edges_and_seed():
    bx = blowup_explorer(n_layers=100, init=0.01)
    assert (bx.init.value, bx.scale.value, bx.scale.disabled) == ('custom', 0.01, False)
    check_blowup(bx, 100, 100, 0.01, False)
    assert 'all 0 from layer' in marks(bx)['zero-label'] and 'All 0 from layer' in bx.summary.value
    bx.scale.value = 10.  # the slider's top: overflows fast
    check_blowup(bx, 100, 100, 10., False)
    assert bx.stats.first_nonfinite is not None and 'mn-nonfinite' in bx.summary.value
    bx.scale.value = 1e-3  # its bottom
    check_blowup(bx, 100, 100, 1e-3, False)
    bx.scale.value = 0.1  # = 1/sqrt(100): LeCun's scale, steady
    assert 'mn-finite' in bx.summary.value
    before = bx.stats.std.clone()
    bx.seed.value = 1
    check_blowup(bx, 100, 100, 0.1, False, seed=1)
    assert not torch.equal(before, bx.stats.std)
    assert blowup_explorer(init=100.).scale.max >= 2  # a custom scale beyond the slider widens it (exponent 2)


def test_blowup_recomputes_only_on_change():
    bx = blowup_explorer()
    assert bx.computations == 1
    png, fig = bx.plot.value, bx.figure
    bx.scale.value = 3.  # the scheme is 'plain': the custom scale does not matter
    assert (bx.computations, bx.plot.value, bx.figure) == (1, png, fig)
    bx.layers.value = 51; bx.layers.value = 50
    assert bx.computations == 2 and bx.plot.value == png  # back to a setting it has seen: from the cache, same picture
    bx.init.value = 'kaiming'; bx.init.value = 'plain'; bx.activation.value = True; bx.activation.value = False
    assert bx.computations == 4
    bx.width.value = 100  # unchanged value: no event, no work
    assert bx.computations == 4


def test_blowup_leaks_no_figures_and_checks_arguments():
    import matplotlib
    bx = blowup_explorer()
    for n in range(1, 30): bx.layers.value = n
    assert 'matplotlib.pyplot' not in __import__('sys').modules or \
        __import__('matplotlib.pyplot').pyplot.get_fignums() == []
    with pytest.raises(ValueError, match="init must be one of 'plain', 'lecun', 'kaiming'"): blowup_explorer(init='xavier')
    with pytest.raises(ValueError, match='or a positive number, got -1'): blowup_explorer(init=-1)
    assert blowup_explorer(n_layers=5, max_layers=500).layers.max == 500
    for bad, msg in [(dict(n_layers=0), 'n_layers must be an int from 1 to 100, got 0'),
                     (dict(n_layers=101), 'n_layers must be an int from 1 to 100, got 101'),
                     (dict(n_layers=2.0), 'got 2.0'), (dict(width=501), 'width must be an int from 1 to 500, got 501')]:
        with pytest.raises(ValueError, match=re.escape(msg)): blowup_explorer(**bad)
    with pytest.raises(TypeError, match="relu must be True or False, got 'yes'"): blowup_explorer(relu='yes')
