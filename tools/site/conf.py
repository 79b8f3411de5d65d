"""Sphinx configuration of the offline site that tools/build_site.py builds into _site/ (`make docs`).

The sources are the notebooks nbdev processed into _proc/, rewritten by build_site.py into _proc/_site_src/;
their stored outputs and widget state are rendered as they are (nothing is executed). Every script the pages
load is served from the site itself: MathJax, require.js and the widget renderer come from the pinned npm
packages in package-lock.json, copied into _proc/_site_static/ (served as _static/) by build_site.py.
"""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_ini = configparser.ConfigParser()
_ini.read(ROOT/'settings.ini')
_cfg = _ini['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
version = release = _cfg['version']
language = 'en'

extensions = ['myst_nb']
root_doc = 'index'
exclude_patterns = []

# Notebooks: render what is stored, never execute.
nb_execution_mode = 'off'
nb_render_markdown_format = 'myst'  # markdown outputs (e.g. tables) go through the same parser as cells
nb_merge_streams = True
# The widget renderer, from this site only. Modules it does not bundle would load from "the CDN": point
# that at a local folder that does not exist, so a missing module fails loudly instead of going online.
nb_ipywidgets_js = {
    'widgets/require.js': {},
    'widgets/embed-amd.js': {'data-jupyter-widgets-cdn': '_static/widgets/not-bundled/'},
}

myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_block']  # attrs_block: {.class} on a paragraph
myst_dmath_double_inline = True
myst_heading_anchors = 3

# Math: MathJax 3 from this site (Sphinx loads it only on pages with math).
mathjax_path = 'mathjax/tex-chtml.js'
mathjax_config_path = 'mathjax_config.js'  # lets the widget renderer's MathJax 2 call work with MathJax 3

html_theme = 'furo'  # no web fonts: furo uses the system font stack
html_title = project
html_static_path = [str(ROOT/'_proc'/'_site_static'), str(Path(__file__).parent/'static')]
html_css_files = ['site.css']
html_js_files = [('keep_scripts_whole.js', {'priority': 100})]  # before sphinx_highlight.js (priority 200)
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {'navigation_with_keys': True}
