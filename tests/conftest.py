"Shared fixtures: the repository root and the tools of the environment running the tests."
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the environment's console scripts (nbdev_export, ...)


def run(*cmd, cwd=ROOT, check=True, **kw)->subprocess.CompletedProcess:
    "Run `cmd` and capture its text output, failing with that output if it exits non-zero."
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def repo_files()->list:
    "The files git would commit: tracked or untracked-but-not-ignored, as they are on disk."
    out = run('git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z').stdout
    return [p for p in out.split('\0') if p and (ROOT/p).is_file()]


def stop_process_group(proc:subprocess.Popen, timeout:float=20):
    "Stop a server started with `start_new_session=True`, and everything it started (kernels): SIGTERM, then SIGKILL."
    os.killpg(proc.pid, signal.SIGTERM)
    try: proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
