"""Generate the exercise notebooks, nbs/exercises/NN_name.ipynb, from the lessons' `#| exercise` cells.

    python tools/make_exercises.py             write nbs/exercises/ (`make exercises`)
    python tools/make_exercises.py --out DIR   write into DIR instead
    python tools/make_exercises.py --check     exit 1, naming the files, if nbs/exercises/ is not what would be written

The lesson notebook is the one source. Two directives mark what the exercise version changes; nbdev reads them (its
`NBProcessor` calls the `_exercise_` and `_exercise_check_` methods of the processor below, as it calls `_export_` for
`#| export`), and nbdev's exporter ignores them, so the library is unchanged:
  `#| exercise`             (after `#| export`) every top-level function in the cell is an exercise;
  `#| exercise m1 m2 ...`   in a class cell, the methods m1, m2, ... are (in a function cell: the functions named);
  `#| exercise_check`       (first line) this cell tests an exercise: the exercise notebook drops it, because the
                            checker under the exercise takes its place. Nothing else is dropped: no cell is guessed.
Each lesson with at least one exercise gets an exercise notebook of the same file name, built like this:
  - Prose and code stay, without their directives: an exercise notebook exports nothing (settings.ini has
    recursive = False, so nbdev ignores nbs/exercises/). The `#| default_exp` cell goes. Outputs, execution counts
    and metadata other than the kernel are dropped.
  - The title gets the prefix "Exercises:", and a cell after it explains how the exercises work.
  - In an exercise cell, each exercise keeps its decorators (the `@expects` declaration of what it accepts),
    signature, docstring and docments comments; its body becomes a `# TODO` saying what to compute, and `pass`.
    The rest of the cell stays as the lesson has it. A short note goes before the cell; after it come the check
    (`check_<name>(<name>)` from mini_nn.check, `<name>` the function, or for a method `check_<class>_<method>` in
    lower case, called with the class), then a cell that keeps the learner's version if it passes its check and
    otherwise imports the library's, so the rest of the notebook runs either way.
  - A markdown cell whose code cells were all `#| exercise_check` cells gets a note saying the checker took their place.
A kept cell that reads a name only a dropped cell defines would fail in the exercise notebook: the script warns, naming
both cells, so that the lesson can mark the cell too or define the name elsewhere.
"""
import argparse, ast, configparser, hashlib, sys, textwrap
from pathlib import Path

import nbformat
from nbdev.process import NBProcessor

ROOT = Path(__file__).resolve().parent.parent

TODOS = {  # what the TODO in each exercise's body asks for: what to compute, never how; a missing one gets a generic TODO
    'matmul_loops': "return a @ b, computed with three nested Python loops, one multiply-add at a time. The result has "
                    "the inputs' dtype.",
    'matmul_elementwise': "return a @ b with two Python loops, over the rows of a and the columns of b: each entry of the "
                          "result in one go.",
    'matmul_broadcast': "return a @ b with a single Python loop, over the rows of a: broadcasting does the work of the "
                        "other two loops.",
    'storage_index': "return an int64 tensor of t's shape holding, for every element, the number of the storage cell it "
                     "lives in. Only t's layout matters: its shape, strides and storage offset.",
    'broadcast_shapes': "return the shape these shapes broadcast to, by the three rules, as a torch.Size; raise "
                        "ValueError when they do not broadcast.",
    'kaiming_init': "return float32 weights of shape (n_in, n_out): normal random numbers drawn from generator, scaled "
                    "for a layer followed by ReLU.",
    'mse_grad': "set inp.g, the gradient of mse(inp, targ) with respect to inp, shaped like inp. Mind the batch of one.",
    'relu_grad': "set inp.g from out.g, the gradient of the loss with respect to relu's output. Keep out.g's dtype, and "
                 "leave out.g as it is.",
    'lin_grad': "set inp.g, w.g and b.g from out.g, for out = inp @ w + b. Each gradient has the shape of its tensor.",
    'forward_and_backward': "run the network forward to the loss, keeping each step's result, then backward with the "
                            "gradient functions above, so that inp.g, w1.g, b1.g, w2.g and b2.g are set. Return the loss.",
    'Relu.backward': "set self.inp.g from self.out.g.",
    'Lin.backward': "set self.inp.g, self.w.g and self.b.g from self.out.g.",
    'Mse.backward': "set self.inp.g, the gradient of the loss with respect to the predictions self.inp.",
    'Model.backward': "run the backward pass through the loss and the layers, so that the .g of the input, every weight "
                      "and every bias of the last call is set.",
    'sgd_step': "move every tensor p in params a step of size lr against its gradient p.g, changing p itself: the model "
                "holds these very tensors.",
    'cross_entropy_grad': "set logits.g, the gradient of cross_entropy(logits, targ) with respect to logits, shaped like logits.",
}


