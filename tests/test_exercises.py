"""The exercises (issue 7): every checker passes the lessons' own solutions, fails typical wrong ones with the hint it
promises, and the exercise notebooks in nbs/exercises/ are current and run to the end with clean failed-check verdicts."""
import ast, contextlib, importlib, io, math, os, re, shutil, sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
import torch

from conftest import BIN, ROOT, run

sys.path.insert(0, str(ROOT/'tools'))
import make_exercises  # noqa: E402

import mini_nn.check as check  # noqa: E402
from mini_nn import backprop, broadcasting, init, matmul, module  # noqa: E402

EXERCISES = {'01_matmul.ipynb': ['matmul_loops', 'matmul_elementwise', 'matmul_broadcast'],
             '02_broadcasting.ipynb': ['storage_index', 'broadcast_shapes'],
             '03_init.ipynb': ['kaiming_init'],
             '04_forward_backward.ipynb': ['mse_grad', 'relu_grad', 'lin_grad'],
             '05_module.ipynb': ['Relu.backward', 'Lin.backward', 'Mse.backward']}


def verdict(checker, arg)->tuple:
    "`(checker(arg), what it printed with whitespace collapsed)`."
    out = io.StringIO()
    with contextlib.redirect_stdout(out): ok = checker(arg)
    return ok, ' '.join(out.getvalue().split())


def lesson_exercise_cells()->list:
    "`(lesson file, module, exercise ids, cell code without directives)` for every exercise cell of every lesson."
    found = []
    for name in EXERCISES:
        nb = nbformat.read(ROOT/'nbs'/name, as_version=4)
        dirs = [make_exercises.split_directives(c.source) for c in nb.cells if c.cell_type == 'code']
        mod = next(d['default_exp'][0] for d, _ in dirs if 'default_exp' in d)
        for d, code in dirs:
            if 'exercise' in d: found.append((name, mod, [e for e, _ in make_exercises.exercises_in(code, d['exercise'])], code))
    return found


def defined_by(code:str, mod:str)->dict:
    "Run an exercise cell's `code` in a copy of its lesson module's namespace: fresh objects, as a learner's cell makes them."
    ns = dict(vars(importlib.import_module(f'mini_nn.{mod}')))
    exec(compile(code, f'<exercise cell of mini_nn.{mod}>', 'exec'), ns)
    return ns


def exercise_object(ns:dict, ex_id:str):
    "What the exercise's checker takes: the function, or for a method, its class."
    return ns[ex_id.split('.')[0]]


# ---- the lessons mark the exercises; each has a checker -------------------------------------------------------------

def test_lessons_mark_the_twelve_exercises_and_each_has_its_checker():
    found = {name: [] for name in EXERCISES}
    for name, _, ids, _ in lesson_exercise_cells(): found[name] += ids
    assert found == EXERCISES
    ids = [e for es in EXERCISES.values() for e in es]
    assert check.CHECKERS == {e: make_exercises.checker_name(e) for e in ids}
    assert all(callable(getattr(check, c)) and c in check.__all__ for c in check.CHECKERS.values())


def test_markers_leave_the_library_unchanged():
    "nbdev drops the `#| exercise` directive: the exported modules hold the full reference solutions."
    for p in (ROOT/'mini_nn').glob('*.py'): assert '#| exercise' not in p.read_text(encoding='utf-8'), p
    assert 'for p in range(k): c[i, j] += a[i, p] * b[p, j]' in (ROOT/'mini_nn'/'matmul.py').read_text(encoding='utf-8')
    assert 'relu_grad(self.inp, self.out)' in (ROOT/'mini_nn'/'module.py').read_text(encoding='utf-8')


def test_check_module_imports_only_torch_and_the_lessons():
    ui = ['ipywidgets', 'matplotlib', 'IPython', 'nbdev', 'fastcore', 'numba', 'nbformat']
    code = f"import sys, mini_nn.check; print(sorted(m for m in {ui!r} if m in sys.modules))"
    assert run(BIN/'python', '-c', code).stdout.strip() == '[]'


