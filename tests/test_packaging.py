"The package as a pip user gets it: built into an sdist and a wheel, installed beside torch and nothing else."
import configparser
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, repo_files, run

LESSON_MODULES = {'matmul', 'broadcasting', 'init', 'backprop', 'module'}

# Uses every lesson module the way a pip user would, with torch alone.
USER_SCRIPT = '''
import sys, torch, mini_nn
from mini_nn.matmul import matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum
from mini_nn.broadcasting import broadcast_shapes, storage_values, storage_index
from mini_nn.init import kaiming_init, init_params, activation_stats
from mini_nn.backprop import forward_and_backward, grad_check
from mini_nn.module import Model, Model2
a, b = torch.randn(3, 4), torch.randn(4, 2)
for f in (matmul_loops, matmul_elementwise, matmul_broadcast, matmul_einsum):
    assert torch.allclose(f(a, b), a @ b, atol=1e-5), f.__name__
assert broadcast_shapes((3, 1), (4,)) == torch.Size([3, 4])
t = torch.arange(6.).reshape(2, 3).T
assert torch.equal(storage_values(t)[storage_index(t)], t)
assert kaiming_init(100, 50).shape == (100, 50)
x, y = torch.randn(8, 10, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
params = [p.double() for p in init_params(10, 5, 1)]
grad_check(x, y, *params)
forward_and_backward(x, y, *params)
model = Model(*params); model(x, y); model.backward()
assert Model2(10, 5, 1)(x.float(), y.float()).shape == ()
assert activation_stats(n_layers=3).std.shape == (4,)
ui = sorted(m for m in ('ipywidgets', 'matplotlib', 'IPython', 'nbdev', 'fastcore') if m in sys.modules)
print('version', mini_nn.__version__, 'ui', ui)
'''


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    "The sdist and the wheel built from it by `python -m build`, from a copy of the repository's files."
    src, out = tmp_path_factory.mktemp('src'), tmp_path_factory.mktemp('dist')
    for rel in repo_files():
        (src/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/rel, src/rel)
    run(sys.executable, '-m', 'build', '--outdir', out, src)
    return next(out.glob('*.tar.gz')), next(out.glob('*.whl'))


def settings_version():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']['version']


def test_wheel_holds_the_library_and_nothing_else(dists):
    _, wheel = dists
    names = zipfile.ZipFile(wheel).namelist()
    modules = {Path(n).stem for n in names if n.startswith('mini_nn/') and n.endswith('.py')}
    assert LESSON_MODULES <= modules
    stray = [n for n in names if not (n.startswith('mini_nn/') or '.dist-info/' in n)]
    assert stray == [], f"the wheel carries files beyond the library: {stray}"
    assert not [n for n in names if n.endswith(('.ipynb', '.pyc')) or 'test' in Path(n).parts[0]]
    assert f'mini_nn-{settings_version()}' in wheel.name


def test_wheel_requires_only_torch_and_offers_the_extras(dists):
    _, wheel = dists
    zf = zipfile.ZipFile(wheel)
    meta = zf.read(next(n for n in zf.namelist() if n.endswith('METADATA'))).decode()
    requires = [l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')]
    assert [r for r in requires if 'extra ==' not in r] == ['torch>=2.1']
    widgets = {r.split(';')[0].split('>')[0] for r in requires if 'extra == "widgets"' in r}
    assert {'ipywidgets', 'matplotlib'} <= widgets


def test_sdist_carries_what_the_build_needs_and_no_course_files(dists):
    import tarfile
    sdist, _ = dists
    names = [n.split('/', 1)[1] for n in tarfile.open(sdist).getnames() if '/' in n]
    for needed in ('settings.ini', 'setup.py', 'README.md', 'LICENSE', 'mini_nn/matmul.py'):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(('nbs/', 'tests/', 'tools/')) or n.endswith('.ipynb')]


def test_a_pip_user_with_torch_alone_can_use_every_lesson(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path/'venv'
    run(sys.executable, '-m', 'venv', venv)
    py = venv/'bin'/'python'
    torch_version = run(sys.executable, '-c', 'import torch; print(torch.__version__.split("+")[0])').stdout.strip()
    run(py, '-m', 'pip', 'install', '--quiet', f'torch=={torch_version}', wheel)
    installed = run(py, '-m', 'pip', 'list', '--format=freeze').stdout.lower()
    for absent in ('ipywidgets', 'matplotlib', 'nbdev', 'fastcore', 'jupyterlab', 'ipython'):
        assert f'\n{absent}==' not in '\n' + installed, f"{absent} was installed with the plain wheel"
    out = run(py, '-c', USER_SCRIPT, cwd=tmp_path).stdout
    assert f'version {settings_version()} ui []' in out
