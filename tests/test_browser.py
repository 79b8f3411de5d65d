"""The explorers in a real JupyterLab, in headless Chromium (Debian's /usr/bin/chromium through Playwright for Python).

The test copies lessons 02 and 03 and the backward explorer's notebook (07e) into a temporary root directory, so
JupyterLab's autosave can never touch the repository's notebooks, serves them on 127.0.0.1 with a random port and
token, runs each notebook, then clicks an element of the stride explorer, moves the blow-up explorer's layers slider,
steps the backward explorer through the backward pass and down to a batch of one, and checks what the page shows.
"""
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, ROOT, stop_process_group

CHROMIUM = Path('/usr/bin/chromium')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-quic']

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    "/usr/bin/chromium is absent: the browser test needs Debian's chromium (apt-get install chromium; "
    "`make test` installs it when run as root)"))


BROWSED = ('02_broadcasting.ipynb', '03_init.ipynb', '07e_backward_explorer.ipynb')


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def answers(url)->bool:
    try: return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError: return False


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab serving copies of the notebooks BROWSED from a temporary root, as its own process; yields its base URL and token."
    root, home = tmp_path_factory.mktemp('lab_root'), tmp_path_factory.mktemp('lab_home')
    for nb in BROWSED: shutil.copy(ROOT/'nbs'/nb, root/nb)
    port, token = free_port(), secrets.token_hex(24)
    cmd = [BIN/'jupyter', 'lab', '--ip=127.0.0.1', f'--port={port}', '--ServerApp.port_retries=0', '--no-browser',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}', '--LabApp.news_url=None',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', f'--LabApp.workspaces_dir={home}',
           f'--LabApp.user_settings_dir={home/"settings"}']
    if os.getuid() == 0: cmd.append('--allow-root')
    # A notebook that has no kernel yet when Run All is clicked starts its preferred one instead of asking in a
    # "Select Kernel" dialog (which showed, now and then, when the click came as the kernel was being attached).
    tracker = home/'settings'/'@jupyterlab'/'notebook-extension'/'tracker.jupyterlab-settings'
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"autoStartDefaultKernel": true}')
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(home/'runtime'), PYTHONPATH=str(ROOT))  # the repo's mini_nn
    log = open(home/'lab.log', 'w')
    proc = subprocess.Popen([str(c) for c in cmd], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the kernels it starts stop with it
    try:
        base, deadline = f'http://127.0.0.1:{port}', time.monotonic() + 60
        while not answers(f'{base}/api/status?token={token}'):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f'JupyterLab did not answer within 60 s:\n{(home/"lab.log").read_text()}')
            time.sleep(0.3)
        yield base, token
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try: yield b
        finally: b.close()


# true once a code cell's prompt shows it ran or is running: [*] or [1], not [ ]
STARTED = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"


def open_and_run_all(browser, lab, notebook):
    "A fresh page with only `notebook` open (its own workspace), its kernel idle, then Run All Cells, checked to start."
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    base, token = lab
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    page.set_default_timeout(60_000)
    page.goto(f'{base}/lab/workspaces/{notebook.split("_")[0]}/tree/{notebook}?token={token}')
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')  # run before this: widgets stay blank
    # ... and attached to the notebook: 'idle' can show while the toolbar still says "No Kernel"
    page.wait_for_function("[...document.querySelectorAll('.jp-Toolbar-kernelName')].some(e => /ipykernel/.test(e.textContent))")
    # A dropped Run All (below) can leave JupyterLab asking which kernel to use, Python 3 preselected, in a dialog that
    # blocks every click after it: whenever it shows, accept it.
    page.add_locator_handler(page.locator('.jp-Dialog', has_text='Select Kernel'),
                             lambda dialog: dialog.locator('.jp-Dialog-button.jp-mod-accept').click())
    for attempt in range(3):
        page.locator('.lm-MenuBar-itemLabel', has_text=re.compile('^Run$')).click()
        page.locator('.lm-Menu-itemLabel', has_text=re.compile('^Run All Cells$')).click()
        # Check that it started: with the URL's `?reset` (not used: each page has its own fresh workspace) 4 Run Alls in
        # 10 were dropped although the kernel said idle, every prompt staying [ ]. Should one be dropped, ask again.
        try: page.wait_for_function(STARTED, timeout=8_000); return page
        except PlaywrightTimeout: pass
    pytest.fail(f'Run All Cells did not start {notebook} in 3 tries')


def test_stride_explorer_click_outlines_the_storage_cell(browser, lab):
    page = open_and_run_all(browser, lab, '02_broadcasting.ipynb')
    first = page.locator('button[title="v[0, 0]: storage cell 0"]')
    first.wait_for()                                   # the stride explorer has rendered: t is 3×4, contiguous
    cell = page.locator('b.mn-cell')                   # the formula's result: the cell the selected element reads
    outlined = page.locator('.widget-html-content div.mn-sel[data-cell]')  # the outlined storage cell
    assert cell.text_content() == '0' and outlined.get_attribute('data-cell') == '0'
    page.locator('button[title="v[2, 3]: storage cell 11"]').click()
    page.wait_for_function("document.querySelector('b.mn-cell').textContent === '11'")
    assert outlined.get_attribute('data-cell') == '11'
    assert 'v[2, 3] = 120' in page.locator('.widget-html-content', has=cell).text_content()
    page.locator('.widget-dropdown select').first.select_option(index=1)  # the 2nd operation, t.T: v[2, 1] reads cell 0 + 2·1 + 1·4
    page.locator('button[title="v[2, 1]: storage cell 6"]').click()
    page.wait_for_function("document.querySelector('b.mn-cell').textContent === '6'")
    assert outlined.get_attribute('data-cell') == '6'
    assert 'v.stride()(1, 4)' in page.locator('.widget-html-content', has=cell).text_content()
    # the expand explorer, further down: typing shapes that clash shows broadcast_shapes' message, not a traceback
    box = page.locator('.widget-text', has=page.locator('label', has_text='vector shape')).locator('input')
    box.fill('2')
    box.press('Tab')
    page.get_by_text('shapes (3, 3) and (2,) do not broadcast').wait_for()
    assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
    page.close()


