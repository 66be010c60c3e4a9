/* One reconnecting WebSocket for every page, plus the small helpers pages share.
 *
 * var sock = PresenceSocket.open(path, {
 *   url: function () { return path + "?after=" + lastId; }, // optional: the path for each (re)connect
 *   onOpen: function (sock, reconnected) {},                // after every open
 *   onFrame: function (frame, sock) {},                     // every server frame with a string type
 *   onClose: function (code, sock) {},                      // every close
 *   reportIdle: true                                        // send presence.state as the tab goes idle/active
 * });
 *
 * The socket connects to this page's host (wss: under https:) and reconnects
 * with exponential backoff and full jitter: a random delay below 0.5 s,
 * doubling to 30 s; after a 1012 (the server is restarting) at once, with a
 * jitter below 1 s. The state is shown in #conn-state ("Reconnecting…", then
 * "Back online"). Close codes 4401 (not logged in) and 4000 (session ended)
 * send the user to the log-in page instead of retrying.
 *
 * Outbox: sock.enqueue(frame, key) keeps a frame until sock.ack(key) (chat
 * acks when its own message comes back); it is sent now if the socket is open
 * and sent again, in order, after every reconnect. Keyed frames carry their
 * client_id, so the server stores a retried one once.
 *
 * One socket per tab: every logged-in page holds one (a room page its chat
 * socket, every other page a presence socket, opened by site.js when the
 * page's own script opened none), so the user counts as online wherever they
 * are. Whatever endpoint it is on, every frame it gets is also published:
 * PresenceSocket.on("room.activity", fn) hears it on any page, and
 * PresenceSocket.page() is the tab's socket (null before it opens one).
 */
