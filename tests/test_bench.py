"""`forward_and_backward_fast` (lesson 08a) against lesson 04's `forward_and_backward` and autograd, and the
benchmark's backward parts on tiny networks.

Correctness only: no test here times anything or compares speeds (`python -m mini_nn.bench` prints the speeds).
"""
import contextlib
import csv
import io
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from mini_nn.backprop import forward_and_backward
from mini_nn.backward_bench import (AGAINST, TRICKS, backward_bench, backward_table, backward_tricks, forward_and_backward_fast,
                                    pass_tensors, tricks_table)
from mini_nn.bench import BACKWARD_TARGETS, main, progress_steps, targets
from mini_nn.init import init_params

NAMES = ['inp', 'targ', 'w1', 'b1', 'w2', 'b2']


def network(n:int, n_in:int, nh:int, dtype=torch.float64, seed:int=0)->list:
    "Input, targets and parameters of an `n_in → nh → 1` network, in `dtype`."
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, n_in, generator=g, dtype=dtype), torch.randn(n, generator=g, dtype=dtype)
    w1, b1, w2, b2 = init_params(n_in, nh, 1, generator=g)
    b1, b2 = torch.randn(nh, generator=g) / 10, torch.randn(1, generator=g) / 10  # non-zero biases: their gradients matter
    return [x, y] + [p.to(dtype) for p in (w1, b1, w2, b2)]


def autograd(args:list)->tuple:
    "The loss and the gradients of the four parameters, by autograd, on float64 copies."
    x, y, *params = [a.detach().to(torch.float64) for a in args]
    params = [p.requires_grad_() for p in params]
    w1, b1, w2, b2 = params
    loss = F.mse_loss((torch.relu(x @ w1 + b1) @ w2 + b2).squeeze(-1), y)
    loss.backward()
    return loss.detach(), [p.grad for p in params]


def check_fast(args:list, rtol:float):
    "Run `forward_and_backward_fast` on copies of `args`; its loss and four gradients must match lesson 04's and autograd's."
    fast, lesson = [a.clone() for a in args], [a.clone() for a in args]
    loss = forward_and_backward_fast(*fast)
    lesson_loss = forward_and_backward(*lesson)
    ag_loss, ag_grads = autograd(args)
    close = lambda a, b: torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=rtol * b.abs().max().item())
    close(loss, lesson_loss); close(loss, ag_loss)
    for name, ours, theirs, ref in zip(NAMES[2:], fast[2:], lesson[2:], ag_grads):
        assert ours.g.shape == ours.shape and ours.g.dtype == ours.dtype, name
        close(ours.g, theirs.g); close(ours.g, ref)
    assert not hasattr(fast[0], 'g'), "forward_and_backward_fast must not compute the input's gradient"
    assert not hasattr(fast[1], 'g')
    assert loss.dtype == args[0].dtype and loss.shape == ()
    assert not loss.requires_grad and not any(t.g.requires_grad for t in fast[2:])
    for name, before, after in zip(NAMES, args, fast):
        assert torch.equal(before, after), f"forward_and_backward_fast changed {name}"


@pytest.mark.parametrize('n, n_in, nh', [(200, 100, 50), (1, 100, 50), (1, 1, 1), (7, 3, 5), (64, 784, 256)])
def test_fast_matches_lesson_and_autograd_in_float64(n, n_in, nh):
    check_fast(network(n, n_in, nh), rtol=1e-10)


@pytest.mark.parametrize('n, n_in, nh', [(200, 100, 50), (1, 100, 50), (4096, 784, 256)])
def test_fast_matches_lesson_and_autograd_in_float32(n, n_in, nh):
    check_fast(network(n, n_in, nh, dtype=torch.float32), rtol=1e-4)


