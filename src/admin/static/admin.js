// authbridge admin page: polls /api/state and updates the page in place. Text only (never
// innerHTML), so nothing from the server can become markup.
"use strict";
(function () {
  var EVERY_MS = 3000;
  function set(root, field, value) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el) { el.textContent = (value === null || value === undefined || value === "") ? "\u2014" : String(value); }
    return el;
  }
  function device(root, a) {
    var box = root.querySelector('[data-field="device"]');
    if (!box) { return; }
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var d = a.device;
    if (!d) { return; }
    var p = document.createElement("p");
    p.appendChild(document.createTextNode("Device code "));
    var code = document.createElement("strong");
    code.className = "code";
    code.textContent = d.user_code;
    p.appendChild(code);
    p.appendChild(document.createTextNode(" \u2014 open "));
    var link = document.createElement("a");
    link.href = d.verification_uri;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = d.verification_uri;
    p.appendChild(link);
    p.appendChild(document.createTextNode(", enter the code and sign in as " + a.mailbox + ". State: "));
    var st = document.createElement("span");
    st.textContent = d.state + (d.state === "waiting" ? " (" + d.expires_in + " s left)" : "");
    p.appendChild(st);
    if (d.message) { p.appendChild(document.createTextNode(" \u2014 " + d.message)); }
    box.appendChild(p);
  }
  function apply(s) {
    var cards = document.querySelectorAll("[data-account]");
    s.accounts.forEach(function (a) {
      for (var i = 0; i < cards.length; i++) {
        if (cards[i].getAttribute("data-account") !== a.name) { continue; }
        var card = cards[i];
        var state = set(card, "state", a.state);
        if (state) { state.className = "state tone-" + a.tone; }
        ["provider", "flow", "access_token_expires", "last_refresh", "refresh_token_age",
         "last_error", "sign_in"].forEach(function (f) { set(card, f, a[f]); });
        device(card, a);
      }
    });
    var rows = document.querySelectorAll("[data-listener]");
    s.listeners.forEach(function (l) {
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].getAttribute("data-listener") !== l.name) { continue; }
        ["sessions", "logins_ok", "logins_failed"].forEach(function (f) { set(rows[i], f, l[f]); });
      }
    });
    var updated = document.getElementById("updated");
    if (updated) { updated.textContent = s.generated_at; }
  }
  function poll() {
    fetch("/api/state", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (s) { if (s) { apply(s); } })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, EVERY_MS); });
  }
  // After Authorise: go on to the identity provider's sign-in page.
  var next = document.getElementById("continue");
  if (next && next.getAttribute("data-auto")) {
    window.location.assign(next.href);
    return;
  }
  if (document.querySelector("[data-account], [data-listener]")) {
    window.setTimeout(poll, EVERY_MS);
  }
})();
