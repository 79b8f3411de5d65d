"""Binder, and a JupyterHub that builds with repo2docker, make the course's environment from binder/ alone: repo2docker
runs `pip install -r binder/requirements.txt` in the repository's root on binder/runtime.txt's Python, then
binder/postBuild. Docker is not at hand here, so these checks read those files against the course's pins, against what
the lessons import and against `make lab`; building a venv from them and running every lesson in it was done by hand."""
import ast
import configparser
import json
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from traitlets.config import Config

from conftest import NBS, ROOT, run

BINDER = ROOT/'binder'
CPU_INDEX = 'https://download.pytorch.org/whl/cpu'
NO_NEWS_PLUGIN = '@jupyterlab/apputils-extension:announcements'


def norm(name:str)->str: return re.sub(r'[-_.]+', '-', name).lower()


def settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def requirement_lines(path:Path)->list:
    "The lines of a pip requirements file, without comments and blank lines."
    return [l.split(' #')[0].strip() for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith('#')]


def binder_requirements(path:Path=BINDER/'requirements.txt')->tuple:
    "`(requirements, editable, options)`: the named requirements, the `-e` target and the other option lines."
    reqs, editable, options = [], [], []
    for l in requirement_lines(path):
        if l.startswith(('-e ', '--editable ')): editable.append(l.split(None, 1)[1])
        elif l.startswith('-'): options.append(l)
        else: reqs.append(Requirement(l))
    return reqs, editable, options


def course_pins()->dict:
    "`{name: version}` of requirements/constraints.txt."
    pins = {}
    for l in requirement_lines(ROOT/'requirements'/'constraints.txt'):
        r = Requirement(l)
        (spec,) = r.specifier
        assert spec.operator == '==', l
        pins[norm(r.name)] = spec.version
    return pins


def library_extras(editable:str)->list:
    "The extras of the editable install `editable` (`.[a,b]`), which must be the repository's root."
    m = re.fullmatch(r'\.(?:\[([\w,\s]+)\])?', editable)
    assert m, f"binder/requirements.txt installs {editable!r}, not the repository (`-e .[extras]`)"
    return [e.strip() for e in (m.group(1) or '').split(',') if e.strip()]


def library_requirements(extras)->list:
    "The library's requirements (settings.ini, as setup.py reads them) with `extras`."
    cfg = settings()
    keys = ['requirements'] + [f'{e}_requirements' for e in extras]
    return [Requirement(r) for k in keys for r in cfg.get(k, '').split()]


def named_by_binder(reqs, editable)->set:
    "The distributions binder/requirements.txt installs by name, the library's requirements with its extras among them."
    libs = [r for e in editable for r in library_requirements(library_extras(e))]
    return {norm(r.name) for r in reqs + libs}


def closure(names)->set:
    "`names` and, recursively, what they require as installed in the environment running the tests."
    found, todo = set(), list(names)
    while todo:
        name = norm(todo.pop())
        if name in found: continue
        found.add(name)
        try: d = distribution(name)
        except PackageNotFoundError: continue  # e.g. notebook, which the course's environment has no need of
        todo += [r.name for r in map(Requirement, d.requires or []) if not r.marker or r.marker.evaluate({'extra': ''})]
    return found


def imports_of(source:str)->set:
    "Top-level names of the third-party modules that `source` imports, without the stdlib and mini_nn."
    source = '\n'.join(l for l in source.splitlines() if not l.lstrip().startswith(('%', '!')))  # magics
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import): names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != 'mini_nn'}


def course_imports()->dict:
    "`{module: [files]}`: what the lesson and exercise notebooks, and the library they import, import."
    found = {}
    notebooks = sorted(NBS.glob('*.ipynb')) + sorted((NBS/'exercises').glob('*.ipynb'))
    for p in notebooks:
        for c in json.loads(p.read_text())['cells']:
            if c['cell_type'] == 'code':
                for m in imports_of(''.join(c['source'])): found.setdefault(m, []).append(p.name)
    for p in sorted((ROOT/'mini_nn').glob('*.py')):
        for m in imports_of(p.read_text()): found.setdefault(m, []).append(f'mini_nn/{p.name}')
    return found


def missing_for_the_course(installed:set)->dict:
    "`{module: distribution}` for the modules the course imports that no distribution in `installed` provides."
    dists = packages_distributions()
    missing = {}
    for module in course_imports():
        provided = {norm(d) for d in dists.get(module, [])}
        assert provided, f"no installed distribution provides {module}"
        if not provided & installed: missing[module] = sorted(provided)[0]
    return missing


def test_binder_requirements_install_the_course_pins_and_state_none_again():
    reqs, editable, options = binder_requirements()
    constraints = [o.split(None, 1)[1] for o in options if o.startswith(('-c ', '--constraint '))]
    # pip reads a path inside a requirements file relative to that file
    assert [(BINDER/c).resolve() for c in constraints] == [ROOT/'requirements'/'constraints.txt'], options
    pins = course_pins()
    restated = [str(r) for r in reqs if r.specifier and norm(r.name) in pins]
    assert not restated, f"binder/requirements.txt restates pins of requirements/constraints.txt: {restated}"
    pinned_here = {norm(r.name) for r in reqs if any(s.operator == '==' for s in r.specifier)}
    unpinned = sorted(named_by_binder(reqs, editable) - set(pins) - pinned_here)
    assert not unpinned, f"Binder would install the newest {unpinned}: pin them in requirements/constraints.txt"


def test_binder_torch_is_the_cpu_build_the_workflows_install():
    _, _, options = binder_requirements()
    assert f'--extra-index-url {CPU_INDEX}' in options, options
    for wf in ('test.yaml', 'deploy.yaml'):
        assert CPU_INDEX in (ROOT/'.github'/'workflows'/wf).read_text(), wf


