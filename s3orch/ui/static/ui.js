// s3orch dashboard: small progressive enhancements. Every page reads without this file;
// actions (upload, delete, operations) post JSON with the CSRF token from the s3orch_csrf cookie.
"use strict";
(function () {
  document.documentElement.classList.add("js");
  var base = document.body ? document.body.dataset.base : "";

  function csrf() {
    var m = document.cookie.match(/(?:^|;\s*)s3orch_csrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  function say(text) { var s = document.getElementById("status"); if (s) { s.textContent = text; } }
  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body instanceof FormData) { init.body = body; }
    else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    return fetch(base + "/api/" + path, init).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); }
        return j;
      });
    });
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  // Lazy tree: a directory link expands in place (its href still works without JS).
  function expand(link) {
    var li = link.parentNode;
    var open = li.querySelector("ul");
    if (open) { open.remove(); link.setAttribute("aria-expanded", "false"); return; }
    var list = el("ul", { "class": "tree" });
    li.appendChild(list);
    link.setAttribute("aria-expanded", "true");
    function page(after) {
      var q = "tree?maxKeys=200&prefix=" + encodeURIComponent(link.dataset.prefix) + "&startAfter=" + encodeURIComponent(after || "");
      api("GET", q).then(function (data) {
        data.entries.forEach(function (e) {
          var item = el("li");
          var a;
          if (e.isDir) {
            a = el("a", { "class": "dir", href: base + "/objects?prefix=" + encodeURIComponent(e.path), "data-prefix": e.path, "aria-expanded": "false" }, e.name);
          } else {
            a = el("a", { "class": "obj", href: base + "/objects?prefix=" + encodeURIComponent(link.dataset.prefix) + "&key=" + encodeURIComponent(e.path) }, e.name);
          }
          item.appendChild(a);
          list.appendChild(item);
        });
        if (data.hasMore) {
          var more = el("button", { type: "button" }, "More…");
          more.addEventListener("click", function () { more.remove(); page(data.nextCursor); });
          list.appendChild(more);
        }
      }).catch(function (err) { say(err.message); });
    }
    page("");
  }
  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (t.matches && t.matches("a.dir") && !ev.ctrlKey && !ev.metaKey && t.closest("#tree")) {
      ev.preventDefault(); expand(t);
    }
  });

  function wire(id, fn) { var e = document.getElementById(id); if (e) { fn(e); } }

  document.querySelectorAll("[data-delete-key]").forEach(function (b) {
    b.addEventListener("click", function () {
      var key = b.dataset.deleteKey;
      if (!window.confirm("Delete " + key + "?")) { return; }
      api("POST", "delete", { key: key }).then(function () { say("Deleted " + key); window.location = base + "/objects"; })
        .catch(function (err) { say(err.message); });
    });
  });
  wire("delete-prefix", function (b) {
    b.addEventListener("click", function () {
      var prefix = b.dataset.prefix;
      api("GET", "prefix-count?prefix=" + encodeURIComponent(prefix)).then(function (c) {
        if (!window.confirm("Delete " + c.count + " objects under " + prefix + "?")) { return null; }
        return api("POST", "delete-prefix", { prefix: prefix }).then(function (r) {
          say("Deleted " + r.deleted + " objects under " + prefix);
          var tree = document.getElementById("tree");
          if (tree) { tree.innerHTML = "<li>empty</li>"; }
        });
      }).catch(function (err) { say(err.message); });
    });
  });
  wire("upload-form", function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(form);
      say("Uploading…");
      api("POST", "upload", data).then(function (r) {
        say("Uploaded " + r.key + " (" + r.size + " bytes)");
        window.location = base + "/objects?prefix=" + encodeURIComponent(r.key.replace(/[^/]*$/, "")) + "&key=" + encodeURIComponent(r.key);
      }).catch(function (err) { say("Upload failed: " + err.message); });
    });
  });

  function watchJob(job) {
    var bar = document.getElementById("job-progress");
    var list = document.getElementById("jobs");
    function tick() {
      api("GET", "jobs/" + job.id).then(function (j) {
        if (bar) { bar.max = j.total || Math.max(1, j.done); bar.value = j.state === "running" ? j.done : bar.max; }
        say(j.operation + ": " + j.state + " (" + j.done + (j.total ? "/" + j.total : "") + ")" + (j.error ? " – " + j.error : ""));
        if (j.state === "running") { window.setTimeout(tick, 1000); }
        else if (list) { list.insertBefore(el("li", {}, j.operation + ": " + j.state + (j.error ? " – " + j.error : "")), list.firstChild); }
      }).catch(function (err) { say(err.message); });
    }
    tick();
  }
  document.querySelectorAll("[data-operation]").forEach(function (b) {
    b.addEventListener("click", function () {
      api("POST", b.dataset.operation, { background: true }).then(function (r) { watchJob(r.job); })
        .catch(function (err) { say(err.message); });
    });
  });
  wire("sync-form", function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      api("POST", "sync", { backend: form.backend.value, bucket: form.bucket.value, background: true })
        .then(function (r) { watchJob(r.job); }).catch(function (err) { say(err.message); });
    });
  });

  function watchDrain(backend) {
    var bar = document.getElementById("drain-progress");
    var state = document.getElementById("drain-state");
    function tick() {
      api("GET", "drain-status?backend=" + encodeURIComponent(backend)).then(function (d) {
        var moved = d.objects_moved || 0, left = d.objects_remaining || 0;
        var done = d.state === "completed";
        bar.value = done ? 100 : (moved + left ? Math.floor(100 * moved / (moved + left)) : 0);
        state.textContent = backend + ": " + d.state + " – " + moved + " moved, " + left + " remaining";
        state.dataset.state = d.state;
        if (d.state === "active") { window.setTimeout(tick, 1000); }
      }).catch(function (err) { say(err.message); });
    }
    tick();
  }
  wire("drain-form", function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var backend = form.backend.value;
      if (!window.confirm("Drain " + backend + "? Its objects move to the other backends.")) { return; }
      api("POST", "drain", { backend: backend }).then(function () { watchDrain(backend); })
        .catch(function (err) { say(err.message); });
    });
  });
  wire("drain-cancel", function (b) {
    b.addEventListener("click", function () {
      var backend = document.getElementById("drain-backend").value;
      api("POST", "drain-cancel", { backend: backend }).then(function () { say("Drain of " + backend + " cancelled"); })
        .catch(function (err) { say(err.message); });
    });
  });
})();
