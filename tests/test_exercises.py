"""The exercises: every checker grades the idea, so correct code written without any input checks passes (in the styles
of fastai's course22p2, micrograd and d2l), typical wrong solutions fail naming the likely mistake, verdicts say what
already works, and the exercise notebooks in nbs/exercises/ are current, built from the lessons' explicit marks, and run
to the end with clean failed-check verdicts."""
import ast, importlib, itertools, math, os, re, shutil, sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
import torch
import torch.nn.functional as F
from nbdev.process import NBProcessor

from conftest import BIN, ROOT, run

sys.path.insert(0, str(ROOT/'tools'))
import make_exercises  # noqa: E402

import mini_nn.check as check  # noqa: E402

EXERCISES = {'01_matmul.ipynb': ['matmul_loops', 'matmul_elementwise', 'matmul_broadcast'],
             '02_broadcasting.ipynb': ['storage_index', 'broadcast_shapes'],
             '03_init.ipynb': ['kaiming_init'],
             '04_forward_backward.ipynb': ['mse_grad', 'relu_grad', 'lin_grad', 'forward_and_backward'],
             '05_module.ipynb': ['Relu.backward', 'Lin.backward', 'Mse.backward', 'Model.backward'],
             '05a_train.ipynb': ['sgd_step', 'cross_entropy_grad']}
IDS = [e for es in EXERCISES.values() for e in es]
CHECK_MODULES = ['check', 'check_core', 'check_matmul', 'check_broadcasting', 'check_init', 'check_backprop', 'check_module', 'check_train']


def checker(ex_id): return getattr(check, make_exercises.checker_name(ex_id))


def lesson_exercise_cells()->list:
    "`(lesson file, module, exercise ids, cell code without directives)` for every `#| exercise` cell, read by nbdev."
    found = []
    for name in EXERCISES:
        nb = NBProcessor(ROOT/'nbs'/name, rm_directives=True).nb
        mod = next(c.directives_['default_exp'][0] for c in nb.cells if 'default_exp' in c.directives_)
        for c in nb.cells:
            if 'exercise' in c.directives_:
                found.append((name, mod, [e for e, _ in make_exercises.exercises_in(c.source, c.directives_['exercise'])], c.source))
    return found


def defined_by(code:str, mod:str)->dict:
    "Run an exercise cell's `code` in a copy of its lesson module's namespace: fresh objects, as a learner's cell makes them."
    ns = {**vars(importlib.import_module(f'mini_nn.{mod}')), '__name__': '__main__'}
    exec(compile(code, f'<exercise cell of mini_nn.{mod}>', 'exec'), ns)
    return ns


# ---- the lessons mark the exercises; each has a checker ----------------------------------------------------------

def test_lessons_mark_the_exercises_and_each_has_its_checker():
    found = {name: [] for name in EXERCISES}
    for name, _, ids, _ in lesson_exercise_cells(): found[name] += ids
    assert found == EXERCISES
    assert list(check.CHECKERS) == IDS
    assert {e: f.__name__ for e, f in check.CHECKERS.items()} == {e: make_exercises.checker_name(e) for e in IDS}
    assert all(f.__name__ in check.__all__ for f in check.CHECKERS.values())


def test_each_lesson_marks_the_cells_that_check_its_exercises():
    "The marks are explicit: `#| exercise_check` on the first line of each cell the exercise notebook drops."
    for name in EXERCISES:
        nb = NBProcessor(ROOT/'nbs'/name, rm_directives=False).nb
        marked = [c for c in nb.cells if 'exercise_check' in c.directives_]
        assert marked, f"{name} marks no cell `#| exercise_check`"
        assert all(c.source.startswith('#| exercise_check') for c in marked), name


def test_markers_leave_the_library_unchanged():
    "nbdev ignores the `#| exercise` directives: the exported modules hold the full reference solutions."
    for p in (ROOT/'mini_nn').glob('*.py'): assert '#| exercise' not in p.read_text(encoding='utf-8'), p


def test_the_checkers_are_small_modules_that_import_torch_alone_and_no_lesson():
    "An engine and one module per lesson, none over 450 lines; importing them loads no lesson, no UI, no tooling."
    for m in CHECK_MODULES:
        n = len((ROOT/'mini_nn'/f'{m}.py').read_text(encoding='utf-8').splitlines())
        assert n <= 450, (m, n)
    lessons = ['mini_nn.matmul', 'mini_nn.broadcasting', 'mini_nn.init', 'mini_nn.backprop', 'mini_nn.module', 'mini_nn.train']
    others = ['ipywidgets', 'matplotlib', 'IPython', 'nbdev', 'fastcore', 'numba', 'nbformat', 'sklearn']
    code = f"import sys, mini_nn.check; print(sorted(m for m in {lessons + others!r} if m in sys.modules))"
    assert run(BIN/'python', '-c', code).stdout.strip() == '[]'


# ---- the lessons' own solutions pass; the library's own version is recognised -----------------------------------------

@pytest.mark.parametrize('name,mod,ids,code', lesson_exercise_cells(), ids=['+'.join(c[2]) for c in lesson_exercise_cells()])
def test_the_lessons_solutions_pass_their_checkers(name, mod, ids, code):
    "The lesson's own cell, run as a learner's cell would be (new objects, not the library's), passes."
    ns = defined_by(code, mod)
    for ex_id in ids:
        v = checker(ex_id)(ns[ex_id.split('.')[0]])
        assert v and repr(v).startswith(f"✓ {ex_id}: all "), v


@pytest.mark.parametrize('ex_id', IDS)
def test_the_librarys_own_version_is_recognised(ex_id):
    "In an exercise notebook the name holds the library's version once the check switched to it; re-running only the check says so."
    mod = next(m for n, m, ids, _ in lesson_exercise_cells() if ex_id in ids)
    lib = getattr(importlib.import_module(f'mini_nn.{mod}'), ex_id.split('.')[0])
    v = checker(ex_id)(lib)
    assert not v and v.says("this is the library's own") and v.says('Run your'), v


def test_a_checker_given_something_else_raises_TypeError():
    with pytest.raises(TypeError, match='check_matmul_loops needs your function, got NoneType'): check.check_matmul_loops(None)
    with pytest.raises(TypeError, match=r'check_lin_backward needs your Lin class \(or an instance of it\)'):
        check.check_lin_backward(lambda inp, out, w, b: None)


