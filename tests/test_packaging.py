"The package as a pip user gets it: built into an sdist and a wheel, installed beside torch and nothing else."
import ast
import configparser
import re
import shutil
import subprocess
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
    meta = wheel_metadata(wheel)
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


def wheel_metadata(wheel)->str:
    zf = zipfile.ZipFile(wheel)
    return zf.read(next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))).decode()


LEFTOVERS = re.compile(r'(__pycache__|\.pyc$|\.pyo$|\.egg-info|^build/|\.ipynb_checkpoints|\.orig$|\.rej$|\.swp$|~$|'
                       r'\.DS_Store|\.bak$|\.tmp$|/_proc/|\.coverage|\.hypothesis|\.so$)')


def test_wheel_carries_no_build_leftovers_and_exactly_the_repositorys_modules(dists):
    _, wheel = dists
    zf = zipfile.ZipFile(wheel)
    names = zf.namelist()
    assert not [n for n in names if LEFTOVERS.search(n)], f"build leftovers in the wheel: {[n for n in names if LEFTOVERS.search(n)]}"
    modules = sorted(n for n in names if n.startswith('mini_nn/'))
    assert modules == sorted(f'mini_nn/{p.name}' for p in (ROOT/'mini_nn').glob('*.py')), "the wheel's modules are not the repository's"
    for n in modules:  # no stale copy from an old build/ directory: every file as it is in the repository
        assert zf.read(n) == (ROOT/n).read_bytes(), f"{n} in the wheel differs from the repository's"
    record = zf.read(next(n for n in names if n.endswith('.dist-info/RECORD'))).decode()
    assert sorted(l.split(',')[0] for l in record.splitlines() if l) == sorted(names)


def third_party_imports(path)->set:
    "Top-level names of the modules `path` imports anywhere (inside try blocks too), without the stdlib and mini_nn."
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != 'mini_nn'}


def distribution_of(module:str)->str:
    "The distribution that installs `module` in the environment running the tests, normalised as pip does."
    from importlib.metadata import packages_distributions
    dists = packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module}"
    return re.sub(r'[-_.]+', '-', dists[0]).lower()


def requirement_names(meta:str, extra:str=None)->set:
    "The distributions the wheel's METADATA requires, for `extra` (or with no extra), normalised."
    names = set()
    for l in meta.splitlines():
        if not l.startswith('Requires-Dist:'): continue
        req = l.split(':', 1)[1].strip()
        if (f'extra == "{extra}"' in req) if extra else ('extra ==' not in req):
            names.add(re.sub(r'[-_.]+', '-', re.match(r'[A-Za-z0-9_.-]+', req).group(0)).lower())
    return names


def import_errors(path)->list:
    "The messages of the ImportErrors that `path` raises at import time (in a top-level `try`), when a package is missing."
    found = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.Try): continue
        for sub in (n for h in node.handlers for n in ast.walk(h)):
            if isinstance(sub, ast.Raise) and isinstance(sub.exc, ast.Call) and getattr(sub.exc.func, 'id', '') == 'ImportError' \
                    and sub.exc.args and isinstance(sub.exc.args[0], ast.Constant):
                found.append(sub.exc.args[0].value)
    return found


def optional_modules()->list:
    "`(extra, module)` for every library module that names an extra to install (`pip install 'mini_nn[extra]'`)."
    found = []
    for p in sorted((ROOT/'mini_nn').glob('*.py')):
        found += [(extra, p.stem) for extra in sorted(set(re.findall(r"""pip install ['"]mini_nn\[(\w+)\]['"]""", p.read_text())))]
    return found


def test_the_optional_modules_are_found():
    "The checks below can fail: they see the explorers' and numba's modules, and what they raise without their extra."
    assert {('widgets', 'explorer_base'), ('fast', 'fast_matmul')} <= set(optional_modules())
    assert import_errors(ROOT/'mini_nn'/'explorer_base.py') == [
        f'the explorers (mini_nn.widgets) need ipywidgets and matplotlib: {extra_hint("explorer_base")}']


@pytest.mark.parametrize('extra,module', optional_modules())
def test_each_extra_installs_what_its_module_imports(dists, extra, module):
    "Every third-party module that mini_nn/<module>.py imports comes with the base requirements or the extra it names."
    _, wheel = dists
    meta = wheel_metadata(wheel)
    assert f'Provides-Extra: {extra}' in meta
    needed = {distribution_of(m) for m in third_party_imports(ROOT/'mini_nn'/f'{module}.py')}
    assert needed, f"found no imports in mini_nn/{module}.py"
    missing = needed - requirement_names(meta) - requirement_names(meta, extra)
    assert not missing, f"mini_nn/{module}.py imports {sorted(missing)}, which neither torch nor the {extra!r} extra installs"


