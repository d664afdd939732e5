// Storage medium form: show the fieldset of the chosen kind (directory or object storage).
// Without JavaScript both stay visible and the service ignores the other kind's fields.
(function () {
  const form = document.querySelector("form[data-medium-form]");
  if (!form) return;
  const kind = form.querySelector("select[name=kind]");
  if (!kind) return;
  function show() {
    for (const set of form.querySelectorAll("fieldset[data-kind]")) {
      set.hidden = set.dataset.kind !== kind.value;
    }
  }
  kind.addEventListener("change", show);
  show();
})();