def test_check_matmul_checks_any_product_and_the_checkers_leave_the_random_state_alone():
    state = torch.get_rng_state()
    assert repr(check.check_matmul(torch.matmul)) == '✓ matmul: all 9 cases pass.'
    assert not check.check_kaiming_init(lambda n_in, n_out, generator=None: torch.randn(n_in, n_out) * 3)
    assert not check.check_sgd_step(lambda params, lr: [p.normal_() for p in params])
    assert torch.equal(torch.get_rng_state(), state)


# ---- correct code written without any input checks passes ----------------------------------------------------------------
# Each is written the way another well-known course writes it (fastai course22p2, micrograd, d2l), with the fixes the
# lessons teach (the result's dtype, squeeze(-1) or its equivalent, a stable softmax), and with no validation at all.

def mm_fastai(a, b):  # course22p2, with the result in the inputs' dtype
    (ar, ac), (br, bc) = a.shape, b.shape
    c = torch.zeros(ar, bc, dtype=a.dtype)
    for i in range(ar):
        for j in range(bc):
            for k in range(ac): c[i, j] += a[i, k] * b[k, j]
    return c

def mm_micrograd(a, b):  # a running sum per entry, like micrograd's Value arithmetic
    c = a.new_zeros(a.shape[0], b.shape[1])
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            s = 0.
            for k in range(a.shape[1]): s = s + a[i, k] * b[k, j]
            c[i, j] = s
    return c

def mm_d2l(a, b):  # nested comprehensions, stacked
    return torch.stack([torch.stack([sum(a[i, k] * b[k, j] for k in range(a.shape[1])) for j in range(b.shape[1])])
                        for i in range(a.shape[0])])

def mme_fastai(a, b):
    (ar, ac), (br, bc) = a.shape, b.shape
    c = torch.zeros(ar, bc, dtype=a.dtype)
    for i in range(ar):
        for j in range(bc): c[i, j] = (a[i, :] * b[:, j]).sum()
    return c

def mme_dot(a, b):
    c = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]): c[i, j] = torch.dot(a[i], b[:, j])
    return c

def mme_stack(a, b):
    return torch.stack([torch.stack([(a[i] * b[:, j]).sum() for j in range(b.shape[1])]) for i in range(a.shape[0])])

def mmb_fastai(a, b):
    (ar, ac), (br, bc) = a.shape, b.shape
    c = torch.zeros(ar, bc, dtype=a.dtype)
    for i in range(ar): c[i] = (a[i, :, None] * b).sum(dim=0)
    return c

def mmb_unsqueeze(a, b):
    c = a.new_empty(a.shape[0], b.shape[1])
    for i, row in enumerate(a): c[i] = (row.unsqueeze(-1) * b).sum(0)
    return c

def mmb_stack(a, b): return torch.stack([(a[i][:, None] * b).sum(0) for i in range(len(a))])

def si_lesson(t):
    idx = torch.tensor(t.storage_offset())
    for d, (size, stride) in enumerate(zip(t.shape, t.stride())):
        along = [1] * t.ndim; along[d] = size
        idx = idx + torch.arange(size).reshape(along) * stride
    return idx

def si_by_element(t):
    cells = [t.storage_offset() + sum(i * s for i, s in zip(ix, t.stride())) for ix in itertools.product(*map(range, t.shape))]
    return torch.tensor(cells, dtype=torch.int64).reshape(t.shape)

def si_as_strided(t):
    n = t.storage_offset() + sum((size - 1) * s for size, s in zip(t.shape, t.stride())) + 1
    return torch.arange(n).as_strided(t.shape, t.stride(), t.storage_offset())

def bs_rules(*shapes):
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    result = []
    for sizes in zip(*padded):
        not_one = {n for n in sizes if n != 1}
        if len(not_one) > 1: raise ValueError(f"shapes {shapes} do not broadcast")
        result.append(not_one.pop() if not_one else 1)
    return torch.Size(result)

def bs_zip_longest(*shapes):
    out = []
    for sizes in itertools.zip_longest(*(reversed(s) for s in shapes), fillvalue=1):
        size = 0 if 0 in sizes else max(sizes)
        if any(n not in (1, size) for n in sizes): raise ValueError(f"cannot broadcast {shapes}")
        out.append(size)
    return tuple(reversed(out))

def bs_numpy_style(*shapes):  # numpy's algorithm: walk the dimensions from the right, a size 1 stretches
    ndim = max(map(len, shapes), default=0)
    result = [1] * ndim
    for s in shapes:
        for i, n in enumerate(reversed(s)):
            d = ndim - 1 - i
            if result[d] == 1: result[d] = n
            elif n != 1 and n != result[d]: raise ValueError('shape mismatch: objects cannot be broadcast to a single shape')
    return torch.Size(result)

def ki_lesson(n_in, n_out, generator=None): return torch.randn(n_in, n_out, generator=generator) * math.sqrt(2 / n_in)
def ki_normal(n_in, n_out, generator=None): return torch.normal(0., math.sqrt(2 / n_in), (n_in, n_out), generator=generator)
def ki_torch(n_in, n_out, generator=None):
    return torch.nn.init.kaiming_normal_(torch.empty(n_in, n_out), mode='fan_out', nonlinearity='relu', generator=generator)
def ki_transposed_draws(n_in, n_out, generator=None):  # other numbers from the same generator: still Kaiming's weights
    return torch.randn(n_out, n_in, generator=generator).T * (2 / n_in) ** 0.5

def mg_fastai(inp, targ): inp.g = 2. * (inp.squeeze() - targ).unsqueeze(-1) / inp.shape[0]  # course22p2, verbatim
def mg_squeeze_last(inp, targ): inp.g = 2. * (inp.squeeze(-1) - targ).unsqueeze(-1) / inp.shape[0]
def mg_micrograd(inp, targ): inp.g = (2 * (inp[:, 0] - targ) / len(targ))[:, None]
def mg_d2l(inp, targ): inp.g = 2 * (inp - targ.reshape(inp.shape)) / inp.numel()

def rg_bool_mask(inp, out): inp.g = out.g * (inp > 0)
def rg_d2l(inp, out): inp.g = torch.where(inp > 0, out.g, torch.zeros_like(out.g))
def rg_micrograd(inp, out): inp.g = (inp > 0).to(out.g.dtype) * out.g
def rg_masked_fill(inp, out): inp.g = out.g.masked_fill(inp <= 0, 0)

def lg_fastai(inp, out, w, b):  # course22p2, verbatim
    inp.g = out.g @ w.t()
    w.g = inp.t() @ out.g
    b.g = out.g.sum(0)

def lg_einsum(inp, out, w, b):
    inp.g = torch.einsum('nm,km->nk', out.g, w)
    w.g = torch.einsum('nk,nm->km', inp, out.g)
    b.g = torch.einsum('nm->m', out.g)

