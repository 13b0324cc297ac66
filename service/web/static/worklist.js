/* deidgate worklist: keyboard triage (j/k move, Enter opens, r marks read). No inline scripts. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function rows(table) {
    return Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-exam]"));
  }

  function selectedIndex(table) {
    var all = rows(table);
    for (var i = 0; i < all.length; i++) {
      if (all[i].classList.contains("selected")) { return i; }
    }
    return -1;
  }

  function select(table, index, focus) {
    var all = rows(table);
    if (!all.length) { return null; }
    var i = Math.max(0, Math.min(all.length - 1, index));
    for (var k = 0; k < all.length; k++) {
      all[k].classList.toggle("selected", k === i);
    }
    var link = all[i].querySelector("a.exam-link");
    if (focus && link) { link.focus(); }
    return all[i];
  }

  function announce(text) {
    var status = document.getElementById("worklist-status");
    if (status) { status.textContent = text; }
  }

  function markRead(row) {
    if (!row || row.getAttribute("data-state") === "read") {
      announce("This exam is already marked read.");
      return;
    }
    var url = row.getAttribute("data-read-url");
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "HX-Request": "true" }
    }).then(function (response) {
      if (!response.ok) { throw new Error(String(response.status)); }
      return response.text();
    }).then(function (html) {
      var cell = row.querySelector(".state-cell");
      if (cell) { cell.innerHTML = html; }
      row.setAttribute("data-state", "read");
      row.classList.add("is-read");
      var rank = row.querySelector("td");
      announce("Exam ranked " + (rank ? rank.textContent.trim() : "") + " marked read.");
    }).catch(function (err) {
      announce("Could not mark the exam read (" + err.message + "). Reload the page and try again.");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector("table.worklist");
    if (!table) { return; }

    // Tabbing onto an exam link selects its row too, so j/k continue from there.
    table.addEventListener("focusin", function (event) {
      var row = event.target.closest ? event.target.closest("tr[data-exam]") : null;
      if (row) { select(table, rows(table).indexOf(row), false); }
    });

    // A row marked read by htmx (the Mark read button) is read for the r key too.
    document.addEventListener("htmx:afterSwap", function (event) {
      var row = event.detail.target && event.detail.target.closest
        ? event.detail.target.closest("tr[data-exam]") : null;
      if (row) { row.setAttribute("data-state", "read"); row.classList.add("is-read"); }
    });

    document.addEventListener("keydown", function (event) {
      if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) { return; }
      var t = event.target;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) { return; }
      var current = selectedIndex(table);
      if (event.key === "j") {
        select(table, current + 1, true);
        event.preventDefault();
      } else if (event.key === "k") {
        select(table, current < 0 ? 0 : current - 1, true);
        event.preventDefault();
      } else if (event.key === "Enter") {
        if (t && (t.tagName === "A" || t.tagName === "BUTTON")) { return; }  // native Enter
        var row = current >= 0 ? rows(table)[current] : null;
        var link = row ? row.querySelector("a.exam-link") : null;
        if (link) { event.preventDefault(); window.location.assign(link.href); }
      } else if (event.key === "r") {
        if (current >= 0) { event.preventDefault(); markRead(rows(table)[current]); }
      }
    });
  });
})();