# ---- the reference solutions pass --------------------------------------------------------------------------------

@pytest.mark.parametrize('name,mod,ids,code', lesson_exercise_cells(), ids=['+'.join(c[2]) for c in lesson_exercise_cells()])
def test_the_lessons_solutions_pass_their_checkers(name, mod, ids, code):
    "The lesson's own cell, typed into a notebook as the learner would (new objects, not the library's), passes."
    ns = defined_by(code, mod)
    for ex_id in ids:
        ok, out = verdict(getattr(check, make_exercises.checker_name(ex_id)), exercise_object(ns, ex_id))
        assert ok and out.startswith(f"{make_exercises.checker_name(ex_id)}: all ") and out.endswith(' cases pass.'), out


@pytest.mark.parametrize('ex_id,lib', [('matmul_loops', matmul.matmul_loops), ('storage_index', broadcasting.storage_index),
                                       ('kaiming_init', init.kaiming_init), ('lin_grad', backprop.lin_grad),
                                       ('Lin.backward', module.Lin), ('Mse.backward', module.Mse)])
def test_the_librarys_own_version_is_recognised(ex_id, lib):
    "In an exercise notebook the name holds the library's version after the check; re-running only the check says so."
    ok, out = verdict(getattr(check, make_exercises.checker_name(ex_id)), lib)
    assert not ok and "this is the library's own" in out and 'Run your' in out, out


def test_a_checker_given_something_else_raises_TypeError():
    with pytest.raises(TypeError, match='check_matmul_loops needs your function, got NoneType'): check.check_matmul_loops(None)
    with pytest.raises(TypeError, match=r'check_lin_backward needs your Lin class \(or an instance of it\)'):
        check.check_lin_backward(backprop.lin_grad)


def test_check_matmul_checks_any_product_and_the_checkers_leave_the_random_state_alone():
    state = torch.get_rng_state()
    assert verdict(check.check_matmul, matmul.matmul_einsum) == (True, 'check_matmul: all 12 cases pass.')
    ok, out = verdict(check.check_matmul, torch.matmul)  # right numbers, but the wrong error for shapes that do not fit
    assert not ok and 'inputs it must refuse' in out and 'raised RuntimeError' in out, out
    assert verdict(check.check_kaiming_init, lambda n_in, n_out, generator=None: torch.randn(n_in, n_out) * 3)[0] is False
    assert torch.equal(torch.get_rng_state(), state)


# ---- typical wrong solutions fail with the promised hint -------------------------------------------------------

def _mm(a, b): return matmul.matmul_shapes(a, b), matmul.zeros_product(a, b)

def mm_assigns(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m):
        for j in range(n):
            for p in range(k): c[i, j] = a[i, p] * b[p, j]
    return c

def mm_a_transposed(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m):
        for j in range(n):
            for p in range(k): c[i, j] += a[p, i] * b[p, j]
    return c

def mm_float32_zeros(a, b):
    m, k, n = matmul.matmul_shapes(a, b)
    c = torch.zeros(m, n)
    for i in range(m):
        for j in range(n):
            for p in range(k): c[i, j] += a[i, p] * b[p, j]
    return c

