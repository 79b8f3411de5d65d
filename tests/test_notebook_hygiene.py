"""Notebook hygiene: committed notebooks hold no errors, absolute paths or execution junk; every lesson runs, and
reproduces its outputs.

Every lesson notebook `nbdev_test` would test is executed ONCE per test session (conftest's `lesson_runs`), as
`nbdev_test` runs it (the cells it skips, `#| slow` (settings.ini `tst_flags`) and `#| eval: false`, are not run;
`IN_TEST=1`), top to bottom in a fresh kernel by tools/execute_nbs.py, the tool that computed the committed outputs,
with a copy of nbs/ as working directory. That one execution serves both checks: the notebook runs without an error
(what `nbdev_test` checks; `make test` does not run `nbdev_test` a second time), and each cell's outputs agree with
the committed ones (which `make export` computed in another fresh kernel): two runs agree, so results are seeded
and outputs current.

"Agree" is read as a reader would: after `nbdev_clean`'s cleaning, widget UUIDs and memory addresses normalised and
adjacent pieces of one output stream joined (the kernel may send one `print` in two), text (streams, text/plain with
tensors' reprs, markdown, HTML) is compared as words and numbers. Words and integers must be equal; whitespace
between them may differ (a tensor's column padding). Floats must agree within the relative tolerance of their dtype:
float32 (torch's default: tensors without a `dtype=`, and short Python floats or float32 numbers widened to Python
floats) 1e-5, float16/bfloat16 1e-2, float64 (tensors that say so, long Python floats that are no float32 number)
1e-12. Where a value is shown rounded (a tensor's 4 decimals, or any number of 4 or more significant digits) the two
shown values need only be roundings of numbers that agree: the last digit may land on either side of a rounding
boundary. A shorter number ('3.5', '0.82') is taken as exact. So a changed result, a missing or extra output and a
missing seed are caught, rounding noise of printed results is not (`test_the_comparison_*` show both), and noise
printed as such (an error of 4.7e-07) still is: show a bound. Images and widget views are compared exactly. Of a
cell with a `#| timing` directive only whether it shows something is compared (what it shows depends on the clock);
the cells nbdev_test skips are not compared.
"""
import ast
import json
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from execnb.nbio import NbCell
from nbdev.process import extract_directives

from conftest import ROOT, execute_nbs, lesson_notebooks

nbdev_test_plan = execute_nbs().nbdev_test_plan

NBS = ROOT/'nbs'
COMMITTED = sorted(NBS.glob('*.ipynb')) + sorted((NBS/'exercises').glob('*.ipynb'))
LESSONS = lesson_notebooks()  # what nbdev_test runs: nbs/*.ipynb

ABSOLUTE_PATH = re.compile(r'(?<![\w.~-])(/(?:work|root|home|tmp|Users|private|var/folders|opt|usr/local)/'
                           r'|[A-Za-z]:\\\\|site-packages)')

# normalisations of what legitimately differs between two runs
UUID = re.compile(r'\b[0-9a-f]{32}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b')
ADDRESS = re.compile(r'\b0x[0-9a-fA-F]{6,}\b')


def directives(cell)->set:
    "The names of the `#|` directives at the top of a code cell (a notebook's JSON), as nbdev reads them."
    return set(extract_directives(NbCell(0, cell), remove=False))


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


CLOCK = {'best_of_seconds', 'median_block_seconds', 'fastest_block_seconds', 'seconds', 'gflops', 'first_call', 'ladder',
         'backward_bench', 'backward_tricks', 'import_cost', 'perf_counter', 'timeit'}


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


@pytest.mark.parametrize('name', ['01_matmul.ipynb', '03_init.ipynb', '06_fast_matmul.ipynb', '08_bench.ipynb',
                                  '08a_backward_bench.ipynb'])
def test_timing_cells_are_marked(name):
    "Cells that measure time say so with `#| timing` (or are `#| slow`), or their outputs could never reproduce."
    cells = [c for c in load(NBS/name)['cells'] if c['cell_type'] == 'code']
    assert any('timing' in directives(c) for c in cells), f"{name} marks no cell `#| timing`"
    unmarked = [''.join(c['source'])[:200] for c in cells
                if calls_the_clock(''.join(c['source'])) and not directives(c) & {'timing', 'slow'}]
    assert not unmarked, f"{name}: cells timing code without a `#| timing` line:\n" + '\n---\n'.join(unmarked)


# ---- comparing outputs: words exactly, numbers within their dtype's tolerance ----------------------------------

