"""Run every lesson notebook top to bottom in a fresh kernel and store its outputs in place.

The outputs a learner sees on opening a notebook (and the docs site shows) are then computed, never pasted.
Widget state is stored too, so explorers render without a kernel.
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NBS = Path(__file__).resolve().parent.parent/'nbs'


def execute(path:Path, timeout:int=600):
    "Execute the notebook at `path` with `nbs/` as working directory and write it back."
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name='python3', store_widget_state=True,
                   resources={'metadata': {'path': str(NBS)}}).execute()
    nbformat.write(nb, path)


if __name__ == '__main__':
    paths = [Path(p) for p in sys.argv[1:]] or sorted(NBS.glob('*.ipynb'))
    for p in paths:
        print(f'executing {p.name}', flush=True)
        execute(p)
