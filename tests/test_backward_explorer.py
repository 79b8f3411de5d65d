"""The backward explorer, lesson 04's numerical_grad, the gradients-through-depth experiment and its explorer, driven
headless the way a learner drives them: every step, batch sizes across the slider's range, the buttons, the depth
controls; assert what the views show against the lessons' own functions and autograd. No browser (see test_browser.py);
what holds for every explorer module (the widgets extra, no pyplot) is tested in test_widgets.py."""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from conftest import PNG, plotted, skip_without_widgets

skip_without_widgets()
from mini_nn.backprop import lin, mse, numerical_grad, relu
from mini_nn.init import init_params
from mini_nn.gradient_stats import gradient_stats
from mini_nn.backward_explorer import (BACKWARD_STEPS, GRAD_FORMULAS, STEP_LABELS, backward_explorer, backward_trace,
                                       batch_sums, graph_figure, graph_svg, step_error_figure, step_html, tensor_states,
                                       trace_shapes, values_figure)
from mini_nn.gradient_explorer import GRAD_INITS, depth_figure, depth_summary, gradient_explorer

GRADS = ('x', 'w1', 'b1', 'w2', 'b2')


# ---- reading the views back -----------------------------------------------------------------------------------------

def drawn(svg)->dict:
    "{tensor: (state, shape)} of every box `graph_svg` drew."
    return {n: (s, sh) for n, s, sh in re.findall(r'class="mn-node" data-name="(\w+)" data-state="(\w+)" data-shape="([^"]*)"', svg)}

def current_fn(svg)->list:
    return re.findall(r'class="mn-fn" data-name="(\w+)" data-current="true"', svg)

def written(h)->list:
    "The tensors whose .g `step_html` lists as written."
    return re.findall(r'class="mn-writes" data-name="(\w+)"', h)

def panels(fig)->list:
    return [ax.title.get_text() for ax in fig.axes if ax.title.get_gid()]

def autograd_grads(T)->dict:
    ts = {k: getattr(T, k).detach().clone().requires_grad_() for k in GRADS}
    out = torch.relu(ts['x'] @ ts['w1'] + ts['b1']) @ ts['w2'] + ts['b2']
    F.mse_loss(out.squeeze(-1), T.y).backward()
    return {k: t.grad for k, t in ts.items()}


# ---- the trace ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('batch, n_in, nh', [(1, 100, 50), (2, 100, 50), (200, 100, 50), (7, 3, 1), (1, 1, 1), (250, 10, 4)])
def test_trace_gradients_are_autograds(batch, n_in, nh):
    T = backward_trace(batch, n_in, nh)
    assert all(getattr(T, k).dtype == torch.float64 for k in T._fields)
    assert T.x.shape == (batch, n_in) and T.out.shape == (batch, 1) and T.loss.shape == ()
    for k, grad in autograd_grads(T).items():
        assert getattr(T, k).g.shape == getattr(T, k).shape
        torch.testing.assert_close(getattr(T, k).g, grad, rtol=1e-12, atol=1e-14)
    assert not hasattr(T.y, 'g')


def test_trace_smaller_batches_are_the_first_rows_and_seeds_differ():
    big, small = backward_trace(200), backward_trace(13)
    assert torch.equal(small.x, big.x[:13]) and torch.equal(small.y, big.y[:13]) and torch.equal(small.w1, big.w1)
    w1, *_ = init_params(100, 50, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(big.w1, w1.double())  # lesson 03's init_params, drawn first
    assert not torch.equal(backward_trace(5, seed=1).w1, small.w1)
    state = torch.get_rng_state()
    backward_trace(3)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize('kw, exc, msg', [
    (dict(batch=0), ValueError, 'batch must be a positive int, got 0'), (dict(batch=1.0), TypeError, 'got float 1.0'),
    (dict(nh=True), TypeError, 'nh must be a positive int, got bool True'), (dict(seed=-1), ValueError, 'seed must be')])
def test_trace_refuses_bad_sizes(kw, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)): backward_trace(**kw)


# ---- numerical_grad -------------------------------------------------------------------------------------------------

def loss_of(x, w1, b1, w2, b2, y): return mse(lin(relu(lin(x, w1, b1)), w2, b2), y)