def test_binder_installs_the_library_editable_with_extras_that_exist():
    _, editable, _ = binder_requirements()
    assert len(editable) == 1, editable
    extras = library_extras(editable[0])
    unknown = [e for e in extras if f'{e}_requirements' not in settings()]
    assert extras and not unknown, f"settings.ini has no extra {unknown} (pip would only warn)"


def test_binder_installs_what_every_lesson_imports():
    reqs, editable, _ = binder_requirements()
    imports = course_imports()
    assert {'torch', 'fastcore', 'ipywidgets', 'numba', 'sklearn', 'fastprogress'} <= set(imports), sorted(imports)
    missing = missing_for_the_course(closure(named_by_binder(reqs, editable)))
    assert not missing, f"the lessons import modules that binder/requirements.txt does not install: {missing}"


def test_the_import_check_can_fail():
    "Without the `train` extra and fastcore, the check above names scikit-learn and fastcore."
    reqs, editable, _ = binder_requirements()
    extras = [e for e in library_extras(editable[0]) if e != 'train']
    names = {norm(r.name) for r in reqs if norm(r.name) not in {'fastcore', 'nbdev'}}
    names |= {norm(r.name) for r in library_requirements(extras)}
    missing = missing_for_the_course(closure(names))
    assert missing.get('sklearn') == 'scikit-learn' and missing.get('fastcore') == 'fastcore', missing


def test_binder_python_is_the_python_ci_tests():
    runtime = (BINDER/'runtime.txt').read_text().strip()
    m = re.fullmatch(r'python-(3\.\d+)', runtime)
    assert m, f"binder/runtime.txt must read python-3.X, not {runtime!r}"
    version = m.group(1)
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'test.yaml').read_text())
    ci = {str(s['with']['python-version']) for j in wf['jobs'].values() for s in j['steps']
          if 'setup-python' in s.get('uses', '')}
    assert ci == {version}, f"Binder runs Python {version}, the test workflow {ci}"
    as_tuple = lambda v: tuple(map(int, v.split('.')))
    assert as_tuple(version) >= as_tuple(settings()['min_python'])
    assert f"'{version}'" in re.search(r'py_versions = \[.*\]', (ROOT/'setup.py').read_text()).group(0)


def test_binder_notebook_is_the_release_made_for_the_pinned_jupyterlab():
    "Binder's base image has a notebook 7 that requires an older jupyterlab; notebook 7.N requires jupyterlab 4.N."
    reqs, _, _ = binder_requirements()
    (notebook,) = [r for r in reqs if norm(r.name) == 'notebook']
    (spec,) = notebook.specifier
    lab = course_pins()['jupyterlab']
    assert spec.operator == '==' and spec.version.split('.')[:2] == ['7', lab.split('.')[1]], (str(notebook), lab)
    assert lab.split('.')[0] == '4', lab


def make_lab_flags()->dict:
    "`{trait: value}` of the `--LabApp.x=v` flags that `make lab` passes (a dry run)."
    recipe = run('make', '--no-print-directory', '-n', '-B', 'lab').stdout
    return dict(re.findall(r'--LabApp\.(\w+)=(\S+)', recipe)), recipe


def test_binder_lab_has_no_news_or_update_prompts_like_make_lab():
    "binder/jupyter_server_config.json sets what `make lab`'s flags set, and the traits exist with those names."
    from jupyterlab.handlers.announcements import CheckForUpdateABC, NeverCheckForUpdate
    from jupyterlab.labapp import LabApp
    config = json.loads((BINDER/'jupyter_server_config.json').read_text())
    app = LabApp(config=Config(config))  # a misspelt trait would be ignored with a warning, and keep its default
    assert app.news_url is None and app.check_for_updates_class is NeverCheckForUpdate
    assert issubclass(app.check_for_updates_class, CheckForUpdateABC)
    flags, _ = make_lab_flags()
    assert flags.get('news_url') == 'None', flags
    assert flags.get('check_for_updates_class') == config['LabApp']['check_for_updates_class'], flags


def test_binder_opens_the_course_index():
    config = json.loads((BINDER/'jupyter_server_config.json').read_text())
    url = config['ServerApp']['default_url']
    assert url.startswith('/lab/tree/') and (ROOT/url.removeprefix('/lab/tree/')).is_file(), url
    cfg = settings()
    link = f"https://mybinder.org/v2/gh/{cfg['user']}/{cfg['repo']}/{cfg['branch']}?urlpath={url.lstrip('/')}"
    assert link in (ROOT/'README.md').read_text(), f"the README has no Binder link {link}"


def test_postbuild_and_make_lab_turn_off_the_announcements_plugin():
    "The plugin that asks, in the page, whether to fetch news: disabled by both; its id is the pinned JupyterLab's."
    post = BINDER/'postBuild'
    text = post.read_text()
    assert text.startswith('#!/bin/bash\n') and 'set -euo pipefail' in text and os.access(post, os.X_OK)
    disable = f'jupyter labextension disable --level=sys_prefix "{NO_NEWS_PLUGIN}"'
    assert disable in text
    assert disable in make_lab_flags()[1]
    assert 'binder/jupyter_server_config.json' in text
    static = Path(sys.prefix)/'share'/'jupyter'/'lab'/'static'
    assert any(f'id:"{NO_NEWS_PLUGIN}"' in p.read_text(errors='ignore') for p in static.glob('*.js')), \
        f"JupyterLab has no plugin {NO_NEWS_PLUGIN}: disabling it would do nothing"