RTOL = {'float16': 1e-2, 'bfloat16': 1e-2, 'float32': 1e-5, 'float64': 1e-12}
# a number: not glued to a word, another number or a version ('float32', '784x10', '2.13.0' stay words)
NUMBER = re.compile(r'(?<![\w.])(?:[-+]?(?:inf|nan)(?!\w)|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d))')
CONTAINER = re.compile(r'\b(?:np\.|numpy\.)?(float16|float32|float64|tensor|array)\(')
DTYPE = re.compile(r'dtype=(?:torch\.|np\.|numpy\.)?(float16|bfloat16|float32|float64|half|double|float)\b')
DTYPE_ALIASES = {'half': 'float16', 'float': 'float32', 'double': 'float64'}


def closing_paren(text:str, i:int)->int:
    "The index just past the parenthesis matching the one at `text[i]` (or the end of `text`)."
    depth = 0
    for j in range(i, len(text)):
        depth += {'(': 1, ')': -1}.get(text[j], 0)
        if depth == 0: return j + 1
    return len(text)


def dtype_spans(text:str)->list:
    "`(start, end, dtype)` of each tensor/array repr and numpy scalar in `text`: torch's default is float32, numpy's float64."
    spans = []
    for m in CONTAINER.finditer(text):
        end = closing_paren(text, m.end() - 1)
        kind = m.group(1)
        if kind in ('tensor', 'array'):
            d = DTYPE.search(text, m.end(), end)
            kind = DTYPE_ALIASES.get(d.group(1), d.group(1)) if d else 'float32' if kind == 'tensor' else 'float64'
        spans.append((m.start(), end, kind))
    return spans


def is_float32(x:float)->bool:
    try: return struct.unpack('f', struct.pack('f', x))[0] == x
    except OverflowError: return False


def significant_digits(s:str)->int: return len(re.sub(r'[eE].*', '', s).replace('.', '').lstrip('+-').lstrip('0'))


def tokens(text:str)->list:
    """`text` as words and numbers: `('w', words)` with whitespace collapsed, `('i', int)`, `('s', 'inf'|'-inf'|'nan')`,
    `('f', value, half a unit of its last shown digit, dtype)`."""
    spans, out, pos = dtype_spans(text), [], 0
    def words(s):
        s = ' '.join(s.split())
        if s: out.append(('w', s))
    for m in NUMBER.finditer(text):
        words(text[pos:m.start()]); pos = m.end()
        s = m.group(0)
        if s.lstrip('+-') in ('inf', 'nan'): out.append(('s', s.lstrip('+'))); continue
        mant, _, exp = s.lower().partition('e')
        if '.' not in mant and not exp: out.append(('i', int(s))); continue
        frac = mant.partition('.')[2]
        x = float(s)
        dtype = next((d for a, b, d in reversed(spans) if a <= m.start() < b), None)
        # A tensor shows its values rounded (to 4 decimals; '2.' when all are whole numbers: exact). Elsewhere a number
        # of 4 or more significant digits may be rounded too (f'{x:.4f}'); one of fewer digits is taken as exact: a
        # rounding boundary that close to it is too unlikely to excuse a changed '3.5' -> '3.6' (or '0.82' -> '0.83').
        rounded = (dtype is not None and not (mant.endswith('.') and not exp)) or (dtype is None and significant_digits(s) >= 4)
        half = 0.5 * 10.0 ** (int(exp or 0) - len(frac)) if rounded else 0.0
        if dtype is None:  # a Python float: a long one is float64 unless it is a float32 number widened
            dtype = 'float64' if significant_digits(s) >= 10 and not is_float32(x) else 'float32'
        out.append(('f', x, half, dtype))
    words(text[pos:])
    return out


def show(tok)->str:
    return repr(tok[1]) if tok[0] in 'wis' else f'{tok[1]!r} ({tok[3]})'


def token_differences(want:str, got:str)->list:
    "How text `got` differs from `want`: the first differing word or number and every number out of tolerance."
    a, b = tokens(want), tokens(got)
    probs = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x[0] != y[0] or (x[0] != 'f' and x[1] != y[1]):
            probs.append(f'{show(x)} became {show(y)}'); break
        if x[0] == 'f':
            tol = max(RTOL[x[3]], RTOL[y[3]]) * max(abs(x[1]), abs(y[1])) + x[2] + y[2]
            if not abs(x[1] - y[1]) <= tol: probs.append(f'{show(x)} became {show(y)}, more than {tol:.3g} apart')
    if not probs and len(a) != len(b):
        extra = (a if len(a) > len(b) else b)[min(len(a), len(b))]
        probs.append(f'{"committed" if len(a) > len(b) else "executed"} shows more, from {show(extra)}')
    return probs


