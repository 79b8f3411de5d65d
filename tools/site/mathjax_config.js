// Runs before MathJax 3 loads (Sphinx's mathjax_config_path), after the MyST settings in window.MathJax.
// The widget renderer (@jupyter-widgets/html-manager) typesets widget labels with MathJax 2's API,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); MathJax 3 has no Hub. Provide that one call: calls
// made before MathJax is ready wait for it.
(function () {
  const pending = [];
  const typeset = (cmd) => {
    const el = Array.isArray(cmd) ? cmd[2] : undefined;
    return MathJax.typesetPromise(el ? [el] : undefined).catch((err) => console.warn('MathJax:', err.message));
  };
  window.MathJax = Object.assign(window.MathJax || {}, {
    Hub: {Queue: (cmd) => { pending.push(cmd); }},
    startup: {
      ready() {
        MathJax.startup.defaultReady();
        MathJax.Hub = {Queue: (cmd) => MathJax.startup.promise.then(() => typeset(cmd))};
        pending.splice(0).forEach((cmd) => MathJax.Hub.Queue(cmd));
      },
    },
  });
})();
