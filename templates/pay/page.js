(function () {
  "use strict";
  var page = JSON.parse(document.getElementById("bridge-page").textContent);

  // Tell the embedding page (iframe parent or popup opener) about the status; only to the
  // partner origins the bridge was configured with, never to "*".
  function notify() {
    var message = { source: "redirect-bridge", type: "status", status: page.status, final: page.final };
    [window.parent !== window ? window.parent : null, window.opener].forEach(function (target) {
      if (!target) { return; }
      page.origins.forEach(function (origin) {
        try { target.postMessage(message, origin); } catch (ignored) { /* window gone */ }
      });
    });
  }

  // The bank form goes once per tab: Back, or a reload after the bank, shows a button instead
  // of posting the old form again. Returns whether the page is on its way to the bank.
  function submitOnce(form) {
    var key = "redirect-bridge:sent:" + page.action_id;
    var sent = false;
    try { sent = window.sessionStorage.getItem(key) === "1"; } catch (ignored) { /* storage blocked */ }
    if (sent) { document.getElementById("bank-again").hidden = false; return false; }
    try { window.sessionStorage.setItem(key, "1"); } catch (ignored) { /* storage blocked */ }
    // Through the prototype: a field named "submit" shadows form.submit.
    HTMLFormElement.prototype.submit.call(form);
    return true;
  }

  // Follow the status API and move on as soon as the answer changes. The first request does
  // not wait: the status may have moved since this page was made. After that, long-poll with
  // the ETag, so a 200 always means a change.
  function follow() {
    var etag = null;
    var pause = 1000;
    function moveOn() { window.location.replace(page.next_url); }
    function retry() { window.setTimeout(poll, pause); pause = Math.min(pause * 2, 30000); }
    function poll() {
      var url = etag ? page.status_url + "?wait=25" : page.status_url;
      var headers = etag ? { "If-None-Match": etag } : {};
      fetch(url, { headers: headers, cache: "no-store", credentials: "omit" })
        .then(function (response) {
          if (response.status === 304) { pause = 1000; poll(); return; }
          if (response.status !== 200) { if (response.status === 404) { moveOn(); } else { retry(); } return; }
          return response.json().then(function (answer) {
            if (etag !== null || answer.status !== page.status) { moveOn(); return; }
            etag = response.headers.get("ETag");
            pause = 1000;
            poll();
          });
        })
        .catch(retry);
    }
    poll();
  }

  notify();
  var form = document.getElementById("bank-form");
  var leaving = false;
  if (form) {
    leaving = submitOnce(form);
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { document.getElementById("bank-again").hidden = false; follow(); }
    });
  }
  if (!page.final && !leaving) { follow(); }
}());
