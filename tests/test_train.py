"Lesson 05a, mini_nn.train: the data, the minibatches, the training loop, the classifier's loss, and their errors."
import gzip
import importlib.util
import math
import struct

import pytest
import torch
import torch.nn.functional as F

from conftest import BIN, run
from mini_nn.init import init_params
from mini_nn.module import Model, Model2
from mini_nn.guards import Between
from mini_nn.train import (Classifier, CrossEntropy, Quiet, accuracy, batches, cross_entropy, cross_entropy_grad,
                           digits, fit, load_mnist, logsumexp, normalise, sgd_step)

needs_sklearn = pytest.mark.skipif(not importlib.util.find_spec('sklearn'), reason='the train extra (scikit-learn) is not installed')


# ---- imports: torch alone, and a clear message naming the extra -----------------------------------------------

def test_mini_nn_train_imports_with_torch_alone():
    code = ("import sys, mini_nn.train; print(sorted(m for m in ['sklearn', 'fastprogress', 'matplotlib', 'IPython', "
            "'ipywidgets', 'nbdev', 'fastcore', 'scipy'] if m in sys.modules))")
    assert run(BIN/'python', '-c', code).stdout.strip() == '[]'


def test_without_scikit_learn_digits_names_the_extra():
    code = ("import sys; sys.modules['sklearn'] = None\nfrom mini_nn.train import digits\n"
            "try: digits()\nexcept ImportError as e: print(type(e).__name__, e)")
    assert run(BIN/'python', '-c', code).stdout.strip() == 'ImportError digits() needs scikit-learn: pip install "mini_nn[train]"'


def test_without_fastprogress_train_ui_names_the_extra():
    code = ("import sys; sys.modules['fastprogress'] = None\n"
            "try: import mini_nn.train_ui\nexcept ImportError as e: print(type(e).__name__, e)")
    out = run(BIN/'python', '-c', code).stdout.strip()
    assert out == 'ImportError mini_nn.train_ui needs fastprogress: pip install "mini_nn[train]"'


# ---- digits ---------------------------------------------------------------------------------------------------

@needs_sklearn
def test_digits_splits_normalises_and_repeats_its_split():
    x_train, y_train, x_valid, y_valid = digits()
    assert x_train.shape == (1797 - round(1797 * 0.2), 64) and x_valid.shape == (round(1797 * 0.2), 64)
    assert (x_train.dtype, x_valid.dtype, y_train.dtype, y_valid.dtype) == (torch.float32,) * 2 + (torch.int64,) * 2
    assert y_train.shape == x_train.shape[:1] and y_valid.shape == x_valid.shape[:1]
    assert set(y_train.tolist()) == set(range(10)) and set(y_valid.tolist()) <= set(range(10))
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-5
    for a, b in zip(digits(seed=0), digits(seed=0)): assert torch.equal(a, b)
    assert not torch.equal(digits(seed=1)[1], y_train)
    # the validation set is scaled with the training set's statistics, not its own
    from sklearn.datasets import load_digits
    raw = torch.tensor(load_digits().data, dtype=torch.float32)
    idx = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    train, valid = raw[idx[round(1797 * 0.2):]], raw[idx[:round(1797 * 0.2)]]
    assert torch.allclose(x_valid, (valid - train.mean()) / train.std(), atol=1e-6)


@needs_sklearn
@pytest.mark.parametrize('kw,exc,msg', [
    (dict(valid_pct=0), ValueError, 'valid_pct must be a number between 0 and 1, neither included, got 0'),
    (dict(valid_pct=1.0), ValueError, 'got 1.0'),
    (dict(valid_pct='0.2'), TypeError, "valid_pct must be a number between 0 and 1, neither included, got str '0.2'"),
    (dict(seed=-1), ValueError, 'seed must be an int from 0 to'),
    (dict(seed=1.5), TypeError, 'seed must be an int from 0 to'),
])
def test_digits_refuses_bad_arguments(kw, exc, msg):
    with pytest.raises(exc, match=None) as e: digits(**kw)
    assert msg in str(e.value)


