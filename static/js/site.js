/* Every logged-in page:
 * - holds one socket, so that its user is online wherever they are: a page
 *   whose own script opened none (the room list, the account page, search,
 *   the admin) gets a presence socket, which also reports the tab idle/active;
 * - a logout forgets the chat messages this browser kept unsent (chat.js keeps them in
 *   localStorage under PresenceSite.DRAFTS_PREFIX), so that nothing written here stays on a shared machine. */
(function () {
  "use strict";

  var DRAFTS_PREFIX = "presence.unsent/";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("logout-form")) return;
    try {
      Object.keys(localStorage).forEach(function (key) {
        if (key.indexOf(DRAFTS_PREFIX) === 0) localStorage.removeItem(key);
      });
    } catch (error) {
      // Storage disabled: nothing was kept.
    }
  }, true);

  // Deferred scripts have all run by DOMContentLoaded: a page script that holds its own socket has opened it.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.PresenceSocket && !PresenceSocket.page()) PresenceSocket.open("/ws/presence/", { reportIdle: true });
  });

  window.PresenceSite = { DRAFTS_PREFIX: DRAFTS_PREFIX };
})();
