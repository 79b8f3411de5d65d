"""Generate the exercise notebooks, nbs/exercises/NN_name.ipynb, from the lessons' `#| exercise` cells.

    python tools/make_exercises.py             write nbs/exercises/ (`make exercises`)
    python tools/make_exercises.py --out DIR   write into DIR instead
    python tools/make_exercises.py --check     exit 1, naming the files, if nbs/exercises/ is not what would be written

The lesson notebook is the one source. In it, an exported cell becomes an exercise when a line `#| exercise` follows
its `#| export` line (nbdev drops unknown directives, so the library is unchanged):
  `#| exercise`            every top-level function in the cell is an exercise;
  `#| exercise m1 m2 ...`  in a class cell, the methods m1, m2, ... are (in a function cell: the functions named).
Each lesson with at least one exercise gets an exercise notebook of the same file name, built like this:
  - Prose and code stay. The `#| default_exp` cell goes, and so do the directives `#| export`, `#| exporti`,
    `#| exports` and `#| exercise`: an exercise notebook exports nothing (settings.ini has recursive = False, so
    nbdev ignores nbs/exercises/ anyway). Outputs, execution counts and metadata other than the kernel are dropped.
  - The title gets the prefix "Exercises:", and a cell after it explains how the exercises work.
  - In an exercise cell, each exercise keeps its signature, docstring and docments comments; its body becomes a
    `# TODO` comment and `pass`. The rest of the cell (in a class, the other methods) stays as the lesson has it.
    A short note goes before the cell; after it come the check (`check_<name>(<name>)` from mini_nn.check, where
    `<name>` is the function's name, or for a method `<class in lower case>_<method>`, called with the class), then
    a cell importing the library's version, so the rest of the notebook runs whether or not the learner's passes.
  - The lesson's own checks of the exercise are dropped: in the exercise's section (up to the next heading, the
    next exported cell or the next exercise), each code cell that uses a name the exercise cell defines, runs a test
    (`test_*`, `check_*`, `assert*`), shows nothing (its last statement is not an expression other than such a test),
    and defines nothing a later cell still reads. A markdown cell whose code cells were all dropped gets a note
    saying that the checker under the exercise takes their place.
"""
import argparse, ast, configparser, hashlib, itertools, re, sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
EXPORT_DIRECTIVES = {'export', 'exporti', 'exports', 'exercise', 'default_exp'}

TODOS = {  # what the TODO in each exercise's body says; an exercise not listed gets a generic one
    'matmul_loops': "compute a @ b with three nested Python loops, one multiply-add at a time. matmul_shapes(a, b) "
                    "checks the inputs and returns (m, k, n); zeros_product(a, b) gives zeros in the inputs' dtype.",
    'matmul_elementwise': "compute a @ b with two loops, over the rows of a and the columns of b: each entry of the result "
                          "is one elementwise product, summed. matmul_shapes and zeros_product help as before.",
    'matmul_broadcast': "compute a @ b with a single loop, over the rows of a: broadcasting does the work of the "
                        "other two loops (see the prose above). matmul_shapes and zeros_product help as before.",
    'storage_index': "return an int64 tensor of t's shape holding, for every element, the storage cell it lives in. "
                     "Only the layout matters: t.shape, t.stride() and t.storage_offset(). Check the input with _check_dense.",
    'broadcast_shapes': "apply the three rules and return the broadcast shape as a torch.Size; raise ValueError naming "
                        "the clash when the shapes do not broadcast. _as_shape(s) turns each argument into a tuple of sizes.",
    'kaiming_init': "return float32 weights of shape (n_in, n_out): standard normal numbers drawn from `generator`, "
                    "scaled for a layer followed by ReLU. init_scale and _check_int check the sizes.",
    'mse_grad': "set inp.g, the gradient of mse(inp, targ) with respect to inp; it has inp's shape, (n, 1). "
                "_check_loss_args('mse_grad', 'inp', inp, targ) checks the shapes first. Mind the batch of one.",
    'relu_grad': "set inp.g from out.g: the gradient passes where the input was positive, and is 0 elsewhere. "
                 "Keep out.g's dtype, and leave out.g itself unchanged.",
    'lin_grad': "set w.g and b.g from out.g, for out = inp @ w + b, and inp.g too unless inp_grad is False. Each "
                "gradient has the shape of its tensor.",
    'Relu.backward': "set self.inp.g from self.out.g, with the formula or with lesson 04's function. Start with "
                     "_check_called(self), so that a backward before any forward call fails clearly.",
    'Lin.backward': "set self.w.g and self.b.g from self.out.g, and self.inp.g unless inp_grad is False, with the "
                    "formulas or with lesson 04's function. Start with _check_called(self).",
    'Mse.backward': "set self.inp.g, the gradient of the loss with respect to the predictions, with the formula or "
                    "with lesson 04's function. Start with _check_called(self).",
}