def lib_name()->str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']['lib_name']


# ---- an exercise cell's exercises and their stubs ----------------------------------------------------------------

def exercises_in(code:str, names:tuple)->list:
    "The exercises in an exercise cell's `code`: `(id, node path)`, e.g. ('kaiming_init', ['kaiming_init']) or ('Lin.backward', ['Lin', 'backward'])."
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if classes and names:
        found = [(f"{c.name}.{m.name}", [c.name, m.name]) for c in classes for m in c.body
                 if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name in names]
        missing = set(names) - {p[-1] for _, p in found}
        if missing: raise SystemExit(f"#| exercise names methods that are not in the cell: {', '.join(sorted(missing))}")
        return found
    if classes and not funcs:
        raise SystemExit(f"#| exercise on the class {classes[0].name}: name the methods to write, e.g. `#| exercise backward`")
    chosen = [f for f in funcs if not names or f.name in names]
    if not chosen: raise SystemExit(f"#| exercise {' '.join(names)}: no such function in the cell")
    return [(f.name, [f.name]) for f in chosen]


def checker_name(ex_id:str)->str:
    "`check_<function>`, or for a method `check_<class in lower case>_<method>`."
    return 'check_' + ex_id.replace('.', '_').lower() if '.' in ex_id else 'check_' + ex_id


def _todo(ex_id:str, indent:str, width:int=100)->list:
    "The TODO comment for `ex_id`, wrapped at `width`."
    text = TODOS.get(ex_id, f"write the body of {ex_id}; the check below says what is wrong, if anything.")
    return textwrap.wrap(text, width, initial_indent=f"{indent}# TODO: ", subsequent_indent=f"{indent}#       ")


def stub(code:str, exercises:list)->str:
    "`code` with the body of each exercise replaced by its TODO and `pass`; decorators, signature, docstring and comments kept."
    lines, tree = code.split('\n'), ast.parse(code)
    targets = []
    for ex_id, path in exercises:
        nodes = tree.body
        for name in path:
            node = next(n for n in nodes if getattr(n, 'name', None) == name)
            nodes = getattr(node, 'body', [])
        targets.append((ex_id, node))
    for ex_id, node in sorted(targets, key=lambda t: -t[1].lineno):  # bottom up, so line numbers stay valid
        first = node.body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
        rest = node.body[1:] if has_doc else node.body
        if not rest or rest[0].lineno <= (first.end_lineno if has_doc else node.lineno):
            raise SystemExit(f"the exercise {ex_id} must have its body on lines of its own, below the signature and docstring")
        indent = ' ' * rest[0].col_offset
        lines[rest[0].lineno - 1:node.end_lineno] = _todo(ex_id, indent) + [indent + 'pass']
    return '\n'.join(lines)


# ---- the texts around an exercise --------------------------------------------------------------------------------

def _names(items:list)->str:
    items = [f"`{i}`" for i in items]
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]

