/* Every page: a logout forgets the chat messages this browser kept unsent (chat.js keeps them in
 * localStorage under PresenceSite.DRAFTS_PREFIX), so that nothing written here stays on a shared machine. */
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

  window.PresenceSite = { DRAFTS_PREFIX: DRAFTS_PREFIX };
})();
