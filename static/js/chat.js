/* A chat room, kept live over /ws/chat/<room>/ through the shared socket module (socket.js).
 *
 * - Each (re)connect resumes with ?cursor=<cursor of the last history> (the page's
 *   own, rendered with it, the first time), so a message sent while this page was
 *   disconnected shows once, in order, and every edit, deletion and reaction
 *   change it missed is applied ("changes"); a cursor too old is answered with
 *   the last messages and "reset". Not the newest cursor seen live: frames from
 *   two processes can arrive out of order, and one whose broadcast was lost in a
 *   fault would never be fetched on resume. Messages are shown once by id.
 * - A message's body is its server-rendered, sanitized "html": the one thing this
 *   page inserts as markup. Drafts not yet stored show their text.
 * - A message written here waits in the socket's outbox under its client_id
 *   until its stored copy comes back ("sending…"); after a reconnect, or when
 *   the server asks to slow down, it is sent again with the same client_id,
 *   which the server stores once.
 * - Messages not yet stored are kept in localStorage for this user and room, so
 *   that closing or reloading the page loses none: the next page of the room
 *   shows them and sends them again, under the same client_id. Logging out
 *   forgets them (site.js).
 * - The room opens at the "New messages" line when the reader has unread
 *   messages here (their marker, kept on the server), at the newest otherwise,
 *   or at #message-<id> (a notification's link). What the page has shown, while
 *   the tab is seen, is sent as chat.read; the counts in the title and the room
 *   lists are rooms.js's, from the server.
 * - Messages that mention the reader are highlighted; @ in the composer
 *   completes the names of the room's members; a name opens a direct room.
 *
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
  var emptyNote = document.getElementById("messages-empty");
  var jumpButton = document.getElementById("jump-latest");
  var mentionList = document.getElementById("mention-list");
  var membersToggle = document.getElementById("members-toggle");
  var membersCount = document.getElementById("members-toggle-count");
  var whoHere = document.getElementById("who-here");
  var csrf = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value;
  var path = "/ws/chat/" + room + "/";

  var BODY_MAX = 2000;          // code points, after trimming (as the server counts)
  var TYPING_SHOWN_MS = 4000;
  var TYPING_SEND_MS = 2000;
  var RETRY_MS = 2000;          // after rate_limited or unavailable
  var ACK_TIMEOUT_MS = 10000;   // no copy back by then: send again (the layer may drop a broadcast)
  var RETRYABLE = { rate_limited: true, unavailable: true };
  var STATUS_TEXT = { pending: "sending…", failed: "not sent yet, will retry" };
  var DRAFTS_KEY = PresenceSite.DRAFTS_PREFIX + me + "/" + room;

  var resumeId = 0;        // the newest id of the page's or the last chat.history (for ?after, without a cursor)
  var resumeCursor = initial.cursor || null; // the cursor of the page or of the last chat.history
  var oldestId = null;     // the oldest, for loading earlier history
  var resumeFrom = 0;      // the ?after of the current connection (0: none)
  var drafts = new Map();  // client_id -> {body, node, status, sentAt}: written here, not yet stored
  var resendTimer = null;
  var typists = new Map(); // username -> timer
  var lastTypingSent = 0;
  var lastRead = initial.last_read || 0;  // the marker as the page opened: where "New messages" goes
  var readUpTo = lastRead;                // the newest id known read (here, in another tab, or sent)
  var readTimer = null;
  var known = new Set(initial.members || []); // names @ completes: members, and whoever shows up
  var completing = null;                  // {start, matches, index} while the mention list is open

  var NAME = "[\\p{L}\\p{N}_.@+-]";
  var MENTION = new RegExp("(^|[^\\p{L}\\p{N}_.@+-])@(" + NAME + "+)", "gu");
  var TYPED_MENTION = new RegExp("(^|[^\\p{L}\\p{N}_.@+-])@(" + NAME + "*)$", "u");
  var MENTIONS_SHOWN = 8;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pinnedToBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function scrollToEnd() {
    list.scrollTop = list.scrollHeight;
    jumpButton.hidden = true;
  }

  function dmHref(name) {
    return "/chat/dm/" + encodeURIComponent(name) + "/";
  }

  /* A name that opens a direct room with that person (yourself: plain text). */
  function nameNode(name, className) {
    if (name === me) return el("span", className, name);
    var link = el("a", className + " dm-link", name);
    link.href = dmHref(name);
    link.title = "Direct message " + name;
    return link;
  }

  /* Mark the names a body mentions (the server's list) in its text, outside code and links. */
  function markMentions(node, mentions) {
    var names = new Map((mentions || []).map(function (name) { return [name.toLowerCase(), name]; }));
    if (!names.size) return;
    var walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT, {
      acceptNode: function (text) {
        return text.parentElement.closest("code, pre, a") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT;
      }
    });
    var texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    texts.forEach(function (textNode) {
      var text = textNode.nodeValue;
      var parts = [];
      var last = 0;
      var match;
      MENTION.lastIndex = 0;
      while ((match = MENTION.exec(text)) !== null) {
        var at = match.index + match[1].length;
        var typed = match[2];
        if (!names.has(typed.toLowerCase())) typed = typed.replace(/[.+@-]+$/, ""); // "@alice." ends a sentence
        var name = names.get(typed.toLowerCase());
        if (!name) continue;
        parts.push(document.createTextNode(text.slice(last, at)));
        parts.push(el("span", "mention" + (name === me ? " mention-me" : ""), "@" + typed));
        last = at + 1 + typed.length;
      }
      if (!parts.length) return;
      parts.push(document.createTextNode(text.slice(last)));
      textNode.replaceWith.apply(textNode, parts);
    });
  }

  /* "14:05" today, "3 Nov 14:05" before. */
  function stamp(iso) {
    var moment = new Date(iso);
    var time = moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (moment.toDateString() === new Date().toDateString()) return time;
    return moment.toLocaleDateString([], { day: "numeric", month: "short" }) + " " + time;
  }

  function messageNode(message) {
    var own = message.username === me;
    var mentionsMe = !own && (message.mentions || []).indexOf(me) !== -1;
    var li = el("li", "message" + (own ? " message-own" : "") + (mentionsMe ? " message-mention" : ""));
    li.appendChild(PresenceSocket.avatar(message.username, "avatar-sm"));
    var bubble = el("div", "message-bubble");
    var meta = el("div", "message-meta");
    meta.appendChild(nameNode(message.username, "message-author"));
    if (message.sent_at) {
      var when = el("time", "", stamp(message.sent_at));
      when.dateTime = message.sent_at;
      when.title = new Date(message.sent_at).toLocaleString();
      meta.appendChild(when);
    }
    if (message.id !== undefined) {
      li.dataset.id = String(message.id);
      li.dataset.username = message.username;
      if (message.sent_at) li.dataset.sentAt = message.sent_at;
      if (message.mentions && message.mentions.length) li.dataset.mentions = message.mentions.join(" ");
      li.id = "message-" + message.id;
      if (initial.moderator || own) {
        var remove = el("button", "message-delete", "Delete");
        remove.type = "button";
        remove.setAttribute("aria-label", "Delete this message from " + message.username);
        remove.addEventListener("click", function () { deleteMessage(message.id, message.username); });
        meta.appendChild(remove);
      }
      meta.appendChild(messageTools(li, message));
    }
    bubble.append(meta, bodyNode(message));
    li.appendChild(bubble);
    if (message.id !== undefined) {
      bubble.appendChild(reactionsNode(message.id, message.reactions || []));
      showEdited(li, message.edited_at);
    }
    return li;
  }

  /* ---------- formatting, edits, reactions ---------- */

  var COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];

  /* The stored message's body: its server-rendered, sanitized html (the one markup this page inserts). */
  function bodyNode(message) {
    var body = el("div", "message-body");
    if (typeof message.html === "string" && message.html) {
      body.classList.add("message-html");
      body.innerHTML = message.html;
    } else {
      body.textContent = message.body;
    }
    markMentions(body, message.mentions);
    return body;
  }

  function messageNodeById(id) {
    return list.querySelector('li[data-id="' + id + '"]');
  }

  function showEdited(li, editedAt) {
    var meta = li.querySelector(".message-meta");
    var marker = meta.querySelector(".message-edited");
    if (!editedAt) return;
    if (!marker) {
      marker = el("button", "message-edited", "(edited)");
      marker.type = "button";
      marker.setAttribute("aria-expanded", "false");
      marker.addEventListener("click", function () { toggleEdits(li); });
      meta.appendChild(marker);
    }
    marker.title = "Edited " + new Date(editedAt).toLocaleString() + ": show earlier versions";
    var open = li.querySelector(".message-edits");
    if (open) { open.remove(); marker.setAttribute("aria-expanded", "false"); }
  }

  /* "(edited)" opens the earlier versions, oldest first, fetched when asked for. */
  function toggleEdits(li) {
    var marker = li.querySelector(".message-edited");
    var open = li.querySelector(".message-edits");
    if (open) { open.remove(); marker.setAttribute("aria-expanded", "false"); return; }
    fetch("/api/rooms/" + room + "/messages/" + li.dataset.id + "/edits", { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (payload) {
        var versions = el("ol", "message-edits");
        versions.setAttribute("aria-label", "Earlier versions");
        payload.edits.forEach(function (edit) {
          var item = el("li");
          var when = el("time", "", stamp(edit.edited_at) + " ");
          when.dateTime = edit.edited_at;
          item.append(when, el("span", "message-edit-body", edit.body));
          versions.appendChild(item);
        });
        li.querySelector(".message-bubble").insertBefore(versions, li.querySelector(".reactions"));
        marker.setAttribute("aria-expanded", "true");
      })
      .catch(function () { showError("The earlier versions could not be loaded."); });
  }

  function applyEdited(frame) {
    var li = messageNodeById(frame.id);
    if (!li) return;
    var old = li.querySelector(".message-body");
    var mentions = li.dataset.mentions ? li.dataset.mentions.split(" ") : [];
    var fresh = bodyNode({ body: frame.body, html: frame.html, mentions: frame.mentions || mentions });
    old.replaceWith(fresh);
    li.dataset.body = frame.body;
    showEdited(li, frame.edited_at);
  }

  function messageTools(li, message) {
    var tools = el("span", "message-tools");
    var react = el("button", "message-react", "☺+");
    react.type = "button";
    react.setAttribute("aria-label", "React to this message");
    react.addEventListener("click", function () { togglePicker(li, message.id); });
    tools.appendChild(react);
    li.dataset.body = message.body;
    var editable = message.username === me && message.sent_at &&
      Date.now() - new Date(message.sent_at).getTime() < initial.edit_window * 1000;
    if (editable) {
      var edit = el("button", "message-edit", "Edit");
      edit.type = "button";
      edit.setAttribute("aria-label", "Edit this message");
      edit.addEventListener("click", function () { openEditor(li); });
      tools.appendChild(edit);
    }
    return tools;
  }

  function openEditor(li) {
    if (li.querySelector(".message-editor")) return;
    var editor = el("form", "message-editor");
    var area = el("textarea");
    area.value = li.dataset.body || "";
    area.setAttribute("aria-label", "New text of the message");
    var save = el("button", "button", "Save");
    save.type = "submit";
    var cancel = el("button", "button button-secondary", "Cancel");
    cancel.type = "button";
    editor.append(area, save, cancel);
    cancel.addEventListener("click", function () { editor.remove(); });
    editor.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = area.value.trim();
      if (!body || body === li.dataset.body) { editor.remove(); return; }
      if (socket.send({ type: "chat.edit", id: Number(li.dataset.id), body: area.value })) editor.remove();
      else showError("Not connected: the edit was not sent.");
    });
    area.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); editor.requestSubmit(); }
      if (event.key === "Escape") editor.remove();
    });
    li.querySelector(".message-bubble").insertBefore(editor, li.querySelector(".reactions"));
    area.focus();
  }

  function react(id, emoji) {
    if (!socket.send({ type: "chat.react", id: id, emoji: emoji })) showError("Not connected: the reaction was not sent.");
  }

  function togglePicker(li, id) {
    var open = li.querySelector(".reaction-picker");
    if (open) { open.remove(); return; }
    var picker = el("div", "reaction-picker");
    picker.setAttribute("role", "group");
    picker.setAttribute("aria-label", "Pick a reaction");
    COMMON_EMOJI.forEach(function (emoji) {
      var choice = el("button", "", emoji);
      choice.type = "button";
      choice.setAttribute("aria-label", "React with " + emoji);
      choice.addEventListener("click", function () { react(id, emoji); picker.remove(); });
      picker.appendChild(choice);
    });
    li.querySelector(".message-bubble").appendChild(picker);
  }

  /* Counts under the message; who reacted in the title (hover) and the label (focus, screen readers). */
  function reactionsNode(id, reactions) {
    var row = el("div", "reactions");
    reactions.forEach(function (reaction) {
      var mine = reaction.users.indexOf(me) !== -1;
      var chip = el("button", "reaction" + (mine ? " reaction-mine" : ""), reaction.emoji + " " + reaction.users.length);
      chip.type = "button";
      chip.dataset.emoji = reaction.emoji;
      chip.title = reaction.users.join(", ");
      chip.setAttribute("aria-pressed", mine ? "true" : "false");
      chip.setAttribute("aria-label", reaction.emoji + " by " + reaction.users.join(", "));
      chip.addEventListener("click", function () { react(id, reaction.emoji); });
      row.appendChild(chip);
    });
    return row;
  }

  /* A message shown already, as it is stored now (a resume lists messages seen live too, as they are now). */
  function refresh(message) {
    if (message.edited_at) applyEdited(message);
    if (message.reactions) applyReactions(message);
  }

  function applyReactions(frame) {
    var li = messageNodeById(frame.id);
    if (!li) return;
    li.querySelector(".reactions").replaceWith(reactionsNode(frame.id, frame.reactions));
  }

  /* ---------- grouping and days ---------- */

  var GROUP_MS = 5 * 60 * 1000;

  /* One author's messages within a few minutes read as one group; a line marks each new day. */
  function regroup() {
    list.querySelectorAll(".day-separator").forEach(function (node) { node.remove(); });
    var previous = null;
    list.querySelectorAll("li[data-id]").forEach(function (li) {
      var at = li.dataset.sentAt ? new Date(li.dataset.sentAt) : null;
      var grouped = false;
      if (at && (!previous || previous.at.toDateString() !== at.toDateString())) {
        var day = el("li", "day-separator", at.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year: "numeric" }));
        day.setAttribute("role", "separator");
        list.insertBefore(day, li);
      } else if (at && previous && previous.username === li.dataset.username && at - previous.at < GROUP_MS) {
        grouped = true;
      }
      li.classList.toggle("message-grouped", grouped);
      if (at) previous = { at: at, username: li.dataset.username };
    });
  }

  function hasMessage(id) {
    return !!list.querySelector('li[data-id="' + id + '"]');
  }

  /* Stored messages stay in id order; messages still being sent stay after them. */
  function place(node, id) {
    var before = null;
    for (var child = list.lastElementChild; child; child = child.previousElementSibling) {
      if (child.dataset.id !== undefined && Number(child.dataset.id) < id) break;
      before = child;
    }
    list.insertBefore(node, before);
  }

  /* Show stored messages (each once, in id order); `live` ones from others below the fold offer a jump. */
  function add(messages, live) {
    var pinned = pinnedToBottom();
    var fresh = 0;
    messages.forEach(function (message) {
      if (message.username === me) settleDraft(message.client_id);
      known.add(message.username);
      if (hasMessage(message.id)) { refresh(message); return; }
      place(messageNode(message), message.id);
      if (oldestId === null || message.id < oldestId) oldestId = message.id;
      if (message.username !== me) fresh += 1;
    });
    // The title's unread count comes from the rooms' counts (rooms.js), which include this room's.
    regroup();
    showEmpty();
    if (pinned) scrollToEnd();
    else if (live && fresh) jumpButton.hidden = false;
    markRead();
  }

  function showEmpty() {
    emptyNote.hidden = !!list.querySelector("li.message");
  }

  /* ---------- where the reader is ---------- */

  /* "New messages" before the first message of others after the marker the page opened with. */
  function placeDivider() {
    var first = Array.from(list.querySelectorAll("li[data-id]")).find(function (node) {
      return Number(node.dataset.id) > lastRead && !node.classList.contains("message-own");
    });
    if (!first) return null;
    var divider = el("li", "unread-divider", "New messages");
    divider.id = "unread-divider";
    divider.setAttribute("role", "separator");
    list.insertBefore(divider, first);
    return divider;
  }

  /* Open at #message-<id> (a notification), else at the "New messages" line, else at the newest. */
  function openAt(divider) {
    var target = /^#message-(\d+)$/.exec(window.location.hash);
    var node = target && document.getElementById("message-" + target[1]);
    if (node) {
      node.classList.add("message-target");
      list.scrollTop += node.getBoundingClientRect().top - list.getBoundingClientRect().top - list.clientHeight / 3;
    } else if (divider) {
      list.scrollTop += divider.getBoundingClientRect().top - list.getBoundingClientRect().top - 8;
    } else {
      scrollToEnd();
    }
  }

  /* The newest stored message that is, or has been, on screen: everything up to it is read. */
  function newestShown() {
    var bottom = list.getBoundingClientRect().bottom;
    for (var node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (node.dataset.id !== undefined && node.getBoundingClientRect().top < bottom - 4) return Number(node.dataset.id);
    }
    return 0;
  }

  /* Tell the server what this page has shown, while its tab is seen (a hidden tab shows nothing). */
  function markRead() {
    if (readTimer !== null) return;
    readTimer = setTimeout(function () {
      readTimer = null;
      if (document.hidden || !socket.isOpen()) return;
      var upTo = newestShown();
      if (upTo > readUpTo && socket.send({ type: "chat.read", up_to: upTo })) readUpTo = upTo;
    }, 150);
  }

  function showOlder(hasMore) { olderButton.hidden = !hasMore; }

  /* Missed more than one resume returns: show the newest page, older ones a click away. */
  function jumpToLatest() {
    fetch("/chat/" + room + "/messages?limit=50", { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (page) {
        if (!page.messages.length) return;
        var first = page.messages[0].id;
        list.querySelectorAll("li[data-id]").forEach(function (node) {
          if (Number(node.dataset.id) < first) node.remove();
        });
        oldestId = first;
        add(page.messages, false);
        showOlder(page.has_more);
        scrollToEnd();
      })
      .catch(function () { window.location.reload(); });
  }

  /* ---------- messages written here ---------- */

  function markDraft(draft, state) {
    draft.node.classList.toggle("message-pending", state === "pending");
    draft.node.classList.toggle("message-failed", state === "failed");
    draft.status.textContent = STATUS_TEXT[state];
    if (state === "pending") draft.sentAt = Date.now();
  }

  function markDrafts(state) {
    drafts.forEach(function (draft) { markDraft(draft, state); });
  }

  function settleDraft(clientId) {
    var draft = drafts.get(clientId);
    if (!draft) return;
    drafts.delete(clientId);
    saveDrafts();
    socket.ack(clientId);
    draft.node.remove();
    if (!drafts.size) showError("");
  }

  function saveDrafts() {
    var items = Array.from(drafts, function (entry) { return { client_id: entry[0], body: entry[1].body }; });
    try {
      if (items.length) localStorage.setItem(DRAFTS_KEY, JSON.stringify(items));
      else localStorage.removeItem(DRAFTS_KEY);
    } catch (error) {
      // Storage disabled or full: the outbox still holds them for as long as this page lives.
    }
  }

  function savedDrafts() {
    try {
      var items = JSON.parse(localStorage.getItem(DRAFTS_KEY) || "[]");
      return Array.isArray(items) ? items : [];
    } catch (error) {
      return [];
    }
  }

  function dropDraft(clientId, reason) {
    var draft = drafts.get(clientId);
    settleDraft(clientId);
    // Refused for good: the text goes back to the composer with the reason.
    if (!input.value.trim()) input.value = draft.body;
    showError(reason);
  }

  function resend() {
    resendTimer = null;
    if (!socket.isOpen()) return; // the reconnect sends the outbox
    socket.pending().forEach(function (frame) {
      socket.send(frame);
      var draft = drafts.get(frame.client_id);
      if (draft) markDraft(draft, "pending");
    });
  }

  function scheduleResend() {
    if (resendTimer === null) resendTimer = setTimeout(resend, RETRY_MS);
  }

  /* Show a message as unsent and put it in the outbox; the socket sends it when it is open. */
  function queueDraft(body, clientId) {
    var node = messageNode({ username: me, body: body.trim() });
    node.dataset.clientId = clientId;
    var status = el("span", "message-status");
    node.querySelector(".message-meta").appendChild(status);
    var draft = { body: body, node: node, status: status, sentAt: 0 };
    drafts.set(clientId, draft);
    saveDrafts();
    list.appendChild(node);
    markDraft(draft, socket.isOpen() ? "pending" : "failed");
    socket.enqueue({ type: "chat.message", body: body, client_id: clientId }, clientId);
  }

  function send() {
    var body = input.value;
    var text = body.trim();
    if (!text) return;
    var length = Array.from(text).length;
    if (length > BODY_MAX) {
      showError("A message can be at most " + BODY_MAX.toLocaleString("en") + " characters; this one has " +
        length.toLocaleString("en") + ".");
      return;
    }
    queueDraft(body, PresenceSocket.clientId());
    input.value = "";
    fitComposer();
    showError("");
    scrollToEnd();
  }

  /* ---------- @ completion ---------- */

  function closeCompletion() {
    completing = null;
    mentionList.hidden = true;
    mentionList.replaceChildren();
    input.removeAttribute("aria-activedescendant");
  }

  function showCompletion() {
    mentionList.replaceChildren.apply(mentionList, completing.matches.map(function (name, index) {
      var option = el("li", "mention-option", "@" + name);
      option.id = "mention-option-" + index;
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", String(index === completing.index));
      // mousedown, not click: the composer keeps its focus and caret.
      option.addEventListener("mousedown", function (event) { event.preventDefault(); complete(name); });
      return option;
    }));
    mentionList.hidden = false;
    input.setAttribute("aria-activedescendant", "mention-option-" + completing.index);
  }

  /* After typing: "@al|" offers the members whose names start with "al". */
  function updateCompletion() {
    var caret = input.selectionStart;
    var typed = caret === input.selectionEnd && TYPED_MENTION.exec(input.value.slice(0, caret));
    if (!typed) return closeCompletion();
    var prefix = typed[2].toLowerCase();
    var matches = Array.from(known).filter(function (name) {
      return name !== me && name.toLowerCase().indexOf(prefix) === 0;
    }).sort().slice(0, MENTIONS_SHOWN);
    if (!matches.length) return closeCompletion();
    completing = { start: caret - typed[2].length - 1, matches: matches, index: 0 };
    showCompletion();
  }

  function complete(name) {
    var caret = input.selectionStart;
    var text = "@" + name + " ";
    input.value = input.value.slice(0, completing.start) + text + input.value.slice(caret);
    var at = completing.start + text.length;
    input.setSelectionRange(at, at);
    closeCompletion();
    fitComposer();
    input.focus();
  }

  /* Keys while the list is open; true when the key was used here. */
  function completionKey(event) {
    if (!completing) return false;
    var count = completing.matches.length;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      completing.index = (completing.index + (event.key === "ArrowDown" ? 1 : count - 1)) % count;
      showCompletion();
    } else if (event.key === "Enter" || event.key === "Tab") {
      complete(completing.matches[completing.index]);
    } else if (event.key === "Escape") {
      closeCompletion();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  /* ---------- others ---------- */

  function showUsers(users, statuses) {
    statuses = statuses || {};
    hereList.replaceChildren.apply(hereList, users.map(function (name) {
      known.add(name);
      var li = el("li", "user user-online");
      li.dataset.username = name;
      var avatar = PresenceSocket.avatar(name, "avatar-sm");
      avatar.appendChild(el("span", "status-dot status-online"));
      var text = el("span", "user-text");
      var label = nameNode(name, "name");
      if (name === me) label.appendChild(el("span", "you", " (you)"));
      text.appendChild(label);
      var status = statuses[name];
      if (status) {
        var line = el("span", "user-status");
        if (status.emoji) line.appendChild(el("span", "user-status-emoji", status.emoji));
        if (status.text) line.appendChild(el("span", "user-status-text", status.text));
        if (status.dnd) line.appendChild(el("span", "badge badge-dnd", "Do not disturb"));
        text.appendChild(line);
      }
      li.append(avatar, text);
      return li;
    }));
    hereCount.textContent = String(users.length);
    membersCount.textContent = String(users.length);
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

  function stoppedTyping(name) {
    if (!typists.has(name)) return;
    clearTimeout(typists.get(name));
    typists.delete(name);
    showTyping();
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  function deleteMessage(id, author) {
    var question = author === me ? "Delete your message?" : "Delete " + author + "'s message? Everyone in the room stops seeing it.";
    if (!window.confirm(question)) return;
    fetch("/chat/" + room + "/messages/" + id + "/delete", {
      method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) showError("That message could not be deleted.");
    });
  }

  function removeMessage(id) {
    var node = list.querySelector('li[data-id="' + id + '"]');
    if (node) { node.remove(); regroup(); }
    showEmpty();
  }

  function fitComposer() {
    input.style.height = "auto";
    input.style.height = input.scrollHeight + 2 + "px";
  }

  /* A history on connect: new messages, and (resumed by cursor) the changes to older ones, as their frames. */
  function applyHistory(frame) {
    // A resumed history names what was deleted while this page was away (?after= or ?cursor=).
    (frame.deleted || []).forEach(removeMessage);
    add(frame.messages, resumeFrom !== 0);
    (frame.changes || []).forEach(onFrame);
    frame.messages.forEach(function (message) { resumeId = Math.max(resumeId, message.id); });
    if (resumeFrom === 0) showOlder(frame.has_more);
    else if (frame.has_more) jumpToLatest();
  }

  /* Away too long for the cursor: the stored messages shown are replaced by the last page. */
  function resetTo(frame) {
    list.querySelectorAll("li[data-id], .day-separator, .unread-divider").forEach(function (node) { node.remove(); });
    oldestId = null;
    add(frame.messages, false);
    frame.messages.forEach(function (message) { resumeId = Math.max(resumeId, message.id); });
    showOlder(frame.has_more);
    scrollToEnd();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "chat.history":
        if (frame.last_read) readUpTo = Math.max(readUpTo, frame.last_read);
        if (frame.reset) resetTo(frame);
        else applyHistory(frame);
        if (frame.cursor) resumeCursor = frame.cursor;
        break;
      case "chat.edited":
        applyEdited(frame);
        break;
      case "chat.reactions":
        applyReactions(frame);
        break;
      case "chat.message":
        add([frame], true);
        stoppedTyping(frame.username);
        break;
      case "chat.deleted":
        removeMessage(frame.id);
        break;
      case "chat.read":
        // This tab or another read this room: never send a smaller id.
        if (frame.room === room) readUpTo = Math.max(readUpTo, frame.up_to);
        break;
      case "chat.typing":
        if (frame.username !== me) someoneTyping(frame.username);
        break;
      case "room.presence":
        showUsers(frame.users, frame.statuses);
        break;
      case "error":
        if (frame.client_id && drafts.has(frame.client_id)) {
          if (RETRYABLE[frame.code]) {
            markDraft(drafts.get(frame.client_id), "failed");
            showError(frame.detail);
            scheduleResend();
          } else {
            dropDraft(frame.client_id, frame.detail);
          }
        } else if (drafts.size && frame.code === "rate_limited") {
          // Refused before it was read (too many frames): send the outbox again shortly.
          markDrafts("failed");
          scheduleResend();
        } else if (frame.code === "forbidden" || frame.code === "invalid") {
          // An edit or a reaction that was refused: nothing changed.
          showError(frame.detail);
        }
        break;
    }
  }

  // The page's own history is the first resume point: the first connection
  // fetches only what was stored after the page was rendered.
  initial.messages.forEach(function (message) { resumeId = Math.max(resumeId, message.id); });

  var socket = PresenceSocket.open(path, {
    url: function () {
      if (resumeCursor) {
        resumeFrom = resumeCursor;
        return path + "?cursor=" + encodeURIComponent(resumeCursor);
      }
      resumeFrom = resumeId;
      return resumeId > 0 ? path + "?after=" + resumeId : path;
    },
    // The outbox is sent right after this.
    onOpen: function () { markDrafts("pending"); markRead(); },
    onClose: function () { markDrafts("failed"); },
    onFrame: onFrame,
    reportIdle: true
  });
  window.chatPage = socket;

  setInterval(function () {
    var now = Date.now();
    var late = false;
    drafts.forEach(function (draft) { if (draft.sentAt && now - draft.sentAt > ACK_TIMEOUT_MS) late = true; });
    if (late && socket.isOpen()) resend();
  }, ACK_TIMEOUT_MS / 4);

  form.addEventListener("submit", function (event) { event.preventDefault(); send(); });
  input.addEventListener("keydown", function (event) {
    if (completionKey(event)) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  input.addEventListener("blur", closeCompletion);
  input.addEventListener("input", function () {
    fitComposer();
    updateCompletion();
    var now = Date.now();
    if (input.value.trim() && now - lastTypingSent > TYPING_SEND_MS && socket.send({ type: "chat.typing" })) {
      lastTypingSent = now;
    }
  });
  olderButton.addEventListener("click", function () {
    if (oldestId === null) return;
    fetch("/chat/" + room + "/messages?before=" + oldestId + "&limit=50", { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (page) {
        var before = list.scrollHeight;
        add(page.messages, false);
        list.scrollTop += list.scrollHeight - before; // keep the reader's place
        showOlder(page.has_more);
      });
  });

  // Messages an earlier page of this room did not get stored: shown and sent again. Those the
  // server stored after all are in the history below, which settles them.
  savedDrafts().forEach(function (item) {
    if (item && typeof item.client_id === "string" && typeof item.body === "string" && item.body.trim() &&
        !drafts.has(item.client_id)) {
      queueDraft(item.body, item.client_id);
    }
  });
  list.addEventListener("scroll", function () {
    if (pinnedToBottom()) jumpButton.hidden = true;
    markRead();
  }, { passive: true });
  jumpButton.addEventListener("click", scrollToEnd);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) markRead(); });
  window.addEventListener("focus", markRead);
  // Below ~700 px the member list folds behind this button.
  membersToggle.addEventListener("click", function () {
    var open = whoHere.classList.toggle("who-here-open");
    membersToggle.setAttribute("aria-expanded", String(open));
  });

  add(initial.messages, false);
  showOlder(initial.has_more);
  showUsers(initial.users, initial.statuses);
  var divider = placeDivider();
  if (!openAtMessage()) openAt(divider);
  markRead();
  window.chatRoom = { cursor: function () { return resumeCursor; } };

  /* ?around=<id> (a search hit): the page opens at that message, highlighted; else false. */
  function openAtMessage() {
    var target = initial.around !== null && initial.around !== undefined ? messageNodeById(initial.around) : null;
    if (!target) return false;
    target.classList.add("message-highlight");
    target.setAttribute("tabindex", "-1");
    target.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
    return true;
  }
})();