def intro(lesson:str, title:str, exercises:list)->str:
    count = ['one', 'two', 'three', 'four', 'five', 'six'][len(exercises) - 1] if len(exercises) <= 6 else str(len(exercises))
    return (f"**This is the exercise version of the lesson [{title}](../{lesson}).** The prose and the experiments are the "
            f"lesson's; in {count} place{'s' * (len(exercises) > 1)} you write the code: {_names(exercises)}. Each "
            "exercise keeps its signature, its docstring and the `@expects` line that declares what it accepts (the "
            "declaration checks the inputs, so your code need not); its body is a `# TODO` for you to replace. The cell "
            "under it runs a checker from `mini_nn.check`, which tries your code on a list of cases, from easy to hard, "
            "and shows a verdict: how many cases pass, why the first failing one fails, the likely mistake, and what "
            "already works.\n\n"
            "Until you write them, the checks fail: that is expected. The notebook still runs to the end: after each "
            "check, the next cell keeps your version if it passes and otherwise switches to the library's, so the rest of "
            "the lesson works either way. To check your code again, run your cell first, then the check.\n\n"
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

def switch_note(objs:list, lib:str, module:str)->str:
    return (f"If your {_names(objs)} passes its check, the rest of the notebook uses it. Until it does, the next cell "
            f"switches to the library's, from `{lib}.{module}`, so that the rest of the lesson runs.")

def switch_code(by_obj:dict, lib:str, module:str)->str:
    "`if not check(obj): from lib.module import obj`, one line per object."
    lines = []
    for obj, checkers in by_obj.items():
        test = ' and '.join(f"{c}({obj})" for c in checkers)
        lines.append(f"if not {'(' + test + ')' if len(checkers) > 1 else test}: from {lib}.{module} import {obj}  # the library's until yours passes")
    return '\n'.join(lines)


# ---- names a dropped check defines --------------------------------------------------------------------------------

_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

def _bound(node)->set:
    "Names a cell binds in the notebook's namespace: assignments, `for` and `with` targets, definitions and imports."
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): return {node.name}
    if isinstance(node, _SCOPES): return set()  # their names are their own
    if isinstance(node, ast.Name): return {node.id} if isinstance(node.ctx, ast.Store) else set()
    if isinstance(node, (ast.Import, ast.ImportFrom)): return {(a.asname or a.name).split('.')[0] for a in node.names}
    return set().union(*map(_bound, ast.iter_child_nodes(node)))

