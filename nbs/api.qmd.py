"""---
title: API reference
description: Every name the library exports, module by module, each linked to its documentation in the lesson that builds it.
---"""
# nbdev turns this script into _proc/api.qmd (`nbdev_docs` and `make docs` both run it): a script in nbs/
# whose first statement is a docstring of YAML front matter is executed, and what it prints becomes the page.
# It lists every name in each module's `__all__`. A name some lesson documents (nbdev shows the docs of every
# exported function and class, and of each explicit `show_doc`) links there; any other name (assigned,
# re-exported from elsewhere, or exported from a hidden cell) is documented here, with nbdev's `show_doc`.
import ast, importlib, inspect, sys

from nbdev.config import get_config
from nbdev.doclinks import _nbpath2html
from nbdev.frontmatter import FrontmatterProc
from nbdev.process import NBProcessor
from nbdev.processors import add_show_docs, hide_, rm_export
from nbdev.showdoc import show_doc

cfg = get_config()
sys.path.insert(0, str(cfg.config_path))  # this checkout's library, whatever else is installed
lib = cfg.lib_path.name


def lesson_info(path):
    "The module a notebook exports to, its title, and the names its page documents."
    # nbdev's processors, as for the page: its front matter (the title), a show_doc cell after each exported
    # definition no show_doc documents yet, and the cells the page leaves out (`#| hide`, export cells) gone
    nbp = NBProcessor(path, [FrontmatterProc, add_show_docs, rm_export, hide_])
    # read before processing: rm_export drops the `#| default_exp` cell
    module = next((f'{lib}.{c.directives_["default_exp"][0]}' for c in nbp.nb.cells if 'default_exp' in c.directives_), None)
    nbp.process()
    shown = {ast.unparse(node.args[0]) for c in nbp.nb.cells for tree in c.parsed_() or [] for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'show_doc' and node.args}
    return module, nbp.nb.frontmatter_.get('title', path.stem), shown


def summary(obj):
    "The first line of `obj`'s docstring, safe inside a table cell."
    doc = inspect.getdoc(obj) if (callable(obj) or inspect.ismodule(obj)) else None
    return (doc or '').strip().split('\n')[0].replace('|', r'\|')


def kind(obj):
    if inspect.isclass(obj): return 'class'
    if callable(obj): return 'function'
    return type(obj).__name__


notebooks = sorted(p for p in cfg.nbs_path.glob('*.ipynb') if not p.name.startswith(('_', '.')))
lessons, shown_on = {}, {}  # module -> (notebook, title); page -> names its show_doc entries document
for nb_path in notebooks:
    module, title, shown = lesson_info(nb_path)
    if module and module not in lessons: lessons[module] = (nb_path, title)
    shown_on[_nbpath2html(nb_path.relative_to(cfg.nbs_path)).name] = shown
modules = list(lessons) + sorted(f'{lib}.{p.stem}' for p in cfg.lib_path.glob('*.py')
                                 if not p.name.startswith('_') and f'{lib}.{p.stem}' not in lessons)


def doc_page(name, home):
    "The lesson page documenting `name`, defined in module `home`: its own lesson's first, else any other."
    own = lessons.get(home)
    pages = ([_nbpath2html(own[0].relative_to(cfg.nbs_path)).name] if own else []) + list(shown_on)
    return next((p for p in pages if name in shown_on.get(p, ())), None)


print(f"Each lesson exports one module of `{lib}`; import a name from its module, as in "
      f"`from {lib}.matmul import matmul_broadcast`. Each link leads to the name's signature, parameters and "
      "docstring in the lesson that builds it, with the lesson's explanation and tests around it.\n")
here = []  # (qualified name, obj) documented on this page
for modname in modules:
    mod = importlib.import_module(modname)
    names = getattr(mod, '__all__', None)
    if names is None: raise SystemExit(f'{modname} has no __all__')
    print(f'## {modname}\n')
    if modname in lessons:
        nb_path, title = lessons[modname]
        print(f'Built in [{title}]({nb_path.name}).\n')
    if not names:
        print('This module exports no names.\n'); continue
    print('| name | kind | what it does |\n|---|---|---|')
    for name in names:
        obj = getattr(mod, name)
        home = getattr(obj, '__module__', None) or modname
        if not home.startswith(f'{lib}.'): home = modname
        page = doc_page(name, home) if getattr(obj, '__name__', name) == name else None
        if page: target = f'{page}#{name.lower()}'
        else:
            target = f'#{modname}.{name}'.lower()
            here.append((f'{modname}.{name}', obj))
        note = f' (defined in `{home}`)' if home != modname else ''
        print(f'| [`{name}`]({target}) | {kind(obj)} | {summary(obj)}{note} |')
    print()

if here:
    print('## Documented here\n')
    print('These names are exported without an entry in a lesson.\n')
    for qualname, obj in here:
        if callable(obj): print(show_doc(obj, name=qualname)._repr_markdown_() + '\n')
        else: print(f'---\n\n### {qualname}\n\nA `{type(obj).__name__}`: `{obj!r}`\n')
