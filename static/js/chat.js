/* A chat room, kept live over /ws/chat/<room>/ and resumed with ?after=<last id>.
 * Every node with user text is built with createElement + textContent.
 */
(function () {
  "use strict";

  var initial = JSON.parse(document.getElementById("chat-initial").textContent);
  var room = initial.room;
  var me = initial.me;
  var list = document.getElementById("messages");
  var olderButton = document.getElementById("load-older");
  var typingLine = document.getElementById("typing");
  var hereList = document.getElementById("here-list");
  var hereCount = document.getElementById("here-count");
  var form = document.getElementById("composer");
  var input = document.getElementById("composer-body");
  var errorLine = document.getElementById("composer-error");
  var csrf = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value;
  var TYPING_SHOWN_MS = 4000;
  var TYPING_SEND_MS = 2000;

  var lastId = 0;      // the newest message id this page has
  var oldestId = null; // the oldest, for loading earlier history
  var pending = null;  // {client_id, body}: sent, not yet acknowledged; resent after a reconnect
  var typists = new Map(); // username -> timer
  var lastTypingSent = 0;
  var path = "/ws/chat/" + room + "/";

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function pinnedToBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function messageNode(message) {
    var li = document.createElement("li");
    li.className = "message" + (message.username === me ? " message-mine" : "");
    li.dataset.id = String(message.id);
    var meta = document.createElement("div");
    meta.className = "meta";
    var who = document.createElement("span");
    who.className = "name";
    who.textContent = message.username;
    var when = document.createElement("time");
    when.dateTime = message.sent_at;
    when.textContent = new Date(message.sent_at).toLocaleString();
    meta.appendChild(who);
    meta.appendChild(when);
    if (initial.moderator || message.username === me) {
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button button-quiet delete";
      remove.textContent = "Delete";
      remove.addEventListener("click", function () { deleteMessage(message.id); });
      meta.appendChild(remove);
    }
    var body = document.createElement("p");
    body.className = "body";
    body.textContent = message.body;
    li.appendChild(meta);
    li.appendChild(body);
    return li;
  }

  function hasMessage(id) {
    return !!list.querySelector('li[data-id="' + id + '"]');
  }

  function append(messages) {
    var pinned = pinnedToBottom();
    messages.forEach(function (message) {
      if (hasMessage(message.id)) return;
      list.appendChild(messageNode(message));
      lastId = Math.max(lastId, message.id);
      if (oldestId === null || message.id < oldestId) oldestId = message.id;
    });
    if (pinned) list.scrollTop = list.scrollHeight;
  }

  function prepend(messages) {
    var before = list.scrollHeight;
    var first = list.firstChild;
    messages.forEach(function (message) {
      if (hasMessage(message.id)) return;
      list.insertBefore(messageNode(message), first);
      if (oldestId === null || message.id < oldestId) oldestId = message.id;
    });
    list.scrollTop += list.scrollHeight - before; // keep the reader's place
  }

  function showOlder(hasMore) { olderButton.hidden = !hasMore; }

  function showUsers(users) {
    hereList.replaceChildren();
    users.forEach(function (name) {
      var li = document.createElement("li");
      li.className = "user";
      li.textContent = name === me ? name + " (you)" : name;
      hereList.appendChild(li);
    });
    hereCount.textContent = String(users.length);
  }

  function showTyping() {
    var names = Array.from(typists.keys());
    if (!names.length) typingLine.textContent = "";
    else if (names.length === 1) typingLine.textContent = names[0] + " is typing…";
    else typingLine.textContent = names.join(", ") + " are typing…";
  }

  function someoneTyping(name) {
    clearTimeout(typists.get(name));
    typists.set(name, setTimeout(function () { typists.delete(name); showTyping(); }, TYPING_SHOWN_MS));
    showTyping();
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  function deleteMessage(id) {
    fetch("/chat/" + room + "/messages/" + id + "/delete", {
      method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) showError("That message could not be deleted.");
    });
  }

  function removeMessage(id) {
    var node = list.querySelector('li[data-id="' + id + '"]');
    if (node) node.remove();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "chat.history":
        if (!resuming) { list.replaceChildren(); oldestId = null; showOlder(frame.has_more); }
        append(frame.messages);
        // Missed more than one resume returns: start afresh rather than show a gap.
        if (resuming && frame.has_more) window.location.reload();
        break;
      case "chat.message":
        append([frame]);
        if (frame.username === me && pending && frame.client_id === pending.client_id) {
          if (input.value.trim() === pending.body.trim()) input.value = "";
          pending = null;
          showError("");
        }
        typists.delete(frame.username);
        showTyping();
        break;
      case "chat.deleted":
        removeMessage(frame.id);
        break;
      case "chat.typing":
        if (frame.username !== me) someoneTyping(frame.username);
        break;
      case "room.presence":
        showUsers(frame.users);
        break;
      case "error":
        if (pending) { pending = null; showError(frame.detail); } // the text stays in the composer
        break;
    }
  }

  var resuming = false;
  var socket = PresenceSocket.open(path, {
    url: function () {
      resuming = lastId > 0;
      return resuming ? path + "?after=" + lastId : path;
    },
    onOpen: function (api) { if (pending) api.send({ type: "chat.message", body: pending.body, client_id: pending.client_id }); },
    onFrame: onFrame
  });

  function send() {
    var body = input.value;
    if (!body.trim() || pending) return;
    pending = { client_id: newClientId(), body: body };
    showError("");
    // Sent now if the socket is open, else on the next open with the same client_id.
    socket.send({ type: "chat.message", body: body, client_id: pending.client_id });
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); send(); });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  input.addEventListener("input", function () {
    var now = Date.now();
    if (now - lastTypingSent > TYPING_SEND_MS && socket.send({ type: "chat.typing" })) lastTypingSent = now;
  });
  olderButton.addEventListener("click", function () {
    if (oldestId === null) return;
    fetch("/chat/" + room + "/messages?before=" + oldestId + "&limit=50", { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (page) { prepend(page.messages); showOlder(page.has_more); });
  });

  append(initial.messages);
  showOlder(initial.has_more);
  showUsers(initial.users);
  list.scrollTop = list.scrollHeight;
})();
