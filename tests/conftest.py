"""Shared fixtures: the repository root, the tools of the environment running the tests, and the lessons executed once.

`make test` runs pytest on two workers (pytest-xdist, `--dist loadgroup`): tests sharing an expensive fixture (a
site build, a wheel and its venv, a server, one executed notebook) form one group (GROUPS below), run by one worker
so that the fixture is built once, and the collection is ordered by rough cost, heaviest first, so that both
workers finish at about the same time.
"""
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

# Idle OpenMP threads (torch's intra-op pool, numba's) sleep at once instead of spinning for a while: with two workers,
# their kernels and subprocesses on two cores, spinning threads burned more than half the CPU (test_widgets.py and
# test_backward_explorer.py on two workers: 86 s of CPU, 33 s with this). No result changes: how many threads there
# are and how the work is split among them stay as configured (OMP_NUM_THREADS and the others pass through as given).
# Set before torch is imported anywhere (test modules, kernels, subprocesses inherit it); a value given wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment's console scripts (nbdev_export, ...)
NBS = ROOT/'nbs'


def run(*cmd, cwd=ROOT, check=True, **kw)->subprocess.CompletedProcess:
    "Run `cmd` and capture its text output, failing with that output if it exits non-zero."
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def repo_files()->list:
    "The files git would commit: tracked or untracked-but-not-ignored, as they are on disk."
    out = run('git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z').stdout
    return [p for p in out.split('\0') if p and (ROOT/p).is_file()]


def stop_process_group(proc:subprocess.Popen, timeout:float=20):
    "Stop a server started with `start_new_session=True`, and everything it started (kernels): SIGTERM, then SIGKILL."
    os.killpg(proc.pid, signal.SIGTERM)
    try: proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()


# ---- the explorers (test_widgets.py, test_backward_explorer.py) ------------------------------------------------

EXPLORER_MODULES = ['mini_nn.explorer_base', 'mini_nn.stride_explorer', 'mini_nn.expand_explorer', 'mini_nn.blowup_explorer',
                    'mini_nn.backward_explorer', 'mini_nn.gradient_explorer', 'mini_nn.widgets']  # each needs the widgets extra
PNG = b'\x89PNG\r\n\x1a\n'  # how every PNG file starts


def skip_without_widgets():
    "Skip the calling test module unless the `widgets` extra (ipywidgets and matplotlib) is installed."
    for m in ('ipywidgets', 'matplotlib'): pytest.importorskip(m, reason=f'the widgets extra ({m}) is not installed')


def plotted(fig, gid:str, ax:int=0):
    "The y data of the line drawn with `gid` in axes `ax` of the matplotlib figure `fig`, as a float64 tensor."
    import torch
    return torch.tensor([l for l in fig.axes[ax].lines if l.get_gid() == gid][0].get_ydata(), dtype=torch.float64)


# ---- the lesson notebooks, executed once per test session ----------------------------------------------------

def lesson_notebooks()->list:
    "The notebooks `nbdev_test` runs: nbs/*.ipynb as nbdev globs them (settings.ini), without folders holding `.notest`."
    from fastcore.xtras import working_directory
    from nbdev.doclinks import nbglob
    from nbdev.test import _keep_file
    with working_directory(ROOT): files = nbglob(as_path=True)
    return [Path(f) for f in sorted(files) if _keep_file(Path(f), '.notest')]


def execute_nbs():
    "tools/execute_nbs.py, the tool that computes the committed outputs, as a module."
    if str(ROOT/'tools') not in sys.path: sys.path.insert(0, str(ROOT/'tools'))
    import execute_nbs
    return execute_nbs