(function () {
  "use strict";

  var BASE_DELAY = 500;
  var MAX_DELAY = 30000;
  var PING_INTERVAL = 25000;
  var BACK_ONLINE_SHOWN = 3000;
  var LEAVE_GRACE = 3000;
  var TO_LOGIN = { 4401: true, 4000: true };
  var RESTART_JITTER = 1000; // 1012: the server is restarting; reconnect at once (to another process), spread over 1 s
  var NO_RETRY = { 4403: true, 4404: true, 4429: true, 1003: true, 1008: true };

  function socketUrl(path) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + path;
  }

  /* Full jitter: uniformly random below min(cap, base * 2^attempt). */
  function backoff(attempt) {
    return Math.random() * Math.min(MAX_DELAY, BASE_DELAY * Math.pow(2, attempt));
  }

  function showState(text, kind) {
    var node = document.getElementById("conn-state");
    if (!node) return;
    node.textContent = text;
    node.className = "conn-state conn-" + kind;
    node.hidden = !text;
    document.documentElement.dataset.connection = kind;
  }

  function loginUrl() {
    var next = window.location.pathname + window.location.search;
    return "/accounts/login/?next=" + encodeURIComponent(next);
  }

  function clientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  /* Avatars: up to two initials, on a colour picked from the name. */
  function initials(name) {
    var parts = name.replace(/[^\p{L}\p{N}]+/gu, " ").trim().split(/\s+/).filter(Boolean);
    if (parts.length > 1) return (Array.from(parts[0])[0] + Array.from(parts[1])[0]).toUpperCase();
    return (Array.from(parts[0] || "?").slice(0, 2).join("")).toUpperCase();
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
    return h;
  }

  function avatar(name, extraClass) {
    var node = document.createElement("span");
    node.className = "avatar" + (extraClass ? " " + extraClass : "");
    node.setAttribute("aria-hidden", "true");
    node.style.setProperty("--avatar-hue", String(hue(name)));
    node.textContent = initials(name);
    return node;
  }

  /* Idle tracking: idle after `after` ms with no interaction; a hidden tab gets
   * no interaction, and coming back into view counts as one. */
  var idle = (function () {
    var listeners = [];
    var state = "active";
    var timer = null;
    var after = 300000;
    var started = false;

    function set(next) {
      if (next === state) return;
      state = next;
      listeners.forEach(function (fn) { fn(state); });
    }

    var lastTouch = 0;

    function touch() {
      var now = Date.now();
      // pointermove fires in bursts: re-arm the timer at most once a second.
      if (state === "active" && timer !== null && now - lastTouch < 1000) return;
      lastTouch = now;
      set("active");
      clearTimeout(timer);
      timer = setTimeout(function () { set("idle"); }, after);
    }

    function start() {
      if (started) return;
      started = true;
      var seconds = parseFloat(document.body && document.body.dataset.idleAfter);
      if (seconds > 0) after = seconds * 1000;
      ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"].forEach(function (name) {
        window.addEventListener(name, function () { if (!document.hidden) touch(); }, { passive: true, capture: true });
      });
      document.addEventListener("visibilitychange", function () {
        if (!document.hidden) touch();
      });
      touch();
    }

    return {
      start: start,
      state: function () { return state; },
      onChange: function (fn) { start(); listeners.push(fn); }
    };
  })();

  /* Unread marker: while the tab is hidden, bump() adds to a count shown in
   * the title as "(3) Room · Presence"; it clears when the tab is seen.
   * set(n) adds the unread total of the user's rooms (rooms.js, from the
   * server), shown whether the tab is seen or not, until it is set again. */
  var unread = (function () {
    var count = 0;
    var total = 0;
    var baseTitle = null;

    function paint() {
      if (baseTitle === null) baseTitle = document.title;
      var shown = count + total;
      document.title = shown > 0 ? "(" + shown + ") " + baseTitle : baseTitle;
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) clear();
    });
    window.addEventListener("focus", function () { clear(); });

    function clear() {
      if (count === 0) return;
      count = 0;
      paint();
    }

    return {
      bump: function (n) {
        if (!document.hidden) return;
        count += n === undefined ? 1 : n;
        paint();
      },
      clear: clear,
      set: function (n) {
        if (n === total) return;
        total = n;
        paint();
      },
      count: function () { return count + total; }
    };
  })();

  /* Frames by type, for the parts of a page that are not the socket's owner (header, room list). */
  var listeners = new Map(); // type -> [fn]
  var pageSocket = null;

  function on(type, fn) {
    if (!listeners.has(type)) listeners.set(type, []);
    listeners.get(type).push(fn);
  }

  function publish(frame, sock) {
    (listeners.get(frame.type) || []).forEach(function (fn) {
      try { fn(frame, sock); } catch (error) { window.setTimeout(function () { throw error; }); }
    });
  }

  function open(path, handlers) {
    handlers = handlers || {};
    var attempt = 0;
    var ws = null;
    var everOpened = false;
    var stopped = false;
    var retryTimer = null;
    var backOnlineTimer = null;
    var outbox = new Map(); // key -> frame, in insertion order
    var leaving = false;

    function connect() {
      retryTimer = null;
      if (stopped) return;
      var target = typeof handlers.url === "function" ? handlers.url() : path;
      var socket = new WebSocket(socketUrl(target));
      ws = socket;
      socket.addEventListener("open", function () {
        attempt = 0;
        var reconnected = everOpened;
        everOpened = true;
        if (reconnected) {
          showState("Back online", "ok");
          clearTimeout(backOnlineTimer);
          backOnlineTimer = setTimeout(function () { showState("", "ok"); }, BACK_ONLINE_SHOWN);
        } else {
          showState("", "ok");
        }
        // A new connection starts active on the server: tell it if this tab is idle.
        if (handlers.reportIdle && idle.state() === "idle") api.send({ type: "presence.state", state: "idle" });
        if (handlers.onOpen) handlers.onOpen(api, reconnected);
        outbox.forEach(function (frame) { socket.send(JSON.stringify(frame)); });
      });
      socket.addEventListener("message", function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (!frame || typeof frame.type !== "string") return;
        if (handlers.onFrame) handlers.onFrame(frame, api);
        publish(frame, api);
      });
      socket.addEventListener("close", function (event) {
        if (ws !== socket) return;
        if (leaving) {
          // The page is navigating away (a log-out form, a link): the server
          // may close this socket first. Let the navigation win; if it was
          // cancelled, handle the close once the page is still here.
          setTimeout(function () { closed(socket, event); }, LEAVE_GRACE);
          return;
        }
        closed(socket, event);
      });
    }

    function closed(socket, event) {
      if (ws === socket) ws = null;
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
      clearTimeout(backOnlineTimer);
      showState("Reconnecting…", "wait");
      if (event.code === 1012) {
        attempt = 0;
        retryTimer = setTimeout(connect, Math.random() * RESTART_JITTER);
        return;
      }
      retryTimer = setTimeout(connect, backoff(attempt));
      attempt += 1;
    }

    var api = {
      /* Send now if open; return false (and drop the frame) otherwise. */
      send: function (frame) {
        if (!ws || ws.readyState !== WebSocket.OPEN) return false;
        ws.send(JSON.stringify(frame));
        return true;
      },
      /* Keep a frame until ack(key); send it now if open and after each reconnect. */
      enqueue: function (frame, key) {
        key = key === undefined ? frame.client_id || clientId() : key;
        outbox.set(key, frame);
        api.send(frame);
        return key;
      },
      ack: function (key) { return outbox.delete(key); },
      pending: function () { return Array.from(outbox.values()); },
      isOpen: function () { return !!ws && ws.readyState === WebSocket.OPEN; },
      /* Skip the wait: reconnect now if a retry is pending (e.g. the network came back). */
      retryNow: function () {
        if (retryTimer === null || stopped) return;
        clearTimeout(retryTimer);
        connect();
      },
      close: function () {
        stopped = true;
        clearTimeout(retryTimer);
        if (ws) ws.close(1000);
      }
    };

    // Keep idle proxies from dropping the socket.
    setInterval(function () { api.send({ type: "ping" }); }, PING_INTERVAL);
    window.addEventListener("online", api.retryNow);
    window.addEventListener("beforeunload", function () {
      leaving = true;
      setTimeout(function () { leaving = false; }, LEAVE_GRACE); // runs only if the page stayed
    });
    window.addEventListener("pagehide", function () { stopped = true; });
    window.addEventListener("pageshow", function (event) {
      // Back from the back/forward cache: the old socket is gone, open a new one.
      if (event.persisted && stopped && !ws) { stopped = false; attempt = 0; connect(); }
    });
    if (handlers.reportIdle) {
      idle.onChange(function (state) { api.send({ type: "presence.state", state: state }); });
    }
    api.path = path;
    if (pageSocket === null) pageSocket = api;
    connect();
    return api;
  }

  window.PresenceSocket = {
    open: open,
    on: on,
    page: function () { return pageSocket; },
    showState: showState,
    clientId: clientId,
    backoff: backoff,
    idle: idle,
    unread: unread,
    initials: initials,
    hue: hue,
    avatar: avatar
  };
})();