def lg_micrograd(inp, out, w, b):  # every product written out, summed over the batch by broadcasting
    inp.g = (out.g[:, None, :] * w[None]).sum(-1)
    w.g = (inp[:, :, None] * out.g[:, None, :]).sum(0)
    b.g = out.g.sum(dim=0)

def fb_fastai(inp, targ, w1, b1, w2, b2):  # course22p2's pass, from its own gradient functions, returning the loss
    l1 = inp @ w1 + b1
    l2 = l1.clamp_min(0.)
    out = l2 @ w2 + b2
    mg_fastai(out, targ)
    lg_fastai(l2, out, w2, b2)
    rg_bool_mask(l1, l2)
    lg_fastai(inp, l1, w1, b1)
    return (out.squeeze(-1) - targ).pow(2).mean()

def fb_micrograd(inp, targ, w1, b1, w2, b2):  # the same chain, from the micrograd-style gradient functions
    h = inp @ w1 + b1
    a = torch.relu(h)
    out = a @ w2 + b2
    loss = ((out[:, 0] - targ) ** 2).mean()
    mg_micrograd(out, targ); lg_micrograd(a, out, w2, b2); rg_micrograd(h, a); lg_micrograd(inp, h, w1, b1)
    return loss

def fb_inline(inp, targ, w1, b1, w2, b2):  # d2l-style: every gradient written inline, no helper functions
    l1 = inp @ w1 + b1; l2 = torch.relu(l1); out = l2 @ w2 + b2
    g = 2 * (out - targ[:, None]) / len(targ)
    w2.g, b2.g = l2.T @ g, g.sum(0)
    g = (g @ w2.T) * (l1 > 0)
    w1.g, b1.g, inp.g = inp.T @ g, g.sum(0), g @ w1.T
    return F.mse_loss(out[:, 0], targ)

class ReluFastai:  # course22p2, with the mask in the gradient's dtype
    def __call__(self, inp):
        self.inp = inp
        self.out = inp.clamp_min(0.)
        return self.out
    def backward(self): self.inp.g = (self.inp > 0).to(self.out.g.dtype) * self.out.g

class ReluD2l:
    def __call__(self, x):
        self.inp, self.out = x, torch.relu(x)
        return self.out
    def backward(self): self.inp.g = torch.where(self.inp > 0, self.out.g, torch.zeros_like(self.out.g))

class LinFastai:  # course22p2, verbatim
    def __init__(self, w, b): self.w, self.b = w, b
    def __call__(self, inp):
        self.inp = inp
        self.out = inp @ self.w + self.b
        return self.out
    def backward(self):
        self.inp.g = self.out.g @ self.w.t()
        self.w.g = self.inp.t() @ self.out.g
        self.b.g = self.out.g.sum(0)

class LinFromFunction(LinFastai):  # course22p2's later form: backward calls the lesson-04 function
    def backward(self): lg_fastai(self.inp, self.out, self.w, self.b)

class MseFastai:  # course22p2, verbatim
    def __call__(self, inp, targ):
        self.inp, self.targ = inp, targ
        self.out = (inp.squeeze() - targ).pow(2).mean()
        return self.out
    def backward(self): self.inp.g = 2. * (self.inp.squeeze() - self.targ).unsqueeze(-1) / self.targ.shape[0]

class MseMicrograd(MseFastai):
    def backward(self): self.inp.g = (2 * (self.inp[:, 0] - self.targ) / len(self.targ))[:, None]

class ModelFastai:  # course22p2, verbatim, built from its own layers
    def __init__(self, w1, b1, w2, b2):
        self.layers = [LinFastai(w1, b1), ReluFastai(), LinFastai(w2, b2)]
        self.loss = MseFastai()
    def __call__(self, x, targ):
        for l in self.layers: x = l(x)
        return self.loss(x, targ)
    def backward(self):
        self.loss.backward()
        for l in reversed(self.layers): l.backward()

class ModelSlices(ModelFastai):
    def backward(self):
        self.loss.backward()
        for l in self.layers[::-1]: l.backward()

def sgd_fastai(params, lr):
    for p in params: p -= lr * p.g

def sgd_data(params, lr):  # the older style of writing through .data
    for p in params: p.data -= lr * p.g

def sgd_no_grad(params, lr):  # PyTorch's optimisers' way
    with torch.no_grad():
        for p in params: p.add_(p.g, alpha=-lr)

def sgd_copy(params, lr):
    for p in params: p.copy_(p - lr * p.g)

def ce_torch(logits, targ): logits.g = (F.softmax(logits, dim=-1) - F.one_hot(targ, logits.shape[-1])) / logits.shape[0]

def ce_by_hand(logits, targ):  # a stable softmax, then 1 taken off at each row's target
    e = (logits - logits.max(-1, keepdim=True).values).exp()
    g = e / e.sum(-1, keepdim=True)
    g[torch.arange(len(targ)), targ] -= 1
    logits.g = g / len(targ)

def ce_logsumexp(logits, targ):
    p = (logits - logits.logsumexp(-1, keepdim=True)).exp()
    logits.g = (p - torch.eye(logits.shape[1], dtype=logits.dtype)[targ]) / len(logits)

RIGHT = {
    'matmul_loops': [mm_fastai, mm_micrograd, mm_d2l], 'matmul_elementwise': [mme_fastai, mme_dot, mme_stack],
    'matmul_broadcast': [mmb_fastai, mmb_unsqueeze, mmb_stack], 'storage_index': [si_lesson, si_by_element, si_as_strided],
    'broadcast_shapes': [bs_rules, bs_zip_longest, bs_numpy_style], 'kaiming_init': [ki_lesson, ki_normal, ki_torch, ki_transposed_draws],
    'mse_grad': [mg_fastai, mg_squeeze_last, mg_micrograd, mg_d2l], 'relu_grad': [rg_bool_mask, rg_d2l, rg_micrograd, rg_masked_fill],
    'lin_grad': [lg_fastai, lg_einsum, lg_micrograd], 'forward_and_backward': [fb_fastai, fb_micrograd, fb_inline],
    'Relu.backward': [ReluFastai, ReluD2l], 'Lin.backward': [LinFastai, LinFromFunction], 'Mse.backward': [MseFastai, MseMicrograd],
    'Model.backward': [ModelFastai, ModelSlices], 'sgd_step': [sgd_fastai, sgd_data, sgd_no_grad, sgd_copy],
    'cross_entropy_grad': [ce_torch, ce_by_hand, ce_logsumexp],
}