def test_normalise_uses_the_training_statistics():
    a, b = torch.tensor([[0., 2.], [4., 6.]]), torch.tensor([[3., 3.]])
    na, nb = normalise(a, b)
    assert torch.allclose(na, (a - 3) / a.std()) and torch.allclose(nb, torch.zeros(1, 2))
    with pytest.raises(ValueError, match='k is 2 in x_train but 3 in x_valid'): normalise(a, torch.ones(1, 3))


# ---- load_mnist, on small IDX files written here ---------------------------------------------------------------

def idx_bytes(a:torch.Tensor)->bytes:
    "The IDX file of the uint8 tensor `a`: magic number, big-endian dims, then the bytes."
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f'>{a.ndim}I', *a.shape) + bytes(a.flatten().tolist())


def write(path, data:bytes):
    if path.name.endswith('.gz'): path.write_bytes(gzip.compress(data))
    else: path.write_bytes(data)


NAMES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']


def small_mnist(folder, gz=(True, True, False, False), n_train=12, n_test=5, size=(28, 28)):
    "Write four small MNIST-like IDX files into `folder`; return the uint8 tensors written."
    g = torch.Generator().manual_seed(0)
    arrays = [torch.randint(0, 256, (n_train, *size), generator=g, dtype=torch.uint8),
              torch.randint(0, 10, (n_train,), generator=g, dtype=torch.uint8),
              torch.randint(0, 256, (n_test, *size), generator=g, dtype=torch.uint8),
              torch.randint(0, 10, (n_test,), generator=g, dtype=torch.uint8)]
    for name, a, z in zip(NAMES, arrays, gz): write(folder/(name + '.gz' * z), idx_bytes(a))
    return arrays


@pytest.mark.parametrize('gz', [(True,) * 4, (False,) * 4, (True, False, False, True)], ids=['gzipped', 'plain', 'mixed'])
def test_load_mnist_reads_idx_files_gzipped_or_not(tmp_path, gz):
    imgs, labels, test_imgs, test_labels = small_mnist(tmp_path, gz)
    x_train, y_train, x_valid, y_valid = load_mnist(tmp_path)
    assert x_train.shape == (12, 784) and x_valid.shape == (5, 784)
    assert x_train.dtype == x_valid.dtype == torch.float32 and y_train.dtype == y_valid.dtype == torch.int64
    assert torch.equal(y_train, labels.long()) and torch.equal(y_valid, test_labels.long())
    mean, std = imgs.float().mean(), imgs.float().std()
    assert torch.allclose(x_train, (imgs.flatten(1).float() - mean) / std, atol=1e-5)
    assert torch.allclose(x_valid, (test_imgs.flatten(1).float() - mean) / std, atol=1e-5)
    assert torch.equal(load_mnist(str(tmp_path))[1], y_train)  # a str names the folder too


def test_load_mnist_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='is not a folder'): load_mnist(tmp_path/'nowhere')
    with pytest.raises(FileNotFoundError, match='is not a folder'): load_mnist(tmp_path/'nowhere.txt')
    small_mnist(tmp_path)
    (tmp_path/'t10k-images-idx3-ubyte').unlink()
    with pytest.raises(FileNotFoundError, match=r'load_mnist needs t10k-images-idx3-ubyte or t10k-images-idx3-ubyte\.gz in'):
        load_mnist(tmp_path)
    with pytest.raises(TypeError, match='folder must be a str or a PathLike, got int 3'): load_mnist(3)


def corrupt(folder, name, data:bytes):
    "Replace the file `name` (plain or gzipped, whichever is there) with `data`, written the same way."
    path = folder/name if (folder/name).exists() else folder/(name + '.gz')
    write(path, data)


