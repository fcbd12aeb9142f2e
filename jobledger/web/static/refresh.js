// Auto-refresh without a framework: every N seconds (the body's data-refresh), fetch this
// page again and swap in its <main>. The server escapes every value; the fetched document
// is parsed inertly (DOMParser runs no scripts) and only its nodes are moved over.
(function () {
  "use strict";
  var seconds = parseFloat(document.body.getAttribute("data-refresh") || "0");
  var toggle = document.getElementById("auto-refresh");
  if (!(seconds > 0) || !toggle) { return; }
  var key = "jobledger-auto-refresh";
  try { toggle.checked = window.localStorage.getItem(key) !== "off"; } catch (e) { /* private mode */ }
  toggle.addEventListener("change", function () {
    try { window.localStorage.setItem(key, toggle.checked ? "on" : "off"); } catch (e) { /* ignore */ }
  });
  function refresh() {
    if (!toggle.checked || document.hidden) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
        var current = document.getElementById("content");
        if (fresh && current) { current.replaceWith(document.adoptNode(fresh)); }
      })
      .catch(function () { /* the server is away: try again next time */ });
  }
  window.setInterval(refresh, seconds * 1000);
})();
