"""The docs site: nbdev's Quarto configuration, and the offline site `make docs` builds into _site/.

The offline site is built (or reused, when _site/ was built from the same inputs), served on 127.0.0.1, and
every page is visited in headless Chromium: it answers 200, logs no console error, requests nothing outside
127.0.0.1, typesets its math, renders its widgets, and the API reference documents every exported name.
"""
import configparser
import importlib
import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
import yaml

from conftest import BIN, ROOT, run

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-first-run', '--disable-quic']
SITE = ROOT/'_site'
MATH = re.compile(r'\$[^$\s][^$]*\$')  # $...$ or $$...$$ in a notebook's markdown

WIDGET_CONTROLS = '.jupyter-widgets input, .jupyter-widgets select, .jupyter-widgets button, .jupyter-widgets .noUi-handle'


def load_build_site():
    spec = importlib.util.spec_from_file_location('build_site', ROOT/'tools'/'build_site.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def settings():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']


def lib_modules()->dict:
    "Every public module of the library and its `__all__`."
    out = {}
    for p in sorted((ROOT/'mini_nn').glob('*.py')):
        if p.name.startswith('_'): continue
        out[f'mini_nn.{p.stem}'] = list(importlib.import_module(f'mini_nn.{p.stem}').__all__)
    return out


# ---- the Quarto path (nbdev_docs on GitHub) -------------------------------------------------------------

def test_quarto_config_is_what_nbdev_docs_expects():
    from nbdev.quarto import _nbdev_yml
    s = settings()
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert q['metadata-files'] == ['nbdev.yml', 'sidebar.yml']
    assert (ROOT/'nbs'/q['format']['html']['css']).exists()
    # nbdev_docs rewrites nbdev.yml from settings.ini; the committed one is what it writes
    vals = {k: s[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    vals['doc_path'] = Path(s['doc_path']).name
    assert (ROOT/'nbs'/'nbdev.yml').read_text() == _nbdev_yml.format(**vals)
    # nbdev_docs leaves a custom sidebar alone only when settings.ini says so
    assert s.getboolean('custom_sidebar')
    # the deploy workflow publishes the folder Quarto renders into
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'deploy.yaml').read_text())
    uploads = [st for st in wf['jobs']['build']['steps'] if 'upload-pages-artifact' in st.get('uses', '')]
    assert uploads and uploads[0]['with']['path'] == Path(s['doc_path']).name


def test_sidebar_lists_every_page_in_course_order():
    bs = load_build_site()
    groups = bs.read_sidebar()
    bs.check_sidebar(groups)  # raises naming missing or unlisted pages
    listed = [f for _, entries in groups for f, _ in entries]
    assert listed[0] == 'index.ipynb'
    lessons = [f for f in listed if re.match(r'\d+_', f)]
    assert lessons == sorted(lessons), f'the sidebar is not in course order: {lessons}'


def test_npm_assets_are_pinned():
    pkg = json.loads((ROOT/'package.json').read_text())
    lock = json.loads((ROOT/'package-lock.json').read_text())
    for name in ('@jupyter-widgets/html-manager', 'requirejs', 'mathjax'):
        version = pkg['dependencies'][name]
        assert re.fullmatch(r'\d+\.\d+\.\d+', version), f'{name} is not pinned: {version}'
        assert lock['packages'][f'node_modules/{name}']['version'] == version
    assert pkg['dependencies']['mathjax'].startswith('3.')


