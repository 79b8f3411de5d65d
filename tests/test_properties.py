"""Property-based tests (hypothesis) with torch as the oracle: matmuls, broadcasting, storage views and gradients.

Sizes are kept small so that hundreds of examples per property run in seconds. The examples per property are
set below; `HYPOTHESIS_PROFILE=thorough` runs ten times as many.
"""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mini_nn.backprop import forward_and_backward
from mini_nn.broadcasting import broadcast_shapes, storage_index, storage_values
from mini_nn.fast_matmul import matmul_tiled
from mini_nn.matmul import matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_loops
from mini_nn.module import Model, Model2

settings.register_profile('ci', deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('thorough', parent=settings.get_profile('ci'))
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
SCALE = 10 if settings._current_profile == 'thorough' else 1


def examples(n:int):
    "Settings for a property run on `n` examples (times SCALE), with no deadline: the machine is shared and noisy."
    return settings(max_examples=n * SCALE, deadline=None)


DTYPES = st.sampled_from([torch.float32, torch.float64])
LAYOUTS = ['contiguous', 'transposed', 'sliced', 'offset', 'expanded rows', 'expanded columns']


def matrix(rows:int, cols:int, layout:str, dtype, g:torch.Generator)->torch.Tensor:
    "A `rows×cols` matrix of standard normal numbers laid out in memory as `layout` says."
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    if layout == 'contiguous': m = r(rows, cols)
    elif layout == 'transposed': m = r(cols, rows).T
    elif layout == 'sliced': m = r(2 * rows + 1, 2 * cols + 1)[1::2, 1::2]  # strides 2, storage offset
    elif layout == 'offset': m = r(rows + 1, cols)[1:]
    elif layout == 'expanded rows': m = r(1, cols).expand(rows, cols)  # stride 0 along the rows
    else: m = r(rows, 1).expand(rows, cols)
    assert m.shape == (rows, cols)
    return m


@st.composite
def products(draw, max_side:int):
    "`(a, b)` with `a @ b` defined: sizes 0 to `max_side`, either dtype, any layout on either side."
    m, k, n = (draw(st.integers(0, max_side)) for _ in range(3))
    dtype, seed = draw(DTYPES), draw(st.integers(0, 2**32 - 1))
    g = torch.Generator().manual_seed(seed)
    return (matrix(m, k, draw(st.sampled_from(LAYOUTS)), dtype, g),
            matrix(k, n, draw(st.sampled_from(LAYOUTS)), dtype, g))


def assert_equals_matmul(got, a, b):
    want = a @ b
    assert got.shape == want.shape and got.dtype == want.dtype
    k = a.shape[1]
    tol = dict(rtol=1e-5, atol=1e-5 * max(1, k)) if a.dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12 * max(1, k))
    torch.testing.assert_close(got, want, **tol)


@examples(150)
@given(products(max_side=4))
def test_matmul_loops_equals_matmul(ab):  # three Python loops: tiny shapes only
    assert_equals_matmul(matmul_loops(*ab), *ab)


@pytest.mark.parametrize('matmul', [matmul_elementwise, matmul_broadcast, matmul_einsum, matmul_tiled],
                         ids=lambda f: f.__name__)
@examples(300)
@given(ab=products(max_side=9))
def test_matmul_equals_matmul(matmul, ab):
    assert_equals_matmul(matmul(*ab), *ab)