def test_every_checker_has_correct_solutions_without_validation():
    assert sorted(RIGHT) == sorted(IDS) and min(map(len, RIGHT.values())) >= 2


@pytest.mark.parametrize('ex_id,right', [(e, f) for e, fs in RIGHT.items() for f in fs],
                         ids=[f"{e}-{f.__name__}" for e, fs in RIGHT.items() for f in fs])
def test_correct_code_without_input_checks_passes(ex_id, right):
    v = checker(ex_id)(right)
    assert v and repr(v).startswith(f"✓ {ex_id}: all ") and repr(v).endswith(' cases pass.'), v


# ---- typical wrong solutions fail, naming the likely mistake and what already works ---------------------------------------

def mm_assigns(a, b):  # = where += belongs
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            for k in range(a.shape[1]): c[i, j] = a[i, k] * b[k, j]
    return c

def mm_a_transposed(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            for k in range(a.shape[1]): c[i, j] += a[k, i] * b[k, j]
    return c

def mm_float32_zeros(a, b):  # the original lesson's torch.zeros(ar, bc): always float32
    (ar, ac), (br, bc) = a.shape, b.shape
    c = torch.zeros(ar, bc)
    for i in range(ar):
        for j in range(bc):
            for k in range(ac): c[i, j] += a[i, k] * b[k, j]
    return c

def mme_in_place(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            row = a[i]
            row *= b[:, j]
            c[i, j] = row.sum()
    return c

def mme_row_of_b(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]): c[i, j] = (a[i] * b[j]).sum()
    return c

def mme_no_sum(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]): c[i, j] = a[i] * b[:, j]
    return c

def mmb_row(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]): c[i] = (a[i, None] * b).sum(dim=0)
    return c

def mmb_wrong_dim(a, b):
    c = torch.zeros(a.shape[0], b.shape[1], dtype=a.dtype)
    for i in range(a.shape[0]): c[i] = (a[i, :, None] * b).sum(dim=1)
    return c

def mmb_flat_view(a, b):  # reads a's rows from its storage: right only for contiguous inputs
    flat = a.view(-1)
    return torch.stack([(flat[i * a.shape[1]:(i + 1) * a.shape[1], None] * b).sum(0) for i in range(a.shape[0])])

def si_no_offset(t): return si_lesson(t) - t.storage_offset()
def si_in_order(t): return torch.arange(t.numel()).reshape(t.shape) + t.storage_offset()
def si_float(t): return si_lesson(t).float()
def si_skips_stride0(t):
    idx = torch.tensor(t.storage_offset())
    for d, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if stride == 0: continue
        along = [1] * t.ndim; along[d] = size
        idx = idx + torch.arange(size).reshape(along) * stride
    return idx

def _padded(shapes, left=False):
    ndim = max((len(s) for s in shapes), default=0)
    return [tuple(s) + (1,) * (ndim - len(s)) if left else (1,) * (ndim - len(s)) + tuple(s) for s in shapes]

def bs_left(*shapes): return bs_rules(*_padded(shapes, left=True))
def bs_max(*shapes): return torch.Size(max(sizes) for sizes in zip(*_padded(shapes)))
def bs_no_clash(*shapes): return torch.Size(max((n for n in sizes if n != 1), default=1) for sizes in zip(*_padded(shapes)))
def bs_assert(*shapes):
    try: return bs_rules(*shapes)
    except ValueError: assert False, 'shapes do not broadcast'
def bs_list(*shapes): return list(bs_rules(*shapes))

def ki_fan_out(n_in, n_out, generator=None): return torch.randn(n_in, n_out, generator=generator) * math.sqrt(2 / n_out)
def ki_lecun(n_in, n_out, generator=None): return torch.randn(n_in, n_out, generator=generator) / math.sqrt(n_in)
def ki_variance(n_in, n_out, generator=None): return torch.randn(n_in, n_out, generator=generator) * 2 / n_in
def ki_torch_layout(n_in, n_out, generator=None): return torch.randn(n_out, n_in, generator=generator) * math.sqrt(2 / n_in)
def ki_ignores_generator(n_in, n_out, generator=None): return torch.randn(n_in, n_out) * math.sqrt(2 / n_in)
def ki_uniform(n_in, n_out, generator=None): return (torch.rand(n_in, n_out, generator=generator) * 2 - 1) * math.sqrt(6 / n_in)
def ki_float64(n_in, n_out, generator=None): return torch.randn(n_in, n_out, generator=generator, dtype=torch.float64) * math.sqrt(2 / n_in)

def mg_no_mean(inp, targ): inp.g = 2. * (inp.squeeze(-1) - targ).unsqueeze(-1)
def mg_wrong_n(inp, targ): inp.g = 2. * (inp.squeeze(-1) - targ).unsqueeze(-1) / inp.shape[1]
def mg_flat(inp, targ): inp.g = 2. * (inp.squeeze(-1) - targ) / inp.shape[0]
def mg_broadcast(inp, targ): inp.g = 2. * (inp - targ) / inp.shape[0]
def mg_squeeze_both(inp, targ): inp.g = (2. * (inp.squeeze() - targ.squeeze()) / inp.shape[0])[..., None]
def mg_sign(inp, targ): inp.g = 2. * (targ - inp.squeeze(-1)).unsqueeze(-1) / inp.shape[0]
def mg_returns(inp, targ): return 2. * (inp.squeeze(-1) - targ).unsqueeze(-1) / inp.shape[0]
def mg_float32(inp, targ): inp.g = (2. * (inp.squeeze(-1) - targ).unsqueeze(-1) / inp.shape[0]).float()

def rg_at_zero(inp, out): inp.g = torch.where(inp >= 0, out.g, 0.)
def rg_float_mask(inp, out): inp.g = (inp > 0).float() * out.g  # the original lesson's: float32 whatever out.g is
def rg_in_place(inp, out):
    out.g[inp <= 0] = 0.
    inp.g = out.g
def rg_slope_only(inp, out): inp.g = (inp > 0).to(out.g.dtype)
def rg_mask_from_grad(inp, out): inp.g = torch.where(out.g > 0, out.g, 0.)

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
def lg_bias_into_out_g(inp, out, w, b):  # b.g starts as a view of out.g's first row, and += writes into out.g
    lg(inp, out, w, b, bias=None)
    b.g = out.g[0]
    for row in out.g[1:]: b.g += row

def _fwd(inp, w1, b1, w2, b2):
    l1 = inp @ w1 + b1; l2 = l1.clamp_min(0.)
    return l1, l2, l2 @ w2 + b2