def test_numerical_grad_matches_the_hand_written_gradients_of_the_network():
    T = backward_trace(6, 5, 4)
    args = {k: getattr(T, k) for k in GRADS}
    for k in GRADS:
        ours = numerical_grad(lambda v: loss_of(**{**args, k: v}, y=T.y), args[k])
        assert ours.dtype == torch.float64 and ours.shape == args[k].shape
        torch.testing.assert_close(ours, getattr(T, k).g, rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.floats(-3, 3), min_size=1, max_size=6), st.sampled_from([torch.float16, torch.float32, torch.float64]))
def test_numerical_grad_of_a_cubic_and_x_unchanged(values, dtype):
    x = torch.tensor(values, dtype=dtype)
    before = x.clone()
    g = numerical_grad(lambda t: (t * t * t).sum(), x)
    x64 = x.double()
    torch.testing.assert_close(g, 3 * x64 * x64, rtol=0, atol=1e-7)  # truncation eps² = 1e-12; rounding ~27e-16/1e-6
    assert torch.equal(x, before) and x.dtype == dtype and not hasattr(x, 'g')


@pytest.mark.parametrize('x', [torch.tensor(2.), torch.arange(6.).reshape(2, 3).T, torch.arange(24.).reshape(2, 3, 4)[:, ::2, 1:],
                               torch.ones(3, 1).expand(3, 4), torch.zeros(0, 3)])
def test_numerical_grad_any_shape_and_layout(x):
    g = numerical_grad(lambda t: (t * torch.arange(float(t.numel())).double().reshape(t.shape)).sum(), x)
    assert g.shape == x.shape
    torch.testing.assert_close(g, torch.arange(float(x.numel())).double().reshape(x.shape), rtol=0, atol=1e-6)  # f up to ~2e3: rounding ~1e-7


def test_numerical_grad_leaves_autograd_alone():
    x = torch.randn(4, requires_grad=True)
    g = numerical_grad(lambda t: (t ** 2).sum(), x)
    assert x.grad is None and not g.requires_grad
    torch.testing.assert_close(g, 2 * x.detach().double(), rtol=0, atol=1e-8)


@pytest.mark.parametrize('f, x, kw, exc, msg', [
    (lambda t: t, torch.ones(2), {}, ValueError, 'f must return a scalar (a number or a one-element tensor), got a tensor of shape (2,)'),
    (lambda t: t.sum(), [1., 2.], {}, TypeError, 'x must be a torch.Tensor, got list'),
    (lambda t: t.sum(), torch.arange(3), {}, TypeError, 'x must be a floating-point tensor'),
    (lambda t: t.sum(), torch.ones(2), dict(eps='small'), TypeError, "eps must be a number above 0, got str 'small'")])
def test_numerical_grad_refuses_bad_input(f, x, kw, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)): numerical_grad(f, x, **kw)


def test_numerical_grad_accepts_floats_and_one_element_tensors():
    assert numerical_grad(lambda t: float(t.sum()) * 2, torch.ones(2)).tolist() == pytest.approx([2., 2.])
    assert numerical_grad(lambda t: t.sum().reshape(1, 1), torch.ones(2)).tolist() == pytest.approx([1., 1.])


def test_step_error_figure_plots_what_it_is_given():
    fig = step_error_figure([1e-1, 1e-2, 1e-3], {'a': [1e-3, 0., 1e-5], 'b': [torch.tensor(2e-4), 1e-6, 1e-7]})
    ys = {l.get_gid(): list(l.get_ydata()) for l in fig.axes[0].lines}
    assert ys['a'][0] == 1e-3 and math.isnan(ys['a'][1]) and ys['b'] == pytest.approx([2e-4, 1e-6, 1e-7])


# ---- the graph ------------------------------------------------------------------------------------------------------

def test_steps_chain_the_g_links():
    "Each step reads the .g the step before wrote; every .g is written once; the loss starts it all."
    assert [r for _, r, _, _ in BACKWARD_STEPS] == ['loss', 'out', 'l2', 'l1']
    assert [w for _, _, ws, _ in BACKWARD_STEPS for w in ws] == ['out', 'l2', 'w2', 'b2', 'l1', 'x', 'w1', 'b1']
    assert set(GRAD_FORMULAS) == {'out', 'l2', 'w2', 'b2', 'l1', 'x', 'w1', 'b1'}
    assert STEP_LABELS == ['0 forward only', '1 mse_grad', '2 lin_grad (layer 2)', '3 relu_grad', '4 lin_grad (layer 1)']


