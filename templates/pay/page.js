(function () {
  "use strict";
  var page = JSON.parse(document.getElementById("bridge-page").textContent);
  var framed = window.parent !== window;

  // A configured origin may be a pattern (https://*.shop.example), which cannot be a
  // postMessage target: the frame's real parent origin is used when it matches one. The origin
  // is parsed, then matched: the same rule as app/security.py, held to the same test table.
  // origin-rule:start
  var LABEL = "[a-z0-9](?:[a-z0-9-]*[a-z0-9])?";
  var HOST = "((?:" + LABEL + "\\.)*" + LABEL + ")(?::([0-9]{1,5}))?$";
  var ORIGIN = new RegExp("^(https?)://" + HOST);
  var PATTERN = new RegExp("^(https?)://\\*\\." + HOST);
  function matches(pattern, origin) {
    var parsed = ORIGIN.exec(origin);
    if (!parsed) { return false; }
    var wild = PATTERN.exec(pattern);
    if (!wild) { return origin === pattern; }
    var suffix = "." + wild[2];
    return parsed[1] === wild[1] && parsed[3] === wild[3] &&
      parsed[2].length > suffix.length && parsed[2].slice(-suffix.length) === suffix;
  }
  // origin-rule:end

  function targetOrigins(target) {
    // Each origin once: the embedder the script names is often a configured origin already.
    var exact = page.origins.filter(function (origin, at) {
      return origin.indexOf("*") < 0 && page.origins.indexOf(origin) === at;
    });
    var ancestors = window.location.ancestorOrigins;
    var parent = target === window.parent && ancestors && ancestors.length ? ancestors[0] : null;
    if (parent && exact.indexOf(parent) < 0 && page.origins.some(function (o) { return matches(o, parent); })) {
      exact.push(parent);
    }
    return exact;
  }

  // Tell the embedding page (iframe parent or popup opener) about the status; only to the
  // partner origins the bridge was configured with, never to "*".
  // A framed bank page also says, before its form goes, what the bridge knows of the bank's
  // frames: the embedding script offers a window if the step stalls, and takes it to one at
  // once when the bank is known to refuse frames (the form then stays here).
  function notify(atBank) {
    var message = { source: "redirect-bridge", type: "status", status: page.status, done: page.done };
    if (atBank) { message.bank = { frames: page.bank_frames, lang: page.lang }; }
    [framed ? window.parent : null, window.opener].forEach(function (target) {
      if (!target) { return; }
      targetOrigins(target).forEach(function (origin) {
        try { target.postMessage(message, origin); } catch (ignored) { /* window gone */ }
      });
    });
  }

  // The bank step goes once per tab: Back, or a reload after the bank, shows a button instead
  // of posting the old form again. Returns whether the page is on its way to the bank.
  function goOnce(form, link) {
    // The window a framed step moved to is that step, sent once of its own.
    var key = "redirect-bridge:sent:" + page.action_id + (page.window ? ":window" : "");
    var sent = false;
    try { sent = window.sessionStorage.getItem(key) === "1"; } catch (ignored) { /* storage blocked */ }
    if (sent) { document.getElementById("bank-again").hidden = false; return false; }
    try { window.sessionStorage.setItem(key, "1"); } catch (ignored) { /* storage blocked */ }
    if (page.window) { report("fallback", page.window); }  // once, as the step leaves
    if (form) {
      // Through the prototype: a field named "submit" shadows form.submit.
      HTMLFormElement.prototype.submit.call(form);
    } else {
      window.location.replace(link.href);  // GET: no history entry to come Back to
    }
    return true;
  }

  // Long-poll the status API with this page's own ETag: a 200 always means the answer changed.
  var following = false;
  function follow() {
    if (following) { return; }
    following = true;
    var pause = 1000;
    function moveOn() { window.location.replace(page.next_url); }
    function retry() { window.setTimeout(poll, pause); pause = Math.min(pause * 2, 30000); }
    function poll() {
      fetch(page.status_url + "?wait=25", {
        headers: { "If-None-Match": '"' + page.etag + '"' }, cache: "no-store", credentials: "omit"
      }).then(function (response) {
        if (response.status === 304) { pause = 1000; poll(); return; }
        if (response.status === 200 || response.status === 404) { moveOn(); return; }
        retry();
      }).catch(retry);
    }
    poll();
  }

  // Tell the bridge what became of the bank step (its history): kept alive past this page's
  // unload, which follows at once. A report lost is no harm.
  function report(event, mode) {
    try {
      fetch(page.report_url, {
        method: "POST", keepalive: true, credentials: "omit", cache: "no-store",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ event: event, mode: mode })
      }).catch(function () { /* gone with the page, or refused */ });
    } catch (ignored) { /* no fetch */ }
  }

  var form = document.getElementById("bank-form");
  var link = document.getElementById("bank-go");
  notify(framed && Boolean(form || link));
  if (page.done) {
    // Back from the bank with the outcome known: on to the shop, unless a partner page embeds us.
    if (page.onward_url && !framed && !window.opener) { window.location.replace(page.onward_url); }
    return;
  }
  if (form || link) {
    if (framed && page.bank_frames === "refused") {
      document.getElementById("bank-window").hidden = false;
      follow();
      return;
    }
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { document.getElementById("bank-again").hidden = false; follow(); }
    });
    if (goOnce(form, link)) { return; }
  }
  follow();
}());
