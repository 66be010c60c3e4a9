/* The presence page: who is online, recently seen, and a feed, kept live over /ws/presence/.
 * Every node with user text is built with createElement + textContent.
 */
(function () {
  "use strict";

  var initial = JSON.parse(document.getElementById("presence-initial").textContent);
  var me = (document.querySelector(".whoami") || {}).dataset;
  var online = new Map(); // username -> {since, idle}
  var recent = new Map(); // username -> last_seen
  var onlineList = document.getElementById("online-list");
  var recentList = document.getElementById("recent-list");
  var countNode = document.getElementById("online-count");
  var feed = document.getElementById("feed");
  var FEED_MAX = 50;

  function initials(name) {
    var parts = name.replace(/[^\p{L}\p{N}]+/gu, " ").trim().split(/\s+/);
    var text = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] || "?").slice(0, 2);
    return text.toUpperCase();
  }

  function hue(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
    return h;
  }

  function ago(iso) {
    var seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 45) return "just now";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + (minutes === 1 ? " minute ago" : " minutes ago");
    var hours = Math.round(minutes / 60);
    if (hours < 24) return hours + (hours === 1 ? " hour ago" : " hours ago");
    var days = Math.round(hours / 24);
    return days + (days === 1 ? " day ago" : " days ago");
  }

  function userItem(name, detail, state) {
    var li = document.createElement("li");
    li.className = "user";
    li.dataset.username = name;
    var avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    avatar.textContent = initials(name);
    avatar.style.setProperty("--avatar-hue", String(hue(name)));
    var label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    if (me && me.username === name) {
      var you = document.createElement("span");
      you.className = "you";
      you.textContent = " (you)";
      label.appendChild(you);
    }
    var info = document.createElement("span");
    info.className = "detail";
    info.textContent = detail;
    var dot = document.createElement("span");
    dot.className = "status-dot " + state;
    dot.title = state;
    li.append(avatar, label, info, dot);
    return li;
  }

  function render() {
    var names = Array.from(online.keys()).sort();
    onlineList.replaceChildren.apply(onlineList, names.map(function (name) {
      var entry = online.get(name);
      return userItem(name, entry.idle ? "away" : "online", entry.idle ? "away" : "online");
    }));
    countNode.textContent = String(names.length);
    document.getElementById("online-empty").hidden = names.length > 0;
    var seen = Array.from(recent.entries()).filter(function (e) { return !online.has(e[0]); });
    seen.sort(function (a, b) { return Date.parse(b[1]) - Date.parse(a[1]); });
    recentList.replaceChildren.apply(recentList, seen.map(function (e) {
      var li = userItem(e[0], "last seen " + ago(e[1]), "offline");
      li.querySelector(".detail").dataset.lastSeen = e[1];
      return li;
    }));
    document.getElementById("recent-empty").hidden = seen.length > 0;
  }

  function note(text, kind) {
    var li = document.createElement("li");
    li.className = "feed-item feed-" + kind;
    var time = document.createElement("time");
    var now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    var body = document.createElement("span");
    body.textContent = text;
    li.append(time, body);
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  function applySnapshot(frame) {
    online.clear();
    frame.users.forEach(function (u) { online.set(u.username, { since: u.since, idle: !!u.idle }); });
    render();
  }

  function applyDiff(frame) {
    (frame.joins || []).forEach(function (j) {
      if (!online.has(j.username)) note(j.username + " came online", "join");
      online.set(j.username, { since: j.since, idle: false });
      recent.delete(j.username);
    });
    (frame.leaves || []).forEach(function (l) {
      if (online.has(l.username)) note(l.username + " went offline", "leave");
      online.delete(l.username);
      recent.set(l.username, l.last_seen);
    });
    (frame.states || []).forEach(function (s) {
      var entry = online.get(s.username);
      if (entry) entry.idle = s.state === "idle";
    });
    render();
  }

  (initial.recent || []).forEach(function (r) { recent.set(r.username, r.last_seen); });
  applySnapshot(initial);
  setInterval(render, 30000); // keep "last seen N minutes ago" current

  window.presencePage = PresenceSocket.open("/ws/presence/", {
    onFrame: function (frame) {
      if (frame.type === "presence.snapshot") applySnapshot(frame);
      else if (frame.type === "presence.diff") applyDiff(frame);
    }
  });
})();