def lib_name()->str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']['lib_name']


# ---- directives and exercise cells --------------------------------------------------------------------------------

_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)(.*)$')

def split_directives(source:str)->tuple:
    "The leading `#|` directives of a code cell as `{name: [args]}`, and the source with the export ones removed."
    lines, dirs, i = source.split('\n'), {}, 0
    kept = []
    while i < len(lines) and (m := _DIRECTIVE.match(lines[i])):
        name = m.group(1)
        dirs[name] = m.group(2).replace(':', ' ').split()
        if name not in EXPORT_DIRECTIVES: kept.append(lines[i])
        i += 1
    return dirs, '\n'.join(kept + lines[i:])


def exercises_in(code:str, args:list)->list:
    "The exercises in an exercise cell's `code`: `(id, node path)`, e.g. ('kaiming_init', ['kaiming_init']) or ('Lin.backward', ['Lin', 'backward'])."
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if classes and args:
        found = []
        for cls in classes:
            for m in cls.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name in args:
                    found.append((f"{cls.name}.{m.name}", [cls.name, m.name]))
        missing = set(args) - {p[-1] for _, p in found}
        if missing: raise SystemExit(f"#| exercise names methods that are not in the cell: {', '.join(sorted(missing))}")
        return found
    if classes and not funcs:
        raise SystemExit(f"#| exercise on the class {classes[0].name}: name the methods to write, e.g. `#| exercise backward`")
    chosen = [f for f in funcs if not args or f.name in args]
    if not chosen: raise SystemExit(f"#| exercise {' '.join(args)}: no such function in the cell")
    return [(f.name, [f.name]) for f in chosen]


def checker_name(ex_id:str)->str:
    "`check_<function>`, or for a method `check_<class in lower case>_<method>`."
    parts = ex_id.split('.')
    return 'check_' + ('_'.join([parts[0].lower()] + parts[1:]) if len(parts) > 1 else parts[0])


def _todo_lines(ex_id:str, indent:str, width:int=100)->list:
    text = TODOS.get(ex_id, f"write the body of {ex_id}; the check below says what is wrong, if anything.")
    words, lines, line = text.split(), [], 'TODO:'
    for w in words:
        if len(indent) + 2 + len(line) + 1 + len(w) > width: lines.append(line); line = '      ' + w
        else: line += ' ' + w
    lines.append(line)
    return [f"{indent}# {l}" for l in lines]


def stub(code:str, exercises:list)->str:
    "`code` with the body of each exercise replaced by its TODO and `pass`; signature, docstring and comments kept."
    lines = code.split('\n')
    tree = ast.parse(code)
    targets = []
    for ex_id, path in exercises:
        nodes = tree.body
        for name in path:
            node = next(n for n in nodes if getattr(n, 'name', None) == name)
            nodes = getattr(node, 'body', [])
        targets.append((ex_id, node))
    for ex_id, node in sorted(targets, key=lambda t: -t[1].lineno):  # bottom up, so line numbers stay valid
        body = node.body
        first = body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        keep = first.end_lineno if has_doc else first.lineno - 1
        if keep < node.lineno or (not has_doc and first.lineno == node.lineno) or (has_doc and len(body) > 1 and body[1].lineno == first.end_lineno):
            raise SystemExit(f"the exercise {ex_id} must have its body on lines of its own, below the signature and docstring")
        indent = ' ' * first.col_offset
        lines[keep:node.end_lineno] = _todo_lines(ex_id, indent) + [indent + 'pass']
    return '\n'.join(lines)


# ---- the lesson's own checks of an exercise ---------------------------------------------------------------------

def _is_test_call(node)->bool:
    f = node.func if isinstance(node, ast.Call) else None
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ''
    return name.startswith(('test_', 'check_', 'assert'))

def _top_assigned(tree)->set:
    "Names bound by the cell's top-level statements."
    names = set()
    for st in tree.body:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.add(st.name)
        elif isinstance(st, (ast.Import, ast.ImportFrom)): names |= {(a.asname or a.name).split('.')[0] for a in st.names}
        else:
            for n in ast.walk(st):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store): names.add(n.id)
    return names

def _loaded(tree)->set:
    "Every name the cell reads, inside functions too."
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}