@pytest.mark.parametrize('step', range(5))
@pytest.mark.parametrize('batch', [1, 2, 200])
def test_graph_states_and_shapes_at_every_step(step, batch):
    T = backward_trace(batch)
    svg = graph_svg(trace_shapes(T), step)
    boxes = drawn(svg)
    assert {k: s for k, (s, _) in boxes.items()} == tensor_states(step)
    assert {k: sh for k, (_, sh) in boxes.items()} == {k: str(tuple(getattr(T, k).shape)) for k in T._fields}
    assert boxes['x'][1] == f'({batch}, 100)' and boxes['w1'][1] == '(100, 50)' and boxes['b1'][1] == '(50,)'
    if step:
        call, reads, writes, node = BACKWARD_STEPS[step - 1]
        assert current_fn(svg) == [node] and boxes[reads][0] == 'reads'
        assert [k for k, (s, _) in boxes.items() if s == 'writes'] == [k for k in T._fields if k in writes]
        assert f'step {step}: {call}' in svg
        earlier = {k for _, _, ws, _ in BACKWARD_STEPS[:step - 1] for k in ws} - {reads}
        assert {k for k, (s, _) in boxes.items() if s == 'done'} == earlier
    else:
        assert current_fn(svg) == [] and {s for s, _ in boxes.values()} == {'none'}
    assert boxes['y'][0] == 'none' and 'data: no .g' in svg


def test_graph_figure_shapes_and_steps():
    fig = graph_figure(trace_shapes(backward_trace(3)))
    texts = {t.get_gid(): t.get_text() for t in fig.axes[0].texts if t.get_gid()}
    assert texts['shape-x'] == '(3, 100)' and texts['shape-out'] == '(3, 1)' and texts['shape-loss'] == '()'
    assert [texts[f'step-{i}'] for i in range(1, 5)] == ['out.g', 'l2.g, w2.g, b2.g', 'l1.g', 'x.g, w1.g, b1.g']
    assert graph_figure(None).axes[0].texts  # the default network


# ---- each step's words and values -----------------------------------------------------------------------------------

@pytest.mark.parametrize('batch', [1, 2, 5, 200])
def test_step_html_formulas_shapes_and_batch_sums(batch):
    T = backward_trace(batch)
    n = batch
    assert 'No tensor has a <code>.g</code> yet' in step_html(T, 0) and f'n = {n}' in step_html(T, 0)
    for step in range(1, 5):
        h = step_html(T, step)
        call, _, writes, _ = BACKWARD_STEPS[step - 1]
        assert f'Step {step} of 4: <code>{call}</code>' in h and written(h) == list(writes)
        for k in writes: assert f'<code>{k}.g = ' in h
    assert f'({n}, 1) @ (1, 50) → ({n}, 50)' in step_html(T, 2)           # l2.g
    assert f'(50, {n}) @ ({n}, 1) → (50, 1)' in step_html(T, 2)           # w2.g: the batch is summed away
    assert f'(100, {n}) @ ({n}, 50) → (100, 50)' in step_html(T, 4)       # w1.g
    assert f'({n}, 50) summed over its rows → (50,)' in step_html(T, 4)   # b1.g
    assert f'Each row is divided by n = {n}' in step_html(T, 1)
    for step in (2, 4): assert re.findall(r'class="mn-sums">(\w+)<', step_html(T, step)) == ['True']
    zeros = int((T.l1 <= 0).sum())
    assert f'{zeros} of {n * 50} entries' in step_html(T, 3)
    for layer, (w, b) in [(1, (T.w1, T.b1)), (2, (T.w2, T.b2))]:
        ws, bs = batch_sums(T, layer)
        torch.testing.assert_close(ws, w.g, rtol=1e-12, atol=1e-15); torch.testing.assert_close(bs, b.g, rtol=1e-12, atol=1e-15)


def test_step_html_statistics_are_the_gradients():
    T = backward_trace(20)
    h = step_html(T, 4)
    row = h.split('data-name="w1"')[1].split('</tr>')[0]
    g = T.w1.g
    assert re.findall(r'text-align:right">([^<]+)<', row) == [f'{v.item():.3g}' for v in (g.mean(), g.std(), g.abs().max())]
    one = step_html(backward_trace(1), 1)  # one value in out.g: std 0, not nan
    assert 'nan' not in one


