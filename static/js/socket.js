/* One reconnecting WebSocket for every page.
 *
 * PresenceSocket.open(path, {onOpen, onFrame, url}) connects to path on this
 * page's host (wss: under https:), reconnects with exponential backoff and full
 * jitter (0.5 s doubling to 30 s), shows the connection state in #conn-state,
 * and sends the user to the log-in page on 4401 (not logged in) or 4000
 * (session ended) instead of retrying.
 */
(function () {
  "use strict";

  var BASE_DELAY = 500;
  var MAX_DELAY = 30000;
  var TO_LOGIN = { 4401: true, 4000: true };
  var NO_RETRY = { 4403: true, 4404: true, 4429: true, 1003: true, 1008: true };

  function socketUrl(path) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + path;
  }

  function showState(text, kind) {
    var node = document.getElementById("conn-state");
    if (!node) return;
    node.textContent = text;
    node.className = "conn-state conn-" + kind;
    node.hidden = !text;
  }

  function loginUrl() {
    var next = window.location.pathname + window.location.search;
    return "/accounts/login/?next=" + encodeURIComponent(next);
  }

  function open(path, handlers) {
    var attempt = 0;
    var ws = null;
    var everOpened = false;
    var stopped = false;
    var backOnlineTimer = null;

    function connect() {
      var target = typeof handlers.url === "function" ? handlers.url() : path;
      ws = new WebSocket(socketUrl(target));
      ws.addEventListener("open", function () {
        attempt = 0;
        if (everOpened) {
          showState("Back online", "ok");
          clearTimeout(backOnlineTimer);
          backOnlineTimer = setTimeout(function () { showState("", "ok"); }, 3000);
        } else {
          showState("", "ok");
        }
        everOpened = true;
        if (handlers.onOpen) handlers.onOpen(api);
      });
      ws.addEventListener("message", function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (frame && typeof frame.type === "string" && handlers.onFrame) handlers.onFrame(frame, api);
      });
      ws.addEventListener("close", function (event) {
        ws = null;
        if (handlers.onClose) handlers.onClose(event.code, api);
        if (stopped) return;
        if (TO_LOGIN[event.code]) {
          stopped = true;
          showState("Signed out", "down");
          window.location.assign(loginUrl());
          return;
        }
        if (NO_RETRY[event.code]) {
          stopped = true;
          showState("Disconnected (" + event.code + ")", "down");
          return;
        }
        var ceiling = Math.min(MAX_DELAY, BASE_DELAY * Math.pow(2, attempt));
        attempt += 1;
        var delay = Math.random() * ceiling; // full jitter
        showState("Reconnecting…", "wait");
        setTimeout(connect, delay);
      });
    }

    var api = {
      send: function (frame) {
        if (!ws || ws.readyState !== WebSocket.OPEN) return false;
        ws.send(JSON.stringify(frame));
        return true;
      },
      isOpen: function () { return !!ws && ws.readyState === WebSocket.OPEN; },
      close: function () { stopped = true; if (ws) ws.close(1000); }
    };

    // Keep idle proxies from dropping the socket, and notice a dead one sooner.
    setInterval(function () { api.send({ type: "ping" }); }, 25000);
    window.addEventListener("pagehide", function () { stopped = true; });
    connect();
    return api;
  }

  window.PresenceSocket = { open: open, showState: showState };
})();
