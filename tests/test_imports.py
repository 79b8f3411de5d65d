"A pip user has torch alone: the lesson modules must import without any course or UI package."
import json

import pytest

from conftest import BIN, ROOT, run

LESSONS = ['mini_nn.guards', 'mini_nn.matmul', 'mini_nn.broadcasting', 'mini_nn.init', 'mini_nn.backprop', 'mini_nn.module',
           'mini_nn.train']
# the exercise checkers, the benchmark (lessons 08 and 08a) and the gradients-through-depth experiment (which the
# gradient explorer draws) need torch alone too
TORCH_ONLY = LESSONS + ['mini_nn.check', 'mini_nn.bench', 'mini_nn.backward_bench', 'mini_nn.gradient_stats']
UI_AND_TOOLS = ['ipywidgets', 'matplotlib', 'IPython', 'nbdev', 'fastcore', 'numba', 'sklearn', 'fastprogress']


# Each module imported in a fresh interpreter: one process imports torch (every lesson module imports it first), then
# forks a child per module, which imports it and reports the top-level packages it brought in. One interpreter start
# instead of one per module, and each child still starts from an interpreter that has imported nothing else.
FORKED_IMPORTS = """
import json, os, sys, torch
before = set(sys.modules)
for module in sys.argv[1:]:
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        __import__(module)
        os.write(w, json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f: print(module, f.read())
    os.wait()
"""


@pytest.fixture(scope='module')
def imported_by()->dict:
    "module -> the top-level packages importing it brings in, beyond torch, each in a fresh interpreter."
    out = run(BIN/'python', '-c', FORKED_IMPORTS, *TORCH_ONLY).stdout
    return {m: json.loads(packages) for m, packages in (l.split(' ', 1) for l in out.splitlines())}


def test_the_import_probe_sees_what_a_module_imports(imported_by):
    assert set(imported_by) == set(TORCH_ONLY)
    assert all('mini_nn' in imported_by[m] for m in TORCH_ONLY) and 'torch' not in imported_by['mini_nn.matmul']
    out = run(BIN/'python', '-c', FORKED_IMPORTS, 'fastcore.test').stdout
    assert 'fastcore' in json.loads(out.split(' ', 1)[1])


@pytest.mark.parametrize('module', TORCH_ONLY)
def test_lesson_module_imports_no_ui_or_tooling(module, imported_by):
    assert sorted(set(UI_AND_TOOLS) & set(imported_by[module])) == []


def test_version_matches_settings():
    import configparser, mini_nn
    cfg = configparser.ConfigParser(); cfg.read(ROOT/"settings.ini")
    assert mini_nn.__version__ == cfg['DEFAULT']['version']


def test_input_checks_survive_python_O():
    "Input checks are real exceptions, not asserts that `python -O` strips."
    code = ("import torch\nfrom mini_nn.matmul import matmul_loops\n"
            "try: matmul_loops(torch.ones(2, 3), torch.ones(2, 3))\n"
            "except ValueError as e: print('ValueError:', e)")
    out = run(BIN/'python', '-O', '-c', code).stdout
    assert 'ValueError: matmul_loops needs a (m, k) and b (k, n); got a (2, 3) and b (2, 3)' in out