@pytest.mark.parametrize('name,make,msg', [
    ('t10k-labels-idx1-ubyte', lambda good: good[:-1], 't10k-labels-idx1-ubyte holds 4 bytes of data, but its dimensions (5,) need 5'),
    ('train-images-idx3-ubyte', lambda good: good[:-100], 'train-images-idx3-ubyte.gz holds 9308 bytes of data'),
    ('train-images-idx3-ubyte', lambda good: good + b'\0', 'holds 9409 bytes of data, but its dimensions (12, 28, 28) need 9408'),
    ('train-images-idx3-ubyte', lambda good: good[:10], 'train-images-idx3-ubyte.gz ends inside its header: it has 10 bytes, and the sizes of 3 dimensions end at byte 16'),
    ('train-images-idx3-ubyte', lambda good: b'', 'it starts with nothing, not 00000803'),
    ('t10k-labels-idx1-ubyte', lambda good: b'\0\0\x08\x03' + good[4:], 'starts with 00000803, not 00000801'),
    ('t10k-labels-idx1-ubyte', lambda good: b'\0\0\x0d\x01' + good[4:], 'starts with 00000d01, not 00000801'),
    ('t10k-labels-idx1-ubyte', lambda good: idx_bytes(torch.zeros(0, dtype=torch.uint8)), 'holds 0 bytes of data, but its dimensions (0,) need 0 (and none may be 0)'),
    ('t10k-labels-idx1-ubyte', lambda good: idx_bytes(torch.zeros(4, dtype=torch.uint8)), 't10k-images holds 5 images but t10k-labels holds 4 labels'),
    ('t10k-labels-idx1-ubyte', lambda good: idx_bytes(torch.full((5,), 10, dtype=torch.uint8)), 't10k-labels holds the label 10: digits are 0 to 9'),
    ('t10k-images-idx3-ubyte', lambda good: idx_bytes(torch.zeros(5, 27, 28, dtype=torch.uint8)), 'the training images are (28, 28) pixels but the test images (27, 28)'),
])
def test_load_mnist_refuses_malformed_files(tmp_path, name, make, msg):
    arrays = small_mnist(tmp_path)
    corrupt(tmp_path, name, make(idx_bytes(arrays[NAMES.index(name)])))
    with pytest.raises(ValueError) as e: load_mnist(tmp_path)
    assert msg in str(e.value)


@pytest.mark.parametrize('damage', [lambda gz: gz[:-8], lambda gz: b'not gzip at all', lambda gz: gz[:5]], ids=['truncated', 'not gzip', 'header only'])
def test_load_mnist_refuses_broken_gzip_files(tmp_path, damage):
    small_mnist(tmp_path)
    path = tmp_path/'train-labels-idx1-ubyte.gz'
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match='train-labels-idx1-ubyte.gz cannot be read as a gzip file'): load_mnist(tmp_path)


# ---- minibatches ------------------------------------------------------------------------------------------------

