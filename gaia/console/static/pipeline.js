// Gaia console, a pipeline run's build record: live log lines. Our own code, no library.
// An element with data-build-follow="<API logs URL with follow=true&after=N>" opens an
// EventSource on it (the browser sends the session cookie; the API streams one JSON line
// {seq, step, line} per event and an "end" event once the run has finished) and appends each
// line as a row to the element named by data-build-target. On "end" the page reloads, to show
// the run's final state, steps and failure. Leaving the page (htmx swaps the body) closes it.
(function () {
  "use strict";
  const MAX_ROWS = 20000;  // the page's own lines plus the live ones, bounded

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) { td.className = className; }
    td.textContent = text;
    return td;
  }

  function row(line) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(String(Number(line.seq) + 1), "num mono"));
    tr.appendChild(cell(line.step || ""));
    const td = document.createElement("td");
    const pre = document.createElement("pre");
    pre.className = "line";
    pre.textContent = line.line || "";
    td.appendChild(pre);
    tr.appendChild(td);
    return tr;
  }

  function follow(status) {
    if (status.gaiaSource) { return; }
    const target = document.getElementById(status.getAttribute("data-build-target"));
    const source = new EventSource(status.getAttribute("data-build-follow"));
    status.gaiaSource = source;
    source.onopen = function () { status.textContent = status.getAttribute("data-status-live"); };
    source.onerror = function () { status.textContent = status.getAttribute("data-status-lost"); };
    source.onmessage = function (event) {
      let line;
      try { line = JSON.parse(event.data); } catch (e) { return; }
      target.appendChild(row(line));
      while (target.rows.length > MAX_ROWS) { target.deleteRow(0); }
    };
    source.addEventListener("end", function () {
      source.close();
      status.gaiaSource = null;
      status.textContent = status.getAttribute("data-status-end");
      window.setTimeout(function () { window.location.reload(); }, 500);
    });
  }

  function stopAll() {
    document.querySelectorAll("[data-build-follow]").forEach(function (status) {
      if (status.gaiaSource) { status.gaiaSource.close(); status.gaiaSource = null; }
    });
  }

  if (!window.gaiaBuildFollow) {
    document.addEventListener("htmx:beforeSwap", stopAll);
    window.addEventListener("pagehide", stopAll);
    window.gaiaBuildFollow = true;
  }
  document.querySelectorAll("[data-build-follow]").forEach(follow);
})();