def _free_loads(node)->set:
    "The names `node` reads from the notebook's namespace: a function's parameters and locals do not count."
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [v for v in (a.vararg, a.kwarg) if v]}
        body = node.body if isinstance(node.body, list) else [node.body]
        local = params | {n.id for b in body for n in ast.walk(b) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        outside = [d for d in a.defaults + a.kw_defaults if d] + getattr(node, 'decorator_list', [])
        return set().union(*map(_free_loads, body)) - local | set().union(*map(_free_loads, outside))
    if isinstance(node, _SCOPES[1:]):  # a comprehension's targets are its own
        local = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        return set().union(*map(_free_loads, ast.iter_child_nodes(node))) - local
    if isinstance(node, ast.Name): return {node.id} if isinstance(node.ctx, ast.Load) else set()
    return set().union(*map(_free_loads, ast.iter_child_nodes(node)))

def _tree(cell):
    try: return ast.parse(cell.source) if cell.cell_type == 'code' and cell.source is not None else None
    except SyntaxError: return None  # magics and the like


# ---- the processor -------------------------------------------------------------------------------------------------

class Exercises:
    "An nbdev processor that turns a lesson into its exercise notebook: `#| exercise` cells become stubs with their checks."
    def __init__(self, lesson:str, lib:str):
        self.lesson, self.lib, self.module, self.exercises, self.title, self.warnings = lesson, lib, None, [], None, []

    def _default_exp_(self, cell, module, *_): self.module, cell.drop_ = module, 'default_exp'
    def _exercise_check_(self, cell, *_): cell.drop_ = 'check'

    def _exercise_(self, cell, *names):
        exs = exercises_in(cell.source, names)
        cell.source, cell.exercises_ = stub(cell.source, exs), [e for e, _ in exs]
        self.exercises += cell.exercises_

    def __call__(self, cell):
        if cell.cell_type == 'markdown' and self.title is None and cell.source.startswith('# '):
            self.title = cell

    def _names_lost(self, cells:list):
        "Warn about a kept cell that reads a name only a dropped `#| exercise_check` cell defines: it would fail there."
        bound, lost = set(), {}
        for cell in cells:
            if (tree := _tree(cell)) is None: continue
            if getattr(cell, 'drop_', None) == 'check':
                for n in _bound(tree) - bound: lost.setdefault(n, cell.idx_)
                continue
            if getattr(cell, 'drop_', None): continue
            for n in sorted((_free_loads(tree) & set(lost)) - bound - _bound(tree)):
                self.warnings.append(f"{self.lesson}: cell {cell.idx_} reads {n}, which only the `#| exercise_check` cell "
                                     f"{lost[n]} defines: the exercise notebook drops that cell, so it would fail here")
            bound |= _bound(tree)

    def end(self):
        "Add the notes, checks and switches around each exercise; mark the prose whose checks were dropped."
        cells, last = self.nb.cells, None
        self._names_lost(cells)
        for i, cell in enumerate(cells):
            if getattr(cell, 'exercises_', None):
                last = cell.exercises_
                by_obj = {}
                for e in last: by_obj.setdefault(e.split('.')[0], []).append(checker_name(e))
                cell.before_ = [nbformat.v4.new_markdown_cell(exercise_note(e)) for e in last]
                cell.after_ = ([nbformat.v4.new_code_cell(f"from {self.lib}.check import {c}\n{c}({e.split('.')[0]})")
                                for e, c in zip(last, map(checker_name, last))] +
                               [nbformat.v4.new_markdown_cell(switch_note(list(by_obj), self.lib, self.module)),
                                nbformat.v4.new_code_cell(switch_code(by_obj, self.lib, self.module))])
            elif cell.cell_type == 'markdown' and last:
                following = []
                for c in cells[i + 1:]:
                    if c.cell_type == 'markdown': break
                    following.append(c)
                if following and all(getattr(c, 'drop_', None) == 'check' for c in following):
                    cell.source += (f"\n\n*In this exercise version, the check under your {_names(last)} "
                                    "takes the place of the lesson's check here.*")


def _cell(c):
    "An nbformat cell with `c`'s type and source, nothing else."
    make = {'code': nbformat.v4.new_code_cell, 'markdown': nbformat.v4.new_markdown_cell}.get(c.cell_type, nbformat.v4.new_raw_cell)
    return make(c.source)


def exercise_notebook(path:Path, lib:str)->nbformat.NotebookNode|None:
    "The exercise notebook for the lesson at `path`, or None if it has no exercise."
    proc = Exercises(path.name, lib)
    nbp = NBProcessor(path, [proc], rm_directives=True)
    proc.nb = nbp.nb
    nbp.process()
    if not proc.exercises: return None
    for w in proc.warnings: print(f"warning: {w}", file=sys.stderr)
    if proc.module is None: raise SystemExit(f"{path.name} has exercises but no `#| default_exp`")
    out = []
    for c in nbp.nb.cells:
        if getattr(c, 'drop_', None): continue
        if c is proc.title:
            out += [nbformat.v4.new_markdown_cell('# Exercises: ' + c.source[2:]),
                    nbformat.v4.new_markdown_cell(intro(path.name, c.source[2:].split('\n')[0].strip(), proc.exercises))]
            continue
        out += list(getattr(c, 'before_', [])) + [_cell(c)] + list(getattr(c, 'after_', []))
    for j, cell in enumerate(out):  # ids that are the same on every run, so a regenerated notebook is byte-identical
        cell.id = hashlib.sha1(f"{path.name}/{j}".encode()).hexdigest()[:8]
    nb = nbformat.v4.new_notebook(cells=out)
    nb.metadata = {'kernelspec': dict(nbp.nb.metadata.get('kernelspec') or
                                      {'display_name': 'python3', 'language': 'python', 'name': 'python3'})}
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