def fb_forward_order(inp, targ, w1, b1, w2, b2):
    l1, l2, out = _fwd(inp, w1, b1, w2, b2)
    lg_fastai(inp, l1, w1, b1); rg_bool_mask(l1, l2); lg_fastai(l2, out, w2, b2); mg_fastai(out, targ)
    return (out.squeeze(-1) - targ).pow(2).mean()

def fb_no_return(inp, targ, w1, b1, w2, b2):
    l1, l2, out = _fwd(inp, w1, b1, w2, b2)
    mg_fastai(out, targ); lg_fastai(l2, out, w2, b2); rg_bool_mask(l1, l2); lg_fastai(inp, l1, w1, b1)

def fb_stops_early(inp, targ, w1, b1, w2, b2):
    l1, l2, out = _fwd(inp, w1, b1, w2, b2)
    mg_fastai(out, targ); lg_fastai(l2, out, w2, b2)
    return (out.squeeze(-1) - targ).pow(2).mean()

def fb_no_relu(inp, targ, w1, b1, w2, b2):
    l1 = inp @ w1 + b1; out = l1 @ w2 + b2
    mg_fastai(out, targ); lg_fastai(l1, out, w2, b2); lg_fastai(inp, l1, w1, b1)
    return (out.squeeze(-1) - targ).pow(2).mean()

def fb_updates_weights(inp, targ, w1, b1, w2, b2):  # a training step slipped into the pass
    loss = fb_fastai(inp, targ, w1, b1, w2, b2)
    w1 -= 0.1 * w1.g
    return loss

class ReluAtZero(ReluFastai):
    def backward(self): self.inp.g = (self.inp >= 0).to(self.out.g.dtype) * self.out.g

class ReluInPlace(ReluFastai):
    def backward(self):
        self.out.g[self.inp <= 0] = 0.
        self.inp.g = self.out.g

class ReluFloatMask(ReluFastai):  # course22p2 verbatim: float32 gradients for half-precision inputs
    def backward(self): self.inp.g = (self.inp > 0).float() * self.out.g

class LinNoBias(LinFastai):
    def backward(self):
        self.inp.g = self.out.g @ self.w.t()
        self.w.g = self.inp.t() @ self.out.g

class LinWTransposed(LinFastai):
    def backward(self):
        super().backward()
        self.w.g = self.out.g.t() @ self.inp

class LinForwardBroken(LinFastai):  # the mistake is in the lesson's part of the class, not in backward
    def __call__(self, inp):
        self.inp = inp
        self.out = inp @ self.w.t() + self.b
        return self.out

class MseFlat(MseFastai):
    def backward(self): self.inp.g = 2. * (self.inp.squeeze(-1) - self.targ) / self.inp.shape[0]

class MseSum(MseFastai):
    def backward(self): self.inp.g = 2. * (self.inp.squeeze(-1) - self.targ).unsqueeze(-1)

class MseSqueezeBoth(MseFastai):
    def backward(self): mg_squeeze_both(self.inp, self.targ)

class ModelForwardOrder(ModelFastai):
    def backward(self):
        self.loss.backward()
        for l in self.layers: l.backward()

class ModelNoLoss(ModelFastai):
    def backward(self):
        for l in reversed(self.layers): l.backward()

class ModelLastLayerOnly(ModelFastai):
    def backward(self):
        self.loss.backward()
        self.layers[-1].backward()

def sgd_rebinds(params, lr):
    for p in params: p = p - lr * p.g

def sgd_uphill(params, lr):
    for p in params: p += lr * p.g

def sgd_no_lr(params, lr):
    for p in params: p -= p.g

def sgd_scales_grad(params, lr):
    for p in params:
        p.g *= lr
        p -= p.g

def sgd_returns_new(params, lr): return [p - lr * p.g for p in params]

def ce_sum(logits, targ): logits.g = F.softmax(logits, -1) - F.one_hot(targ, logits.shape[-1])
def ce_sign(logits, targ): logits.g = (F.one_hot(targ, logits.shape[-1]) - F.softmax(logits, -1)) / len(logits)
def ce_no_softmax(logits, targ): logits.g = (logits - F.one_hot(targ, logits.shape[-1])) / len(logits)
def ce_dim0(logits, targ): logits.g = (F.softmax(logits, 0) - F.one_hot(targ, logits.shape[-1])) / len(logits)
def ce_mean_all(logits, targ): logits.g = (F.softmax(logits, -1) - F.one_hot(targ, logits.shape[-1])) / logits.numel()
def ce_naive_softmax(logits, targ):  # d2l's first softmax: exp overflows for large scores
    e = logits.exp()
    logits.g = (e / e.sum(1, keepdim=True) - F.one_hot(targ, logits.shape[-1])) / len(logits)

