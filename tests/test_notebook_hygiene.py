"""Notebook hygiene: committed notebooks hold no errors, absolute paths or execution junk, and reproduce their outputs.

Every lesson notebook (nbs/*.ipynb) is executed once, top to bottom in a fresh kernel (cwd: a copy of nbs/, as
tools/execute_nbs.py does with nbs/), two at a time, and each cell's outputs must equal the committed ones after
`nbdev_clean`'s cleaning and the normalisation below (widget UUIDs, memory addresses). Not compared: cells with a
`#| timing` directive (their output depends on the clock) and `#| slow` cells, which are not run, as in
`nbdev_test`. Executing once and comparing with the committed outputs (which `make export` computed in another
fresh kernel) shows that two runs agree, at half the cost of running twice: about 40 s on 2 cores.
"""
import ast
import json
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, run

NBS = ROOT/'nbs'
COMMITTED = sorted(NBS.glob('*.ipynb')) + sorted((NBS/'exercises').glob('*.ipynb'))
LESSONS = sorted(NBS.glob('*.ipynb'))

ABSOLUTE_PATH = re.compile(r'(?<![\w.~-])(/(?:work|root|home|tmp|Users|private|var/folders|opt|usr/local)/'
                           r'|[A-Za-z]:\\\\|site-packages)')
DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)')

# normalisations of what legitimately differs between two runs
UUID = re.compile(r'\b[0-9a-f]{32}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b')
ADDRESS = re.compile(r'\b0x[0-9a-fA-F]{6,}\b')


def directives(cell)->set:
    "The names of the `#|` directives at the top of a code cell."
    names = set()
    for line in ''.join(cell['source']).splitlines():
        m = DIRECTIVE.match(line)
        if not m: break
        names.add(m.group(1))
    return names


def load(path:Path)->dict: return json.loads(path.read_text())


def rel(path:Path)->str: return str(path.relative_to(ROOT))


def text_of(output)->str:
    "Everything an output shows, as one string."
    return json.dumps({k: v for k, v in output.items() if k != 'metadata'}, ensure_ascii=False)


# ---- static checks of the committed files --------------------------------------------------------------------

@pytest.mark.parametrize('path', COMMITTED, ids=rel)
def test_committed_notebook_holds_no_errors(path):
    bad = []
    for i, cell in enumerate(load(path)['cells']):
        for o in cell.get('outputs', []):
            if o['output_type'] == 'error':
                bad.append(f"cell {i}: {o['ename']}: {o['evalue']}")
            elif o['output_type'] == 'stream' and o['name'] == 'stderr' and 'Traceback' in ''.join(o['text']):
                bad.append(f"cell {i}: a traceback on stderr")
    assert not bad, f"{rel(path)} was committed with errors in its outputs:\n" + '\n'.join(bad)


@pytest.mark.parametrize('path', COMMITTED, ids=rel)
def test_committed_notebook_holds_no_absolute_paths(path):
    nb = load(path)
    places = [('metadata', json.dumps(nb['metadata']))]
    for i, cell in enumerate(nb['cells']):
        places.append((f'cell {i} source', ''.join(cell['source'])))
        places += [(f'cell {i} output', text_of(o)) for o in cell.get('outputs', [])]
        places += [(f'cell {i} attachments', json.dumps(cell.get('attachments', {})))]
    bad = [f"{where}: {m.group(0)!r} in ...{text[max(0, m.start() - 40):m.end() + 40]!r}..."
           for where, text in places for m in [ABSOLUTE_PATH.search(text)] if m]
    assert not bad, f"{rel(path)} holds machine-specific paths:\n" + '\n'.join(bad)


@pytest.mark.parametrize('path', COMMITTED, ids=rel)
def test_committed_notebook_holds_no_execution_junk(path):
    nb = load(path)
    bad = [f"notebook metadata {k!r}" for k in nb['metadata'] if k not in ('kernelspec', 'widgets')]
    for i, cell in enumerate(nb['cells']):
        if cell.get('execution_count') is not None: bad.append(f"cell {i}: execution_count {cell['execution_count']}")
        bad += [f"cell {i}: metadata {k!r}" for k in cell.get('metadata', {}) if k != 'hide_input']
        for o in cell.get('outputs', []):
            if o.get('execution_count') is not None: bad.append(f"cell {i}: an output's execution_count")
        if cell['cell_type'] == 'code' and not ''.join(cell['source']).strip():
            bad.append(f"cell {i}: an empty code cell")
        if cell['cell_type'] != 'code' and 'outputs' in cell: bad.append(f"cell {i}: outputs in a {cell['cell_type']} cell")
    widgets = nb['metadata'].get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {}).get('state', {})
    shown = {o['data']['application/vnd.jupyter.widget-view+json']['model_id']
             for c in nb['cells'] for o in c.get('outputs', []) if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})}
    if shown - set(widgets): bad.append(f"widget views without stored state: {sorted(shown - set(widgets))[:3]}")
    assert not bad, f"{rel(path)} holds stale execution data (run `make export`):\n" + '\n'.join(bad)


CLOCK = {'seconds_per_call', 'seconds', 'gflops', 'first_call', 'ladder', 'perf_counter', 'timeit', 'interleaved_seconds'}


def calls_the_clock(src:str)->bool:
    "Whether code run at the top level of a cell (not inside a def or class) calls one of the CLOCK functions."
    try: tree = ast.parse(src)
    except SyntaxError: return bool(re.search(r'%%?timeit', src))
    todo = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))]
    for node in todo:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                f = sub.func
                if (f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None) in CLOCK: return True
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ('time', 'timeit'): return True
    return False