def normalise(text:str)->str: return ADDRESS.sub('0x…', UUID.sub('<uuid>', text))


def as_text(v)->str: return ''.join(v) if isinstance(v, list) else v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def joined_streams(outputs:list)->list:
    """`outputs` with each run of adjacent stream outputs of one name joined into one, as a notebook shows them: the
    kernel sends what a cell prints in pieces, as its buffer is flushed (`print` writes the text, then the newline)."""
    out = []
    for o in outputs:
        if out and o['output_type'] == 'stream' and out[-1]['output_type'] == 'stream' and out[-1]['name'] == o['name']:
            out[-1] = {**out[-1], 'text': as_text(out[-1]['text']) + as_text(o['text'])}
        else: out.append(o)
    return out


def output_differences(want:list, got:list)->list:
    "How the outputs `got` of one cell differ from `want`: text compared as words and numbers, anything else exactly."
    want, got = joined_streams(want), joined_streams(got)
    if len(want) != len(got):
        kinds = lambda outs: [o.get('name', o['output_type']) for o in outs]
        return [f'{len(want)} outputs committed {kinds(want)}, {len(got)} executed {kinds(got)}']
    probs = []
    for n, (x, y) in enumerate(zip(want, got)):
        if x['output_type'] != y['output_type'] or x.get('name') != y.get('name'):
            probs.append(f"output {n}: {x.get('name', x['output_type'])} became {y.get('name', y['output_type'])}"); continue
        if x['output_type'] == 'stream': pairs = {'text': (x['text'], y['text'])}
        elif x['output_type'] == 'error': pairs = {'error': (f"{x['ename']}: {x['evalue']}", f"{y['ename']}: {y['evalue']}")}
        else:
            if set(x['data']) != set(y['data']):
                probs.append(f"output {n}: shown as {sorted(x['data'])}, executed as {sorted(y['data'])}"); continue
            pairs = {mime: (x['data'][mime], y['data'][mime]) for mime in x['data']}
        for mime, (u, v) in pairs.items():
            u, v = normalise(as_text(u)), normalise(as_text(v))
            if mime in ('text', 'error') or mime.startswith('text/'):
                probs += [f'output {n} ({mime}): {p}' for p in token_differences(u, v)]
            elif u != v: probs.append(f'output {n} ({mime}): differs')
    return probs


def clean(nb:dict)->dict:
    "`nb` cleaned as `nbdev_clean` cleans the committed notebooks (execution counts, metadata, ids in reprs)."
    from nbdev.clean import clean_nb
    clean_nb(nb, clear_all=False, clean_ids=True)
    return nb


def differences(want:dict, got:dict, skipped=())->list:
    """How the outputs of `got` differ from those of `want`, cell by cell; cells `skipped` left out, and of a `#| timing`
    cell only whether it shows something (what it shows depends on the clock)."""
    if len(want['cells']) != len(got['cells']): return [f"{len(want['cells'])} cells committed, {len(got['cells'])} executed"]
    probs = []
    for i, (c, e) in enumerate(zip(want['cells'], got['cells'])):
        if c['cell_type'] != 'code' or i in skipped: continue
        if 'timing' in directives(c):
            diff = [] if bool(c.get('outputs')) == bool(e.get('outputs')) else \
                [f"a timing cell: {'no output' if not c.get('outputs') else 'an output'} committed, "
                 f"{'none' if not e.get('outputs') else 'an output'} executed"]
        else: diff = output_differences(c.get('outputs', []), e.get('outputs', []))
        if diff:
            src = ''.join(c['source'])
            probs.append(f"cell {i} ({src[:70]!r}{'...' if len(src) > 70 else ''}):\n    " + '\n    '.join(diff[:5]))
    return probs


# ---- executing the lesson notebooks: once, for nbdev_test's check and for the reproduction -------------------

NOTEBOOKS = [pytest.param(p, id=p.name) for p in LESSONS]  # one group per notebook: both its tests share its execution