WRONG = [  # (exercise, wrong solution, the first case it fails, phrases its verdict must contain)
    ('matmul_loops', mm_assigns, 'a 2×2 product by hand', ['added up (+=), not assigned (=)']),
    ('matmul_loops', mm_a_transposed, 'a 2×2 product by hand', ['you used a transposed']),
    ('matmul_loops', mm_float32_zeros, 'float64', ['has the wrong dtype', 'torch.zeros(m, n) is float32', '8 of 9 cases pass',
                                                    'works: a 2×2 product by hand; random sizes']),
    ('matmul_elementwise', mme_in_place, 'a 2×2 product by hand', ['changed its input a', 'never write into an input']),
    ('matmul_elementwise', mme_row_of_b, 'a 2×2 product by hand', ['you used b transposed']),
    ('matmul_elementwise', mme_no_sum, 'a 2×2 product by hand', ['raised: RuntimeError', 'at: for j in range(b.shape[1]): c[i, j] = a[i] * b[:, j]', 'must be summed']),
    ('matmul_broadcast', mmb_row, 'a 2×2 product by hand', ['a[i] was broadcast as a row', 'It must be a column (k×1)']),
    ('matmul_broadcast', mmb_wrong_dim, 'a 2×2 product by hand', ['the sum ran over the wrong dimension']),
    ('matmul_broadcast', mmb_flat_view, 'transposed views', ['transposed views', 'works: a 2×2 product by hand']),
    ('storage_index', si_no_offset, 'a slice that starts at cell 3', ['the storage offset is missing']),
    ('storage_index', si_in_order, 'a transposed matrix', ['as if t were contiguous']),
    ('storage_index', si_float, 'a contiguous 2×3 matrix', ['has the wrong dtype', 'must be int64']),
    ('storage_index', si_skips_stride0, 'stride 0: c.expand_as(m)', ['a stride-0 dimension cannot be skipped']),
    ('broadcast_shapes', bs_left, 'a column and a vector', ['align the shapes on the right']),
    ('broadcast_shapes', bs_max, 'sizes of 0', ['not max(0, 1)', 'also: fails on shapes that do not broadcast']),
    ('broadcast_shapes', bs_no_clash, 'shapes that do not broadcast', ['rule 3', '8 of 9 cases pass']),
    ('broadcast_shapes', bs_assert, 'shapes that do not broadcast', ['raised AssertionError', 'python -O removes it']),
    ('broadcast_shapes', bs_list, "the lesson's m (3, 3) and c (3,)", ['returned a list', 'a shape is a tuple']),
    ('kaiming_init', ki_fan_out, 'the spread for a layer followed by ReLU', ['scaled with n_out']),
    ('kaiming_init', ki_lecun, 'the spread for a layer followed by ReLU', ["LeCun's scale"]),
    ('kaiming_init', ki_variance, 'the spread for a layer followed by ReLU', ['scaled by the variance']),
    ('kaiming_init', ki_torch_layout, 'shape (n_in, n_out) and float32', ["(n_out, n_in) is PyTorch's layout"]),
    ('kaiming_init', ki_ignores_generator, 'draws from the generator it is given', ['from the generator passed in']),
    ('kaiming_init', ki_uniform, 'normal numbers', ['uniform numbers (torch.rand)']),
    ('kaiming_init', ki_float64, 'shape (n_in, n_out) and float32', ['should be float32']),
    ('mse_grad', mg_no_mean, 'three predictions by hand', ['not divided by n']),
    ('mse_grad', mg_wrong_n, 'three predictions by hand', ['not divided by n', 'inp.shape[1] is 1']),
    ('mse_grad', mg_flat, 'three predictions by hand', ['the shape of inp, (n, 1)']),
    ('mse_grad', mg_broadcast, 'three predictions by hand', ['broadcasts to (n, n)']),
    ('mse_grad', mg_squeeze_both, 'a batch of one', ['squeeze() without a dim', '4 of 5 cases pass']),
    ('mse_grad', mg_sign, 'three predictions by hand', ['the sign is flipped']),
    ('mse_grad', mg_returns, 'three predictions by hand', ['returned the gradient instead of setting it']),
    ('mse_grad', mg_float32, 'float64', ['must have torch.float64']),
    ('relu_grad', rg_at_zero, 'by hand, with an input of exactly 0', ['a strict >']),
    ('relu_grad', rg_float_mask, 'float16', ['something made it torch.float32', '5 of 6 cases pass']),
    ('relu_grad', rg_in_place, 'by hand, with an input of exactly 0', ['changed its input out.g', 'never write into an input']),
    ('relu_grad', rg_slope_only, 'by hand, with an input of exactly 0', ['the chain rule multiplies it by out.g']),
    ('relu_grad', rg_mask_from_grad, 'by hand, with an input of exactly 0', ['the mask must come from the input']),
    ('lin_grad', lg_no_bias, 'by hand: n = 2, k = 3, m = 2', ['b.g is not set', 'the bias gradient is missing']),
    ('lin_grad', lg_mean_bias, 'by hand: n = 2, k = 3, m = 2', ['averaged over the batch instead of summed']),
    ('lin_grad', lg_bias_dim1, 'by hand: n = 2, k = 3, m = 2', ['summed over the outputs (dim 1)']),
    ('lin_grad', lg_w_transposed, 'by hand: n = 2, k = 3, m = 2', ["the transpose of w's (k, m)"]),
    ('lin_grad', lg_uses_out, 'by hand: n = 2, k = 3, m = 2', ["computed from out, the layer's output, where out.g, its gradient, belongs"]),
    ('lin_grad', lg_bias_into_out_g, 'by hand: n = 2, k = 3, m = 2', ['changed its input out.g', 'also: fails on']),
    ('forward_and_backward', fb_forward_order, 'a network by hand: n = 2, n_in = 2, nh = 3', ['reverse order']),
    ('forward_and_backward', fb_no_return, 'a network by hand: n = 2, n_in = 2, nh = 3', ['returned None', 'return the loss']),
    ('forward_and_backward', fb_stops_early, 'a network by hand: n = 2, n_in = 2, nh = 3', ['w1.g is not set', 'back to the first layer']),
    ('forward_and_backward', fb_no_relu, 'a network by hand: n = 2, n_in = 2, nh = 3', ['a network without its ReLU']),
    ('forward_and_backward', fb_updates_weights, 'a network by hand: n = 2, n_in = 2, nh = 3', ['changed its input w1']),
    ('Relu.backward', ReluAtZero, 'by hand, with an input of exactly 0', ['a strict >']),
    ('Relu.backward', ReluInPlace, 'by hand, with an input of exactly 0', ['changed its input out.g']),
    ('Relu.backward', ReluFloatMask, 'float16', ['something made it torch.float32']),
    ('Lin.backward', LinNoBias, 'by hand: n = 2, k = 3, m = 2', ['the bias gradient is missing']),
    ('Lin.backward', LinWTransposed, 'by hand: n = 2, k = 3, m = 2', ["the transpose of w's (k, m)"]),
    ('Lin.backward', LinForwardBroken, 'by hand: n = 2, k = 3, m = 2', ['the forward pass Lin(w, b)(inp) failed, before backward() ran']),
    ('Mse.backward', MseFlat, 'three predictions by hand', ['the shape of inp, (n, 1)']),
    ('Mse.backward', MseSum, 'three predictions by hand', ['not divided by n']),
    ('Mse.backward', MseSqueezeBoth, 'a batch of one', ['squeeze() without a dim']),
    ('Model.backward', ModelForwardOrder, 'a network by hand: n = 2, n_in = 2, nh = 3', ['reverse order']),
    ('Model.backward', ModelNoLoss, 'a network by hand: n = 2, n_in = 2, nh = 3', ['reverse order']),
    ('Model.backward', ModelLastLayerOnly, 'a network by hand: n = 2, n_in = 2, nh = 3', ['w1.g is not set', 'back to the first layer']),
    ('sgd_step', sgd_rebinds, 'one parameter by hand, lr = 0.1', ["binds the loop's name to it"]),
    ('sgd_step', sgd_uphill, 'one parameter by hand, lr = 0.1', ['went up the gradient']),
    ('sgd_step', sgd_no_lr, 'one parameter by hand, lr = 0.1', ['ignores the learning rate']),
    ('sgd_step', sgd_scales_grad, 'one parameter by hand, lr = 0.1', ['changed its input params[0].g']),
    ('sgd_step', sgd_returns_new, 'one parameter by hand, lr = 0.1', ['the parameters did not change']),
    ('cross_entropy_grad', ce_sum, 'two rows by hand, all logits 0', ['not divided by n']),
    ('cross_entropy_grad', ce_sign, 'two rows by hand, all logits 0', ['the sign is flipped']),
    ('cross_entropy_grad', ce_no_softmax, 'two rows by hand, all logits 0', ['the logits were used where their softmax belongs']),
    ('cross_entropy_grad', ce_dim0, 'two rows by hand, all logits 0', ['over the rows (dim 0)']),
    ('cross_entropy_grad', ce_mean_all, 'two rows by hand, all logits 0', ['divided by n·c']),
    ('cross_entropy_grad', ce_naive_softmax, 'sure scores: logits of ±1000', ['overflows to inf', '5 of 6 cases pass']),
]


