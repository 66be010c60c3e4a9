/* The user's rooms on every logged-in page: the room lists, the unread total in the title, notifications.
 *
 * - The rooms come from GET /api/rooms when the page loads and each time its
 *   socket (re)opens (its first frame, chat.history or presence.snapshot): a
 *   frame lost while disconnected is resynced from the server.
 * - room.activity (a room of mine got messages) and chat.read (I read a room,
 *   in this tab or another) carry exact counts. Counts are kept only when they
 *   are at least as new as those shown: both the room's newest message id and
 *   my read marker only grow, so a later state has neither smaller.
 * - On a room page the socket is that room's: its own messages arrive as
 *   chat.message, counted here only while the tab is hidden (the page reads
 *   what it shows, and the server's chat.read then sets the count).
 * - A browser notification for a mention or a direct message while the tab is
 *   hidden, never in do-not-disturb (body[data-dnd="1"]), once per message; it
 *   opens the room at that message. Permission is asked only from a
 *   [data-notify-enable] button.
 *
 * Lists: every [data-room-list] is rendered from the same state. Every node
 * with user text is built with createElement + textContent.
 */
(function () {
  "use strict";

  if (!window.PresenceSocket) return;

  var me = (document.querySelector(".whoami") || { dataset: {} }).dataset.username;
  var chatInitial = document.getElementById("chat-initial");
  var current = chatInitial ? JSON.parse(chatInitial.textContent).room : null;
  var rooms = new Map(); // slug -> {slug, title, kind, unread, mentions, last_read, last_message, counted, seen}
  var notified = new Set(); // message ids already notified by this page
  var fetching = null;
  var frameClock = 0; // counts frames, so a snapshot knows which rooms changed after it was asked for

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function messageId(message) { return message ? message.id : 0; }

  /* The server stops counting at 1,000 (docs/protocol.md). */
  var COUNT_MAX = 1000;
  function countText(n) { return n >= COUNT_MAX ? "999+" : String(n); }

  /* "14:05" today, "3 Nov" before. */
  function when(iso) {
    var moment = new Date(iso);
    if (moment.toDateString() === new Date().toDateString()) {
      return moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    return moment.toLocaleDateString([], { day: "numeric", month: "short" });
  }

  /* ---------- state ---------- */

  /* Take a state of one room (an /api/rooms entry or a room.activity frame) if it is not older than the one held. */
  function apply(update, source) {
    var slug = update.slug || update.room;
    var room = rooms.get(slug);
    if (!room) {
      room = { slug: slug, title: update.title, kind: update.kind, unread: 0, mentions: 0,
               last_read: 0, last_message: null, counted: 0, seen: 0, order: -1 };
      rooms.set(slug, room);
    }
    if (update.title) room.title = update.title;
    if (update.kind) room.kind = update.kind;
    if (messageId(update.last_message) >= messageId(room.last_message)) room.last_message = update.last_message;
    var counted = messageId(update.last_message);
    var read = update.last_read || 0;
    if (read >= room.last_read && counted >= room.counted) {
      room.unread = update.unread;
      room.mentions = update.mentions;
      room.last_read = read;
      room.counted = counted;
    }
    room.seen = source;
    return room;
  }

  function applyRead(frame) {
    var room = rooms.get(frame.room);
    // Sent only when the marker moved: a later state already has it (or beyond).
    if (!room || frame.up_to <= room.last_read) return;
    room.last_read = frame.up_to;
    room.unread = frame.unread;
    room.mentions = frame.mentions;
  }

  /* A message of the room this page shows, seen on its own socket. */
  function applyOwnRoomMessage(message) {
    var room = rooms.get(message.room);
    if (!room) return;
    if (messageId(message) > messageId(room.last_message)) room.last_message = message;
    if (message.id <= room.counted || message.id <= room.last_read) return;
    room.counted = message.id;
    if (message.username === me || !document.hidden) return;
    room.unread += 1;
    if ((message.mentions || []).indexOf(me) !== -1) room.mentions += 1;
  }

  function sorted() {
    return Array.from(rooms.values()).sort(function (a, b) {
      var at = a.last_message ? Date.parse(a.last_message.sent_at) : 0;
      var bt = b.last_message ? Date.parse(b.last_message.sent_at) : 0;
      return bt - at || a.order - b.order;
    });
  }

  function snapshot(list, askedAt) {
    var listed = new Set();
    list.forEach(function (entry, index) {
      listed.add(entry.slug);
      var room = apply(entry, askedAt);
      room.order = index;
    });
    // Gone from the list (left, in this tab or another), unless news of it came after the list was asked for.
    rooms.forEach(function (room, slug) {
      if (!listed.has(slug) && room.seen <= askedAt) rooms.delete(slug);
    });
  }

  function refresh() {
    if (fetching) return fetching;
    var askedAt = frameClock;
    fetching = fetch("/api/rooms", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) { snapshot(body.rooms, askedAt); render(); })
      .catch(function () { /* kept as it was; the next (re)connect asks again */ })
      .then(function () { fetching = null; });
    return fetching;
  }

  /* ---------- the page ---------- */

  function roomItem(room) {
    var li = el("li", "my-room" + (room.unread ? " my-room-unread" : ""));
    li.dataset.slug = room.slug;
    var link = el("a", "my-room-link");
    link.href = "/chat/" + room.slug + "/";
    if (room.slug === current) link.setAttribute("aria-current", "page");
    link.appendChild(el("span", "my-room-title", room.kind === "direct" ? room.title : "#" + room.title));
    var counts = el("span", "my-room-counts");
    if (room.mentions) {
      var mentions = el("span", "badge badge-mention", "@" + countText(room.mentions));
      mentions.title = "mentions of you";
      counts.appendChild(mentions);
    }
    if (room.unread) {
      var unread = el("span", "badge badge-unread", countText(room.unread));
      unread.title = "unread messages";
      counts.appendChild(unread);
    }
    link.appendChild(counts);
    var last = room.last_message;
    if (last) {
      var line = el("span", "my-room-last");
      line.append(el("span", "my-room-author", last.username + ":"), " " + last.body);
      var time = el("time", "my-room-time", when(last.sent_at));
      time.dateTime = last.sent_at;
      time.title = new Date(last.sent_at).toLocaleString();
      link.append(line, time);
    } else {
      link.appendChild(el("span", "my-room-last my-room-none", "No messages yet"));
    }
    li.appendChild(link);
    return li;
  }

  function render() {
    var list = sorted();
    document.querySelectorAll("[data-room-list]").forEach(function (node) {
      node.replaceChildren.apply(node, list.map(roomItem));
      var empty = node.parentNode.querySelector("[data-room-list-empty]");
      if (empty) empty.hidden = list.length > 0;
    });
    // The title counts what waits elsewhere: the room on screen is being read.
    var total = 0;
    list.forEach(function (room) { if (room.slug !== current || document.hidden) total += room.unread; });
    PresenceSocket.unread.set(total);
    document.documentElement.dataset.rooms = "live"; // tests and styles can tell a synced list
  }

  /* ---------- notifications ---------- */

  function canNotify() {
    return "Notification" in window && Notification.permission === "granted" &&
      document.hidden && document.body.dataset.dnd !== "1";
  }

  function notify(room, message, mentioned) {
    if (!message || message.username === me || notified.has(message.id) || !canNotify()) return;
    notified.add(message.id);
    var title = room.kind === "direct" ? message.username : message.username + " in #" + room.title;
    var body = mentioned && (message.mentions || []).indexOf(me) === -1
      ? "You were mentioned in #" + room.title
      : message.body;
    var shown = new Notification(title, { body: body.slice(0, 200), tag: "presence-message-" + message.id });
    shown.onclick = function () {
      window.focus();
      window.location.assign("/chat/" + room.slug + "/#message-" + message.id);
      shown.close();
    };
  }

  function notifyIfNews(room, message, mentionsBefore) {
    var mentionsMe = (message && message.mentions || []).indexOf(me) !== -1;
    if (room.kind === "direct" || mentionsMe) notify(room, message, false);
    // A mention earlier in a coalesced batch: the newest message may not be it.
    else if (room.mentions > mentionsBefore) notify(room, message, true);
  }

  function setUpPermissionButtons() {
    var buttons = document.querySelectorAll("[data-notify-enable]");
    if (!buttons.length || !("Notification" in window)) return;
    function show() {
      buttons.forEach(function (button) { button.hidden = Notification.permission !== "default"; });
    }
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        // Asked only from a click, never on page load.
        Promise.resolve(Notification.requestPermission()).then(show, show);
      });
    });
    show();
  }

  /* ---------- frames ---------- */

  PresenceSocket.on("room.activity", function (frame) {
    frameClock += 1;
    var before = rooms.get(frame.room);
    var knownId = before ? messageId(before.last_message) : 0;
    var mentionsBefore = before ? before.mentions : 0;
    var room = apply(frame, frameClock);
    render();
    if (messageId(frame.last_message) > knownId) notifyIfNews(room, frame.last_message, mentionsBefore);
  });

  PresenceSocket.on("chat.read", function (frame) {
    frameClock += 1;
    applyRead(frame);
    render();
  });

  PresenceSocket.on("chat.message", function (frame) {
    if (frame.room !== current) return;
    frameClock += 1;
    var room = rooms.get(frame.room);
    if (!room) return;
    var knownId = messageId(room.last_message);
    var mentionsBefore = room.mentions;
    applyOwnRoomMessage(frame);
    render();
    if (frame.id > knownId) notifyIfNews(room, frame, mentionsBefore);
  });

  // Each (re)connect starts with one of these: the counts are fetched again.
  PresenceSocket.on("chat.history", function () { refresh(); });
  PresenceSocket.on("presence.snapshot", function () { refresh(); });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) render();
  });

  document.addEventListener("DOMContentLoaded", function () {
    setUpPermissionButtons();
    refresh();
  });

  window.PresenceRooms = {
    rooms: function () { return sorted(); },
    refresh: refresh
  };
})();
