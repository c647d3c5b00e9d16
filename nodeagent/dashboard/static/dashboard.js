// nodeagent dashboard: live updates and the table's filter, sort and pages without reloads.
// The server renders every page; this script only fetches the part that changes
// (<div id="live">, asked for with the X-Fragment header) when the event stream says the
// fleet changed, and when the admin filters, sorts or pages. Without it the page still
// works: every control is a plain link or form.
"use strict";
(function () {
  const live = document.getElementById("live");
  const conn = document.getElementById("conn");
  const page = document.body.dataset.page;
  let timer = null;
  let inflight = false;
  let again = false;

  function refresh() {
    if (inflight) {
      again = true;
      return;
    }
    inflight = true;
    fetch(location.pathname + location.search, { headers: { "X-Fragment": "1" } })
      .then((r) => r.text())
      .then((text) => {
        // the filter box keeps what the admin is typing (and the caret) across an update
        const focused = document.activeElement;
        const typing = focused && focused.name === "q" ? focused : null;
        live.innerHTML = text;
        if (typing !== null) {
          const input = live.querySelector('input[name="q"]');
          if (input) {
            input.value = typing.value;
            input.focus();
            input.setSelectionRange(typing.selectionStart, typing.selectionEnd);
          }
        }
        document.body.dataset.updated = String(Date.now());
      })
      .catch(() => {
        if (conn) conn.textContent = "dashboard unreachable";
      })
      .finally(() => {
        inflight = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function schedule() {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      refresh();
    }, 200);
  }

  // Which events each page shows: everything reacts to the connection's status.
  const wanted = {
    fleet: ["node", "fleet", "status"],
    node: ["node", "status"],
    fabric: ["node", "status", "fabric"],
    jobs: ["jobs", "status"],
  };
  const events = new EventSource("/events");
  for (const kind of wanted[page] || ["status"]) {
    events.addEventListener(kind, (e) => {
      if (kind === "node" && page === "node") {
        const id = JSON.parse(e.data).id;
        if (!location.pathname.endsWith("/" + encodeURIComponent(id))) return;
      }
      schedule();
    });
  }
  events.addEventListener("hello", () => {
    if (conn) {
      conn.textContent = "live";
      conn.className = "conn";
    }
  });
  events.onerror = () => {
    if (conn) {
      conn.textContent = "reconnecting";
      conn.className = "conn down";
    }
  };

  function go(url) {
    history.pushState(null, "", url);
    refresh();
  }

  // Sort headers, pages and the count filters: fetched in place.
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-live]");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", refresh);

  // The filter box: as the admin types, after a pause.
  let typing = null;
  document.addEventListener("input", (e) => {
    if (e.target.name !== "q") return;
    clearTimeout(typing);
    typing = setTimeout(() => {
      const form = e.target.form;
      const params = new URLSearchParams(new FormData(form));
      for (const [k, v] of [...params]) if (!v) params.delete(k);
      const query = params.toString();
      history.replaceState(null, "", "/" + (query ? "?" + query : ""));
      refresh();
    }, 250);
  });
  document.addEventListener("submit", (e) => {
    if (e.target.id !== "filter") return;
    e.preventDefault();
    const params = new URLSearchParams(new FormData(e.target));
    for (const [k, v] of [...params]) if (!v) params.delete(k);
    const query = params.toString();
    go("/" + (query ? "?" + query : ""));
  });
})();
