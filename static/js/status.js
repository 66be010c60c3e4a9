/* Every logged-in page: the user's own status in the header, and the menu that sets it.
 *
 * - The status (text, emoji, an expiry, do-not-disturb) and invisibility go to
 *   the server as {"type": "status.set", ...} on the tab's socket, whichever
 *   endpoint it is on (PresenceSocket.page()).
 * - Every tab and device of the user gets {"type": "presence.status", "username",
 *   "status", "invisible"} back, so they all show the same.
 * - <body data-dnd="1"> while in do-not-disturb: pages raise no notification then.
 *
 * Every node with user text is built with createElement + textContent.
 */
(function () {
  "use strict";

  var source = document.getElementById("me-presence");
  var menu = document.getElementById("status-menu");
  if (!source || !menu) return;
  var me = JSON.parse(source.textContent);
  var state = { status: me.status, invisible: me.invisible };
  var form = document.getElementById("status-form");
  var emojiInput = document.getElementById("status-emoji");
  var textInput = document.getElementById("status-text");
  var expiry = document.getElementById("status-expiry");
  var until = document.getElementById("status-until");
  var dnd = document.getElementById("status-dnd");
  var invisible = document.getElementById("status-invisible");
  var errorLine = document.getElementById("status-error");
  var shown = document.getElementById("my-status");
  var awaitingAnswer = 0; // time of the last status.set sent from here, for its error

  document.getElementById("status-invisible-row").hidden = !me.allow_invisible;

  function clock(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function render() {
    var status = state.status;
    var parts = [];
    if (status && status.emoji) parts.push(Object.assign(document.createElement("span"), { className: "my-status-emoji", textContent: status.emoji }));
    if (status && status.text) parts.push(Object.assign(document.createElement("span"), { className: "my-status-text", textContent: status.text }));
    if (status && status.dnd) parts.push(Object.assign(document.createElement("span"), { className: "badge badge-dnd", textContent: "Do not disturb" }));
    if (state.invisible) parts.push(Object.assign(document.createElement("span"), { className: "badge badge-invisible", textContent: "Invisible" }));
    shown.replaceChildren.apply(shown, parts);
    if (status && status.expires_at) shown.title = "Clears at " + clock(status.expires_at);
    else shown.removeAttribute("title");
    document.body.dataset.dnd = status && status.dnd ? "1" : "";
    document.body.dataset.invisible = state.invisible ? "1" : "";
  }

  function fill() {
    var status = state.status || {};
    emojiInput.value = status.emoji || "";
    textInput.value = status.text || "";
    expiry.value = "";
    until.hidden = true;
    dnd.checked = !!status.dnd;
    invisible.checked = !!state.invisible;
    showError("");
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  /* The chosen expiry as an ISO time, null for none, or undefined when the chosen time is not in the future. */
  function expiresAt() {
    var now = new Date();
    if (expiry.value === "30" || expiry.value === "60") {
      return new Date(now.getTime() + parseInt(expiry.value, 10) * 60000).toISOString();
    }
    if (expiry.value === "today") {
      var end = new Date(now);
      end.setHours(23, 59, 59, 0);
      return end.toISOString();
    }
    if (expiry.value === "at") {
      var at = new Date(until.value);
      return isNaN(at.getTime()) || at <= now ? undefined : at.toISOString();
    }
    if (state.status && state.status.expires_at && Date.parse(state.status.expires_at) > now.getTime()) {
      return state.status.expires_at; // "Don't clear" on an untouched menu keeps the current expiry
    }
    return null;
  }

  function send(frame) {
    var sock = window.PresenceSocket && PresenceSocket.page();
    if (!sock || !sock.send(frame)) {
      showError("Not connected right now; try again in a moment.");
      return false;
    }
    awaitingAnswer = Date.now();
    return true;
  }

  expiry.addEventListener("change", function () {
    until.hidden = expiry.value !== "at";
    if (!until.hidden) until.focus();
  });

  menu.querySelectorAll(".status-picks button").forEach(function (button) {
    button.addEventListener("click", function () {
      emojiInput.value = button.dataset.emoji;
      textInput.value = button.dataset.text;
      textInput.focus();
    });
  });

  menu.addEventListener("toggle", function () { if (menu.open) fill(); });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var at = expiresAt();
    if (at === undefined) {
      showError("Choose a time in the future.");
      return;
    }
    var frame = { type: "status.set", text: textInput.value, emoji: emojiInput.value.trim(), expires_at: at, dnd: dnd.checked };
    if (me.allow_invisible) frame.invisible = invisible.checked;
    if (send(frame)) showError("");
  });

  document.getElementById("status-clear").addEventListener("click", function () {
    if (send({ type: "status.set", text: "", emoji: "", expires_at: null, dnd: false })) menu.open = false;
  });

  PresenceSocket.on("presence.status", function (frame) {
    if (frame.username !== me.username) return;
    // Frames to everyone (and a status cleared at its time) say nothing of invisibility: keep what we know.
    state = { status: frame.status, invisible: "invisible" in frame ? frame.invisible : state.invisible };
    render();
    if (awaitingAnswer && Date.now() - awaitingAnswer < 10000) {
      awaitingAnswer = 0;
      menu.open = false;
    }
  });

  PresenceSocket.on("error", function (frame) {
    if (!awaitingAnswer || Date.now() - awaitingAnswer > 10000) return;
    if (frame.code !== "invalid" && frame.code !== "forbidden") return;
    awaitingAnswer = 0;
    menu.open = true;
    showError(frame.detail);
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && menu.open) menu.open = false;
  });

  render();
  window.PresenceStatus = { me: function () { return me.username; }, state: function () { return state; } };
})();
