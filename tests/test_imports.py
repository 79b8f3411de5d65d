"A pip user has torch alone: the lesson modules must import without any course or UI package."
import pytest

from conftest import BIN, ROOT, run

LESSONS = ['mini_nn.guards', 'mini_nn.matmul', 'mini_nn.broadcasting', 'mini_nn.init', 'mini_nn.backprop', 'mini_nn.module',
           'mini_nn.train']
# the exercise checkers, the benchmark (lessons 08 and 08a) and the gradients-through-depth experiment (which the
# gradient explorer draws) need torch alone too
TORCH_ONLY = LESSONS + ['mini_nn.check', 'mini_nn.bench', 'mini_nn.backward_bench', 'mini_nn.gradient_stats']
UI_AND_TOOLS = ['ipywidgets', 'matplotlib', 'IPython', 'nbdev', 'fastcore', 'numba', 'sklearn', 'fastprogress']


@pytest.mark.parametrize('module', TORCH_ONLY)
def test_lesson_module_imports_no_ui_or_tooling(module):
    code = f"import sys, {module}; print(sorted(m for m in {UI_AND_TOOLS!r} if m in sys.modules))"
    assert run(BIN/'python', '-c', code).stdout.strip() == '[]'


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