def layout(t:torch.Tensor, how:str)->torch.Tensor:
    "The values of `t` in another memory layout."
    if how == 'transposed': return t.T.contiguous().T if t.ndim == 2 else t
    if how == 'sliced':  # every other element of a bigger tensor, with a storage offset
        big = torch.zeros(*[2 * s + 1 for s in t.shape], dtype=t.dtype)
        view = big[tuple(slice(1, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view
    if how == 'expanded':  # stride 0 along the first dim: every row the same
        return t[:1].expand(t.shape) if t.shape[0] else t
    return t


@pytest.mark.parametrize('how', ['transposed', 'sliced', 'expanded'])
@pytest.mark.parametrize('which', range(6))
def test_fast_takes_any_memory_layout(how, which):
    args = network(9, 4, 6)
    args[which] = layout(args[which], how)
    check_fast(args, rtol=1e-10)


def test_fast_with_inputs_that_require_grad_builds_no_graph():
    args = [a.requires_grad_() for a in network(20, 5, 4)]
    check_fast(args, rtol=1e-10)
    assert all(a.grad is None for a in args)


def test_a_dead_relu_layer_gives_zero_first_layer_gradients():
    args = network(10, 3, 4)
    args[3] = torch.full((4,), -100., dtype=torch.float64)  # b1 so negative that no hidden unit is ever active
    check = [a.clone() for a in args]
    forward_and_backward_fast(*check)
    assert torch.equal(check[2].g, torch.zeros(3, 4, dtype=torch.float64)) and torch.equal(check[3].g, torch.zeros(4, dtype=torch.float64))
    check_fast(args, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), n_in=st.integers(1, 9), nh=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_fast_matches_lesson_on_random_networks(n, n_in, nh, seed):
    check_fast(network(n, n_in, nh, seed=seed), rtol=1e-10)


# bad input: the same declaration as lesson 04's pass, so the same errors -----------------------------------------

BAD = [  # (what, change to the arguments, error type, fragments of the message)
    ('targ wrong length', lambda a: a.__setitem__(1, a[1][:3]), ValueError, ['targ (n,)', 'targ (3,)']),
    ('w2 two outputs', lambda a: a.__setitem__(4, torch.zeros(6, 2, dtype=torch.float64)), ValueError, ['w2 (nh, 1)', 'w2 (6, 2)']),
    ('n_in mismatch', lambda a: a.__setitem__(0, a[0][:, :3]), ValueError, ['n_in is 3 in inp but 4 in w1']),
    ('empty batch', lambda a: a.__setitem__(slice(0, 2), [a[0][:0], a[1][:0]]), ValueError, ['n is 0, and must be at least 1']),
    ('mixed dtypes', lambda a: a.__setitem__(3, a[3].float()), TypeError, ['share one dtype', 'b1: torch.float32']),
    ('integer input', lambda a: a.__setitem__(0, a[0].long()), TypeError, ['inp must be a floating-point tensor', 'torch.int64']),
    ('a list', lambda a: a.__setitem__(1, a[1].tolist()), TypeError, ['targ must be a torch.Tensor, got list']),
    ('None', lambda a: a.__setitem__(2, None), TypeError, ['w1 must be a torch.Tensor', 'NoneType']),
]


@pytest.mark.parametrize('what, change, error, fragments', BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_the_lessons_message(what, change, error, fragments):
    args = network(9, 4, 6)
    change(args)
    with pytest.raises(error) as fast_err: forward_and_backward_fast(*args)
    for f in fragments: assert f in str(fast_err.value), (f, str(fast_err.value))
    with pytest.raises(error) as lesson_err: forward_and_backward(*args)
    assert str(fast_err.value).replace('forward_and_backward_fast', 'forward_and_backward') == str(lesson_err.value)


def test_bad_input_sets_no_gradient():
    args = network(9, 4, 6)
    with pytest.raises(ValueError): forward_and_backward_fast(args[0], args[1][:3], *args[2:])
    assert not any(hasattr(a, 'g') for a in args)


# the benchmark's backward parts, on tiny networks (no timing is checked) ----------------------------------------

def test_every_trick_runs_on_the_tensors_of_a_pass():
    env = pass_tensors(6, 4, 3)
    for trick, lesson_code, fast_code in TRICKS:
        exec(lesson_code, env); exec(fast_code, env)


def test_the_tricks_compute_what_the_lessons_code_computes():
    env = pass_tensors(30, 8, 6)
    e = lambda code: eval(code, env)
    torch.testing.assert_close(e('torch.addmm(b1, inp, w1)'), e('inp @ w1 + b1'))
    torch.testing.assert_close(e('h.clamp_min_(0.)'), e('l1.clamp_min(0.)'))
    torch.testing.assert_close(e('threshold_backward(l2.g, l1, 0.)'), e('(l1 > 0) * l2.g'))
    torch.testing.assert_close(e('(inp.t() @ threshold_backward(out.g, l2, 0.)) * w2.t()'), e('inp.t() @ l1.g'))
    torch.testing.assert_close(e('threshold_backward(out.g, l2, 0.).sum(0) * w2.squeeze(-1)'), e('l1.g.sum(0)'))
    torch.testing.assert_close(e('(out.squeeze(-1) - targ).mul_(2. / n).unsqueeze(-1)'), e('out.g'))


def test_backward_bench_and_tricks_on_a_tiny_network():
    records = backward_bench(sizes=[(5, 4, 3)], min_time=0.005, rounds=1)
    assert [r['version'] for r in records] == list(AGAINST)
    assert all(r['note'] == '' for r in records), backward_table(records)
    assert all(r['seconds'] > 0 and r['against'] == AGAINST[r['version']] for r in records)
    met = targets([], records, {})
    assert [t.split(' at ')[0] for t, _, _ in met] == list(BACKWARD_TARGETS)
    tricks = backward_tricks(sizes=[(5, 4, 3)], min_time=0.005, rounds=1)
    assert [r['trick'] for r in tricks] == [t for t, _, _ in TRICKS]
    assert all(r['lesson'] > 0 and r['fast'] > 0 for r in tricks)
    assert 'saved' in tricks_table(tricks)


def test_progress_steps_draws_fastprogress_bar_on_a_terminal_and_plain_lines_elsewhere(monkeypatch, capsys):
    pytest.importorskip('fastprogress')
    assert list(progress_steps(['a', 'b'], str.upper)) == ['a', 'b']  # stdout is no terminal here: lines on stderr
    out, err = capsys.readouterr()
    assert out == '' and [(l.split()[0], l.split()[-1]) for l in err.splitlines()] == [('[1/2]', 'A'), ('[2/2]', 'B')]
    monkeypatch.setattr(sys.stdout, 'isatty', lambda: True)
    assert list(progress_steps(['a', 'b'], str.upper)) == ['a', 'b']
    out, err = capsys.readouterr()
    assert err == '' and '50.00% [1/2' in out and '100.00% [2/2' in out  # fastprogress's console bar
    assert out.index('[0/2 00:00<? A]') < out.index('[1/2') < out.index('B]')  # each step named while it runs


# one run of the command serves the tests below (they share a group in conftest, so one xdist worker runs them)

@pytest.fixture(scope='module')
def quick_run(tmp_path_factory)->tuple:
    """`python -m mini_nn.bench --quick`'s backward parts, run once on one thread with CPU time and without fastprogress
    (as with torch alone): `(result, output folder, what it wrote to stderr)`."""
    out, err, threads = tmp_path_factory.mktemp('bench'), io.StringIO(), torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        for name in ('fastprogress', 'fastprogress.fastprogress'): mp.setitem(sys.modules, name, None)  # not installed
        try: res = main(['--quick', '--min-time', '0.002', '--out', str(out), '--skip', 'ladder', 'imports', 'compile',
                         '--threads', '1', '--cpu-time'])
        finally: torch.set_num_threads(threads)
    return res, out, err.getvalue()


def test_the_command_runs_the_backward_parts_with_one_thread_on_cpu_time(quick_run):
    res, out, _ = quick_run
    assert res['machine']['clock'] == 'CPU time' and res['machine']['torch_threads'] == 1
    assert sorted(p.name for p in out.iterdir()) == ['backward.csv', 'bench.json', 'tricks.csv']
    assert len(res['targets']) == 2 * len(BACKWARD_TARGETS)  # each target at both sizes
    assert all(r['note'] == '' for r in res['backward'])
    assert [r['version'] for r in res['backward']] == 2 * list(AGAINST)
    assert [r['trick'] for r in res['tricks']] == 2 * [t for t, _, _ in TRICKS]


def test_the_command_without_fastprogress_prints_a_line_per_step(quick_run):
    _, _, err = quick_run
    steps = [l.split(' s  ', 1)[1] for l in err.splitlines() if l.startswith('[')]
    assert steps == ['200×100 → 50 → 1', '512×784 → 256 → 1', 'tricks at 200×100 → 50 → 1', 'tricks at 512×784 → 256 → 1']
    assert [l.split()[0] for l in err.splitlines() if l.startswith('[')] == ['[1/2]', '[2/2]'] * 2


def test_the_command_saves_what_it_measured(quick_run):
    res, out, _ = quick_run
    for name, records in [('backward.csv', res['backward']), ('tricks.csv', res['tricks'])]:
        rows = list(csv.DictReader(open(out/name)))
        assert [list(r) for r in rows] == [list(r) for r in records]
        assert [r[k] for r in rows for k in r] == [str(r[k]) for r in records for k in r]
    saved = json.loads((out/'bench.json').read_text())
    assert saved['targets'] == res['targets'] and saved['machine'] == res['machine']