def test_blowup_slider_redraws(browser, lab):
    page = open_and_run_all(browser, lab, '03_init.ipynb')
    # .first: the blow-up explorer's; the gradient explorer after it in lesson 03 has controls of the same names
    slider = page.locator('.widget-slider', has=page.locator('label', has_text=re.compile('^layers$'))).first
    summary = page.locator('.widget-html-content', has_text='layers: x @ (randn(')
    image = page.locator('.widget-image').first
    summary.wait_for()
    assert summary.text_content().startswith('50 layers:') and 'inf/nan from layer' in summary.text_content()
    src = image.get_attribute('src')
    handle = slider.locator('.noUi-handle')
    handle.focus()
    for _ in range(3): handle.press('ArrowLeft')     # 47 layers: still past the overflow
    page.wait_for_function("[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.startsWith('47 layers:'))")
    assert slider.locator('.widget-readout').text_content() == '47' and float(handle.get_attribute('aria-valuenow')) == 47
    assert image.get_attribute('src') != src                        # a new picture
    page.locator('.widget-toggle-button', has_text='Kaiming').click()  # Kaiming without ReLU over 47 layers
    page.locator('.widget-toggle-button', has_text=re.compile('^relu$')).first.click()
    page.wait_for_function("[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.includes('then ReLU'))")
    assert 'Finite throughout' in summary.text_content() and 'inf/nan' not in summary.text_content()
    page.close()


# true once the backward explorer's graph and words both show step `step` for a batch of `n`
SHOWS = '''([step, n]) => {
  const svg = document.querySelector('.widget-html-content svg.mn-graph'), info = document.querySelector('.widget-html-content div.mn-step');
  return Boolean(svg && info && svg.dataset.step === step && info.dataset.step === step && info.dataset.n === n &&
                 svg.querySelector('g.mn-node[data-name="x"]').dataset.shape === `(${n}, 100)`);
}'''


def test_backward_explorer_steps_and_batch_of_one(browser, lab):
    page = open_and_run_all(browser, lab, '07e_backward_explorer.ipynb')
    graph = page.locator('.widget-html-content svg.mn-graph').first     # the explorer's graph (not the static ones)
    node = lambda name: graph.locator(f'g.mn-node[data-name="{name}"]')
    info = page.locator('.widget-html-content div.mn-step').first
    graph.wait_for(state='attached')  # rendered: JupyterLab may skip painting cells out of view, so scroll to it
    graph.scroll_into_view_if_needed()
    assert graph.get_attribute('data-step') == '1'                     # starts at step 1: mse_grad writes out.g
    assert (node('loss').get_attribute('data-state'), node('out').get_attribute('data-state')) == ('reads', 'writes')
    assert 'Step 1 of 4: mse_grad(out, y)' in info.text_content()
    image = page.locator('.widget-image').first
    src = image.get_attribute('src')
    page.locator('.widget-button', has_text='next').first.click()      # step 2: lin_grad of layer 2
    page.wait_for_function(SHOWS, arg=['2', '200'])
    assert [node(k).get_attribute('data-state') for k in ('out', 'l2', 'w2', 'b2')] == ['reads', 'writes', 'writes', 'writes']
    assert 'lin_grad(l2, out, w2, b2)' in info.text_content() and '(50, 200) @ (200, 1) → (50, 1)' in info.text_content()
    page.wait_for_function("src => document.querySelector('.widget-image').src !== src", arg=src)  # new heat maps
    step = page.locator('.widget-slider', has=page.locator('label', has_text=re.compile('^backward step$')))
    handle = step.locator('.noUi-handle')
    handle.focus()
    for _ in range(2): handle.press('ArrowRight')                       # the slider: to step 4
    page.wait_for_function(SHOWS, arg=['4', '200'])
    assert step.locator('.widget-readout').text_content() == '4 lin_grad (layer 1)'
    assert [node(k).get_attribute('data-state') for k in ('x', 'w1', 'b1', 'l1', 'out')] == ['writes'] * 3 + ['reads', 'done']
    assert page.locator('.widget-button', has_text='next').first.is_disabled()
    batch = page.locator('.widget-slider', has=page.locator('label', has_text=re.compile('^batch size n$'))).locator('.noUi-handle')
    batch.focus()
    batch.press('Home')                                                 # a batch of one
    page.wait_for_function(SHOWS, arg=['4', '1'])
    assert (node('w1').get_attribute('data-shape'), node('b1').get_attribute('data-shape')) == ('(100, 50)', '(50,)')
    assert '(100, 1) @ (1, 50) → (100, 50)' in info.text_content() and '(1, 50) summed over its rows → (50,)' in info.text_content()
    assert info.locator('b.mn-sums').text_content() == 'True'
    assert page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0
    page.close()