def _free_loads(node)->set:
    "The names `node` reads from the notebook's namespace: a function's parameters and locals do not count."
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [v for v in (a.vararg, a.kwarg) if v]}
        body = node.body if isinstance(node.body, list) else [node.body]
        local = params | {n.id for b in body for n in ast.walk(b) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        outside = [d for d in a.defaults + a.kw_defaults if d] + getattr(node, 'decorator_list', [])
        return set().union(*map(_free_loads, body)) - local | set().union(*map(_free_loads, outside))
    if isinstance(node, ast.Name): return {node.id} if isinstance(node.ctx, ast.Load) else set()
    return set().union(*map(_free_loads, ast.iter_child_nodes(node)))

def _parse(cell):
    try: return ast.parse(cell.source) if cell.cell_type == 'code' else None
    except SyntaxError: return None  # magics and the like: never a check cell

def is_check_cell(tree, names:set)->bool:
    "A cell that uses one of `names`, runs a test and shows nothing."
    if tree is None or not tree.body or not (_loaded(tree) & names): return False
    if not any(isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and _is_test_call(n)) for n in ast.walk(tree)): return False
    last = tree.body[-1]
    return not isinstance(last, ast.Expr) or (isinstance(last.value, ast.Call) and _is_test_call(last.value))

def _is_heading(cell)->bool:
    return cell.cell_type == 'markdown' and any(re.match(r'#{1,6} ', l) for l in cell.source.split('\n'))

def check_cells(cells:list, start:int, names:set, is_boundary)->list:
    "Indices of the lesson's checks of the exercise in `cells[start]` (names: what that cell defines)."
    drop = []
    for i in range(start + 1, len(cells)):
        if _is_heading(cells[i]) or is_boundary(i): break
        if is_check_cell(_parse(cells[i]), names): drop.append(i)
    kept = lambda j: j not in drop
    for i in reversed(list(drop)):  # keep a check that defines something a later cell still reads
        for name in _top_assigned(_parse(cells[i])):
            for j in range(i + 1, len(cells)):
                tree = _parse(cells[j])
                if tree is None or not kept(j): continue
                if name in _top_assigned(tree): break  # rebound there: later cells read the new value
                if name in _free_loads(tree): drop.remove(i); break
            if i not in drop: break
    return drop


# ---- building an exercise notebook -----------------------------------------------------------------------------

def _md(text): return nbformat.v4.new_markdown_cell(text)
def _code(text): return nbformat.v4.new_code_cell(text)

def _names(items:list)->str:
    items = [f"`{i}`" for i in items]
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]

def intro(lesson:str, title:str, exercises:list)->str:
    ids = [e for e, _ in exercises]
    return (f"**This is the exercise version of the lesson [{title}](../{lesson}).** The prose and the experiments are the lesson's; "
            f"in {len(ids)} place{'s' if len(ids) > 1 else ''} you write the code: {_names(ids)}. Each exercise keeps "
            "its signature and docstring, and its body is a `# TODO` for you to replace. The cell under it runs a checker "
            "from `mini_nn.check`, which tries your code on a small case you can work out by hand first, then on harder "
            "ones, and says which case failed, what it expected, what it got, and the likely mistake.\n\n"
            "Until you write them, the checks fail: that is expected. The notebook still runs to the end, because after "
            "each check it switches to the library's version, so the rest of the lesson works either way. To check your "
            "code again, run your cell first, then the check.\n\n"
            "This notebook is generated from the lesson by `make exercises`, which overwrites it. To keep your work, "
            "save it under another name (File → Save Notebook As…).")

def exercise_note(ex_id:str)->str:
    if '.' in ex_id:
        cls, meth = ex_id.split('.')
        return (f"**Exercise: `{ex_id}`.** Write the body of `{meth}` in the class below; the rest of the class is the "
                f"lesson's and stays as it is. Then run the check under it: it builds a `{cls}` from your class, runs it "
                f"forward, calls your `{meth}` and compares what it sets with autograd's answer.")
    return (f"**Exercise: `{ex_id}`.** Write the body of `{ex_id}` below; its signature and docstring are given. "
            "Then run the check under it.")

