/*
 * Redirect Bridge embedding script: runs the bank step (3-D Secure) from a partner's checkout
 * page in an iframe, a popup or a full redirect, and reports the outcome. No dependencies, no
 * build step. See the README's "Embedding" section.
 *
 *   var flow = RedirectBridge.start({
 *     statusUrl: "https://bridge.example/api/v1/status/TOKEN",  // from the token answer
 *     mode: "iframe",                     // "iframe" | "popup" | "redirect"
 *     container: document.getElementById("bank-step"),          // iframe mode
 *     size: "500x600",                    // "250x400" | "390x400" | "500x600" | "600x400" | "full"
 *     onStatus: function (answer) {},     // every change: {status, reason, action_url, updated_at, done}
 *     onComplete: function (answer) {},   // once, when the customer's part is over (answer.done:
 *                                         //   final, or "authorized" and held for capture);
 *                                         //   the step is cleaned up
 *     onError: function (error) {},       // {code, message}: "not_found", "popup_closed",
 *                                         //   "frame_blocked"
 *     transport: "events",                // "events" (Server-Sent Events) or "poll"
 *     fallback: "page",                   // iframe mode, a bank known to refuse frames: "page"
 *                                         //   (the whole page goes to it at once) or "popup"
 *                                         //   (the open-window button is offered at once)
 *     helloTimeout: 10000,                // ms until "frame_blocked" when no bridge page spoke
 *     stallTimeout: 12000                 // ms after the bank form went until the button
 *   });
 *   flow.stop();                          // stop following and clean up
 *
 * Call start() from the customer's click: browsers only allow a popup opened by a user gesture
 * (a blocked popup falls back to a full redirect).
 *
 * In iframe mode a bank may refuse to be framed, and the page cannot see it (the frame fires
 * "load" all the same). When the bridge knows the bank refuses frames, the step goes to a
 * window at once (see fallback); otherwise, if the step has not come back from the bank 12 s
 * after its form went, <button data-bridge-action="open-window"> is put beside the frame (in
 * the customer's language), whose click takes the step to a popup (the whole page when popups
 * are blocked). flow.mode says "popup" once it has.
 */
