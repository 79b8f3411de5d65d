"""Fresh IPython kernels forked from a process that has already imported torch: the suite's notebooks start in a
fraction of the CPU time.

The suite executes some 35 notebooks, each in a fresh kernel, and every fresh kernel spends about 2.3 s of CPU
importing torch and ipykernel before it runs a cell: more than a minute of the two cores' time. Here one server
process imports them once; each kernel is a fork of it, a new process with the server's modules already loaded and
nothing else of it (no user code ever ran there), that then starts up as `python -m ipykernel_launcher` would, in
the environment, working directory and streams jupyter_client gave the kernel.

jupyter_client starts `python forked_kernels.py launch SOCKET <the kernel's arguments>` in place of
`python -m ipykernel_launcher <the kernel's arguments>` (`ForkedKernels.manager_class`). That launcher asks the
server for a fork, and stands for it: signals it receives (an interrupt, a shutdown) are passed on to the kernel,
and it exits with the kernel's status. If it is killed, the server kills its kernel. Where a fork could differ from
a fresh kernel, the launcher becomes a fresh kernel instead (it `exec`s the command it replaced): when the server is
not there, or when the kernel's environment changes a setting that torch or Python read once, at start-up
(`OMP_NUM_THREADS`, ...).

Only the standard library is imported at module level: the launcher must start in milliseconds.
"""
import importlib
import importlib.util
import json
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

# What every kernel imports, less what reads the environment as it is imported: ipykernel.kernelapp (its parent's
# pid, 6 ms) and matplotlib (its backend, which ipykernel sets for the kernel), imported in the fork.
PRELOAD = ('torch', 'numpy', 'ipykernel.ipkernel')
# Settings read once, when Python, a library or OpenMP starts: a kernel whose value differs from the server's
# cannot be a fork of it. (PYTHONPATH is the exception: it is only a list of paths, applied to the fork's sys.path.)
READ_AT_STARTUP = re.compile(r'(OMP|GOMP|KMP|MKL|OPENBLAS|ATEN|TORCH|PYTORCH|LD|MALLOC|NUMBA)_|PYTHON(?!PATH$)|MPLBACKEND$')
MESSAGE = 1 << 20  # the largest request (arguments, working directory, environment), in bytes


def python_path(env:dict)->list:
    "The entries PYTHONPATH puts first on sys.path."
    return [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]


def startup_differences(env:dict, base:dict)->list:
    "The variables read at start-up whose value in `env` is not their value in `base`."
    return sorted(k for k in set(env) | set(base) if READ_AT_STARTUP.match(k) and env.get(k) != base.get(k))


# ---- the server ------------------------------------------------------------------------------------------------

class ForkServer:
    "Listens on `sock_path`, imports PRELOAD, then forks a kernel for each launcher that asks."
    def __init__(self, sock_path:str):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server.bind(sock_path)
        self.server.listen(64)  # launchers that come during the imports wait here
        for m in PRELOAD: importlib.import_module(m)
        self.env, self.path = dict(os.environ), [p for p in sys.path[1:] if p not in python_path(os.environ)]
        self.sel, self.kernels = selectors.DefaultSelector(), {}  # kernel pid -> its launcher's connection
        self.sel.register(self.server, selectors.EVENT_READ)
        self.exited, wake = os.pipe2(os.O_NONBLOCK)  # a kernel's exit wakes the loop at once: its launcher waits
        signal.set_wakeup_fd(wake)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(self.exited, selectors.EVENT_READ)

    def serve(self):
        "Answer launchers and report exits until the process that started the server is gone."
        parent = os.getppid()
        while os.getppid() == parent:
            for key, _ in self.sel.select(timeout=0.5):
                if key.fileobj is self.server: self.fork_kernel()
                elif key.fileobj is self.exited: os.read(self.exited, 512)
                else:  # the launcher is gone (killed, or it exited): so goes its kernel
                    self.sel.unregister(key.fileobj)
                    try: os.kill(key.data, signal.SIGKILL)
                    except ProcessLookupError: pass
            self.report_exits()

    def report_exits(self):
        "Tell each launcher whose kernel exited its exit status."
        while self.kernels:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0: return
            conn = self.kernels.pop(pid)
            try: conn.send(f'exit {os.waitstatus_to_exitcode(status)}'.encode())
            except OSError: pass  # the launcher is gone
            try: self.sel.unregister(conn)
            except KeyError: pass  # unregistered when its launcher went
            conn.close()

    def fork_kernel(self):
        "Answer one launcher: with a fork that becomes its kernel, or with why it must start a fresh one."
        conn, _ = self.server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, MESSAGE, 3)
        req = json.loads(msg)
        if differs := startup_differences(req['env'], self.env):
            conn.send(f"fresh: {', '.join(differs)} differ".encode())
            for fd in fds: os.close(fd)
            return conn.close()
        sys.stdout.flush(); sys.stderr.flush()
        if pid := os.fork():
            for fd in fds: os.close(fd)
            self.kernels[pid] = conn
            self.sel.register(conn, selectors.EVENT_READ, pid)
            return conn.send(f'pid {pid}'.encode())
        code = 1
        try:  # the fork keeps nothing of the server's but the modules it imported
            signal.set_wakeup_fd(-1)
            for c in [self.server, conn, *self.kernels.values()]: c.close()
            self.sel.close(); os.close(self.exited)
            code = become_kernel(req, fds, self.path)
        except SystemExit as e: code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException: traceback.print_exc()
        finally: os._exit(code)