@pytest.mark.parametrize('step', range(5))
def test_values_figure_shows_what_the_step_reads_and_writes(step):
    T = backward_trace(4)
    fig = values_figure(T, step)
    if step == 0: want = ['x (4, 100)', 'l1 (4, 50)', 'l2 (4, 50)', 'out (4, 1)']
    else:
        _, reads, writes, _ = BACKWARD_STEPS[step - 1]
        want = ([] if reads == 'loss' else [f'{reads}.g {tuple(getattr(T, reads).shape)}']) + \
               [f'{k}.g {tuple(getattr(T, k).shape)}' for k in writes]
    assert panels(fig) == want
    names = ['x', 'l1', 'l2', 'out'] if step == 0 else [t.split()[0][:-2] for t in want]
    for ax, k in zip([a for a in fig.axes if a.title.get_gid()], names):
        t = getattr(T, k) if step == 0 else getattr(T, k).g
        assert torch.equal(torch.tensor(ax.images[0].get_array().data), t.reshape(1, -1) if t.ndim == 1 else t)


# ---- the backward explorer ------------------------------------------------------------------------------------------

def check_explorer(bx):
    "The explorer shows the trace of its batch size at its step: graph, words and heat maps agree with the pure functions."
    T, s = bx.trace, bx.step.value
    assert len(T.x) == bx.batch.value
    assert bx.graph.value == graph_svg(trace_shapes(T), s) and bx.info.value == step_html(T, s)
    assert panels(bx.figure) == panels(values_figure(T, s)) and bx.values.value[:8] == PNG
    assert (bx.back.disabled, bx.next.disabled) == (s == 0, s == 4)


def test_explorer_buttons_walk_the_pass_both_ways():
    bx = backward_explorer()
    assert (bx.step.value, bx.batch.value, bx.step.label) == (1, 200, '1 mse_grad')
    check_explorer(bx)
    seen = [bx.step.value]
    for _ in range(5): bx.next.click(); seen.append(bx.step.value); check_explorer(bx)
    for _ in range(6): bx.back.click(); seen.append(bx.step.value); check_explorer(bx)
    assert seen == [1, 2, 3, 4, 4, 4, 3, 2, 1, 0, 0, 0]
    assert bx.computations == 1  # stepping never recomputes


def test_explorer_batch_slider_across_its_range():
    bx = backward_explorer(step=4)
    for n in [1, 2, 3, 10, 57, 199, 200, 1]:
        bx.batch.value = n
        check_explorer(bx)
        assert drawn(bx.graph.value)['x'][1] == f'({n}, 100)' and drawn(bx.graph.value)['w1'][1] == '(100, 50)'
        assert bx.trace.w1.g.shape == (100, 50) and bx.trace.b1.g.shape == (50,)
    torch.testing.assert_close(bx.trace.w1.g, torch.outer(bx.trace.x[0], bx.trace.l1.g[0]), rtol=0, atol=1e-15)
    assert bx.computations == 7  # batch 1 the second time: from the cache
    for s in range(5): bx.step.value = s; check_explorer(bx)


def test_explorer_arguments():
    bx = backward_explorer(batch=3, step=0, n_in=4, nh=2, seed=5, max_batch=10)
    assert (bx.batch.max, drawn(bx.graph.value)['w1'][1], bx.back.disabled) == (10, '(4, 2)', True)
    check_explorer(bx)
    for kw, exc, msg in [(dict(batch=0), ValueError, 'batch must be a positive int, got 0'),
                         (dict(batch=201), ValueError, 'batch must be an int from 1 to max_batch=200, got 201'),
                         (dict(step=5), ValueError, 'step must be an int from 0 to 4, got 5'),
                         (dict(step='1'), TypeError, "step must be an int from 0 to 4, got str '1'"),
                         (dict(nh=0), ValueError, 'nh must be an int from 1 to 500, got 0')]:
        with pytest.raises(exc, match=re.escape(msg)): backward_explorer(**kw)


# ---- gradients through depth ----------------------------------------------------------------------------------------

def autograd_depth(n_layers, width, init, relu, batch=200, seed=0):
    from mini_nn.init import init_scale
    scale, g = init_scale(init, width), torch.Generator().manual_seed(seed)
    acts, ws = [torch.randn(batch, width, generator=g).requires_grad_()], []
    for _ in range(n_layers):
        ws.append((torch.randn(width, width, generator=g) * scale).requires_grad_())
        h = acts[-1] @ ws[-1]
        acts.append(torch.relu(h) if relu else h); acts[-1].retain_grad()
    acts[-1].backward(torch.randn(batch, width, generator=g))
    return torch.stack([a.grad.double().std() for a in acts]), torch.stack([w.grad.double().std() for w in ws])