def test_the_import_parser_sees_imports_in_try_blocks(tmp_path):
    "The check above can fail: a module imported only inside try/except is still found, the stdlib is left out."
    src = tmp_path/'m.py'
    src.write_text("import os, torch\ntry:\n    from numpy.linalg import norm\nexcept ImportError: pass\nfrom . import x\n")
    assert third_party_imports(src) == {'torch', 'numpy'}


def torch_and_what_it_requires()->list:
    "The installed distributions of torch and, recursively, of what it requires (on this platform), from their metadata."
    from importlib.metadata import distribution
    from packaging.requirements import Requirement
    found, todo = {}, ['torch']
    while todo:
        d = distribution(todo.pop())
        name = re.sub(r'[-_.]+', '-', d.metadata['Name']).lower()
        if name in found: continue
        found[name] = d
        reqs = [Requirement(r) for r in d.requires or []]
        todo += [r.name for r in reqs if not r.marker or r.marker.evaluate({'extra': ''})]
    return list(found.values())


def pip(py, *args)->subprocess.CompletedProcess:
    "The test environment's pip acting on the environment of interpreter `py` (which has no pip of its own)."
    return run(sys.executable, '-m', 'pip', '--python', py, *args)


@pytest.fixture(scope='module')
def torch_only_venv(dists, tmp_path_factory):
    """A fresh venv holding torch (the test environment's, with what it requires) and the wheel, installed by pip, and
    nothing else. torch is linked in, not unpacked again (that took 20-50 s): its files and metadata, as pip installed
    them, so that pip sees it installed when it resolves the wheel's requirements."""
    _, wheel = dists
    venv = tmp_path_factory.mktemp('venv')/'venv'
    run(sys.executable, '-m', 'venv', '--without-pip', venv)
    py = venv/'bin'/'python'
    site = Path(run(py, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))').stdout.strip())
    for dist in torch_and_what_it_requires():
        for top in {Path(str(f)).parts[0] for f in dist.files if not str(f).startswith('..')} - {'__pycache__'}:
            if not (site/top).exists(): (site/top).symlink_to(Path(dist.locate_file(top)))
    pip(py, 'install', '--quiet', wheel)
    return py


def test_a_pip_user_with_torch_alone_can_use_every_lesson(torch_only_venv, tmp_path):
    py = torch_only_venv
    installed = pip(py, 'list', '--format=freeze').stdout.lower()
    for absent in ('ipywidgets', 'matplotlib', 'nbdev', 'fastcore', 'jupyterlab', 'ipython', 'numba'):
        assert f'\n{absent}==' not in '\n' + installed, f"{absent} was installed with the plain wheel"
    names = {re.sub(r'[-_.]+', '-', l.split('==')[0]) for l in installed.split()}
    torch = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() for d in torch_and_what_it_requires()}
    assert names == torch | {'mini-nn'}, f"installed beside torch and what it requires: {sorted(names - torch)}"
    out = run(py, '-c', USER_SCRIPT, cwd=tmp_path).stdout
    assert f'version {settings_version()} ui []' in out


def extra_hint(module:str)->str:
    "The `pip install ...` line that mini_nn/<module>.py's ImportError gives, read from the source."
    m = re.search(r"""pip install ['"]mini_nn\[\w+\]['"]""", (ROOT/'mini_nn'/f'{module}.py').read_text())
    assert m, f"mini_nn/{module}.py names no extra to install"
    return m.group(0)


def test_without_the_extras_the_optional_modules_say_which_extra_to_install(torch_only_venv, tmp_path):
    "Each module that needs an extra, imported with torch alone, raises the ImportError naming it."
    raising = {m: import_errors(ROOT/'mini_nn'/f'{m}.py') for _, m in optional_modules()}
    raising = {m: msgs for m, msgs in raising.items() if msgs}
    assert {'explorer_base', 'fast_matmul'} <= set(raising)
    code = ''.join(f"try: import mini_nn.{m}\nexcept ImportError as e: print('{m}:', type(e).__name__, e)\n"
                   f"else: print('{m}: imported')\n" for m in raising)
    out = run(torch_only_venv, '-c', code, cwd=tmp_path).stdout
    for m, msgs in raising.items():
        assert any(f'{m}: ImportError {msg}' in out for msg in msgs), out
    assert "fast_matmul: ImportError mini_nn.fast_matmul needs numba: pip install 'mini_nn[fast]'" in out, out
