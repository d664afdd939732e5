// Copy helpers for one-time secrets and configuration, as a file: the Content-Security-Policy
// runs no inline script. A read-only `input.copy` selects itself when clicked or focused; a
// button with `data-copy="<id>"` copies that element's value and reports in `data-copy-status`.
(function () {
  "use strict";

  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("input.copy")) {
      event.target.select();
    }
  });
  document.addEventListener("click", function (event) {
    if (event.target.matches && event.target.matches("input.copy")) {
      event.target.select();
    }
  });

  function copyFrom(button) {
    var area = document.getElementById(button.dataset.copy);
    var status = document.getElementById(button.dataset.copyStatus || "");
    function say(text) {
      if (status) { status.textContent = text; }
    }
    function byHand() {
      area.focus();
      area.select();
      say(document.execCommand("copy")
        ? "Copied to the clipboard."
        : "Selected: press Ctrl+C (or \u2318C) to copy.");
    }
    say("");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(area.value).then(function () {
        say("Copied to the clipboard.");
      }, byHand);
    } else {
      byHand();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (button) { copyFrom(button); }
  });
})();