@pytest.mark.parametrize('name', ['01_matmul.ipynb', '03_init.ipynb', '06_fast_matmul.ipynb'])
def test_timing_cells_are_marked(name):
    "Cells that measure time say so with `#| timing` (or are `#| slow`), or their outputs could never reproduce."
    cells = [c for c in load(NBS/name)['cells'] if c['cell_type'] == 'code']
    assert any('timing' in directives(c) for c in cells), f"{name} marks no cell `#| timing`"
    unmarked = [''.join(c['source'])[:200] for c in cells
                if calls_the_clock(''.join(c['source'])) and not directives(c) & {'timing', 'slow'}]
    assert not unmarked, f"{name}: cells timing code without a `#| timing` line:\n" + '\n---\n'.join(unmarked)


# ---- executing the lesson notebooks ------------------------------------------------------------------------

EXECUTE = '''
import sys, nbformat
from nbclient import NotebookClient
src, dest, cwd = sys.argv[1:]
nb = nbformat.read(src, as_version=4)
for cell in nb.cells:  # `#| slow` cells are skipped, as nbdev_test skips them
    if cell.cell_type == 'code' and any(l.strip().replace(' ', '') == '#|slow' for l in cell.source.splitlines()[:5]):
        cell.source = 'pass  # slow: not run'
NotebookClient(nb, timeout=600, kernel_name='python3', store_widget_state=True, resources={'metadata': {'path': cwd}}).execute()
nbformat.write(nb, dest)
'''


def execute_all(paths:list, dest:Path, workers:int=2)->dict:
    "Execute copies of `paths` in `dest` (a copy of nbs/, also their cwd), `workers` at a time; name -> executed notebook."
    work = dest/'nbs'
    shutil.copytree(NBS, work)
    def one(p):
        out = dest/f'executed_{p.name}'
        res = run(sys.executable, '-c', EXECUTE, work/p.name, out, work, check=False)
        return p.name, (load(out) if res.returncode == 0 else res.stderr[-3000:])
    with ThreadPoolExecutor(workers) as pool: return dict(pool.map(one, paths))


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
    return execute_all(LESSONS, tmp_path_factory.mktemp('executed'))


def clean(nb:dict)->dict:
    "`nb` cleaned as `nbdev_clean` cleans the committed notebooks (execution counts, metadata, ids in reprs)."
    from nbdev.clean import clean_nb
    clean_nb(nb, clear_all=False, clean_ids=True)
    return nb


def normalise(text:str)->str: return ADDRESS.sub('0x…', UUID.sub('<uuid>', text))


def comparable(nb:dict)->list:
    "Per code cell: `None` when not compared (timing, slow), else its outputs as normalised text."
    cells = []
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        if directives(cell) & {'timing', 'slow'} or cell['source'] in ('pass  # slow: not run', ['pass  # slow: not run']):
            cells.append(None); continue
        outs = []
        for o in cell.get('outputs', []):
            o = {k: v for k, v in o.items() if k not in ('execution_count', 'metadata', 'transient')}
            outs.append(normalise(json.dumps(o, sort_keys=True, ensure_ascii=False)))
        cells.append(outs)
    return cells


def differences(want:dict, got:dict)->list:
    "How the outputs of `got` differ from those of `want`, cell by cell (timing and slow cells left out)."
    a, b = comparable(want), comparable(got)
    if len(a) != len(b): return [f"{len(a)} code cells committed, {len(b)} executed"]
    srcs = [''.join(c['source']) for c in want['cells'] if c['cell_type'] == 'code']
    return [f"code cell {i} ({srcs[i][:60]!r}...):\n  committed: {str(x)[:300]}\n  executed:  {str(y)[:300]}"
            for i, (x, y) in enumerate(zip(a, b)) if x is not None and y is not None and x != y]


@pytest.mark.parametrize('path', LESSONS, ids=lambda p: p.name)
def test_lesson_runs_in_a_fresh_kernel_and_reproduces_its_committed_outputs(path, executed):
    got = executed[path.name]
    assert isinstance(got, dict), f"{path.name} fails to run top to bottom in a fresh kernel:\n{got}"
    errors = [o for c in got['cells'] for o in c.get('outputs', []) if o['output_type'] == 'error']
    assert not errors, f"{path.name} shows errors when executed: {errors[:1]}"
    committed = load(path)
    if not any(c.get('outputs') for c in committed['cells'] if c['cell_type'] == 'code' and not directives(c) & {'timing', 'slow'}) \
            and any(c.get('outputs') for c in got['cells']):
        pytest.fail(f"{path.name} is committed without outputs: run `make export` and commit the notebooks")
    diff = differences(committed, clean(got))
    assert not diff, f"{path.name}: outputs differ from the committed ones (missing seed? run `make export`):\n" + '\n'.join(diff)


def test_the_comparison_can_fail():
    "A changed output, an extra output and a missing seed are caught; UUIDs, addresses and timing cells are not."
    def nb(*cells): return {'cells': [{'cell_type': 'code', 'source': s, 'metadata': {}, 'outputs': o} for s, o in cells]}
    out = lambda text: [{'output_type': 'stream', 'name': 'stdout', 'text': text}]
    base = nb(('print(1)', out('1\n')), ('#| timing\nt()', out('3 ms\n')), ('w', out('<W at 0x7f00aa11bb22> ' + 'ab' * 16)))
    same = nb(('print(1)', out('1\n')), ('#| timing\nt()', out('9 ms\n')), ('w', out('<W at 0x7f99cc00dd33> ' + 'cd' * 16)))
    assert differences(base, same) == []
    changed = nb(('print(1)', out('2\n')), ('#| timing\nt()', out('3 ms\n')), ('w', out('<W at 0x7f00aa11bb22> ' + 'ab' * 16)))
    assert len(differences(base, changed)) == 1
    assert differences(base, nb(('print(1)', out('1\n')))) == ['3 code cells committed, 1 executed']
