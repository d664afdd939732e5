// Upload page: folders and drag-and-drop, sent a few files per request so thousands fit.
(function () {
  "use strict";
  var form = document.querySelector("[data-upload]");
  if (!form || !window.fetch) { return; }
  var CHUNK_FILES = 20;
  var CHUNK_BYTES = 64 * 1024 * 1024;
  var status = form.querySelector("[data-status]");
  var zone = form.querySelector("[data-dropzone]");
  var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  form.querySelectorAll("[data-needs-js]").forEach(function (el) { el.hidden = false; });

  function say(text) { status.textContent = text; }

  function post(url, body) {
    return fetch(url, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": token, "Accept": "application/json" }
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) { throw new Error(data.detail || ("The server answered " + response.status)); }
        return data;
      });
    });
  }

  function chunks(files) {
    var out = [], current = [], size = 0;
    files.forEach(function (entry) {
      if (current.length && (current.length >= CHUNK_FILES || size + entry.file.size > CHUNK_BYTES)) {
        out.push(current); current = []; size = 0;
      }
      current.push(entry); size += entry.file.size;
    });
    if (current.length) { out.push(current); }
    return out;
  }

  function send(files) {
    if (!files.length) { say("Nothing to upload: choose files, a folder or a zip."); return; }
    var body = new FormData();
    body.append("description", form.querySelector("[name=description]").value);
    say("Starting the upload of " + files.length + " file(s)…");
    post(form.dataset.createUrl, body).then(function (job) {
      var parts = chunks(files), done = 0;
      function next(index) {
        if (index >= parts.length) { return post(job.submit_url, new FormData()); }
        var data = new FormData();
        parts[index].forEach(function (entry) { data.append("files", entry.file, entry.path); });
        return post(job.files_url, data).then(function () {
          done += parts[index].length;
          say("Sent " + done + " of " + files.length + " file(s)…");
          return next(index + 1);
        });
      }
      return next(0).then(function () { window.location.href = job.job_url; });
    }).catch(function (error) { say("The upload stopped: " + error.message); });
  }

  function fromInputs() {
    var files = [];
    form.querySelectorAll("input[type=file]").forEach(function (input) {
      Array.prototype.forEach.call(input.files, function (file) {
        files.push({ file: file, path: file.webkitRelativePath || file.name });
      });
    });
    return files;
  }

  function walk(entry, prefix, files) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (file) {
          files.push({ file: file, path: prefix + file.name }); resolve();
        }, function () { resolve(); });
      } else if (entry.isDirectory) {
        var reader = entry.createReader();
        var readAll = function () {
          reader.readEntries(function (batch) {
            if (!batch.length) { resolve(); return; }
            Promise.all(batch.map(function (child) {
              return walk(child, prefix + entry.name + "/", files);
            })).then(readAll);
          }, function () { resolve(); });
        };
        readAll();
      } else { resolve(); }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send(fromInputs());
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    var files = [], pending = [];
    Array.prototype.forEach.call(event.dataTransfer.items || [], function (item) {
      var entry = item.webkitGetAsEntry && item.webkitGetAsEntry();
      if (entry) { pending.push(walk(entry, "", files)); }
    });
    if (!pending.length) {
      Array.prototype.forEach.call(event.dataTransfer.files, function (file) {
        files.push({ file: file, path: file.name });
      });
    }
    Promise.all(pending).then(function () { send(files); });
  });
})();