(function (global) {
  "use strict";

  var SIZES = {
    "250x400": [250, 400],
    "390x400": [390, 400],
    "500x600": [500, 600],
    "600x400": [600, 400]
  };
  var STATUS_PATH = "/api/v1/status/";
  // Every bridge page greets its embedder on load; a frame silent this long was refused.
  var HELLO_MILLISECONDS = 10000;
  // A framed step not back from the bank this long after its form went is offered a window
  // (a refused frame looks loaded to its parent: only time tells).
  var STALL_MILLISECONDS = 12000;
  var OPEN_WINDOW = {
    en: "Bank page not showing? Open it in a new window",
    ru: "Страница банка не открылась? Откройте её в новом окне"
  };

  // The pay page is told who embeds it, so it can greet a partner configured as a pattern
  // (https://*.shop.example) in browsers that do not say who a frame's parent is.
  function embedded(payUrl) {
    return payUrl + "?embedder=" + encodeURIComponent(global.location.origin);
  }

  function parseStatusUrl(statusUrl) {
    var url = new URL(statusUrl, global.location.href);
    var at = url.pathname.lastIndexOf(STATUS_PATH);
    if (at < 0) { throw new Error("RedirectBridge: statusUrl must end in " + STATUS_PATH + "{token}"); }
    var token = url.pathname.slice(at + STATUS_PATH.length);
    var base = url.origin + url.pathname.slice(0, at);
    return {
      origin: url.origin,
      statusUrl: base + STATUS_PATH + token,
      payUrl: base + "/pay/" + token
    };
  }

  // The pay page as the window a framed step moves to: "popup" or "page"; after "known" (the
  // bank refuses frames) or "stall" (the frame never came back). It takes the step (take=1):
  // it is the step, not a second view of it.
  function windowUrl(payUrl, kind, after) {
    var url = payUrl + "?window=" + kind + "&after=" + after + "&take=1";
    return kind === "popup" ? url + "&embedder=" + encodeURIComponent(global.location.origin) : url;
  }

  function popupFeatures(size) {
    var box = SIZES[size] || SIZES["500x600"];
    return "popup,width=" + box[0] + ",height=" + box[1];
  }

  // The customer's language for the script's own words: the bridge page's, else the browser's.
  function words(table, lang) {
    var asked = (lang || global.navigator.language || "en").slice(0, 2).toLowerCase();
    return table[asked] || table.en;
  }

  function makeFrame(payUrl, size, container) {
    var frame = document.createElement("iframe");
    frame.src = payUrl;
    frame.title = "Payment confirmation with your bank";
    frame.setAttribute("data-redirect-bridge", "");
    frame.style.border = "0";
    if (size === "full") {
      frame.style.cssText += "position:fixed;inset:0;width:100%;height:100%;z-index:2147483647;background:#fff";
      document.body.appendChild(frame);
    } else {
      var box = SIZES[size] || SIZES["500x600"];
      frame.width = String(box[0]);
      frame.height = String(box[1]);
      (container || document.body).appendChild(frame);
    }
    return frame;
  }

  function start(options) {
    if (!options || !options.statusUrl) { throw new Error("RedirectBridge: statusUrl is required"); }
    var bridge = parseStatusUrl(options.statusUrl);
    var mode = options.mode || "iframe";
    var noop = function () {};
    var onStatus = options.onStatus || noop;
    var onComplete = options.onComplete || noop;
    var onError = options.onError || noop;
    var frame = null;
    var popup = null;
    var stopped = false;
    var last = null;
    var etag = null;
    var pause = 1000;
    var pending = null;
    var watchPopup = null;
    var stream = null;
    var streamed = 0;  // how many answers the event stream has delivered
    var hello = null;
    var stall = null;   // the wait for a framed step to come back from the bank
    var button = null;  // the offer of a window beside the frame
    var after = "stall";
    var lang = null;

    function cleanUp() {
      stopped = true;
      global.removeEventListener("message", onMessage);
      if (pending) { pending.abort(); }
      if (stream) { stream.close(); }
      if (hello) { global.clearTimeout(hello); }
      if (watchPopup) { global.clearInterval(watchPopup); }
      dropFrame();
      if (popup && !popup.closed) { popup.close(); }
    }

    function dropFrame() {
      if (stall) { global.clearTimeout(stall); stall = null; }
      if (button && button.parentNode) { button.parentNode.removeChild(button); }
      if (frame && frame.parentNode) { frame.parentNode.removeChild(frame); }
      button = null;
      frame = null;
    }

    function watch() {
      watchPopup = global.setInterval(function () {
        if (popup.closed && !stopped) {
          global.clearInterval(watchPopup);
          watchPopup = null;
          // Closed, or only looks it (a bank's page may cut the tie to its opener): the
          // status API still says what happened.
          onError({ code: "popup_closed", message: "the bank window was closed or cut off" });
          poll(false);
        }
      }, 500);
    }

    // The framed step moves to a window, which is that step: a popup (from a click: browsers
    // block one opened otherwise), or the whole page when there is none.
    function toWindow(kind) {
      if (kind === "popup") {
        popup = global.open(windowUrl(bridge.payUrl, "popup", after), "redirect-bridge",
          popupFeatures(options.size));
      }
      if (!popup) {
        cleanUp();
        global.location.assign(windowUrl(bridge.payUrl, "page", after));
        return;
      }
      dropFrame();  // its bank page was refused or never came back: one step at the bank
      mode = "popup";
      watch();
    }

    function offerWindow() {
      if (button || stopped || !frame) { return; }
      button = document.createElement("button");
      button.type = "button";
      button.setAttribute("data-bridge-action", "open-window");
      button.textContent = words(OPEN_WINDOW, lang);
      if (options.size === "full") {  // above the frame that covers the page
        button.style.cssText = "position:fixed;left:50%;bottom:16px;transform:translateX(-50%);z-index:2147483647";
      }
      button.addEventListener("click", function () { toWindow("popup"); });
      frame.parentNode.insertBefore(button, frame.nextSibling);
    }

    // The bridge's page in the frame is about to send the form to the bank (or, with the bank
    // known to refuse frames, holds it back for a window).
    function atBank(data) {
      lang = typeof data.lang === "string" ? data.lang : null;
      if (data.frames === "refused") {
        after = "known";
        if (options.fallback === "popup") { offerWindow(); } else { toWindow("page"); }
      } else if (!stall && !button) {
        stall = global.setTimeout(function () {
          stall = null;
          offerWindow();
        }, options.stallTimeout || STALL_MILLISECONDS);
      }
    }

    function seen(answer) {
      if (stopped) { return; }
      if (last === null || answer.status !== last.status || answer.reason !== last.reason) {
        last = answer;
        onStatus(answer);
      }
      if (answer.done) {  // the bridge decides when the customer's part is over
        cleanUp();
        onComplete(answer);
      }
    }

    // The status API is the truth; it is followed with long-polls until the outcome is final.
    function poll(waitForChange) {
      if (stopped) { return; }
      if (pending) { pending.abort(); }
      pending = new AbortController();
      var asked = streamed;
      var url = bridge.statusUrl + (waitForChange && etag ? "?wait=25" : "");
      var headers = waitForChange && etag ? { "If-None-Match": etag } : {};
      fetch(url, { headers: headers, cache: "no-store", credentials: "omit", signal: pending.signal })
        .then(function (response) {
          if (response.status === 304) { pause = 1000; poll(true); return; }
          if (response.status === 404) {
            cleanUp();
            onError({ code: "not_found", message: "the token is unknown or has expired" });
            return;
          }
          if (!response.ok) { throw new Error("status " + response.status); }
          etag = response.headers.get("ETag");
          return response.json().then(function (answer) {
            if (stream) {
              // A one-off look; the event stream follows the rest. Its answer may have been
              // read before a change the stream has told of meanwhile: that is older news,
              // and reporting it would take the status back. Were it newer, the stream says
              // so too (it sends every change).
              if (streamed === asked) { seen(answer); }
              return;
            }
            seen(answer);
            if (etag) { pause = 1000; poll(true); return; }
            // No ETag (a proxy dropped it): a long-poll cannot wait, so ask again later.
            global.setTimeout(function () { poll(false); }, pause);
            pause = Math.min(pause * 2, 30000);
          });
        })
        .catch(function (error) {
          if (stopped || (error && error.name === "AbortError")) { return; }
          global.setTimeout(function () { poll(true); }, pause);
          pause = Math.min(pause * 2, 30000);
        });
    }

    // Server-Sent Events where the browser has them; the long-poll when they fail for good
    // (a 404 closes the stream, and the long-poll then reports it).
    function listen() {
      if (options.transport === "poll" || !global.EventSource) { poll(false); return; }
      stream = new EventSource(bridge.statusUrl + "/events");
      stream.addEventListener("status", function (event) {
        streamed += 1;
        seen(JSON.parse(event.data));
      });
      stream.onerror = function () {
        if (stream.readyState === EventSource.CLOSED && !stopped) { stream = null; poll(false); }
      };
    }

    // A message from the bridge's pages only says "look now"; its content is not trusted.
    function onMessage(event) {
      if (event.origin !== bridge.origin) { return; }
      var source = frame ? frame.contentWindow : popup;
      if (source && event.source !== source) { return; }
      var data = event.data;
      if (data && data.source === "redirect-bridge" && data.type === "status") {
        if (hello) { global.clearTimeout(hello); hello = null; }
        // A bridge page in the frame again: the step came back, or never left.
        if (stall) { global.clearTimeout(stall); stall = null; }
        if (button && button.parentNode) { button.parentNode.removeChild(button); button = null; }
        // Its bank form about to go: what is said of the bank only ever moves the step to a
        // window.
        if (data.bank && frame) { atBank(data.bank); }
        poll(false);  // a stalled stream (a buffering proxy) gets help this way too
      }
    }

    global.addEventListener("message", onMessage);
    if (mode === "iframe") {
      frame = makeFrame(embedded(bridge.payUrl), options.size || "500x600", options.container);
      hello = global.setTimeout(function () {
        hello = null;
        onError({
          code: "frame_blocked",
          message: "the bridge page has not spoken from the frame; is this page's origin in BRIDGE_FRAME_ANCESTORS?"
        });
      }, options.helloTimeout || HELLO_MILLISECONDS);
    } else if (mode === "popup") {
      popup = global.open(embedded(bridge.payUrl), "redirect-bridge", popupFeatures(options.size));
      if (!popup) {
        mode = "redirect";  // blocked: the whole page goes instead
      } else {
        watch();
      }
    }
    if (mode === "redirect") {
      global.location.assign(bridge.payUrl);
    } else {
      listen();
    }

    return {
      get mode() { return mode; },
      stop: cleanUp
    };
  }

  global.RedirectBridge = { start: start, version: "1" };
}(window));