@pytest.mark.parametrize('init', ['plain', 'lecun', 'kaiming', 0.05])
@pytest.mark.parametrize('relu', [False, True])
def test_gradient_stats_is_autograds(init, relu):
    s = gradient_stats(6, 20, init, relu, batch=30, seed=3)
    g, w = autograd_depth(6, 20, init, relu, batch=30, seed=3)
    torch.testing.assert_close(s.grad_std, g, rtol=1e-4, atol=0); torch.testing.assert_close(s.weight_std, w, rtol=1e-4, atol=0)
    assert (s.first_nonfinite, s.forward_nonfinite) == (None, None)


def test_gradient_stats_in_float64_is_the_same_experiment():
    s32, s64 = gradient_stats(20, 50, 'kaiming', True), gradient_stats(20, 50, 'kaiming', True, dtype=torch.float64)
    torch.testing.assert_close(s64.grad_std, s32.grad_std, rtol=1e-4, atol=0)
    assert gradient_stats(60, 100, dtype=torch.float64).forward_nonfinite is None  # 1e60 fits float64, not float32
    assert gradient_stats(60, 100).forward_nonfinite is not None
    with pytest.raises(TypeError, match='dtype must be a dtype'): gradient_stats(dtype='float64')


@pytest.mark.parametrize('init, relu, factor', [('plain', False, 10.), ('plain', True, math.sqrt(50)), ('lecun', False, 1.),
                                                ('lecun', True, 1 / math.sqrt(2)), ('kaiming', False, math.sqrt(2)),
                                                ('kaiming', True, 1.)])
def test_gradient_scale_per_layer_is_the_init_s(init, relu, factor):
    s = gradient_stats(30, 100, init, relu)
    per_layer = (s.grad_std[0] / s.grad_std[-1]).item() ** (1 / 30)
    assert per_layer == pytest.approx(factor, rel=0.05)


def test_gradient_overflow_and_underflow_are_marked():
    deep = gradient_stats(50, 100, 'plain', False)
    assert deep.first_nonfinite is not None and deep.forward_nonfinite is not None
    assert not deep.grad_std[:deep.first_nonfinite + 1].isfinite().any() and deep.grad_std[deep.first_nonfinite + 1:].isfinite().all()
    tiny = gradient_stats(100, 100, 0.01, False)
    assert tiny.first_nonfinite is None and (tiny.grad_std == 0).any() and 'from layer' in depth_summary({0.01: tiny})
    fig = depth_figure({('plain', False): deep, ('kaiming', True): gradient_stats(50, 100, 'kaiming', True)})
    gids = {l.get_gid() for ax in fig.axes for l in ax.lines} | {p.get_gid() for ax in fig.axes for p in ax.patches}
    assert {'plain', 'plain-nonfinite', 'plain-forward', 'kaiming'} <= gids
    one = gradient_stats(1, 1, 'kaiming', True, batch=1)
    assert len(one.grad_std) == 2 and len(one.weight_std) == 1


@pytest.mark.parametrize('kw, exc, msg', [(dict(n_layers=0), ValueError, 'n_layers must be an int from 1 to 500, got 0'),
                                          (dict(relu=1), TypeError, 'relu must be True or False, got int 1'),
                                          (dict(init='xavier'), ValueError, "init must be one of 'plain', 'lecun', 'kaiming'"),
                                          (dict(width=0), ValueError, 'width must be a positive int, got 0')])
def test_gradient_stats_refuses_bad_input(kw, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)): gradient_stats(**kw)


def test_gradient_explorer_controls():
    gx = gradient_explorer()
    assert (gx.layers.value, gx.width.value, gx.activation.value, gx.computations) == (30, 100, True, 1)
    for n, width, relu in [(1, 100, True), (100, 20, False), (30, 1, True), (50, 200, True), (7, 3, False)]:
        gx.layers.value, gx.width.value, gx.activation.value = n, width, relu
        wanted = {init: gradient_stats(n, width, init, relu) for init in GRAD_INITS}
        for q in ('grad_std', 'weight_std'):
            gx.quantity.value = q
            for init in GRAD_INITS:
                want = getattr(wanted[init], q)
                got = plotted(gx.figure, init)
                ok = want.isfinite() & (want > 0)
                assert torch.equal(got[ok], want[ok]) and got[~ok].isnan().all()
            assert gx.summary.value == depth_summary(gx.results) and gx.plot.value[:8] == PNG
    assert set(re.findall(r'data-init="(\w+)"', gx.summary.value)) == set(GRAD_INITS)
    with pytest.raises(ValueError, match='n_layers must be an int from 1 to 100, got 101'): gradient_explorer(n_layers=101)
    assert gradient_explorer(n_layers=200, max_layers=200).layers.value == 200