def exercise_notebook(path:Path, lib:str)->nbformat.NotebookNode|None:
    "The exercise notebook for the lesson at `path`, or None if it has no exercise."
    lesson = nbformat.read(path, as_version=4)
    cells, module = lesson.cells, None
    parsed = []  # (cell, directives, code without export directives)
    for c in cells:
        if c.cell_type == 'code':
            dirs, code = split_directives(c.source)
            if 'default_exp' in dirs: module = dirs['default_exp'][0]
        else: dirs, code = {}, c.source
        parsed.append((c, dirs, code))
    ex_at = [i for i, (c, d, _) in enumerate(parsed) if 'exercise' in d]
    if not ex_at: return None
    if module is None: raise SystemExit(f"{path.name} has exercises but no `#| default_exp`")
    exported = {i for i, (c, d, _) in enumerate(parsed) if {'export', 'exporti', 'exports'} & set(d)}
    all_exercises, drop, plan = [], {}, {}  # drop: index of a lesson check -> the names its exercise cell defines
    for i in ex_at:
        c, dirs, code = parsed[i]
        exs = exercises_in(code, dirs['exercise'])
        defined = sorted({n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))},
                         key=code.index)
        for j in check_cells(cells, i, set(defined), lambda j, i=i: j in exported or j in ex_at): drop[j] = defined
        plan[i] = (exs, defined)
        all_exercises += exs
    out, titled = [], False
    for i, (c, dirs, code) in enumerate(parsed):
        if i in drop or 'default_exp' in dirs: continue
        if i in plan:
            exs, defined = plan[i]
            for ex_id, _ in exs: out.append(_md(exercise_note(ex_id)))
            out.append(_code(stub(code, exs)))
            for ex_id, p in exs:
                chk = checker_name(ex_id)
                out.append(_code(f"from {lib}.check import {chk}\n{chk}({p[0]})"))
            out.append(_md(f"Whatever the check said, from here on this notebook uses the library's {_names(defined)}, "
                           f"from `{lib}.{module}`, so that the rest of the lesson runs even while yours is unfinished."))
            out.append(_code(f"from {lib}.{module} import {', '.join(defined)}  # the library's version, from here on"))
            continue
        if c.cell_type == 'markdown':
            text = code
            if not titled and text.startswith('# '):
                out.append(_md('# Exercises: ' + text[2:]))
                out.append(_md(intro(path.name, text[2:].split('\n')[0].strip(), all_exercises)))
                titled = True
                continue
            following = list(itertools.takewhile(lambda j: cells[j].cell_type != 'markdown', range(i + 1, len(cells))))
            if following and all(j in drop for j in following):  # it introduced checks that are gone: say where they went
                text += (f"\n\n*In this exercise version, the check under your {_names(drop[following[0]])} "
                         "takes the place of the lesson's check here.*")
            out.append(_md(text))
        elif c.cell_type == 'code': out.append(_code(code))
        else: out.append(nbformat.v4.new_raw_cell(c.source))
    for j, cell in enumerate(out):  # ids that are the same on every run, so a regenerated notebook is byte-identical
        cell.id = hashlib.sha1(f"{path.name}/{j}".encode()).hexdigest()[:8]
    nb = nbformat.v4.new_notebook(cells=out)
    nb.metadata = {'kernelspec': lesson.metadata.get('kernelspec', {'display_name': 'python3', 'language': 'python', 'name': 'python3'})}
    nbformat.validate(nb)
    return nb


def generate(nbs:Path=ROOT/'nbs')->dict:
    "`{file name: notebook text}` for every lesson in `nbs` with exercises."
    lib, res = lib_name(), {}
    for p in sorted(nbs.glob('*.ipynb')):
        if p.name.startswith(('_', '.')): continue
        nb = exercise_notebook(p, lib)
        if nb is not None: res[p.name] = nbformat.writes(nb) + '\n'
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', type=Path, default=ROOT/'nbs'/'exercises', help='where to write (default: nbs/exercises)')
    ap.add_argument('--check', action='store_true', help='write nothing; exit 1 if the notebooks in --out are stale')
    args = ap.parse_args(argv)
    notebooks = generate()
    present = {p.name for p in args.out.glob('*.ipynb')} if args.out.exists() else set()
    stale = sorted(n for n, text in notebooks.items() if not (args.out/n).exists() or (args.out/n).read_text(encoding='utf-8') != text)
    extra = sorted(present - set(notebooks))
    if args.check:
        if stale or extra:
            print(f"{args.out} is not up to date with the lessons; run `make exercises`.", file=sys.stderr)
            for n in stale: print(f"  stale or missing: {n}", file=sys.stderr)
            for n in extra: print(f"  no lesson has exercises for: {n}", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n in stale: (args.out/n).write_text(notebooks[n], encoding='utf-8')
    for n in extra: (args.out/n).unlink()
    print(f"{len(notebooks)} exercise notebooks in {args.out}: {len(stale)} written, {len(extra)} removed")
    return 0


if __name__ == '__main__':
    sys.exit(main())
