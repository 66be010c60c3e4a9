/* /chat/search/?q=: results from /api/search, newest first, each a link to its room opened at the message.
 *
 * The match is highlighted by splitting the body on the query's words and
 * wrapping each match in <mark>; every node is built with createElement and
 * textContent, so nothing a user wrote is ever parsed as markup here.
 */
(function () {
  "use strict";

  var q = new URLSearchParams(window.location.search).get("q") || "";
  var results = document.getElementById("search-results");
  var state = document.getElementById("search-state");

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function words(query) {
    return query.match(/[\p{L}\p{N}_]+/gu) || [];
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  /* The body as text nodes, with each query word (whole or as a word's start) in a <mark>. */
  function highlighted(body, terms) {
    var parent = el("p", "search-body");
    if (!terms.length) { parent.textContent = body; return parent; }
    var pattern = new RegExp("(" + terms.map(escapeRegExp).join("|") + ")", "giu");
    var last = 0;
    body.replace(pattern, function (match, group, offset) {
      if (offset > last) parent.appendChild(document.createTextNode(body.slice(last, offset)));
      parent.appendChild(el("mark", "", match));
      last = offset + match.length;
      return match;
    });
    if (last < body.length) parent.appendChild(document.createTextNode(body.slice(last)));
    return parent;
  }

  function resultNode(message, terms) {
    var li = el("li", "search-result");
    li.dataset.id = String(message.id);
    var link = el("a", "search-link");
    link.href = "/chat/" + encodeURIComponent(message.room) + "/?around=" + message.id + "#m" + message.id;
    var meta = el("div", "message-meta");
    meta.appendChild(el("span", "message-author", message.username));
    meta.appendChild(el("span", "detail", " in #" + message.room + " · " + new Date(message.sent_at).toLocaleString()));
    link.append(meta, highlighted(message.body, terms));
    li.appendChild(link);
    return li;
  }

  if (!q.trim()) return;
  state.textContent = "Searching…";
  fetch("/api/search?q=" + encodeURIComponent(q) + "&limit=50", { credentials: "same-origin" })
    .then(function (response) {
      return response.json().then(function (payload) { return { ok: response.ok, payload: payload }; });
    })
    .then(function (answer) {
      if (!answer.ok) { state.textContent = answer.payload.detail || "The search failed."; return; }
      var terms = words(q);
      var messages = answer.payload.messages;
      results.replaceChildren.apply(results, messages.map(function (message) { return resultNode(message, terms); }));
      state.textContent = messages.length
        ? messages.length + (answer.payload.has_more ? "+" : "") + " messages found"
        : "No message holds all of these words.";
    })
    .catch(function () { state.textContent = "The search failed; try again."; });
})();
