"""Run every lesson notebook top to bottom in a fresh kernel and store its outputs in place.

The outputs a learner sees on opening a notebook (and the docs site shows) are then computed, never pasted.
Widget state is stored too, so explorers render without a kernel.

The test suite executes the lessons with the same function, once each (`--as-nbdev-test`): as `nbdev_test` runs
them (the cells it skips are not run, `IN_TEST=1`, the repository first on the path), and writes the executed
copy elsewhere; those outputs are compared with the committed ones (tests/test_notebook_hygiene.py).
"""
import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'


def nbdev_test_plan(path:Path)->tuple:
    "`(runs, skipped)`: whether `nbdev_test` runs the notebook at `path`, and the indices of the cells it does not run."
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, nb_lang
    from fastcore.basics import str2bool
    path = Path(path).resolve()
    with working_directory(ROOT): flags = set(get_config().tst_flags.split())
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb  # what nbdev.test.test_nb reads
    fm = getattr(nb, 'frontmatter_', {}) or {}
    if str2bool(fm.get('skip_exec', False)) or nb_lang(nb) != 'python': return False, set()
    def no_eval(cell):  # nbdev.test.test_nb's `_no_eval`, with the flags nbdev_test passes (settings.ini tst_flags)
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return bool(flags & direc.keys())
    return True, {c.idx_ for c in nb.cells if c.cell_type == 'code' and no_eval(c)}


def execute(path:Path, timeout:int=600, cwd:Path=NBS, dest:Path=None, as_nbdev_test:bool=False,
            kernel_manager_class=None):
    """Execute the notebook at `path` with `cwd` as working directory and write it to `dest` (default: back to `path`).
    `kernel_manager_class`: what starts the kernel, if not jupyter_client's default (the suite forks its kernels)."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    if as_nbdev_test:
        runs, skipped = nbdev_test_plan(path)
        if not runs: raise SystemExit(f'{path.name}: nbdev_test does not run this notebook')
        for i in skipped:  # an empty code cell is not run; its committed outputs must not pass for executed ones
            nb.cells[i].source, nb.cells[i].outputs = '', []
        env['IN_TEST'] = '1'  # as nbdev_test sets it, and puts the repository first on sys.path
        env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    manager = {'kernel_manager_class': kernel_manager_class} if kernel_manager_class else {}
    NotebookClient(nb, timeout=timeout, kernel_name='python3', store_widget_state=True,
                   resources={'metadata': {'path': str(cwd)}}, **manager).execute(env=env)
    nbformat.write(nb, dest or path)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='default: every notebook in nbs/')
    ap.add_argument('--as-nbdev-test', action='store_true', help="skip the cells nbdev_test skips, set IN_TEST=1")
    ap.add_argument('--cwd', type=Path, default=NBS, help='working directory of the kernel (default: nbs/)')
    ap.add_argument('--out', type=Path, help='write the executed notebook here instead of in place (one notebook)')
    args = ap.parse_args()
    paths = args.notebooks or sorted(NBS.glob('*.ipynb'))
    if args.out and len(paths) != 1: ap.error('--out takes exactly one notebook')
    for p in paths:
        if not args.out: print(f'executing {p.name}', flush=True)
        execute(p, cwd=args.cwd, dest=args.out, as_nbdev_test=args.as_nbdev_test)