def test_the_statistical_cases_hold_for_any_draws():
    "Spread, distribution and one output are measured, not compared number by number: other draws pass them too."
    for seed in range(20):
        torch.manual_seed(seed)  # ki_ignores_generator draws from the global generator, so each seed gives other numbers
        v = check.check_kaiming_init(ki_ignores_generator)
        assert [c.label for c, _ in v.failed] == ['draws from the generator it is given'], (seed, v)


def test_every_exercise_has_at_least_two_wrong_solutions_tested():
    counts = {e: sum(w[0] == e for w in WRONG) for e in IDS}
    assert min(counts.values()) >= 2, counts


@pytest.mark.parametrize('ex_id,wrong,case,phrases', WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_a_typical_wrong_solution_fails_naming_the_mistake_and_what_works(ex_id, wrong, case, phrases):
    v = checker(ex_id)(wrong)
    assert not v and v.failed[0][0].label == case, v
    text = ' '.join(repr(v).split())
    assert text.startswith(f"✗ {ex_id}: {len(v.passed)} of {len(v.results)} cases pass.") and ' works: ' in text, v
    assert ' hint: ' in text, v  # every verdict here points at the mistake
    for phrase in phrases: assert v.says(phrase), (phrase, v)


def test_a_verdict_is_short_shows_as_markdown_and_never_prints_the_solution():
    solutions = ('out.g @ w.T', 'out.g @ w.t()', 'inp.T @ out.g', 'out.g.sum(0)', 'torch.where(inp > 0', 'c[i, j] += a[i, k] * b[k, j]',
                 'squeeze(-1) - targ).unsqueeze(-1)', 'sqrt(2 / n_in)', 'sqrt(2/n_in)', 'p -= lr', 'softmax(logits) - ')
    for ex_id, wrong, _, _ in WRONG:
        v = checker(ex_id)(wrong)
        text, md = repr(v), v._repr_markdown_()
        assert len(text) < 1600, text
        for _, f in v.failed:  # the line of the learner's own code an exception came from is theirs to see
            for key, line in f.details:
                if key == 'at': text = text.replace(line, '')
        assert md.startswith(f"**✗ {ex_id}".replace('_', '\\_')) and 'Fails on *' in md and '\n\nWorks: ' in md, md
        for solution in solutions: assert solution not in text, (solution, text)


# ---- the exercise notebooks ------------------------------------------------------------------------------------------

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
    lesson = NBProcessor(ROOT/'nbs'/name, rm_directives=True).nb
    nbformat.validate(nb)
    assert set(nb.metadata) == {'kernelspec'}
    assert all(c.cell_type != 'code' or (c.outputs == [] and c.execution_count is None) for c in nb.cells)
    assert all(not c.metadata for c in nb.cells)
    assert not any(line.lstrip().startswith('#|') for s in _code(nb) for line in s.split('\n'))
    assert nb.cells[0].source.startswith('# Exercises: ')
    # the prose stays: every markdown cell of the lesson is in the exercise notebook (the title with its prefix)
    note = re.compile(r"\n\n\*In this exercise version, the check under your .* takes the place of the lesson's check here\.\*$")
    ex_md = {note.sub('', c.source.replace('# Exercises: ', '# ', 1)) for c in nb.cells if c.cell_type == 'markdown'}
    assert all(c.source in ex_md for c in lesson.cells if c.cell_type == 'markdown')
    # the lesson's checks of the exercises are gone, and nothing else: every other code cell is there as the lesson has it
    kept = [c.source for c in lesson.cells if c.cell_type == 'code' and not {'default_exp', 'exercise', 'exercise_check'} & set(c.directives_)]
    assert [s for s in _code(nb) if s in kept] == kept
    mod = next(c.directives_['default_exp'][0] for c in lesson.cells if 'default_exp' in c.directives_)
    code = _code(nb)
    for ex_id in EXERCISES[name]:
        chk, obj = make_exercises.checker_name(ex_id), ex_id.split('.')[0]
        at = code.index(f"from mini_nn.check import {chk}\n{chk}({obj})")
        stub = next(s for s in reversed(code[:at]) if '# TODO:' in s)
        assert stub.rstrip().endswith('pass') and 'pass' in stub
        assert re.search(rf"if not .*{chk}\({obj}\).*: from mini_nn\.{mod} import {obj}\b", code[at + 1]), code[at + 1]
        # the stub keeps decorators, signature and docstring: it parses, and its exercise has the lesson's docstring
        tree = ast.parse(stub)
        node = next(n for n in ast.walk(tree) if getattr(n, 'name', None) == ex_id.split('.')[-1])
        ref = getattr(importlib.import_module(f'mini_nn.{mod}'), obj)
        ref = getattr(ref, ex_id.split('.')[1]) if '.' in ex_id else ref
        assert ast.get_docstring(node) == ref.__doc__
        lesson_cell = next(c.source for c in lesson.cells if 'exercise' in c.directives_ and
                           re.search(rf"^(class|def) {obj}\b", c.source, re.M))
        decorators = [l.strip() for l in lesson_cell.split('\n') if l.strip().startswith('@')]
        assert all(d in stub for d in decorators), (decorators, stub)


def test_todos_name_no_private_helper_and_give_no_answer():
    "No TODO names a private helper; no line of a solution's body appears after its stub in the exercise notebook."
    for ex_id, text in make_exercises.TODOS.items():
        assert not re.search(r'(?<![\w.])_[A-Za-z]\w*', text), (ex_id, text)
    for name, mod, ids, cell in lesson_exercise_cells():
        nb = nbformat.read(EX_DIR/name, as_version=4)
        code = _code(nb)
        tree = ast.parse(cell)
        for ex_id in ids:
            node = next(n for n in ast.walk(tree) if getattr(n, 'name', None) == ex_id.split('.')[-1])
            body = [ast.get_source_segment(cell, st) for st in node.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]
            lines = {l.strip() for b in body for l in b.split('\n') if len(l.strip()) >= 20}
            chk = make_exercises.checker_name(ex_id)
            at = code.index(f"from mini_nn.check import {chk}\n{chk}({ex_id.split('.')[0]})")
            stub = next(i for i in range(at, -1, -1) if '# TODO:' in code[i])
            for later in code[stub:]:
                shown = [l for l in lines if l in later]
                assert not shown, (ex_id, shown)


def test_the_generator_reads_the_marks_and_infers_nothing(tmp_path):
    "On a notebook of its own: `#| exercise` cells become stubs, `#| exercise_check` cells go, unmarked tests stay."
    cells = [nbformat.v4.new_code_cell('#| default_exp demo'), nbformat.v4.new_markdown_cell('# Demo\n\n> A demo.'),
             nbformat.v4.new_code_cell('#| export\n#| exercise\n@expects(x=\'n\')\ndef double(x:Tensor, # a vector\n          ):\n'
                                       '    "Twice `x`."\n    y = x + x\n    return y'),
             nbformat.v4.new_code_cell('#| exercise_check\ntest_eq(double(torch.ones(2)), 2 * torch.ones(2))'),
             nbformat.v4.new_code_cell('test_fail(lambda: double(None))'),
             nbformat.v4.new_code_cell('#| export\n#| exercise backward\nclass Layer:\n    def __call__(self, x): return x\n'
                                       '    @after_forward\n    def backward(self):\n        "Set `self.x.g`."\n        self.x.g = 1')]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}),
                   tmp_path/'01_demo.ipynb')
    nb = make_exercises.exercise_notebook(tmp_path/'01_demo.ipynb', 'mini_nn')
    code = _code(nb)
    assert "test_fail(lambda: double(None))" in code and not any('test_eq(double' in s for s in code)
    stub = next(s for s in code if 'def double' in s)
    assert stub.startswith("@expects(x='n')\ndef double(x:Tensor, # a vector\n") and '"Twice `x`."' in stub
    assert 'x + x' not in stub and stub.rstrip().endswith('pass')
    layer = next(s for s in code if 'class Layer' in s)
    assert '    @after_forward\n    def backward(self):\n        "Set `self.x.g`."\n        # TODO: ' in layer and 'self.x.g = 1' not in layer
    assert 'from mini_nn.check import check_double\ncheck_double(double)' in code
    assert 'if not check_layer_backward(Layer): from mini_nn.demo import Layer  # the library\'s until yours passes' in code
    assert nb.cells[0].source == '# Exercises: Demo\n\n> A demo.'


