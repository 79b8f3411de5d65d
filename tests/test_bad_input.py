"""Bad input across the public API: each is refused with the exact exception type and a message naming what was given.

Also: NaN and inf propagate like torch without an error, inputs that require grad are accepted, and nothing is
modified in place except the `.g` attributes the lesson sets.
"""
import math

import numpy as np
import pytest
import torch

from mini_nn import check
from mini_nn.backprop import forward_and_backward, grad_check, lin_grad, mse, mse_grad, relu_grad
from mini_nn.broadcasting import broadcast_shapes, storage_index, storage_values
from mini_nn.init import activation_stats, init_params, init_scale, kaiming_init, lin, relu
from mini_nn.fast_matmul import matmul_tiled
from mini_nn.matmul import matmul_broadcast, matmul_einsum, matmul_elementwise, matmul_loops
from mini_nn.module import Lin, Model, Model2, Mse, Relu

F64 = torch.float64
MATMULS = [matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum, matmul_tiled]


def t(*shape, dtype=F64, **kw):
    "A deterministic tensor of `shape` (values 0.1, 0.2, ... minus an offset, so signs vary)."
    n = math.prod(shape)
    return (torch.arange(n, dtype=F64).reshape(shape) / 10 - n / 20).to(dtype, **kw) if dtype.is_floating_point \
        else torch.zeros(shape, dtype=dtype, **kw)


def net(n_in=3, nh=4, n=2, dtype=F64):
    "`(inp, targ, w1, b1, w2, b2)` of a small `n_in → nh → 1` network in `dtype`."
    return (t(n, n_in, dtype=dtype), t(n, dtype=dtype), t(n_in, nh, dtype=dtype), t(nh, dtype=dtype),
            t(nh, 1, dtype=dtype), t(1, dtype=dtype))


def with_(args, i, value):
    "`args` with entry `i` replaced by `value`."
    args = list(args); args[i] = value
    return args


def meta(*shape): return torch.empty(*shape, dtype=F64, device='meta')


def with_g(x):
    "`x` with `x.g` set, as the backward step after it would leave it."
    x.g = torch.ones_like(x)
    return x


