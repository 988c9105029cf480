// Gaia console, logs tab: "Follow new lines". Our own code, no library.
// A button with data-log-follow="<API URL with follow=true>" opens an EventSource on it (the
// browser sends the session cookie; the API streams one JSON line per event) and prepends each
// line as a table row to the element named by data-log-target (an aria-live region). Pressing
// it again, or leaving the page (htmx swaps the body), closes the stream. The page is loaded
// inside the swapped body, so this file may run more than once: it installs itself once.
(function () {
  "use strict";
  if (window.gaiaLogFollow) { window.gaiaLogFollow.scan(document); return; }
  const MAX_ROWS = 1000;  // keep the page light during a long follow

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) { td.className = className; }
    td.textContent = text;
    return td;
  }

  function row(line) {
    const tr = document.createElement("tr");
    if (line.stream === "stderr") { tr.className = "stderr"; }
    const at = String(line.at || "").replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "");
    tr.appendChild(cell(at, "mono nowrap"));
    tr.appendChild(cell(line.instance || "", "mono"));
    tr.appendChild(cell(line.stream || ""));
    const td = document.createElement("td");
    const pre = document.createElement("pre");
    pre.className = "line";
    pre.textContent = line.text || "";
    td.appendChild(pre);
    tr.appendChild(td);
    return tr;
  }

  function stop(button) {
    if (button.gaiaSource) { button.gaiaSource.close(); button.gaiaSource = null; }
    button.setAttribute("aria-pressed", "false");
    button.textContent = button.getAttribute("data-label-off");
    const status = document.getElementById("follow-status");
    if (status) { status.textContent = ""; }
  }

  function start(button) {
    const target = document.getElementById(button.getAttribute("data-log-target"));
    const status = document.getElementById("follow-status");
    const source = new EventSource(button.getAttribute("data-log-follow"));
    button.gaiaSource = source;
    button.setAttribute("aria-pressed", "true");
    button.textContent = button.getAttribute("data-label-on");
    source.onopen = function () {
      if (status) { status.textContent = button.getAttribute("data-status-live"); }
    };
    source.onerror = function () {
      if (status) { status.textContent = button.getAttribute("data-status-lost"); }
    };
    source.onmessage = function (event) {
      let line;
      try { line = JSON.parse(event.data); } catch (e) { return; }
      target.insertBefore(row(line), target.firstChild);
      while (target.rows.length > MAX_ROWS) { target.deleteRow(target.rows.length - 1); }
    };
  }

  function scan(root) {
    root.querySelectorAll("[data-log-follow]").forEach(function (button) {
      if (button.gaiaBound) { return; }
      button.gaiaBound = true;
      button.addEventListener("click", function () {
        if (button.gaiaSource) { stop(button); } else { start(button); }
      });
    });
  }

  // htmx replaces the body on boosted navigation: close streams of the page being left.
  document.addEventListener("htmx:beforeSwap", function () {
    document.querySelectorAll("[data-log-follow]").forEach(stop);
  });
  window.addEventListener("pagehide", function () {
    document.querySelectorAll("[data-log-follow]").forEach(stop);
  });
  window.gaiaLogFollow = { scan: scan };
  scan(document);
})();
