"The course command (`make lab`) serves JupyterLab on 127.0.0.1 only, and only to holders of its token."
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, stop_process_group


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def accepts_connections(port)->bool:
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def status(url)->int:
    "HTTP status of a GET to `url` (without following redirects to a login page)."
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    try: return urllib.request.build_opener(NoRedirect).open(url, timeout=10).status
    except urllib.error.HTTPError as e: return e.code


def listening_addresses(port)->set:
    "Local IPv4/IPv6 addresses with a socket listening on `port`, read from /proc/net/tcp{,6}."
    found = set()
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        if not os.path.exists(table): continue
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(':')
            if int(p, 16) == port and state == '0A': found.add(addr)  # 0A = LISTEN
    return found


@pytest.fixture
def lab():
    "`make lab` on a free port, started as its own process group and stopped by its PID; yields (port, token)."
    port = free_port()
    proc = subprocess.Popen(['make', '--no-print-directory', 'lab', f'PORT={port}', 'LAB_FLAGS=--no-browser'],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, token, deadline = '', None, time.monotonic() + 90
        while token is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            log += line
            if m := re.search(rf'http://127\.0\.0\.1:{port}/\S*token=([0-9a-f]+)', line): token = m.group(1)
        assert token, f"JupyterLab printed no tokenised URL within 90 s:\n{log}"
        while not accepts_connections(port):  # the URL is printed just before the socket accepts
            assert time.monotonic() < deadline and proc.poll() is None, f"JupyterLab never accepted a connection:\n{log}"
            time.sleep(0.2)
        yield port, token
    finally:
        stop_process_group(proc)


def test_lab_requires_its_token_and_listens_on_loopback_only(lab):
    port, token = lab
    base = f'http://127.0.0.1:{port}'
    assert status(f'{base}/api/contents/index.ipynb') == 403
    assert status(f'{base}/api/contents/index.ipynb?token=wrong{token}') == 403
    assert status(f'{base}/lab') in (302, 403)  # to the login page, never the app
    assert status(f'{base}/api/contents/index.ipynb?token={token}') == 200
    assert listening_addresses(port) == {'0100007F'}, "JupyterLab must listen on 127.0.0.1 and nowhere else"


def test_lab_shows_no_news_or_update_prompts(lab):
    "The page's config disables the plugin that asks whether to fetch news; the server fetches no news and no release."
    import json
    port, token = lab
    get = lambda path: urllib.request.urlopen(f'http://127.0.0.1:{port}{path}?token={token}', timeout=10).read().decode()
    page = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', get('/lab'), re.S)
    config = json.loads(page.group(1))
    assert '@jupyterlab/apputils-extension:announcements' in config['disabledExtensions'], config['disabledExtensions']
    assert config['news'] == {'disabled': True}  # --LabApp.news_url=None
    assert json.loads(get('/lab/api/news')) == {'news': []}
    assert json.loads(get('/lab/api/update')) == {'notification': None}  # NeverCheckForUpdate: PyPI is never asked