def become_kernel(req:dict, fds:list, base_path:list)->int:
    "In the fork: take the launcher's streams, directory, environment and arguments, and run the kernel to its end."
    for i, fd in enumerate(fds): os.dup2(fd, i); os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD): signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(req['cwd'])
    os.environ.clear(); os.environ.update(req['env'])
    sys.path[:] = python_path(req['env']) + base_path  # as `python -m ipykernel_launcher` has it; IPython adds ''
    sys.argv = [importlib.util.find_spec('ipykernel_launcher').origin] + req['argv']
    import numpy, torch
    random.seed(); numpy.random.seed(); torch.seed()  # drawn from the OS, as a fresh import draws them: an unseeded
                                                      # cell must differ from one kernel to the next
    from ipykernel.kernelapp import IPKernelApp
    IPKernelApp.launch_instance(argv=req['argv'])
    import atexit; atexit._run_exitfuncs()  # what a kernel's interpreter runs at exit (os._exit follows)
    return 0


# ---- the launcher ----------------------------------------------------------------------------------------------

def launch(sock_path:str, command:list):
    "Stand for a kernel forked by the server at `sock_path`, or `exec` the kernel `command` where there is none."
    argv = command[3:]  # after `python -m ipykernel_launcher`
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sock_path)
        socket.send_fds(s, [json.dumps(dict(argv=argv, cwd=os.getcwd(), env=dict(os.environ))).encode()], [0, 1, 2])
        reply = s.recv(4096).decode()
    except OSError as e: reply = f'fresh: {e}'
    if not reply.startswith('pid '): os.execv(command[0], command)
    pid = int(reply.split()[1])
    def forward(signum, frame):
        try: os.kill(pid, signum)
        except ProcessLookupError: pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT): signal.signal(sig, forward)
    status = s.recv(4096).decode()  # 'exit N' when the kernel exits, '' if the server died
    code = int(status.split()[1]) if status.startswith('exit ') else 1
    sys.exit(code if code >= 0 else 128 - code)


# ---- for the suite: start and stop a server, and a kernel manager that uses it ---------------------------------------

class ForkedKernels:
    "A fork server on a socket in `folder`, run while the `with` block runs; `manager_class` starts kernels from it."
    def __init__(self, folder:Path): self.sock = str(Path(folder)/'kernels.sock')

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, 'serve', self.sock], start_new_session=True)
        for _ in range(200):  # the socket exists in a few milliseconds; requests wait while the imports run
            if os.path.exists(self.sock) or self.proc.poll() is not None: break
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):  # the server and every kernel forked from it
        try: os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        self.proc.wait()

    @property
    def manager_class(self):
        "A jupyter_client kernel manager whose python kernels are forks from this server."
        from jupyter_client.manager import AsyncKernelManager
        sock = self.sock
        class ForkedKernelManager(AsyncKernelManager):
            def format_kernel_cmd(self, extra_arguments=None)->list:
                cmd = super().format_kernel_cmd(extra_arguments)
                if cmd[1:3] != ['-m', 'ipykernel_launcher']: return cmd
                return [sys.executable, __file__, 'launch', sock] + cmd
        return ForkedKernelManager


if __name__ == '__main__':
    if sys.argv[1] == 'serve': ForkServer(sys.argv[2]).serve()
    elif sys.argv[1] == 'launch': launch(sys.argv[2], sys.argv[3:])
    else: sys.exit(f'usage: {sys.argv[0]} serve SOCKET | launch SOCKET COMMAND...')