# (id, call, exception type, fragments the message must contain: what was given and what was expected)
CASES = [
    # lesson 01: matmul
    ('matmul_loops/mismatched', lambda: matmul_loops(t(2, 3), t(2, 3)), ValueError, ['(m, k)', '(k, n)', 'a (2, 3)', 'b (2, 3)']),
    ('matmul_elementwise/1-D', lambda: matmul_elementwise(t(3), t(3, 2)), ValueError, ['(m, k)', 'a (3,)']),
    ('matmul_broadcast/3-D', lambda: matmul_broadcast(t(2, 2, 3), t(3, 2)), ValueError, ['(m, k)', 'a (2, 2, 3)']),
    ('matmul_einsum/0-D', lambda: matmul_einsum(t(2, 3), torch.tensor(1., dtype=F64)), ValueError, ['(k, n)', 'b ()']),
    ('matmul_tiled/mismatched', lambda: matmul_tiled(t(4, 5), t(4, 5)), ValueError, ['a (4, 5)', 'b (4, 5)']),
    ('matmul_loops/int', lambda: matmul_loops(t(2, 3, dtype=torch.int64), t(3, 2)), TypeError, ['a must be a floating-point', 'torch.int64']),
    ('matmul_elementwise/bool', lambda: matmul_elementwise(t(2, 3), t(3, 2, dtype=torch.bool)), TypeError, ['b must be a floating-point', 'torch.bool']),
    ('matmul_broadcast/complex', lambda: matmul_broadcast(torch.ones(2, 3, dtype=torch.complex64), t(3, 2)), TypeError, ['floating-point', 'complex64']),
    ('matmul_einsum/None', lambda: matmul_einsum(None, t(3, 2)), TypeError, ['a must be a torch.Tensor', 'NoneType']),
    ('matmul_loops/list', lambda: matmul_loops([[1., 2.]], t(2, 1)), TypeError, ['a must be a torch.Tensor', 'list']),
    ('matmul_tiled/numpy', lambda: matmul_tiled(t(2, 3), np.ones((3, 2))), TypeError, ['b must be a torch.Tensor', 'ndarray']),
    ('matmul_einsum/mixed dtypes', lambda: matmul_einsum(t(2, 3), t(3, 2, dtype=torch.float32)), TypeError, ['share one dtype', 'torch.float64', 'torch.float32']),
    ('matmul_broadcast/mixed devices', lambda: matmul_broadcast(t(2, 3), meta(3, 2)), TypeError, ['share one device', 'cpu', 'meta']),
    ('matmul_tiled/not on the CPU', lambda: matmul_tiled(meta(2, 3), meta(3, 2)), TypeError, ['CPU', 'meta']),
    ('matmul_loops/empty vs mismatched', lambda: matmul_loops(t(0, 3), t(2, 0)), ValueError, ['a (0, 3)', 'b (2, 0)', 'k is 3 in a but 2 in b']),
    # lesson 02: broadcasting
    ('broadcast_shapes/clash', lambda: broadcast_shapes((2, 3), (4, 3)), ValueError, ['(2, 3)', '(4, 3)', '2', '4', 'neither is 1']),
    ('broadcast_shapes/zero vs two', lambda: broadcast_shapes((0,), (2,)), ValueError, ['(0,)', '(2,)', 'neither is 1']),
    ('broadcast_shapes/negative', lambda: broadcast_shapes((2, -1)), ValueError, ['>= 0', '-1']),
    ('broadcast_shapes/float size', lambda: broadcast_shapes((2.0, 3)), TypeError, ['(2.0, 3)', 'must be an int >= 0', 'float 2.0']),
    ('broadcast_shapes/bool size', lambda: broadcast_shapes((True, 3)), TypeError, ['(True, 3)', 'must be an int >= 0', 'bool True']),
    ('broadcast_shapes/None', lambda: broadcast_shapes(None), TypeError, ['tuple, list, torch.Size or int', 'NoneType']),
    ('broadcast_shapes/string', lambda: broadcast_shapes('ab'), TypeError, ['tuple, list, torch.Size or int', "'ab'"]),
    ('broadcast_shapes/numpy', lambda: broadcast_shapes(np.array([2, 3])), TypeError, ['tuple, list, torch.Size or int', 'ndarray']),
    ('storage_values/list', lambda: storage_values([1., 2.]), TypeError, ['t must be a torch.Tensor', 'list']),
    ('storage_index/numpy', lambda: storage_index(np.zeros(3)), TypeError, ['t must be a torch.Tensor', 'ndarray']),
    ('storage_index/sparse', lambda: storage_index(torch.eye(2).to_sparse()), TypeError, ['dense (strided)', 'sparse_coo']),
    ('storage_values/None', lambda: storage_values(None), TypeError, ['torch.Tensor', 'NoneType']),
    # lesson 03: init
    ('lin/x 1-D', lambda: lin(t(3), t(3, 2), t(2)), ValueError, ['x (n, n_in)', 'x (3,)', 'x has 1 dim, not 2']),
    ('lin/x and w mismatch', lambda: lin(t(4, 5), t(3, 2), t(2)), ValueError, ['x (4, 5)', 'w (3, 2)', 'b (2,)']),
    ('lin/b 0-D', lambda: lin(t(4, 3), t(3, 1), torch.tensor(0., dtype=F64)), ValueError, ['b (n_out,)', 'b ()']),
    ('lin/b wrong length', lambda: lin(t(4, 3), t(3, 2), t(3)), ValueError, ['b (n_out,)', 'b (3,)']),
    ('lin/int x', lambda: lin(t(4, 3, dtype=torch.int32), t(3, 2), t(2)), TypeError, ['x must be a floating-point', 'torch.int32']),
    ('lin/mixed dtypes', lambda: lin(t(4, 3), t(3, 2, dtype=torch.float32), t(2)), TypeError, ['share one dtype', 'w: torch.float32']),
    ('lin/mixed devices', lambda: lin(t(4, 3), t(3, 2), meta(2)), TypeError, ['share one device', 'b: meta']),
    ('relu/bool', lambda: relu(t(3, dtype=torch.bool)), TypeError, ['x must be a floating-point', 'torch.bool']),
    ('relu/numpy', lambda: relu(np.ones(3)), TypeError, ['x must be a torch.Tensor', 'ndarray']),
    ('init_scale/unknown scheme', lambda: init_scale('xavier', 10), ValueError, ["'plain', 'lecun', 'kaiming'", "'xavier'"]),
    ('init_scale/negative scale', lambda: init_scale(-1., 10), ValueError, ['positive number', '-1.0']),
    ('init_scale/n_in 0', lambda: init_scale('kaiming', 0), ValueError, ['n_in must be a positive int', 'got 0']),
    ('init_scale/n_in a string', lambda: init_scale('kaiming', '10'), TypeError, ['n_in must be a positive int', "'10'"]),
    ('kaiming_init/float size', lambda: kaiming_init(2.5, 3), TypeError, ['n_in must be a positive int', '2.5']),
    ('kaiming_init/bool size', lambda: kaiming_init(10, True), TypeError, ['n_out must be a positive int', 'True']),
    ('kaiming_init/generator not a Generator', lambda: kaiming_init(10, 5, generator=0), TypeError, ['generator must be a torch.Generator or None', 'int']),
    ('init_params/nh None', lambda: init_params(10, None, 1), TypeError, ['nh must be a positive int', 'None']),
    ('init_params/n_out 0', lambda: init_params(10, 5, 0), ValueError, ['n_out must be a positive int', 'got 0']),
    ('activation_stats/too many layers', lambda: activation_stats(n_layers=1001), ValueError, ['n_layers must be an int from 0 to 1000', '1001']),
    ('activation_stats/batch None', lambda: activation_stats(batch=None), TypeError, ['batch must be a positive int', 'None']),
    ('activation_stats/relu not a bool', lambda: activation_stats(n_layers=1, relu='yes'), TypeError, ['relu must be True or False', "'yes'"]),
    ('activation_stats/seed a string', lambda: activation_stats(n_layers=1, seed='0'), TypeError, ['seed must be an int', "'0'"]),
    ('activation_stats/seed a float', lambda: activation_stats(n_layers=1, seed=1.5), TypeError, ['seed must be an int', '1.5']),
    ('activation_stats/init nan', lambda: activation_stats(n_layers=1, init=float('nan')), ValueError, ['positive number', 'nan']),
    # lesson 04: backprop
    ('mse/targ wrong length', lambda: mse(t(4, 1), t(3)), ValueError, ['(n, 1)', '(n,)', 'output (4, 1)', 'targ (3,)']),
    ('mse/output 1-D', lambda: mse(t(4), t(4)), ValueError, ['output (n, 1)', 'output (4,)', 'output has 1 dim, not 2']),
    ('mse/targ a column', lambda: mse(t(4, 1), t(4, 1)), ValueError, ['targ (n,)', 'targ (4, 1)']),
    ('mse/int targ', lambda: mse(t(4, 1), t(4, dtype=torch.int64)), TypeError, ['targ must be a floating-point', 'torch.int64']),
    ('mse/empty batch', lambda: mse(t(0, 1), t(0)), ValueError, ['at least 1', '(0, 1)']),
    ('mse_grad/mixed dtypes', lambda: mse_grad(t(4, 1), t(4, dtype=torch.float32)), TypeError, ['share one dtype', 'targ: torch.float32']),
    ('mse_grad/list', lambda: mse_grad([[1.]], t(1)), TypeError, ['inp must be a torch.Tensor', 'list']),
    ('mse_grad/empty batch', lambda: mse_grad(t(0, 1), t(0)), ValueError, ['at least 1', '(0, 1)']),
    # relu_grad takes any shape (relu is elementwise); the guards cannot yet say "the same shape as inp", so torch refuses
    ('relu_grad/shapes differ', lambda: relu_grad(t(2, 3), with_g(t(3, 2))), ValueError, ['inp (2, 3)', 'out (3, 2)']),
    ('relu_grad/mixed dtypes', lambda: relu_grad(t(2, 3), with_g(t(2, 3, dtype=torch.float32))), TypeError, ['share one dtype', 'out: torch.float32']),
    ('relu_grad/complex', lambda: relu_grad(torch.ones(2, dtype=torch.complex128), t(2)), TypeError, ['floating-point', 'complex128']),
    ('lin_grad/w wrong rows', lambda: lin_grad(t(2, 3), t(2, 4), t(5, 4), t(4)), ValueError, ['w (k, m)', 'w (5, 4)']),
    ('lin_grad/b 2-D', lambda: lin_grad(t(2, 3), t(2, 4), t(3, 4), t(1, 4)), ValueError, ['b (m,)', 'b (1, 4)', 'b has 2 dims, not 1']),
    ('forward_and_backward/targ wrong length', lambda: forward_and_backward(*with_(net(), 1, t(3))), ValueError, ['targ (n,)', 'targ (3,)']),
    ('forward_and_backward/targ a column', lambda: forward_and_backward(*with_(net(), 1, t(2, 1))), ValueError, ['targ (n,)', 'targ (2, 1)']),
    ('forward_and_backward/w2 two outputs', lambda: forward_and_backward(*with_(net(), 4, t(4, 2))), ValueError, ['w2 (nh, 1)', 'w2 (4, 2)']),
    ('forward_and_backward/mixed dtypes', lambda: forward_and_backward(*with_(net(), 3, t(4, dtype=torch.float32))), TypeError, ['share one dtype', 'b1: torch.float32']),
    ('forward_and_backward/mixed devices', lambda: forward_and_backward(*with_(net(), 2, meta(3, 4))), TypeError, ['share one device', 'w1: meta']),
    ('forward_and_backward/None', lambda: forward_and_backward(*with_(net(), 0, None)), TypeError, ['inp must be a torch.Tensor', 'NoneType']),
    ('forward_and_backward/empty batch', lambda: forward_and_backward(*net(n=0)), ValueError, ['at least 1', 'inp (0, 3)']),
    ('grad_check/int inp', lambda: grad_check(*with_(net(), 0, t(2, 3, dtype=torch.int64))), TypeError, ['inp must be a floating-point', 'torch.int64']),
    ('grad_check/empty batch', lambda: grad_check(*net(n=0)), ValueError, ['at least 1', 'inp (0, 3)']),
    # lesson 05: module
    ('Relu/list', lambda: Relu()([1., -1.]), TypeError, ['must be a torch.Tensor', 'list']),
    ('Lin/b wrong length', lambda: Lin(t(3, 4), t(5)), ValueError, ['w (3, 4)', 'b (5,)']),
    ('Lin/int w', lambda: Lin(t(3, 4, dtype=torch.int64), t(4)), TypeError, ['w must be a floating-point', 'torch.int64']),
    ('Lin/inp wrong width', lambda: Lin(t(3, 4), t(4))(t(2, 5)), ValueError, ['x (2, 5)', 'w (3, 4)', 'n_in is 5 in x but 3 in w']),
    ('Lin/inp other dtype', lambda: Lin(t(3, 4), t(4))(t(2, 3, dtype=torch.float32)), TypeError, ['share one dtype', 'x: torch.float32', 'w: torch.float64']),
    ('Mse/targ wrong length', lambda: Mse()(t(3, 1), t(2)), ValueError, ['(n, 1)', 'targ (2,)']),
    ('Model/w2 two outputs', lambda: Model(t(3, 4), t(4), t(4, 2), t(2)), ValueError, ['w2 (nh, 1)', 'w2 (4, 2)']),
    ('Model/w1 None', lambda: Model(None, t(4), t(4, 1), t(1)), TypeError, ['must be a torch.Tensor', 'NoneType']),
    ('Model/mixed dtypes', lambda: Model(t(3, 4), t(4), t(4, 1, dtype=torch.float32), t(1, dtype=torch.float32)), TypeError, ['share one dtype', 'torch.float32']),
    ('Model/targ wrong length', lambda: Model(*net()[2:])(t(2, 3), t(5)), ValueError, ['(n,)', 'targ (5,)']),
    ('Model/x wrong width', lambda: Model(*net()[2:])(t(2, 7), t(2)), ValueError, ['x (2, 7)', 'w (3, 4)', 'n_in is 7 in x but 3 in w']),
    ('Model/empty batch', lambda: Model(*net()[2:])(t(0, 3), t(0)), ValueError, ['at least 1', 'x (0, 3)']),
    ('Model2/n_out 2', lambda: Model2(3, 4, 2), ValueError, ['n_out must be 1', 'got 2']),
    ('Model2/n_in a float', lambda: Model2(3.0, 4, 1), TypeError, ['n_in must be a positive int', 'float 3.0']),
    ('Model2/nh 0', lambda: Model2(3, 0, 1), ValueError, ['nh must be a positive int', 'got 0']),
    # a batch that does not fit the model's own weights is refused by nn.Linear, with torch's RuntimeError
    ('Model2/x float64', lambda: Model2(3, 4, 1)(t(2, 3), t(2)), RuntimeError, ['same dtype', 'Double', 'Float']),
    ('Model2/x and targ dtypes', lambda: Model2(3, 4, 1)(t(2, 3), t(2, dtype=torch.float32)), TypeError, ['share one dtype', 'x: torch.float64']),
    ('Model2/x wrong width', lambda: Model2(3, 4, 1)(t(2, 5, dtype=torch.float32), t(2, dtype=torch.float32)), RuntimeError, ['cannot be multiplied', '2x5', '3x4']),
    ('Model2/targ wrong length', lambda: Model2(3, 4, 1)(t(2, 3, dtype=torch.float32), t(3, dtype=torch.float32)), ValueError, ['(n,)', 'targ (3,)']),
    ('Model2/x numpy', lambda: Model2(3, 4, 1)(np.ones((2, 3), 'float32'), t(2, dtype=torch.float32)), TypeError, ['x must be a torch.Tensor', 'ndarray']),
    # lesson 09: the exercise checkers
    ('check_matmul/None', lambda: check.check_matmul(None), TypeError, ['needs your function', 'NoneType']),
    ('check_broadcast_shapes/a string', lambda: check.check_broadcast_shapes('broadcast_shapes'), TypeError, ['needs your function', 'str']),
]