class LessonRuns:
    """Each lesson executed at most once, as `nbdev_test` runs it, by tools/execute_nbs.py in a fresh kernel (forked by
    `kernel_manager_class`) whose working directory is a copy of nbs/. `runs(path)` is `(executed notebook as a dict,
    None)` or `(None, error)`.
    Without xdist the first request starts every lesson the session's tests ask for, two at a time, heaviest first;
    with it, each worker runs the ones its tests ask for (the tests of one notebook form one group, below)."""
    def __init__(self, tmp:Path, kernel_manager_class, prefetch:list=(), workers:int=2):
        self.tmp, self.work, self.kernel_manager_class = tmp, tmp/'nbs', kernel_manager_class
        shutil.copytree(NBS, self.work, ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
        self.futures, self.lock, self.slots = {}, threading.Lock(), threading.Semaphore(workers)
        self.prefetch = sorted(prefetch, key=lambda p: -cost_of_group(f'notebook {p.name}'))

    def _execute(self, path:Path, fut:Future):
        with self.slots:
            try:
                out = self.tmp/f'executed_{path.name}'
                execute_nbs().execute(self.work/path.name, cwd=self.work, dest=out, as_nbdev_test=True,
                                      kernel_manager_class=self.kernel_manager_class)
                fut.set_result((json.loads(out.read_text()), None))
            except BaseException as e:  # CellExecutionError carries the cell and its traceback
                fut.set_result((None, f'{type(e).__name__}: {e}'[-6000:]))

    def __call__(self, path:Path)->tuple:
        with self.lock:
            for p in self.prefetch + [path]:
                if p.name not in self.futures:
                    fut = self.futures[p.name] = Future()
                    threading.Thread(target=self._execute, args=(p, fut), daemon=True).start()
            self.prefetch = []
        return self.futures[path.name].result()


@pytest.fixture(scope='session')
def kernel_manager_class(tmp_path_factory):
    "What starts the kernels of the notebooks tests execute: forks of a process that imported torch (forked_kernels.py)."
    from forked_kernels import ForkedKernels
    with ForkedKernels(tmp_path_factory.mktemp('kernels')) as kernels: yield kernels.manager_class


@pytest.fixture(scope='session')
def lesson_runs(request, tmp_path_factory, kernel_manager_class)->LessonRuns:
    wanted = [] if 'PYTEST_XDIST_WORKER' in os.environ else list({
        item.callspec.params['path'].name: item.callspec.params['path'] for item in request.session.items
        if 'lesson_runs' in item.fixturenames and 'path' in getattr(getattr(item, 'callspec', None), 'params', {})}.values())
    return LessonRuns(tmp_path_factory.mktemp('lessons'), kernel_manager_class, wanted)


# ---- lesson 06's kernels, compiled once ------------------------------------------------------------------------

# numba compiles a kernel at its first call (seconds for the parallel ones, ~20 s of CPU for every kernel in both
# dtypes) and caches it on disk, beside the module. Several processes of the suite call them (this suite's workers,
# notebooks 06 and 08, the benchmark command): each one that got there before the cache was written would compile
# them all again (a fresh clone's run: the benchmark command's test took 36 s without this, 19 s with it). So the
# controller starts one process that compiles them while the workers start up and run the heaviest groups (the site,
# the browser), and stops it at the end. Nothing waits for it: a test that gets there first compiles for itself.
WARM_KERNELS = """
import torch
from mini_nn import fast_matmul as fm
for dtype in (torch.float32, torch.float64):
    a, b = torch.randn(70, 90, dtype=dtype), torch.randn(90, 70, dtype=dtype)  # above fm.SMALL: the tiled path
    for f in (fm.matmul_jit, fm.matmul_jit_ikj, fm.matmul_jit_fastmath, fm.matmul_jit_threads, fm.matmul_jit_blocked,
              fm.matmul_tiled): f(a, b)
"""


def pytest_sessionstart(session):
    if 'PYTEST_XDIST_WORKER' in os.environ or os.environ.get('NUMBA_DISABLE_JIT') == '1': return
    if importlib.util.find_spec('numba') is None: return
    session.config._warm_kernels = subprocess.Popen([sys.executable, '-c', WARM_KERNELS], cwd=ROOT,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_sessionfinish(session):
    proc = getattr(session.config, '_warm_kernels', None)
    if proc is not None and proc.poll() is None: proc.kill(); proc.wait()


# ---- scheduling: groups that share a fixture, heaviest work first ---------------------------------------

# Tests that share an expensive module- or session-scoped fixture must run on one xdist worker, or each worker
# would build it again. (pytest-xdist's own `xdist_group` marker does not reach its scheduler under pytest 9.2:
# xdist 3.8 renames `item._nodeid`, which pytest 9.2 no longer reads. So the groups are declared here, by node id,
# and `pytest_xdist_make_scheduler` below hands xdist a scheduler that reads them.)
GROUPS = {'tests/test_site.py::*': 'site',             # the site build, its server and one browser visiting every page
          'tests/test_packaging.py::*': 'packaging',   # the sdist and wheel, and a venv with torch and the wheel
          'tests/test_browser.py::*': 'browser',       # JupyterLab and a browser
          'tests/test_bench.py::test_the_command_*': 'bench command',  # one `--quick` run of the benchmark's backward parts
          'tests/test_imports.py::*': 'imports'}       # one interpreter that imports each lesson module in a fork
# the two tests of one lesson share its execution (`lesson_runs`)
LESSON_TEST = re.compile(r'^tests/test_notebook_hygiene\.py::test_lesson_\w+\[(?P<nb>[^\]]+)\]$')

# Rough seconds on a quiet 2-core machine (from `--durations`), for ordering only: a wrong figure costs balance,
# never a check. A group's figure is the whole group's; other tests default to 0 and run last, spread over workers.
GROUP_COST = {'site': 45, 'browser': 35, 'notebook 01_matmul.ipynb': 9, 'notebook 05a_train.ipynb': 9,
              'notebook 06_fast_matmul.ipynb': 9, 'notebook 08_bench.ipynb': 8, 'notebook 08a_backward_bench.ipynb': 4,
              'notebook 07e_backward_explorer.ipynb': 4, 'notebook 07b_stride_explorer.ipynb': 3, 'packaging': 6,
              'bench command': 2}
ITEM_COST = {'tests/test_exercises.py::test_the_exercise_notebooks_run_*': 20,
             'tests/test_fast_matmul.py::test_bench_quick_*': 14, 'tests/test_fast_matmul.py::test_compiled_kernels_are_loaded_*': 5,
             'tests/test_notebook_hygiene.py::test_the_comparison_catches_*_in_executed_*': 5,
             'tests/test_widgets.py::test_blowup_*': 4,
             'tests/test_backward_explorer.py::test_gradient_explorer_controls': 3,
             'tests/test_nbdev_sync.py::*': 3, 'tests/test_lab_security.py::*': 3, 'tests/test_workflows.py::*': 2}
DEFAULT_GROUP_COST = 3


def group_of(nodeid:str)->str:
    "The group whose tests one worker runs together, or None."
    if m := LESSON_TEST.match(nodeid): return f"notebook {m.group('nb')}"
    return next((g for pat, g in GROUPS.items() if fnmatch.fnmatchcase(nodeid, pat)), None)


def cost_of_group(name:str)->float: return GROUP_COST.get(name, DEFAULT_GROUP_COST)


def cost(nodeid:str)->float:
    group = group_of(nodeid)
    if group: return cost_of_group(group)
    return next((c for pat, c in ITEM_COST.items() if fnmatch.fnmatchcase(nodeid, pat)), 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    "Heaviest first (stable: a module's or a group's tests keep their order and stay together)."
    items.sort(key=lambda item: -cost(item.nodeid))


def pytest_xdist_make_scheduler(config, log):
    "With `--dist loadgroup`: each group above is one unit of work, every other test its own; units in collection order."
    if config.getvalue('dist') != 'loadgroup': return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid): return group_of(nodeid) or nodeid

    config.option.loadscopereorder = False  # keep the cost order of the collection
    return GroupScheduling(config, log)
