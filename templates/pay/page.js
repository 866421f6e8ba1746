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

  // How this page is shown: in a partner's frame, in a popup the partner opened, or as a page.
  function windowMode() {
    return framed ? "iframe" : (window.opener ? "popup" : "page");
  }

  // Tell the bridge what became of the bank step (its history and per-bank metrics): kept
  // alive past this page's unload, which follows at once. A report lost is no harm.
  function report(event, mode) {
    try {
      fetch(page.report_url, {
        method: "POST", keepalive: true, credentials: "omit", cache: "no-store",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ event: event, mode: mode })
      }).catch(function () { /* gone with the page, or refused */ });
    } catch (ignored) { /* no fetch */ }
  }

  // The bank step goes once per tab: Back, or a reload after the bank, shows a button instead
  // of posting the old form again. Returns whether the page is on its way to the bank.
  // The window a framed step moved to is that step, sent once of its own.
  var sentKey = "redirect-bridge:sent:" + page.action_id + (page.window ? ":window" : "");
  function goOnce(form, link) {
    var sent = false;
    try { sent = window.sessionStorage.getItem(sentKey) === "1"; } catch (ignored) { /* storage blocked */ }
    if (sent) { document.getElementById("bank-again").hidden = false; return false; }
    send(form, link);
    return true;
  }

  // The one place the form leaves: it is noted for this tab, and the bridge hears how it went.
  function send(form, link) {
    try { window.sessionStorage.setItem(sentKey, "1"); } catch (ignored) { /* storage blocked */ }
    report("bank", windowMode());
    if (page.window) { report("fallback", page.window); }  // once, as the step leaves
    if (form) {
      // Through the prototype: a field named "submit" shadows form.submit.
      HTMLFormElement.prototype.submit.call(form);
    } else {
      window.location.replace(link.href);  // GET: no history entry to come Back to
    }
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

  // One page at the bank at a time. Each tab names itself (an id kept for the tab, so a reload
  // is the same page) and asks the bridge whether it holds the session's bank step before it
  // submits; a page that does not hold it says the step is open elsewhere, follows the status
  // and offers to continue here. Never asked by a GET: previews and prefetches fetch pages.
  var pageId = null;
  function ownId() {
    var key = "redirect-bridge:page";
    try { pageId = pageId || window.sessionStorage.getItem(key); } catch (ignored) { /* blocked */ }
    if (!pageId) {
      var bytes = new Uint8Array(16);
      window.crypto.getRandomValues(bytes);
      pageId = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
      try { window.sessionStorage.setItem(key, pageId); } catch (ignored) { /* blocked */ }
    }
    return pageId;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "same-origin"
    });
  }

  // Whether this page holds the step; when the bridge cannot say, it does (reaching the bank
  // matters more than a second view). Asked too often, it asks again a little later.
  function claim(take, then) {
    post(page.claim_url, { page: ownId(), take: take }).then(function (response) {
      if (response.status === 429) { window.setTimeout(function () { claim(take, then); }, 5000); return null; }
      return response.status === 200 ? response.json() : { held: true };
    }).then(function (answer) { if (answer) { then(answer.held !== false); } }, function () { then(true); });
  }

  function shown(id, visible) {
    var element = document.getElementById(id);
    if (element) { element.hidden = !visible; }
  }

  var watching = null;
  function watchHold() {
    if (watching === null) {
      watching = window.setInterval(function () { claim(false, function (held) { if (!held) { elsewhere(); } }); }, 5000);
    }
  }

  function elsewhere() {
    window.clearInterval(watching);
    watching = null;
    ["bank-going", "bank-again", "phone-code", "in-app"].forEach(function (id) { shown(id, false); });
    shown("step-elsewhere", true);
    shown("here", true);
    if (!inApp) { offerPhone(); }
  }

  function handoffLink(then) {
    post(page.handoff_url, {}).then(function (response) {
      return response.status === 201 ? response.json() : null;
    }).then(function (answer) { if (answer) { then(answer); } }, function () { /* asked again on demand */ });
  }

  // "Continue on your phone": a single-use link the bridge makes on demand, drawn as a QR
  // code it draws itself; this page takes the step first, so it knows when the phone does.
  function offerPhone() {
    var phone = document.getElementById("phone");
    if (!phone || !phone.hidden) { return; }
    phone.hidden = false;
    var button = phone.querySelector("[data-bridge-action=continue-on-phone]");
    button.addEventListener("click", function () {
      claim(true, function () {
        ["step-elsewhere", "here"].forEach(function (id) { shown(id, false); });
        handoffLink(function (answer) {
          document.getElementById("phone-qr").src = answer.qr;
          button.parentNode.hidden = true;  // one link at a time: the code stands for it
          shown("phone-code", true);
          watchHold();
        });
      });
    });
  }

  // Known in-app browsers (app/inapp.py's table, given in the settings) are not sent to the
  // bank by themselves: the page offers the customer's own browser, through a handoff link
  // (on Android an intent:// link, which opens the default browser), or to continue here.
  var agent = window.navigator.userAgent;
  var inApp = (page.in_app || []).some(function (browser) {
    return browser[1].some(function (marker) { return agent.indexOf(marker) >= 0; });
  });
  var hereKey = "redirect-bridge:here";  // the customer chose to go on inside the app
  try { inApp = inApp && window.sessionStorage.getItem(hereKey) !== "1"; } catch (ignored) { /* blocked */ }

  function offerBrowser() {
    ["bank-going", "step-elsewhere"].forEach(function (id) { shown(id, false); });
    ["in-app", "here"].forEach(function (id) { shown(id, true); });
    handoffLink(function (answer) {
      var open = document.getElementById("in-app-open");
      var url = new URL(answer.handoff_url);
      if (/Android/.test(agent)) {
        open.href = "intent://" + url.host + url.pathname + "#Intent;scheme=" + url.protocol.slice(0, -1) +
          ";action=android.intent.action.VIEW;category=android.intent.category.BROWSABLE;end";
        return;
      }
      open.href = url.href;
      shown("in-app-ios", true);
      document.querySelector("[data-bridge-action=copy-link]").addEventListener("click", function () {
        if (window.navigator.clipboard) { window.navigator.clipboard.writeText(url.href).catch(function () { /* the link stays */ }); }
      });
    });
  }

  // The page of a link that moves the step here: claimed from its own script, never by a GET.
  if (page.handoff) {
    var handoff = document.getElementById("handoff-form");
    if (handoff) {
      handoff.elements.page.value = ownId();
      HTMLFormElement.prototype.submit.call(handoff);
    }
    return;
  }

  var form = document.getElementById("bank-form");
  var link = document.getElementById("bank-go");
  notify(framed && Boolean(form || link));
  if (page.done) {
    // Back from the bank with the outcome known: on to the shop, unless a partner page embeds us.
    if (page.onward_url && !framed && !window.opener) { window.location.replace(page.onward_url); }
    return;
  }
  var here = document.querySelector("[data-bridge-action=continue-here]");
  if (here) {
    here.addEventListener("click", function () {
      try { window.sessionStorage.setItem(hereKey, "1"); } catch (ignored) { /* blocked */ }
      inApp = false;
      claim(true, function () {
        ["step-elsewhere", "in-app", "here"].forEach(function (id) { shown(id, false); });
        if (form || link) { send(form, link); } else { watchHold(); }
      });
    });
  }
  if (form || link) {
    if (framed && page.bank_frames === "refused") {
      document.getElementById("bank-window").hidden = false;
      follow();
      return;
    }
    window.addEventListener("pageshow", function (event) {
      if (event.persisted) { shown("bank-again", true); follow(); watchHold(); }
    });
    // The button that opens the bank page again asks first too.
    var again = form || document.querySelector("#bank-again a");
    again.addEventListener(form ? "submit" : "click", function (event) {
      event.preventDefault();
      claim(false, function (held) { if (held) { send(form, link); } else { elsewhere(); } });
    });
    // A window the embedding script opens for the step (?take=1) is that step.
    var take = /[?&]take=1(&|$)/.test(window.location.search);
    claim(take, function (held) {
      if (!held) { elsewhere(); follow(); return; }
      if (inApp) { offerBrowser(); watchHold(); follow(); return; }
      if (goOnce(form, link)) { return; }
      offerPhone();
      watchHold();
      follow();
    });
    return;
  }
  if (here && inApp) {
    claim(false, function (held) { if (held) { offerBrowser(); watchHold(); } else { elsewhere(); } });
  } else if (here) {
    offerPhone();
  }
  follow();
}());