# ---- the offline site, in a browser ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def site():
    "_site/, built by `tools/build_site.py` (which reuses a build from the same inputs)."
    res = run(BIN/'python', 'tools/build_site.py', check=False, timeout=300)
    if res.returncode: pytest.fail(f'the site did not build:\n{res.stdout}\n{res.stderr}')
    return SITE


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def server(site):
    "The site served on 127.0.0.1 by its own process, stopped by its PID."
    port = free_port()
    proc = subprocess.Popen([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', '--directory', str(site),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(base, timeout=2).close(); break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f'the site server did not start on {base}')
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try: proc.wait(timeout=10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(timeout=10)


# What a page reports once loaded: its math, its widgets, its links, its documented sections.
PAGE_REPORT_JS = '''async (fragments) => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)  // typeset, or give up after 15 s
    await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 15000))]);
  // the typeset math asks for MathJax's fonts once laid out: lay the page out, then let those fonts arrive, or
  // leaving the page would abort their requests (and log them as failed)
  document.body.getBoundingClientRect();
  await Promise.race([document.fonts.ready, new Promise(r => setTimeout(r, 15000))]);
  const views = Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'));
  const unrendered = views.filter(s => !s.parentElement.querySelector('.jupyter-widgets')).length;
  const controls = Array.from(document.querySelectorAll(arguments_controls)).filter(e => {
    const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length;
  const sections = {};
  for (const f of fragments) {
    const el = document.getElementById(f);
    const sec = el && (el.closest('section') || el);
    const h = sec && sec.querySelector('h1, h2, h3, h4, h5, h6');
    const pre = sec && sec.querySelector('pre');
    sections[f] = sec ? {heading: h ? h.textContent : '', signature: pre ? pre.textContent : '',
                         text: sec.textContent.slice(0, 4000)} : null;
  }
  const api = {};
  for (const sec of document.querySelectorAll('section')) {
    const h = sec.querySelector(':scope > h2');
    if (!h || !/^mini_nn\\./.test(h.textContent)) continue;
    api[h.textContent.replace(/[\\s\\u00b6#]+$/, '')] = Array.from(sec.querySelectorAll('table a.reference.internal'))
      .map(a => ({text: a.textContent, href: a.href}));
  }
  return {
    math: document.querySelectorAll('mjx-container').length,
    math_errors: document.querySelectorAll('mjx-merror').length,
    widget_views: views.length, unrendered, controls,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    nav: Array.from(document.querySelectorAll('.sidebar-tree a.reference')).map(a => a.href),
    sections, api,
  };
}'''.replace('arguments_controls', json.dumps(WIDGET_CONTROLS))


@pytest.fixture(scope='module')
def sync_api():
    "Playwright, when Debian's chromium is there to drive."
    if not CHROMIUM.exists(): pytest.skip('Debian chromium is not installed (/usr/bin/chromium): apt-get install chromium')
    return pytest.importorskip('playwright.sync_api')


@pytest.fixture(scope='module')
def visits(sync_api, server, site):
    "Visit every page of the site in Chromium; record what each one did."
    pages = sorted(p.name for p in site.glob('*.html'))
    pages.remove('api.html'); pages.insert(0, 'api.html')  # first: it says which sections the others must have
    results, outside = {}, []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context()
            def route(r):
                if r.request.url.startswith(server): r.continue_()
                else: outside.append(r.request.url); r.abort()
            context.route('**/*', route)
            page = context.new_page()
            page.set_default_timeout(20_000)
            log = []
            page.on('console', lambda m: log.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
            page.on('pageerror', lambda e: log.append(f'page error: {e}'))
            page.on('requestfailed', lambda r: log.append(f'request failed: {r.url} {r.failure}'))
            page.on('response', lambda r: log.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
            fragments = {}  # page -> ids it must have (from the API reference's links)
            for name in pages:
                log.clear()
                resp = page.goto(server + name, wait_until='load')
                try: page.wait_for_function(
                    '''() => Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
                             .every(s => s.parentElement.querySelector('.jupyter-widgets'))''', timeout=15_000)
                except sync_api.TimeoutError: pass  # reported as unrendered below
                report = page.evaluate(PAGE_REPORT_JS, fragments.get(name, []))
                if name == 'api.html':
                    for links in report['api'].values():
                        for l in links:
                            target, frag = urldefrag(l['href'])
                            fragments.setdefault(Path(urlparse(target).path).name, []).append(frag)
                    # api.html documents some names itself: look them up now that the fragments are known
                    report['sections'] = page.evaluate(PAGE_REPORT_JS, fragments.get(name, []))['sections']
                # the search leaves its word ('kaiming') to be highlighted on the pages opened next, among them
                # blowup_explorer.html, whose saved widget state contains it: those widgets must still render
                if name == 'search.html': report['search_hits'] = search_hits(page, server, sync_api)
                results[name] = dict(report, status=resp.status if resp else None, log=list(log))
        finally:
            browser.close()
    return {'pages': results, 'outside': outside, 'server': server}


def search_hits(page, server, sync_api)->int:
    "How many results the site's own search finds for a word of lesson 03."
    page.goto(server + 'search.html?q=kaiming', wait_until='load')
    try: page.wait_for_selector('#search-results li', timeout=15_000)
    except sync_api.TimeoutError: return 0
    # each hit's summary is fetched from its page: let those requests finish before the next page is opened
    page.wait_for_function("/Search finished/.test(document.querySelector('#search-results')?.textContent || '')")
    page.wait_for_load_state('networkidle')
    return page.locator('#search-results li').count()


def test_the_build_writes_nothing_outside_its_folders(site):
    "Only _site/ and _proc/ (both ignored by git) receive build files: myst-nb's jupyter_execute/ must not reach the root."
    assert not (ROOT/'jupyter_execute').exists() and not (ROOT/'.jupyter_cache').exists()


def test_every_page_answers_200(visits):
    bad = {n: r['status'] for n, r in visits['pages'].items() if r['status'] != 200}
    assert not bad, bad


def test_no_page_logs_a_console_error_or_a_failed_request(visits):
    bad = {n: r['log'] for n, r in visits['pages'].items() if r['log']}
    assert not bad, json.dumps(bad, indent=1)


def test_no_request_leaves_127_0_0_1(visits):
    assert visits['outside'] == [], visits['outside']


def test_math_is_typeset_wherever_a_notebook_has_math(visits):
    from nbdev.doclinks import _nbpath2html
    import nbformat
    with_math = []
    for p in sorted((ROOT/'nbs').glob('*.ipynb')):
        nb = nbformat.read(p, as_version=4)
        if any(c.cell_type == 'markdown' and MATH.search(c.source) for c in nb.cells):
            with_math.append(_nbpath2html(Path(p.name)).name)
    assert with_math, 'no notebook has math: the check below would check nothing'
    for name in with_math:
        r = visits['pages'][name]
        assert r['math'] > 0, f'{name}: its notebook has math but the page typeset none'
        assert r['math_errors'] == 0, f'{name}: MathJax reported {r["math_errors"]} errors'


def test_widgets_render_from_their_saved_state(visits):
    pages = visits['pages']
    assert any(r['controls'] for r in pages.values()), 'no page shows a rendered widget control'
    bad = {n: f"{r['unrendered']} of {r['widget_views']} widgets not rendered" for n, r in pages.items() if r['unrendered']}
    assert not bad, bad


def test_internal_links_lead_to_pages_of_the_site(visits):
    server, broken = visits['server'], []
    for name, r in visits['pages'].items():
        for href in r['links']:
            if not href.startswith(server): continue
            path = urlparse(urldefrag(href)[0]).path.lstrip('/') or 'index.html'
            if not (SITE/path).exists(): broken.append(f'{name} -> {href}')
    assert not broken, broken


def test_sidebar_reaches_every_page_in_one_click(visits):
    bs = load_build_site()
    from nbdev.doclinks import _nbpath2html
    wanted = {_nbpath2html(Path(f)).name for _, entries in bs.read_sidebar() for f, _ in entries if f != 'index.ipynb'}
    nav = {Path(urlparse(h).path).name for h in visits['pages']['index.html']['nav']}
    assert wanted <= nav, f'pages missing from the navigation: {sorted(wanted - nav)}'


def test_every_exported_name_is_documented(visits):
    "From the API reference, each name in `__all__` links to its entry: its name, signature and docstring."
    pages = visits['pages']
    api = pages['api.html']['api']
    problems = []
    for module, names in lib_modules().items():
        links = {l['text']: l['href'] for l in api.get(module, [])}
        for name in names:
            if name not in links:
                problems.append(f'{module}.{name}: not in the API reference'); continue
            target, frag = urldefrag(links[name])
            page = Path(urlparse(target).path).name
            sec = pages.get(page, {}).get('sections', {}).get(frag)
            if not sec:
                problems.append(f'{module}.{name}: its link {page}#{frag} leads to no entry'); continue
            obj = getattr(importlib.import_module(module), name)
            doc = (getattr(obj, '__doc__', None) or '').strip().split('\n')[0] if callable(obj) else ''
            if not sec['heading'].rstrip('¶# \n').endswith(name):
                problems.append(f'{module}.{name}: the entry at {page}#{frag} is headed {sec["heading"]!r}')
            elif callable(obj) and f'{name}(' not in sec['signature']:
                problems.append(f'{module}.{name}: the entry at {page}#{frag} shows no signature')
            elif doc and words(doc) not in words(sec['text']):
                problems.append(f'{module}.{name}: the entry at {page}#{frag} lacks its docstring')
    assert not problems, '\n'.join(problems)


def words(s:str)->str: return ' '.join(re.findall(r'\w+', s))


def test_search_finds_the_lessons(visits):
    assert visits['pages']['search.html'].get('search_hits', 0) > 0, 'the site search found nothing for "kaiming"'
