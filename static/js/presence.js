/* The presence page: who is online (or away), recently seen, and a feed, kept live over /ws/presence/.
 * Every node with user text is built with createElement + textContent.
 */
(function () {
  "use strict";

  var initial = JSON.parse(document.getElementById("presence-initial").textContent);
  var me = (document.querySelector(".whoami") || { dataset: {} }).dataset.username;
  var online = new Map(); // username -> {since, away, awaySince}
  var recent = new Map(); // username -> last_seen
  var statuses = new Map(); // username -> {text, emoji, expires_at, dnd}: what they say they are doing
  var meInvisible = !!(window.PresenceStatus && PresenceStatus.state().invisible);
  // username -> server time (ms) of the newest join or leave applied. Two
  // processes coalesce their diffs separately, so a user's leave on one can
  // arrive after their join on another: the older transition is dropped.
  var changed = new Map();
  var onlineList = document.getElementById("online-list");
  var recentList = document.getElementById("recent-list");
  var countNode = document.getElementById("online-count");
  var feed = document.getElementById("feed");
  var FEED_MAX = 50;
  var STATE_LABEL = { online: "online", away: "away", offline: "offline" };

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

  function clock(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function timeNode(iso, text) {
    var node = document.createElement("time");
    node.dateTime = iso;
    node.title = new Date(iso).toLocaleString();
    node.textContent = text;
    return node;
  }

  /* "📅 In a meeting · Do not disturb", or nothing. */
  function statusNode(name) {
    var status = statuses.get(name);
    if (!status) return null;
    var node = document.createElement("span");
    node.className = "user-status";
    if (status.emoji) {
      var emoji = document.createElement("span");
      emoji.className = "user-status-emoji";
      emoji.textContent = status.emoji;
      node.appendChild(emoji);
    }
    if (status.text) {
      var text = document.createElement("span");
      text.className = "user-status-text";
      text.textContent = status.text;
      node.appendChild(text);
    }
    if (status.dnd) {
      var badge = document.createElement("span");
      badge.className = "badge badge-dnd";
      badge.textContent = "Do not disturb";
      node.appendChild(badge);
    }
    if (status.expires_at) node.title = "Until " + clock(status.expires_at);
    return node;
  }

  function userItem(name, state, detail) {
    var li = document.createElement("li");
    li.className = "user user-" + state;
    li.dataset.username = name;
    li.dataset.state = state;

    var avatar = PresenceSocket.avatar(name);
    var dot = document.createElement("span");
    dot.className = "status-dot status-" + state;
    avatar.appendChild(dot);

    var text = document.createElement("span");
    text.className = "user-text";
    var label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    if (me === name) {
      var you = document.createElement("span");
      you.className = "you";
      you.textContent = " (you)";
      label.appendChild(you);
    }
    // A person other than yourself opens a direct room with them (issue 13).
    if (me !== name) {
      var nameLink = document.createElement("a");
      nameLink.className = "dm-link";
      nameLink.href = "/chat/dm/" + encodeURIComponent(name) + "/";
      nameLink.title = "Direct message " + name;
      nameLink.appendChild(label);
      label = nameLink;
    }
    var info = document.createElement("span");
    info.className = "detail";
    var stateText = document.createElement("span");
    stateText.className = "state-label state-" + state;
    stateText.textContent = STATE_LABEL[state];
    info.appendChild(stateText);
    if (detail) info.append(" · ", detail);
    text.append(label, info);
    var status = statusNode(name);
    if (status) text.appendChild(status);

    li.append(avatar, text);
    return li;
  }

  function render() {
    var names = Array.from(online.keys()).sort();
    var items = names.map(function (name) {
      var entry = online.get(name);
      if (entry.away) return userItem(name, "away", entry.awaySince ? timeNode(entry.awaySince, "since " + clock(entry.awaySince)) : null);
      return userItem(name, "online", entry.since ? timeNode(entry.since, "since " + clock(entry.since)) : null);
    });
    if (meInvisible && me && !online.has(me)) {
      // Others see me offline; I see myself here, marked.
      var mine = userItem(me, "online", "invisible to others");
      mine.classList.add("user-invisible");
      items.unshift(mine);
    }
    onlineList.replaceChildren.apply(onlineList, items);
    countNode.textContent = String(names.length);
    document.getElementById("online-empty").hidden = names.length > 0;

    var seen = Array.from(recent.entries()).filter(function (e) {
      return !online.has(e[0]) && !(meInvisible && e[0] === me);
    });
    seen.sort(function (a, b) { return Date.parse(b[1]) - Date.parse(a[1]); });
    recentList.replaceChildren.apply(recentList, seen.map(function (e) {
      return userItem(e[0], "offline", timeNode(e[1], "last seen " + ago(e[1])));
    }));
    document.getElementById("recent-empty").hidden = seen.length > 0;
  }

  function note(name, text, kind) {
    var li = document.createElement("li");
    li.className = "feed-item feed-" + kind;
    var now = new Date();
    var time = timeNode(now.toISOString(), clock(now.toISOString()));
    var body = document.createElement("span");
    body.className = "feed-text";
    var who = document.createElement("strong");
    who.textContent = name;
    body.append(who, " " + text);
    li.append(time, body);
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
    document.getElementById("feed-empty").hidden = true;
  }

  function applySnapshot(frame) {
    // A snapshot replaces what we knew: after a reconnect, whoever left
    // during the gap moves to "recently seen".
    online.forEach(function (entry, name) {
      if (!frame.users.some(function (u) { return u.username === name; }) && !recent.has(name)) {
        recent.set(name, new Date().toISOString());
      }
    });
    online.clear();
    changed.clear();
    statuses.clear();
    frame.users.forEach(function (u) {
      online.set(u.username, { since: u.since, away: !!u.idle, awaySince: u.away_since || null });
      if (u.status) statuses.set(u.username, u.status);
      newest(u.username, u.since);
    });
    if (frame.recent) {
      recent.clear();
      frame.recent.forEach(function (r) {
        recent.set(r.username, r.last_seen);
        if (r.status) statuses.set(r.username, r.status);
        if (!online.has(r.username)) newest(r.username, r.last_seen);
      });
    }
    render();
  }

  /* Whether a transition at this server time is not older than what we know of the user; if so it is kept.
   * One without a time is applied and not remembered. A snapshot clears what we know first. */
  function newest(username, time) {
    var at = Date.parse(time);
    if (isNaN(at)) return true;
    if (changed.get(username) > at) return false;
    changed.set(username, at);
    return true;
  }

  function applyDiff(frame) {
    (frame.joins || []).forEach(function (j) {
      if (!newest(j.username, j.since)) return;
      if (!online.has(j.username)) note(j.username, "came online", "join");
      online.set(j.username, { since: j.since, away: false });
      recent.delete(j.username);
    });
    (frame.leaves || []).forEach(function (l) {
      if (!newest(l.username, l.last_seen)) return;
      if (online.has(l.username)) note(l.username, "went offline", "leave");
      online.delete(l.username);
      recent.set(l.username, l.last_seen);
    });
    (frame.states || []).forEach(function (s) {
      var entry = online.get(s.username);
      if (!entry) return;
      var away = s.state === "away";
      if (away !== entry.away) note(s.username, away ? "is away" : "is back", away ? "away" : "back");
      entry.away = away;
      entry.awaySince = away ? s.since || new Date().toISOString() : null;
    });
    render();
  }

  function applyStatus(frame) {
    if (frame.status) statuses.set(frame.username, frame.status);
    else statuses.delete(frame.username);
    if (frame.username === me && "invisible" in frame) meInvisible = frame.invisible;
    render();
  }

  applySnapshot(initial);
  setInterval(render, 30000); // keep "last seen N minutes ago" current

  window.presencePage = PresenceSocket.open("/ws/presence/", {
    reportIdle: true,
    onFrame: function (frame) {
      if (frame.type === "presence.snapshot") {
        applySnapshot(frame);
        document.documentElement.dataset.presence = "live"; // tests and styles can tell a synced page
      }
      else if (frame.type === "presence.diff") applyDiff(frame);
      else if (frame.type === "presence.status") applyStatus(frame);
    }
  });
})();