@pytest.mark.parametrize('path', NOTEBOOKS)
def test_lesson_runs_as_nbdev_test_runs_it(path, lesson_runs):
    "What `nbdev_test` checks: the notebook runs top to bottom without an error (its cells `#| slow` are not run)."
    if not nbdev_test_plan(path)[0]: pytest.skip(f'nbdev_test does not run {path.name} (skip_exec)')
    got, error = lesson_runs(path)
    assert got is not None, f"{path.name} fails to run top to bottom in a fresh kernel:\n{error}"


@pytest.mark.parametrize('path', NOTEBOOKS)
def test_lesson_reproduces_its_committed_outputs(path, lesson_runs):
    runs, skipped = nbdev_test_plan(path)
    if not runs: pytest.skip(f'nbdev_test does not run {path.name} (skip_exec)')
    got, error = lesson_runs(path)
    if got is None: pytest.fail(f"{path.name} does not run (see test_lesson_runs_as_nbdev_test_runs_it), so it cannot reproduce")
    committed = load(path)
    run_cells = [i for i, c in enumerate(committed['cells']) if c['cell_type'] == 'code' and i not in skipped]
    if not any(committed['cells'][i].get('outputs') for i in run_cells) and any(got['cells'][i].get('outputs') for i in run_cells):
        pytest.fail(f"{path.name} is committed without outputs: run `make export` and commit the notebooks")
    diff = differences(committed, clean(got), skipped)
    assert not diff, (f"{path.name}: outputs differ from the committed ones (a missing seed? printed rounding noise? "
                      f"run `make export`):\n" + '\n'.join(diff))


# ---- the comparison's self-test ---------------------------------------------------------------------------