def test_batches_shuffle_each_epoch_from_the_generator_and_keep_the_last_partial_batch():
    x, y = torch.arange(10.)[:, None], torch.arange(10)
    g = torch.Generator().manual_seed(0)
    first, second = [[yb for _, yb in batches(x, y, 4, g)] for _ in range(2)]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == sorted(torch.cat(second).tolist()) == list(range(10))
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    again = [yb for _, yb in batches(x, y, 4, torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for xb, yb in batches(x, y, 3, g): assert torch.equal(xb[:, 0], yb.float())
    assert [len(yb) for _, yb in batches(x, y, 10, g)] == [10] and [len(yb) for _, yb in batches(x, y, 11, g)] == [10]


# ---- the SGD step and the training loop ---------------------------------------------------------------------------

def test_sgd_step_moves_the_tensors_in_place():
    w, b = torch.tensor([[1., 2.]]), torch.tensor([0.5])
    w.g, b.g = torch.tensor([[10., -20.]]), torch.tensor([1.])
    held = w
    sgd_step([w, b], 0.1)
    assert held is w and torch.allclose(w, torch.tensor([[0., 4.]])) and torch.allclose(b, torch.tensor([0.4]))


def reg_setup():
    x_train, y_train = torch.randn(150, 8, generator=torch.Generator().manual_seed(0)), None
    y_train = (x_train[:, :3].sum(1) > 0).float() * 3 + x_train[:, 3]
    return (x_train[:120], y_train[:120], x_train[120:], y_train[120:]), init_params(8, 16, 1, generator=torch.Generator().manual_seed(1))


def test_the_hand_loop_equals_the_torch_optim_loop():
    data, init = reg_setup()
    params = [p.clone() for p in init]
    hand = fit(Model(*params), params, data, lr=0.02, bs=16, epochs=3, generator=torch.Generator().manual_seed(2))
    m2 = Model2(8, 16, 1)
    with torch.no_grad():
        for layer, w, b in ((m2.layers[0], init[0], init[1]), (m2.layers[2], init[2], init[3])):
            layer.weight.copy_(w.T); layer.bias.copy_(b)
    opt, g, losses = torch.optim.SGD(m2.parameters(), lr=0.02), torch.Generator().manual_seed(2), []
    for _ in range(3):
        for xb, yb in batches(data[0], data[1], 16, g):
            loss = m2(xb, yb); loss.backward(); opt.step(); opt.zero_grad()
            losses.append(loss.item())
    ours = torch.tensor([l for h in hand for l in h['losses']])
    assert len(ours) == 3 * math.ceil(120 / 16)
    assert torch.allclose(ours, torch.tensor(losses), rtol=1e-4, atol=0)
    assert torch.allclose(params[0], m2.layers[0].weight.detach().T, rtol=1e-4, atol=1e-6)


@needs_sklearn
def test_the_classifier_loss_falls_on_a_fixed_seed():
    data = digits()
    params = init_params(64, 50, 10, generator=torch.Generator().manual_seed(0))
    history = fit(Classifier(*params), params, data, lr=0.2, bs=64, epochs=4, generator=torch.Generator().manual_seed(1))
    assert len(history) == 4 and all(len(h['losses']) == math.ceil(len(data[0]) / 64) for h in history)
    assert history[-1]['valid_loss'] < history[0]['valid_loss'] < history[0]['losses'][0]
    assert sum(history[-1]['losses']) < sum(history[0]['losses'])
    assert history[-1]['accuracy'] > 0.9


def test_fit_tells_its_watch_the_epochs_the_batches_and_each_record():
    class Spy(Quiet):
        def __init__(self): self.calls = []
        def epochs(self, epochs): self.calls.append(('epochs', len(epochs))); return epochs
        def batches(self, batches, total): self.calls.append(('batches', total)); return batches
        def update(self, history): self.calls.append(('update', len(history)))
    data, init = reg_setup()
    spy = Spy()
    fit(Model(*init), list(init), data, lr=0.01, bs=50, epochs=2, watch=spy)
    assert spy.calls == [('epochs', 2), ('batches', 3), ('update', 1), ('batches', 3), ('update', 2)]


def test_watch_falls_back_to_text_outside_jupyter(capsys):
    pytest.importorskip('fastprogress')
    from mini_nn.train_ui import Watch
    data, init = reg_setup()
    history = fit(Model(*init), list(init), data, lr=0.01, bs=50, epochs=2, watch=Watch())
    out = capsys.readouterr().out
    assert 'epoch' in out and 'valid loss' in out and f"{history[-1]['valid_loss']:.4f}" in out


# ---- bad hyper-parameters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('kw,exc,msg', [
    (dict(lr=0), ValueError, 'lr must be a number above 0, got 0'),
    (dict(lr=-0.1), ValueError, 'lr must be a number above 0, got -0.1'),
    (dict(lr=float('nan')), ValueError, 'lr must be a number above 0, got nan'),
    (dict(lr=float('inf')), ValueError, 'lr must be a number above 0, got inf'),
    (dict(lr='0.1'), TypeError, "lr must be a number above 0, got str '0.1'"),
    (dict(bs=0), ValueError, 'bs must be a positive int, got 0'),
    (dict(bs=16.0), TypeError, 'bs must be a positive int, got float 16.0'),
    (dict(bs=True), TypeError, 'bs must be a positive int, got bool True'),
    (dict(epochs=0), ValueError, 'epochs must be a positive int, got 0'),
    (dict(epochs=-2), ValueError, 'epochs must be a positive int, got -2'),
    (dict(epochs=2.0), TypeError, 'epochs must be a positive int, got float 2.0'),
    (dict(epochs='3'), TypeError, "epochs must be a positive int, got str '3'"),
    (dict(generator=1), TypeError, 'generator must be a torch.Generator or None, got int 1'),
])
def test_fit_refuses_bad_hyper_parameters(kw, exc, msg):
    data, init = reg_setup()
    params = [p.clone() for p in init]
    args = dict(lr=0.01, bs=16, epochs=1) | kw
    with pytest.raises(exc) as e: fit(Model(*params), params, data, **args)
    assert msg in str(e.value)
    assert all(torch.equal(p, q) for p, q in zip(params, init))  # refused before any step


