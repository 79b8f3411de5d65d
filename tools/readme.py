"""Write README.md from nbs/index.ipynb: what `nbdev_readme` does, without Quarto.

Cells whose first line is `#| hide` are left out, nbdev directives are stripped, stored outputs are kept,
and links to sibling notebooks are pointed into nbs/ so they work from the repository root.
"""
import re
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r'^\s*#\|.*$\n?', re.M)
NOTEBOOK_LINK = re.compile(r'\]\((?!https?:|/|#)([^)]+\.ipynb)\)')


def readme_markdown(index:Path=ROOT/'nbs'/'index.ipynb')->str:
    "The README text for the notebook `index`."
    nb = nbformat.read(index, as_version=4)
    nb.metadata['language_info'] = {'name': 'python'}  # so code blocks are fenced as python
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith('#| hide')]
    for c in nb.cells:
        if c.cell_type == 'code': c.source = DIRECTIVE.sub('', c.source)
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = NOTEBOOK_LINK.sub(r'](nbs/\1)', body)
    return re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'


if __name__ == '__main__':
    target = ROOT/'README.md'
    text = readme_markdown()
    if '--check' in sys.argv:
        sys.exit(0 if target.read_text(encoding='utf-8') == text else 'README.md is stale: run `make export`')
    target.write_text(text, encoding='utf-8')