def synthetic(*cells)->dict:
    return {'cells': [{'cell_type': 'code', 'id': f'c{i}', 'source': s, 'metadata': {}, 'outputs': o, 'execution_count': None}
                      for i, (s, o) in enumerate(cells)],
            'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}


def stdout(text): return [{'output_type': 'stream', 'name': 'stdout', 'text': text}]
def result(text): return [{'output_type': 'execute_result', 'data': {'text/plain': text}, 'metadata': {}}]


def test_the_comparison_reads_numbers_by_their_dtype():
    same = lambda a, b: token_differences(a, b) == []
    # float32: torch's 4 shown decimals may round either way; a widened float32 may move by float32 rounding
    assert same('tensor([ 0.1235, -0.0000,  2.5000])', 'tensor([0.1234, 0.0000, 2.5000])')
    assert same('0.30000001192092896', '0.3000001311302185')
    assert same('tensor([1.0000e-03, 2.5000e+02])', 'tensor([1.0001e-03, 2.5000e+02])')
    assert same('tensor([[1., 2.],\n        [3., 4.]])', 'tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])')
    assert not same('tensor([0.1235, 2.5000])', 'tensor([0.1237, 2.5000])')  # two units of the last digit
    assert not same('tensor([1., 2.])', 'tensor([1., 3.])')                  # whole numbers are exact
    assert not same('0.30000001192092896', '0.30002', )
    # float64: a tensor that says so, a long Python float that is no float32 number
    assert same('tensor([0.1235], dtype=torch.float64)', 'tensor([0.1234], dtype=torch.float64)')
    assert same('0.1', '0.1') and same('0.30000000000000004', '0.3000000000000001')
    assert not same('0.30000000000000004', '0.3000000000004')
    assert not same('(4.76837158203125e-07, 3.122502256758253e-17)', '(1.0728836059570312e-06, 0.0)')  # noise is caught
    # integers, words, inf/nan exactly; whitespace between them is free
    assert not same('12 of 50 layers', '13 of 50 layers') and not same('torch.float32', 'torch.float64')
    assert not same('inf', 'nan') and not same('tensor([1, 2])', 'tensor([1, 2, 3])') and not same('True', 'False')
    assert same('(3,  4)', '(3, 4)') and same('shape 784x10, version 2.13.0', 'shape 784x10,  version 2.13.0')
    assert not same('784x10', '784x11') and not same('2.13.0', '2.13.1')
    assert same('err < 1e-5: True', 'err < 1e-5: True') and not same('3.', '4.')
    # outside a tensor: 4 or more significant digits may round either way, fewer are exact
    assert same('mean 0.1235', 'mean 0.1234') and same('12.35 ms', '12.34 ms') and not same('12.35', '12.33')
    assert not same('3.5', '3.6') and not same('0.82', '0.83') and not same('1e-05', '2e-05')


def test_the_comparison_can_fail():
    "A changed number or word, a missing or an extra output are caught; UUIDs, addresses and timing cells are not."
    base = synthetic(('print(1)', stdout('1 and 0.5\n')), ('#| timing\nt()', stdout('3 ms\n')),
                     ('w', stdout('<W at 0x7f00aa11bb22> ' + 'ab' * 16)), ('x.sum()', result('tensor(0.2500)')))
    same = synthetic(('print(1)', stdout('1 and 0.5\n')), ('#| timing\nt()', stdout('9 ms\n')),
                     ('w', stdout('<W at 0x7f99cc00dd33> ' + 'cd' * 16)), ('x.sum()', result('tensor(0.2501)')))
    assert differences(base, same) == []
    for cell, outputs in [(0, stdout('2 and 0.5\n')), (0, stdout('1 and 0.7\n')), (0, stdout('1 or 0.5\n')),
                          (3, result('tensor(0.2600)')), (3, []), (3, result('tensor(0.2500)') * 2), (3, stdout('0.25'))]:
        changed = json.loads(json.dumps(base))
        changed['cells'][cell]['outputs'] = outputs
        assert len(differences(base, changed)) == 1, (cell, outputs)
        assert len(differences(changed, base)) == 1, (cell, outputs)
    assert differences(base, synthetic(('print(1)', stdout('1\n')))) == ['4 cells committed, 1 executed']
    split = json.loads(json.dumps(base))  # one print sent in two pieces reads the same; a changed piece does not
    split['cells'][0]['outputs'] = stdout('1 and 0.5') + stdout('\n')
    assert differences(base, split) == [] and differences(split, base) == []
    split['cells'][0]['outputs'] = stdout('1 and 0.7') + stdout('\n')
    assert len(differences(base, split)) == 1
    no_timing_output = json.loads(json.dumps(base))
    no_timing_output['cells'][1]['outputs'] = []
    assert len(differences(no_timing_output, same)) == 1  # a timing cell committed without its output
    assert differences(base, same, skipped={0}) == [] and differences(base, changed, skipped={3}) == []


SELF_TEST = [  # a tiny lesson: an unseeded draw, a seeded one, float32 arithmetic, an integer, a print, a timing
    'import torch, time',
    'torch.randn(3)',
    'torch.manual_seed(0)\ntorch.randn(3)',
    'x = torch.linspace(0, 1, 7)\nx.sum().item(), x.mean(), (x * 3).tolist()[:2]',
    '2 + 2',
    "print('done')",
    '#| timing\ntime.perf_counter()',
    '#| slow\nraise RuntimeError("a slow cell is not run")',
]


def test_the_comparison_catches_a_changed_number_a_missing_output_and_a_missing_seed_in_executed_notebooks(
        tmp_path, kernel_manager_class):
    "The same tiny notebook executed twice by the lessons' executor: only the unseeded cell differs, and edits are caught."
    src = tmp_path/'selftest.ipynb'
    src.write_text(json.dumps(synthetic(*[(s, []) for s in SELF_TEST])))
    def execute(n):
        out = tmp_path/f'run{n}.ipynb'
        execute_nbs().execute(src, cwd=tmp_path, dest=out, as_nbdev_test=True, kernel_manager_class=kernel_manager_class)
        return clean(load(out))
    with ThreadPoolExecutor(2) as pool: first, second = pool.map(execute, [1, 2])
    skipped = nbdev_test_plan(src)[1]
    assert skipped == {7} and first['cells'][7]['outputs'] == []  # `#| slow` is not run, as nbdev_test does not run it
    diff = differences(first, second, skipped)
    assert len(diff) == 1 and diff[0].startswith("cell 1 ('torch.randn(3)')"), diff  # the missing seed
    seeded = json.loads(json.dumps(first))
    seeded['cells'][1]['outputs'] = second['cells'][1]['outputs']
    assert differences(seeded, second, skipped) == []  # seeded draws, float32 sums, ints, prints and timings agree
    changed = json.loads(json.dumps(seeded))
    text = changed['cells'][3]['outputs'][0]['data']['text/plain']
    changed['cells'][3]['outputs'][0]['data']['text/plain'] = re.sub(r'3\.5', '3.6', as_text(text), count=1)
    assert '3.6' in as_text(changed['cells'][3]['outputs'][0]['data']['text/plain'])
    assert [d[:7] for d in differences(changed, second, skipped)] == ['cell 3 ']  # a changed number
    missing = json.loads(json.dumps(seeded))
    missing['cells'][5]['outputs'] = []
    assert [d[:7] for d in differences(missing, second, skipped)] == ['cell 5 ']  # a missing output