@pytest.mark.parametrize('call,exc,msg', [
    (lambda w: sgd_step([w], 0), ValueError, 'lr must be a number above 0, got 0'),
    (lambda w: sgd_step([w], -1), ValueError, 'lr must be a number above 0, got -1'),
    (lambda w: sgd_step(w, 0.1), TypeError, 'params must be a list or a tuple, got Tensor'),
    (lambda w: list(batches(w, w[:, 0], 0)), ValueError, 'bs must be a positive int, got 0'),
    (lambda w: list(batches(w, w[:, 0], 1.5)), TypeError, 'bs must be a positive int, got float 1.5'),
])
def test_the_steps_refuse_bad_hyper_parameters(call, exc, msg):
    w = torch.ones(3, 2); w.g = torch.ones(3, 2)
    with pytest.raises(exc) as e: call(w)
    assert msg in str(e.value)
    assert torch.equal(w, torch.ones(3, 2))


def test_between():
    Between(0)('lr', 1e-9); Between(0, 1)('p', 0.5)
    with pytest.raises(ValueError, match='p must be a number between 0 and 1, neither included, got 1'): Between(0, 1)('p', 1)
    with pytest.raises(TypeError, match='got NoneType None'): Between(0)('lr', None)


# ---- softmax, cross-entropy and its gradient --------------------------------------------------------------------

def test_cross_entropy_matches_torch_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(50, 10, generator=g) * 4, torch.randint(0, 10, (50,), generator=g)
    assert torch.allclose(logsumexp(z), torch.logsumexp(z, -1), atol=1e-5)
    assert torch.allclose(cross_entropy(z, t), F.cross_entropy(z, t), atol=1e-5)
    assert torch.allclose(cross_entropy(z.double(), t), F.cross_entropy(z.double(), t), atol=1e-12)
    big = torch.tensor([[1000., -1000.], [-1000., 1000.], [1000., 1000.]])
    loss = cross_entropy(big, torch.tensor([0, 0, 1]))
    assert torch.isfinite(loss) and torch.allclose(loss, torch.tensor((0 + 2000 + math.log(2)) / 3))
    cross_entropy_grad(big, torch.tensor([0, 0, 1]))
    assert torch.isfinite(big.g).all()


def test_cross_entropy_grad_matches_autograd():
    g = torch.Generator().manual_seed(1)
    for z, t in [(torch.randn(30, 10, generator=g) * 3, torch.randint(0, 10, (30,), generator=g)),
                 (torch.randn(1, 4, generator=g), torch.tensor([2])),
                 (torch.randn(8, 5, generator=g).double(), torch.randint(0, 5, (8,), generator=g)),
                 ((torch.randn(6, 7, generator=g) * 3).T, torch.randint(0, 6, (7,), generator=g))]:
        ref = z.clone().requires_grad_()
        F.cross_entropy(ref, t).backward()
        cross_entropy_grad(z, t)
        assert z.g.dtype == z.dtype and torch.allclose(z.g, ref.grad, atol=1e-7 if z.dtype == torch.float32 else 1e-15)


def test_classifier_gradients_match_autograd():
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(20, 6, generator=g), torch.randint(0, 4, (20,), generator=g)
    init = init_params(6, 8, 4, generator=g)
    ours = [p.clone() for p in init]
    m = Classifier(*ours)
    loss = m(x, t)
    m.backward()
    refs = [p.clone().requires_grad_() for p in init]
    ref_loss = F.cross_entropy(torch.relu(x @ refs[0] + refs[1]) @ refs[2] + refs[3], t)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss.detach(), atol=1e-6)
    for p, r in zip(ours, refs): assert torch.allclose(p.g, r.grad, atol=1e-6)
    assert accuracy(m.loss.inp, t) == (m.loss.inp.argmax(-1) == t).float().mean().item()


def test_classifier_and_loss_layer_refuse_what_does_not_fit():
    init = init_params(6, 8, 4)
    with pytest.raises(ValueError, match='c is 4 in w2 but 8 in b2'): Classifier(init[0], init[1], init[2], init[1])
    with pytest.raises(RuntimeError, match=r'CrossEntropy.backward\(\) needs a forward pass first'): CrossEntropy().backward()
    with pytest.raises(ValueError, match='n is 0, and must be at least 1'): cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match='logits must be a floating-point tensor'): cross_entropy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