def mm_no_shape_check(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            for p in range(a.shape[1]): c[i, j] += a[i, p] * b[p, j]
    return c

def mme_in_place(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m):
        for j in range(n):
            row = a[i]
            row *= b[:, j]
            c[i, j] = row.sum()
    return c

def mme_row_of_b(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m):
        for j in range(n): c[i, j] = (a[i] * b[j]).sum()
    return c

def mme_no_sum(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m):
        for j in range(n): c[i, j] = a[i] * b[:, j]
    return c

def mmb_row(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m): c[i] = (a[i, None] * b).sum(dim=0)
    return c

def mmb_wrong_dim(a, b):
    (m, k, n), c = _mm(a, b)
    for i in range(m): c[i] = (a[i, :, None] * b).sum(dim=1)
    return c

def mmb_result_float32(a, b):
    m, k, n = matmul.matmul_shapes(a, b)
    return torch.stack([(a[i, :, None] * b).sum(0).float() for i in range(m)]) if m else torch.zeros(0, n)

def _rules(shapes, left=False, clash=True, zero_max=False):
    shapes = [broadcasting._as_shape(s) for s in shapes]
    ndim = max((len(s) for s in shapes), default=0)
    padded = [s + (1,) * (ndim - len(s)) if left else (1,) * (ndim - len(s)) + s for s in shapes]
    out = []
    for sizes in zip(*padded):
        if zero_max: out.append(max(sizes)); continue
        not_one = {n for n in sizes if n != 1}
        if len(not_one) > 1:
            if clash: raise ValueError(f"sizes {sorted(not_one)} differ")
            not_one = {max(not_one)}
        out.append(not_one.pop() if not_one else 1)
    return out

def bs_left(*shapes): return torch.Size(_rules(shapes, left=True))
def bs_max(*shapes): return torch.Size(_rules(shapes, zero_max=True))
def bs_tuple(*shapes): return tuple(_rules(shapes))
def bs_no_clash(*shapes): return torch.Size(_rules(shapes, clash=False))
def bs_assert(*shapes):
    try: return torch.Size(_rules(shapes))
    except ValueError: assert False, 'shapes do not broadcast'

def _si(t, use_offset=True, skip_stride0=False, dtype=None):
    idx = torch.tensor(t.storage_offset() if use_offset else 0)
    for d, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if skip_stride0 and stride == 0: continue
        along = [1] * t.ndim; along[d] = size
        idx = idx + torch.arange(size, dtype=dtype).reshape(along) * stride
    return idx

def si_no_offset(t): return _si(t, use_offset=False)
def si_in_order(t): return torch.arange(t.numel()).reshape(t.shape) + t.storage_offset()
def si_float(t): return _si(t, dtype=torch.float32)
def si_skips_stride0(t): return _si(t, skip_stride0=True)

def ki(n_in, n_out, generator=None, scale=None, shape=None):
    w = torch.randn(*(shape or (n_in, n_out)), generator=generator)
    return w * (math.sqrt(2 / n_in) if scale is None else scale)

def ki_fan_out(n_in, n_out, generator=None): return ki(n_in, n_out, generator, math.sqrt(2 / n_out))
def ki_lecun(n_in, n_out, generator=None): return ki(n_in, n_out, generator, 1 / math.sqrt(n_in))
def ki_variance(n_in, n_out, generator=None): return ki(n_in, n_out, generator, 2 / n_in)
def ki_torch_layout(n_in, n_out, generator=None): return ki(n_in, n_out, generator, shape=(n_out, n_in))
def ki_ignores_generator(n_in, n_out, generator=None): return ki(n_in, n_out)
def ki_uniform(n_in, n_out, generator=None): return torch.rand(n_in, n_out, generator=generator) * math.sqrt(2 / n_in)

def _g(inp, targ): return inp.squeeze(-1) - targ
def mg_no_mean(inp, targ): inp.g = 2. * _g(inp, targ).unsqueeze(-1)
def mg_wrong_n(inp, targ): inp.g = 2. * _g(inp, targ).unsqueeze(-1) / inp.shape[1]
def mg_flat(inp, targ): inp.g = 2. * _g(inp, targ) / inp.shape[0]
def mg_broadcast(inp, targ): inp.g = 2. * (inp - targ) / inp.shape[0]
def mg_squeeze_both(inp, targ): inp.g = (2. * (inp.squeeze() - targ.squeeze()) / inp.shape[0])[..., None]
def mg_sign(inp, targ): inp.g = 2. * (targ - inp.squeeze(-1)).unsqueeze(-1) / inp.shape[0]
def mg_returns(inp, targ): return 2. * _g(inp, targ).unsqueeze(-1) / inp.shape[0]
def mg_no_check(inp, targ): inp.g = 2. * _g(inp, targ).unsqueeze(-1) / inp.shape[0]

def rg_at_zero(inp, out): inp.g = torch.where(inp >= 0, out.g, 0.)
def rg_float_mask(inp, out): inp.g = (inp > 0).float() * out.g
def rg_in_place(inp, out):
    out.g[inp <= 0] = 0.
    inp.g = out.g
def rg_slope_only(inp, out): inp.g = (inp > 0).to(out.g.dtype)

def lg(inp, out, w, b, bias='sum', wg='right', upstream=True):
    g = out.g if upstream else out
    inp.g = g @ w.T
    w.g = inp.T @ g if wg == 'right' else g.T @ inp
    if bias == 'sum': b.g = g.sum(0)
    elif bias == 'mean': b.g = g.mean(0)
    elif bias == 'dim1': b.g = g.sum(1)

def lg_no_bias(inp, out, w, b): lg(inp, out, w, b, bias=None)
def lg_mean_bias(inp, out, w, b): lg(inp, out, w, b, bias='mean')
def lg_bias_dim1(inp, out, w, b): lg(inp, out, w, b, bias='dim1')
def lg_w_transposed(inp, out, w, b): lg(inp, out, w, b, wg='transposed')
def lg_uses_out(inp, out, w, b): lg(inp, out, w, b, upstream=False)

class ReluAtZero(module.Relu):
    def backward(self):
        module._check_called(self)
        self.inp.g = (self.inp >= 0).to(self.out.g.dtype) * self.out.g

class ReluInPlace(module.Relu):
    def backward(self):
        module._check_called(self)
        self.out.g[self.inp <= 0] = 0.
        self.inp.g = self.out.g

class ReluMaskFromGrad(module.Relu):
    def backward(self):
        module._check_called(self)
        self.inp.g = torch.where(self.out.g > 0, self.out.g, 0.)

class LinNoBias(module.Lin):
    def backward(self):
        module._check_called(self)
        lg_no_bias(self.inp, self.out, self.w, self.b)

class LinWTransposed(module.Lin):
    def backward(self):
        module._check_called(self)
        lg_w_transposed(self.inp, self.out, self.w, self.b)

class LinNoForwardCheck(module.Lin):
    def backward(self): backprop.lin_grad(self.inp, self.out, self.w, self.b)

class MseFlat(module.Mse):
    def backward(self):
        module._check_called(self)
        self.inp.g = 2. * (self.inp.squeeze(-1) - self.targ) / self.inp.shape[0]

class MseSum(module.Mse):
    def backward(self):
        module._check_called(self)
        self.inp.g = 2. * (self.inp.squeeze(-1) - self.targ).unsqueeze(-1)

class MseSqueezeBoth(module.Mse):
    def backward(self):
        module._check_called(self)
        mg_squeeze_both(self.inp, self.targ)


def _fn_with_check(f):
    "A wrong `mse_grad` that at least checks its arguments like the lesson's, so the mistake is in the math."
    def g(inp, targ):
        backprop._check_loss_args('mse_grad', 'inp', inp, targ)
        return f(inp, targ)
    return g

WRONG = [  # (exercise, wrong solution, the case it must fail on, phrases its verdict must contain)
    ('matmul_loops', mm_assigns, 1, ['added up (+=), not assigned (=)']),
    ('matmul_loops', mm_a_transposed, 1, ['you used a transposed']),
    ('matmul_loops', mm_float32_zeros, 9, ['float64 inputs', 'has the wrong dtype', 'torch.zeros(m, n) is float32']),
    ('matmul_loops', mm_no_shape_check, 12, ['raised IndexError', 'matmul_shapes(a, b)']),
    ('matmul_elementwise', mme_in_place, 1, ['changed its input a', 'never write into an input']),
    ('matmul_elementwise', mme_row_of_b, 1, ['you used b transposed']),
    ('matmul_elementwise', mme_no_sum, 1, ['raised: RuntimeError', 'at: for j in range(n): c[i, j] = a[i] * b[:, j]', 'must be summed']),
    ('matmul_broadcast', mmb_row, 1, ['a[i] was broadcast as a row', 'It must be a column (k×1)']),
    ('matmul_broadcast', mmb_wrong_dim, 1, ['the sum ran over the wrong dimension']),
    ('matmul_broadcast', mmb_result_float32, 9, ['has the wrong dtype', "keep the inputs' dtype"]),
    ('broadcast_shapes', bs_left, 3, ['align the shapes on the right']),
    ('broadcast_shapes', bs_max, 9, ['sizes of 0', 'not max(0, 1)']),
    ('broadcast_shapes', bs_tuple, 1, ['returned a tuple, not a torch.Size']),
    ('broadcast_shapes', bs_no_clash, 10, ['shapes that clash', 'rule 3']),
    ('broadcast_shapes', bs_assert, 10, ['raised AssertionError', 'an assert is not an input check']),
    ('storage_index', si_no_offset, 2, ['the storage offset is missing']),
    ('storage_index', si_in_order, 3, ['a transposed matrix', 'as if t were contiguous']),
    ('storage_index', si_float, 1, ['has the wrong dtype', 'must be int64']),
    ('storage_index', si_skips_stride0, 5, ['stride 0: c.expand_as(m)', 'a stride-0 dimension cannot be skipped']),
    ('kaiming_init', ki_fan_out, 1, ['sqrt(2/n_out)']),
    ('kaiming_init', ki_lecun, 1, ["LeCun's factor"]),
    ('kaiming_init', ki_variance, 2, ['scaled by 2/n_in, the variance']),
    ('kaiming_init', ki_torch_layout, 1, ["PyTorch's layout, (n_out, n_in)"]),
    ('kaiming_init', ki_ignores_generator, 1, ['not the numbers the generator gives']),
    ('kaiming_init', ki_uniform, 1, ['uniform numbers (torch.rand)']),
    ('mse_grad', _fn_with_check(mg_no_mean), 1, ['not divided by n']),
    ('mse_grad', _fn_with_check(mg_wrong_n), 1, ['not divided by n', 'inp.shape[1] is 1']),
    ('mse_grad', _fn_with_check(mg_flat), 1, ["the shape of inp, (n, 1)"]),
    ('mse_grad', _fn_with_check(mg_broadcast), 1, ['broadcasts to (n, n)']),
    ('mse_grad', _fn_with_check(mg_squeeze_both), 3, ['a batch of one', 'squeeze() without a dim', 'squeeze(-1)']),
    ('mse_grad', _fn_with_check(mg_sign), 1, ['the sign is flipped']),
    ('mse_grad', _fn_with_check(mg_returns), 1, ['returned the gradient instead of setting it']),
    ('mse_grad', mg_no_check, 5, ['predictions it must refuse', "_check_loss_args('mse_grad', 'inp', inp, targ)"]),
    ('relu_grad', rg_at_zero, 1, ['a strict >']),
    ('relu_grad', rg_float_mask, 6, ['float16', 'something made it torch.float32']),
    ('relu_grad', rg_in_place, 1, ['changed its input out.g', 'never write into an input']),
    ('relu_grad', rg_slope_only, 1, ['the chain rule multiplies it by out.g']),
    ('lin_grad', lg_no_bias, 1, ['b.g is not set', 'the bias gradient is missing']),
    ('lin_grad', lg_mean_bias, 1, ['averaged over the batch instead of summed']),
    ('lin_grad', lg_bias_dim1, 1, ['summed over the outputs (dim 1)']),
    ('lin_grad', lg_w_transposed, 1, ["the transpose of w's (k, m)"]),
    ('lin_grad', lg_uses_out, 1, ["computed from out, the layer's output, where out.g, its gradient, belongs"]),
    ('Relu.backward', ReluAtZero, 1, ['a strict >']),
    ('Relu.backward', ReluInPlace, 1, ['changed its input out.g']),
    ('Relu.backward', ReluMaskFromGrad, 1, ['the mask must come from the input']),
    ('Lin.backward', LinNoBias, 1, ['the bias gradient is missing']),
    ('Lin.backward', LinWTransposed, 1, ["the transpose of w's (k, m)"]),
    ('Lin.backward', LinNoForwardCheck, 6, ['before any forward call', '_check_called(self)']),
    ('Mse.backward', MseFlat, 1, ["the shape of inp, (n, 1)"]),
    ('Mse.backward', MseSum, 1, ['not divided by n']),
    ('Mse.backward', MseSqueezeBoth, 3, ['a batch of one', 'squeeze(-1)']),
]


def test_every_exercise_has_at_least_two_wrong_solutions_tested():
    counts = {e: sum(w[0] == e for w in WRONG) for es in EXERCISES.values() for e in es}
    assert min(counts.values()) >= 2, counts


@pytest.mark.parametrize('ex_id,wrong,case,phrases', WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_a_typical_wrong_solution_fails_with_the_promised_hint(ex_id, wrong, case, phrases):
    checker = make_exercises.checker_name(ex_id)
    ok, out = verdict(getattr(check, checker), wrong)
    assert ok is False, out
    assert out.startswith(f"{checker}: case {case} of "), out
    for phrase in phrases: assert phrase in out, (phrase, out)
    assert ' hint: ' in out, out  # every verdict here points at the mistake


def test_a_verdict_is_short_and_never_prints_the_solution():
    for ex_id, wrong, _, _ in WRONG:
        _, out = verdict(getattr(check, make_exercises.checker_name(ex_id)), wrong)
        assert len(out) < 900, out
        for solution in ('out.g @ w.T', 'inp.T @ out.g', 'out.g.sum(0)', 'torch.where(inp > 0', 'c[i, j] += a[i, p] * b[p, j]',
                         'squeeze(-1) - targ).unsqueeze(-1)', 'randn(n_in, n_out, generator=generator) *'):
            assert solution not in out, (solution, out)


# ---- the exercise notebooks ----------------------------------------------------------------------------------

EX_DIR = ROOT/'nbs'/'exercises'


def test_exercise_notebooks_are_current(tmp_path):
    run(BIN/'python', 'tools/make_exercises.py', '--out', tmp_path)
    made = sorted(p.name for p in tmp_path.glob('*.ipynb'))
    assert made == sorted(EXERCISES) == sorted(p.name for p in EX_DIR.glob('*.ipynb'))
    for name in made:
        assert (EX_DIR/name).read_bytes() == (tmp_path/name).read_bytes(), f"nbs/exercises/{name} is stale: run `make exercises`"
    assert run(BIN/'python', 'tools/make_exercises.py', '--check', check=False).returncode == 0


def test_a_stale_exercise_notebook_is_detected(tmp_path):
    shutil.copytree(EX_DIR, tmp_path, dirs_exist_ok=True)
    p = tmp_path/'03_init.ipynb'
    p.write_text(p.read_text(encoding='utf-8').replace('Kaiming', 'Kaiming!', 1), encoding='utf-8')
    (tmp_path/'99_old.ipynb').write_text('{}')
    res = run(BIN/'python', 'tools/make_exercises.py', '--check', '--out', tmp_path, check=False)
    assert res.returncode == 1 and 'stale or missing: 03_init.ipynb' in res.stderr and '99_old.ipynb' in res.stderr, res.stderr


def _code(nb): return [c.source for c in nb.cells if c.cell_type == 'code']


@pytest.mark.parametrize('name', sorted(EXERCISES))
def test_an_exercise_notebook_is_the_lesson_with_stubs_and_checks(name):
    nb = nbformat.read(EX_DIR/name, as_version=4)
    lesson = nbformat.read(ROOT/'nbs'/name, as_version=4)
    nbformat.validate(nb)
    assert set(nb.metadata) == {'kernelspec'}
    assert all(c.cell_type != 'code' or (c.outputs == [] and c.execution_count is None) for c in nb.cells)
    assert all(not c.metadata for c in nb.cells)
    assert not any(line.lstrip().startswith(('#| export', '#| exercise', '#| default_exp')) for s in _code(nb) for line in s.split('\n'))
    assert nb.cells[0].source.startswith('# Exercises: ')
    # the prose stays: every markdown cell of the lesson is in the exercise notebook (the title with its prefix)
    lesson_md = [c.source for c in lesson.cells if c.cell_type == 'markdown']
    note = re.compile(r"\n\n\*In this exercise version, the check under your .* takes the place of the lesson's check here\.\*$")
    ex_md = {note.sub('', c.source.replace('# Exercises: ', '# ', 1)) for c in nb.cells if c.cell_type == 'markdown'}
    assert all(s in ex_md for s in lesson_md)
    mod = next(make_exercises.split_directives(s)[0]['default_exp'][0] for s in _code(lesson) if s.startswith('#| default_exp'))
    code = _code(nb)
    for ex_id in EXERCISES[name]:
        checker, obj = make_exercises.checker_name(ex_id), ex_id.split('.')[0]
        at = code.index(f"from mini_nn.check import {checker}\n{checker}({obj})")
        stub = code[at - 1]
        assert '# TODO:' in stub and stub.rstrip().endswith('pass')
        assert code[at + 1].startswith(f"from mini_nn.{mod} import ") and obj in code[at + 1]
        # the stub keeps signature and docstring: it parses, and its exercise has the lesson's docstring
        tree = ast.parse(stub)
        node = next(n for n in ast.walk(tree) if getattr(n, 'name', None) == ex_id.split('.')[-1])
        ref = getattr(importlib.import_module(f'mini_nn.{mod}'), obj)
        ref = getattr(ref, ex_id.split('.')[1]) if '.' in ex_id else ref
        assert ast.get_docstring(node) == ref.__doc__


@pytest.mark.parametrize('name', sorted(EXERCISES))
def test_an_unwritten_exercise_fails_its_check_cleanly(name):
    "The stubs as generated (bodies still TODO) fail their checks on the first case, with a verdict, not an exception."
    nb = nbformat.read(EX_DIR/name, as_version=4)
    lesson = nbformat.read(ROOT/'nbs'/name, as_version=4)
    mod = next(make_exercises.split_directives(c.source)[0]['default_exp'][0] for c in lesson.cells
               if c.cell_type == 'code' and c.source.startswith('#| default_exp'))
    code = _code(nb)
    for ex_id in EXERCISES[name]:
        checker, obj = make_exercises.checker_name(ex_id), ex_id.split('.')[0]
        stub = code[code.index(f"from mini_nn.check import {checker}\n{checker}({obj})") - 1]
        ok, out = verdict(getattr(check, checker), defined_by(stub, mod)[obj])
        assert not ok and f"{checker}: case 1 of " in out and 'while the body is the TODO, that is expected' in out, out


def test_nbdev_ignores_the_exercise_notebooks():
    "They export nothing, and nbdev's commands (export, clean, test, docs) look at nbs/ only, not its subfolders."
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    assert get_config(path=ROOT).recursive is False
    found = nbglob(ROOT/'nbs', func=os.path.join)
    assert found and not [p for p in found if 'exercises' in p]


def _execute(path):
    nb = nbformat.read(path, as_version=4)
    from nbclient import NotebookClient
    # one thread each: two kernels side by side with torch's spinning OpenMP threads would fight over two cores
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'NUMBA_NUM_THREADS': '1'}
    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute(env=env)
    return nb


def test_the_exercise_notebooks_run_unmodified_to_the_end_with_failed_checks(tmp_path):
    paths = []
    for p in sorted(EX_DIR.glob('*.ipynb')):
        shutil.copy(p, tmp_path/p.name)
        paths.append(tmp_path/p.name)
    with ThreadPoolExecutor(2) as pool: nbs = dict(zip([p.name for p in paths], pool.map(_execute, paths)))
    assert sorted(nbs) == sorted(EXERCISES)
    for name, nb in nbs.items():
        errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
        assert not errors, (name, errors)
        for ex_id in EXERCISES[name]:
            checker = make_exercises.checker_name(ex_id)
            cell = next(c for c in nb.cells if c.cell_type == 'code' and c.source.startswith(f"from mini_nn.check import {checker}\n"))
            text = ''.join(o.get('text', '') for o in cell.outputs)
            assert f"{checker}: case 1 of " in text and ' failed: ' in text and 'hint:' in text, (name, text)