@st.composite
def large_products(draw):
    "`(a, b)` big enough for matmul_tiled's packed, threaded path (at least SMALL multiply-adds), with ragged edges."
    from mini_nn.fast_matmul import SMALL, register_tile
    MR, NR = register_tile(4)
    m, n = draw(st.integers(MR + 1, 70)), draw(st.integers(NR + 1, 70))
    k = draw(st.integers(SMALL // (m * n) + 1, SMALL // (m * n) + 40))
    dtype, g = draw(DTYPES), torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    return (matrix(m, k, draw(st.sampled_from(LAYOUTS)), dtype, g),
            matrix(k, n, draw(st.sampled_from(LAYOUTS)), dtype, g))


@examples(40)
@given(large_products())
def test_matmul_tiled_equals_matmul_on_its_packed_path(ab):
    a, b = ab
    got = matmul_tiled(a, b)
    torch.testing.assert_close(got, a @ b, rtol=1e-4, atol=1e-4 * math.sqrt(a.shape[1]))


SHAPES = st.lists(st.lists(st.integers(0, 3), max_size=4).map(tuple), max_size=4)


@examples(500)
@given(SHAPES)
def test_broadcast_shapes_equals_torch_and_fails_exactly_when_it_fails(shapes):
    try: want = torch.broadcast_shapes(*shapes)
    except RuntimeError: want = None
    if want is None:
        with pytest.raises(ValueError, match='do not broadcast'): broadcast_shapes(*shapes)
    else:
        got = broadcast_shapes(*shapes)
        assert type(got) is torch.Size and got == want


OPS = ['transpose', 'slice', 'select', 'unsqueeze', 'expand', 'permute', 'narrow', 'flip_copy', 'diagonal', 'view']


@st.composite
def views(draw):
    "A view of a random base tensor, reached by a random chain of view operations, and the base."
    shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.int16, torch.bool, torch.complex64]))
    base = torch.arange(math.prod(shape)).reshape(shape).to(dtype)
    t = base
    for op in draw(st.lists(st.sampled_from(OPS), max_size=5)):
        if op == 'transpose' and t.ndim >= 2:
            d0, d1 = draw(st.integers(0, t.ndim - 1)), draw(st.integers(0, t.ndim - 1))
            t = t.transpose(d0, d1)
        elif op == 'slice' and t.ndim:
            d = draw(st.integers(0, t.ndim - 1))
            start, step = draw(st.integers(0, t.shape[d])), draw(st.integers(1, 3))
            t = t[(slice(None),) * d + (slice(start, None, step),)]
        elif op == 'select' and t.ndim and t.shape[0]:
            t = t[draw(st.integers(0, t.shape[0] - 1))]
        elif op == 'unsqueeze':
            t = t.unsqueeze(draw(st.integers(0, t.ndim)))
        elif op == 'expand' and t.ndim < 5:
            t = t.unsqueeze(0).expand(draw(st.integers(0, 3)), *t.shape)
        elif op == 'permute':
            t = t.permute(tuple(draw(st.permutations(range(t.ndim)))))
        elif op == 'narrow' and t.ndim and t.shape[-1]:
            start = draw(st.integers(0, t.shape[-1] - 1))
            t = t.narrow(-1, start, draw(st.integers(0, t.shape[-1] - start)))
        elif op == 'diagonal' and t.ndim >= 2:
            t = t.diagonal(draw(st.integers(-1, 1)))
        elif op == 'view' and t.is_contiguous():
            t = t.view(-1)
    return base, t


@examples(400)
@given(views())
def test_storage_index_and_values_rebuild_any_view(bv):
    base, t = bv
    values, index = storage_values(t), storage_index(t)
    assert values.dtype == t.dtype and index.dtype == torch.int64 and index.shape == t.shape
    assert torch.equal(values, base.flatten())  # the base is contiguous: its storage is its values in order
    assert torch.equal(values[index], t)
    assert torch.equal(torch.as_strided(values, t.shape, t.stride(), t.storage_offset()), t)


@st.composite
def networks(draw):
    "`(inp, targ, w1, b1, w2, b2)`, float64, of a random `n_in → nh → 1` network; batch 1 included."
    n, n_in, nh = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    return r(n, n_in), r(n), r(n_in, nh), r(nh), r(nh, 1), r(1)


def autograd_grads(inp, targ, w1, b1, w2, b2)->tuple:
    "The loss and the gradients of `(inp, w1, b1, w2, b2)` by torch autograd."
    leaves = [x.clone().requires_grad_() for x in (inp, w1, b1, w2, b2)]
    a, v1, c1, v2, c2 = leaves
    loss = torch.nn.functional.mse_loss((torch.relu(a @ v1 + c1) @ v2 + c2).squeeze(-1), targ)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


TIGHT = dict(rtol=1e-10, atol=1e-12)


@examples(200)
@given(networks())
def test_forward_and_backward_gives_autograds_gradients(args):
    loss = forward_and_backward(*args)
    want_loss, want = autograd_grads(*args)
    torch.testing.assert_close(loss, want_loss, **TIGHT)
    for x, w in zip(args[:1] + args[2:], want): torch.testing.assert_close(x.g, w, **TIGHT)


@examples(200)
@given(networks())
def test_model_gives_autograds_gradients(args):
    inp, targ, *params = args
    model = Model(*params)
    loss = model(inp, targ)
    model.backward()
    want_loss, want = autograd_grads(*args)
    torch.testing.assert_close(loss, want_loss, **TIGHT)
    for x, w in zip([inp, *params], want): torch.testing.assert_close(x.g, w, **TIGHT)


@examples(200)
@given(networks())
def test_model2_gives_autograds_gradients(args):
    inp, targ, w1, b1, w2, b2 = args
    model = Model2(w1.shape[0], w1.shape[1], 1).double()
    with torch.no_grad():  # nn.Linear stores its weight as (out, in): ours transposed
        for lin, w, b in ((model.layers[0], w1, b1), (model.layers[2], w2, b2)):
            lin.weight.copy_(w.T); lin.bias.copy_(b)
    loss = model(inp, targ)
    loss.backward()
    want_loss, (_, g1, gb1, g2, gb2) = autograd_grads(*args)
    torch.testing.assert_close(loss.detach(), want_loss, **TIGHT)
    got = [model.layers[0].weight.grad.T, model.layers[0].bias.grad, model.layers[2].weight.grad.T, model.layers[2].bias.grad]
    for x, w in zip(got, (g1, gb1, g2, gb2)): torch.testing.assert_close(x, w, **TIGHT)
