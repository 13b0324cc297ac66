/* deidgate web UI: the little JavaScript the pages need (no inline scripts: CSP script-src 'self'). */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request that changes state carries the session's CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.verb !== "get") {
      event.detail.headers["X-CSRF-Token"] = csrfToken();
    }
  });

  // Progress bars: the width comes from aria-valuenow / aria-valuemax (no style attributes).
  function paintBars(root) {
    var bars = (root || document).querySelectorAll('[role="progressbar"]');
    for (var i = 0; i < bars.length; i++) {
      var bar = bars[i];
      var now = Number(bar.getAttribute("aria-valuenow")) || 0;
      var max = Number(bar.getAttribute("aria-valuemax")) || 0;
      var fill = bar.querySelector(".bar-fill");
      if (fill) {
        fill.style.width = (max > 0 ? Math.min(100, (100 * now) / max) : 0) + "%";
      }
    }
  }
  document.addEventListener("DOMContentLoaded", function () { paintBars(document); });
  document.addEventListener("htmx:afterSettle", function () { paintBars(document); });

  // Forms marked data-confirm ask before they are sent (cancel a job, remove a node).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // After an htmx swap, move focus to the new result so keyboard and screen-reader users land on it.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.hasAttribute && target.hasAttribute("data-focus-result")) {
      var heading = target.querySelector("h2, h3, [role=alert], [role=status]");
      if (heading) {
        if (!heading.hasAttribute("tabindex")) { heading.setAttribute("tabindex", "-1"); }
        heading.focus();
      }
    }
  });
})();