def test_the_table_is_large_and_covers_every_module():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"
    for fn in ('matmul', 'broadcast', 'lin', 'init', 'mse', 'forward_and_backward', 'Model', 'Model2', 'check_'):
        assert any(c[0].startswith(fn) for c in CASES), fn


@pytest.mark.parametrize('call,exc,fragments', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_helpful_message(call, exc, fragments):
    with pytest.raises(Exception) as info:
        call()
    assert type(info.value) is exc, f"expected {exc.__name__}, got {type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"the message {msg!r} does not mention {missing}"


NAN, INF = float('nan'), float('inf')


@pytest.mark.parametrize('matmul', MATMULS, ids=lambda f: f.__name__)
def test_nan_and_inf_propagate_through_matmul_like_torch(matmul):
    a, b = t(3, 4).clone(), t(4, 5).clone()
    a[0, 1], a[1, 2], b[2, 3], b[3, 0] = NAN, INF, -INF, INF
    torch.testing.assert_close(matmul(a, b), a @ b, equal_nan=True)


def test_nan_and_inf_propagate_through_the_layers_like_torch():
    x = t(3, 4).clone(); x[0, 0], x[1, 1], x[2, 2] = NAN, INF, -INF
    w, b = t(4, 2), t(2)
    torch.testing.assert_close(lin(x, w, b), x @ w + b, equal_nan=True)
    torch.testing.assert_close(relu(x), torch.relu(x), equal_nan=True)
    out, targ = x[:, :1], t(3)
    torch.testing.assert_close(mse(out, targ), torch.nn.functional.mse_loss(out.squeeze(-1), targ), equal_nan=True)
    inp, targ, *params = net(n=3)
    inp = inp.clone(); inp[0, 0] = NAN
    assert forward_and_backward(inp, targ, *params).isnan()
    ref = [p.detach().clone().requires_grad_() for p in params]  # autograd is the reference, nan for nan
    a, v1, c1, v2, c2 = [inp] + ref
    torch.nn.functional.mse_loss((torch.relu(a @ v1 + c1) @ v2 + c2).squeeze(-1), targ).backward()
    for p, r in zip(params, ref): torch.testing.assert_close(p.g, r.grad, equal_nan=True)
    s = activation_stats(n_layers=3, init=1e30)  # overflows to inf, then nan: reported, not raised
    assert s.first_nonfinite is not None and not s.std[-1].isfinite()


def test_inputs_that_require_grad_are_accepted():
    a, b = t(2, 3).requires_grad_(), t(3, 2).requires_grad_()
    for matmul in MATMULS:
        torch.testing.assert_close(matmul(a, b).detach(), (a @ b).detach())
    inp, targ, *params = [x.clone().requires_grad_() for x in net()]
    loss = forward_and_backward(inp, targ, *params)
    assert not loss.requires_grad  # the hand-written backward builds no autograd graph
    assert all(p.grad is None for p in params) and params[0].g.shape == params[0].shape
    Model(*params)(inp, targ)
    lin(inp, params[0], params[1]).sum().backward()  # lin stays differentiable
    assert params[0].grad is not None


def test_empty_batches_that_make_sense_give_empty_results():
    for matmul in MATMULS:
        assert matmul(t(0, 3), t(3, 2)).shape == (0, 2)
        assert torch.equal(matmul(t(2, 0), t(0, 3)), torch.zeros(2, 3, dtype=F64))
    assert lin(t(0, 3), t(3, 2), t(2)).shape == (0, 2)
    assert relu(t(0, 3)).shape == (0, 3)
    assert broadcast_shapes((0, 1), (1, 3)) == (0, 3)


def snapshot(*xs):
    "What must not change: each tensor's version counter (bumped by every in-place op), values and shape."
    return [(x._version, x.detach().clone(), x.shape) for x in xs]


def assert_unchanged(before, *xs):
    for (version, values, shape), x in zip(before, xs):
        assert x._version == version and x.shape == shape, "an input was modified in place"
        torch.testing.assert_close(x.detach(), values, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize('name,call,args', [
    *[(f.__name__, f, (t(3, 4), t(4, 2))) for f in MATMULS],
    ('matmul_loops/transposed views', matmul_loops, (t(4, 3).T, t(2, 4).T)),
    ('lin', lin, (t(3, 4), t(4, 2), t(2))),
    ('relu', relu, (t(3, 4),)),
    ('mse', mse, (t(3, 1), t(3))),
    ('storage_values', storage_values, (t(3, 4).T,)),
    ('storage_index', storage_index, (t(3, 4)[:, 1:],)),
])
def test_functions_do_not_modify_their_inputs(name, call, args):
    before = snapshot(*args)
    call(*args)
    assert_unchanged(before, *args)
    assert not any(hasattr(x, 'g') for x in args), f"{name} set a .g attribute"


def test_backward_passes_only_set_g():
    inp, targ, *params = args = net()
    before = snapshot(*args)
    attrs = [set(vars(x)) for x in args]
    forward_and_backward(*args)
    assert_unchanged(before, *args)
    for x, was in zip(args, attrs): assert set(vars(x)) - was <= {'g'}
    assert not hasattr(targ, 'g')
    grad_check(*args)  # works on copies: the .g set above stay as they were
    assert_unchanged(before, *args)
    model_args = net()
    before = snapshot(*model_args)
    model = Model(*model_args[2:]); model(*model_args[:2]); model.backward()
    assert_unchanged(before, *model_args)
    out = t(3, 1); mse_grad(out, t(3)); assert out._version == 0 and out.g.shape == (3, 1)