def test_the_generator_warns_when_a_kept_cell_needs_a_dropped_one(tmp_path, capsys):
    cells = [nbformat.v4.new_code_cell('#| default_exp demo'), nbformat.v4.new_markdown_cell('# Demo'),
             nbformat.v4.new_code_cell('#| export\n#| exercise\ndef double(x):\n    "Twice `x`."\n    return x + x'),
             nbformat.v4.new_code_cell('#| exercise_check\nt = torch.ones(2)\ntest_eq(double(t), 2 * t)'),
             nbformat.v4.new_code_cell('[double(t) for t in (1, 2)]'),  # its own t: fine
             nbformat.v4.new_code_cell('double(t)')]                       # the dropped cell's t: would fail
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path/'01_demo.ipynb')
    make_exercises.exercise_notebook(tmp_path/'01_demo.ipynb', 'mini_nn')
    err = capsys.readouterr().err
    assert err.count('warning:') == 1 and 'cell 5 reads t, which only the `#| exercise_check` cell 3 defines' in err, err


def test_the_lessons_marks_leave_the_exercise_notebooks_runnable(capsys):
    "No cell the exercise notebook keeps reads a name that only a dropped `#| exercise_check` cell defines."
    make_exercises.generate()
    assert 'warning:' not in capsys.readouterr().err


@pytest.mark.parametrize('name', sorted(EXERCISES))
def test_an_unwritten_exercise_fails_its_check_cleanly(name):
    "The stubs as generated (bodies still TODO) fail every case with a verdict that says so, not an exception."
    nb = nbformat.read(EX_DIR/name, as_version=4)
    mod = next(m for n, m, _, _ in lesson_exercise_cells() if n == name)
    code = _code(nb)
    for ex_id in EXERCISES[name]:
        chk, obj = make_exercises.checker_name(ex_id), ex_id.split('.')[0]
        at = code.index(f"from mini_nn.check import {chk}\n{chk}({obj})")
        stub = next(s for s in reversed(code[:at]) if '# TODO:' in s)
        v = getattr(check, chk)(defined_by(stub, mod)[obj])
        assert not v and v.passed == [] and v.says('while the body is the TODO, that is expected'), v


def test_nbdev_ignores_the_exercise_notebooks():
    "They export nothing, and nbdev's commands (export, clean, test, docs) look at nbs/ only, not its subfolders."
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    assert get_config(path=ROOT).recursive is False
    found = nbglob(ROOT/'nbs', func=os.path.join)
    assert found and not [p for p in found if 'exercises' in p]


def _execute(path, kernel_manager_class):
    nb = nbformat.read(path, as_version=4)
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}},
                   kernel_manager_class=kernel_manager_class).execute()
    return nb


def test_the_exercise_notebooks_run_unmodified_to_the_end_with_failed_checks(tmp_path, kernel_manager_class):
    paths = []
    for p in sorted(EX_DIR.glob('*.ipynb')):
        shutil.copy(p, tmp_path/p.name)
        paths.append(tmp_path/p.name)
    with ThreadPoolExecutor(2) as pool:
        nbs = dict(zip([p.name for p in paths], pool.map(lambda p: _execute(p, kernel_manager_class), paths)))
    assert sorted(nbs) == sorted(EXERCISES)
    for name, nb in nbs.items():
        errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
        assert not errors, (name, errors)
        for ex_id in EXERCISES[name]:
            chk = make_exercises.checker_name(ex_id)
            cell = next(c for c in nb.cells if c.cell_type == 'code' and c.source.startswith(f"from mini_nn.check import {chk}\n"))
            shown = [o['data'] for o in cell.outputs if o.output_type == 'execute_result']
            assert shown and shown[0]['text/plain'].startswith(f"✗ {ex_id}: 0 of "), (name, shown)
            assert shown[0]['text/markdown'].startswith(f"**✗ {ex_id}: 0 of ".replace('_', '\\_')), (name, shown)
