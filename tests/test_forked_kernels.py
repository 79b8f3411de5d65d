"""The suite's forked kernels (forked_kernels.py) are fresh kernels: the same paths, directory, arguments, settings
and fresh random state as a kernel jupyter_client starts itself; interrupts reach them, a killed launcher takes its
kernel with it, and a kernel the server cannot stand in for starts as a fresh one."""
import asyncio
import json
import os

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from conftest import ROOT

STATE = """import json, os, random, sys, torch
def parent(): return open(f'/proc/{os.getppid()}/cmdline').read().split('\\0')
print(json.dumps(dict(path=sys.path, argv=[a for a in sys.argv[1:] if not a.endswith('.json')], cwd=os.getcwd(),
                      env={k: os.environ.get(k) for k in ('IN_TEST', 'PYTHONPATH', 'OMP_NUM_THREADS')},
                      threads=torch.get_num_threads(), draws=[random.random(), torch.rand(1).item()],
                      forked='serve' in parent(), lesson_modules=sorted(m for m in sys.modules if m.startswith('mini_nn')),
                      mpl=os.environ.get('MPLBACKEND'), parent_pid_known='JPY_PARENT_PID' in os.environ)))"""


def kernel_state(cwd, manager_class=AsyncKernelManager, **env)->dict:
    "What a kernel started by `manager_class` in `cwd`, with `env` added to the environment, reports of itself."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(STATE)])
    NotebookClient(nb, timeout=60, kernel_name='python3', resources={'metadata': {'path': str(cwd)}},
                   kernel_manager_class=manager_class).execute(env={**os.environ, **env})
    return json.loads(nb.cells[0].outputs[0]['text'])


def test_a_forked_kernel_is_what_a_fresh_kernel_is(kernel_manager_class, tmp_path):
    env = dict(IN_TEST='1', PYTHONPATH=str(ROOT))
    fresh = kernel_state(tmp_path, **env)
    forks = [kernel_state(tmp_path, kernel_manager_class, **env) for _ in range(2)]
    assert not fresh['forked'] and all(f['forked'] for f in forks)
    for f in forks:
        for key in ('path', 'argv', 'cwd', 'env', 'threads', 'lesson_modules', 'mpl', 'parent_pid_known'):
            assert f[key] == fresh[key], (key, f[key], fresh[key])
    assert forks[0]['draws'][0] != forks[1]['draws'][0]  # Python's random state is drawn afresh in each fork
    assert forks[0]['draws'][1] != forks[1]['draws'][1]  # and torch's: an unseeded cell is caught


def test_a_kernel_with_other_threading_settings_starts_fresh(kernel_manager_class, tmp_path):
    "OpenMP reads OMP_NUM_THREADS once, when torch loads it: the server's torch cannot take another value."
    other = '2' if os.environ.get('OMP_NUM_THREADS') == '1' else '1'  # not the value the server started with
    state = kernel_state(tmp_path, kernel_manager_class, OMP_NUM_THREADS=other)
    assert not state['forked'] and state['threads'] == int(other) and state['env']['OMP_NUM_THREADS'] == other


async def _interrupt_then_kill(manager_class)->tuple:
    km = manager_class(kernel_name='python3')
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        shown = []
        await kc.execute_interactive('import os; print(os.getpid())', timeout=30,
                                     output_hook=lambda m: shown.append(m['content'].get('text', '')))
        pid = int(''.join(shown))
        msg_id = kc.execute("import time; print('running', flush=True); time.sleep(60)")
        while True:  # wait until the cell's own code runs (an interrupt before it is caught by the kernel), then interrupt
            msg = await kc.get_iopub_msg(timeout=30)
            if msg['parent_header'].get('msg_id') == msg_id and msg['msg_type'] == 'stream': break
        # the message is out before the kernel's flush returns: an interrupt now can land in ipykernel's own locking
        # (a RuntimeError 'release unlocked lock'), so give the cell a moment to reach its sleep
        await asyncio.sleep(0.5)
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=10)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)  # kills the launcher
    for _ in range(100):  # the server kills and reaps the kernel of a killed launcher
        if not os.path.exists(f'/proc/{pid}'): break
        await asyncio.sleep(0.05)
    return reply['content'], os.path.exists(f'/proc/{pid}')


def test_an_interrupt_reaches_a_forked_kernel_and_killing_its_launcher_kills_it(kernel_manager_class):
    reply, still_there = asyncio.run(_interrupt_then_kill(kernel_manager_class))
    assert reply['status'] == 'error' and reply['ename'] == 'KeyboardInterrupt', reply
    assert not still_there
