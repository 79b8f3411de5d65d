// After a search, Sphinx highlights the searched word on the pages opened next by splitting every text node
// that contains it, including the JSON inside <script> tags (a widget's saved state and views), which then
// no longer parses and the widgets do not render. Its highlighter skips nodes inside `.nohighlight`: mark
// every script so before it runs (this file loads ahead of sphinx_highlight.js, so its listener runs first).
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('script').forEach(s => s.classList.add('nohighlight'));
});
