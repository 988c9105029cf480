// Gaia console: the little behaviour the pages need beyond htmx. Our own code, no library.
// - data-confirm: a destructive button asks first and says what will happen;
// - data-autosubmit: a select that submits its form when changed (the language switch);
// - data-copy: copy buttons for IPs and names;
// - data-check-all: a header checkbox that ticks every row checkbox of its table.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    const copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
        copy.setAttribute("data-copied", "");
        setTimeout(function () { copy.removeAttribute("data-copied"); }, 1500);
      });
    }
  }, true);
  document.addEventListener("change", function (event) {
    const select = event.target.closest("[data-autosubmit]");
    if (select && select.form) { select.form.requestSubmit(); }
    const all = event.target.closest("[data-check-all]");
    if (all) {
      const table = all.closest("table");
      table.querySelectorAll("tbody input[type=checkbox]").forEach(function (box) {
        box.checked = all.checked;
      });
    }
  });
})();
