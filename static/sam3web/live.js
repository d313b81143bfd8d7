// The run page's live part (#run-live), kept up to date while the run is in progress.
//
// A long poll: ask the server for the live part with the version on the page and `wait=1`; the
// server answers when something changed (the new part, swapped in with htmx), or after a while
// with 204 (ask again). The result is on the page the moment it is stored. If the long poll
// fails (the connection drops, a proxy cuts it), htmx's one-second poll in the markup takes over:
// it is held back only while `window.sam3webLongPoll` is true.
//
// Also: the elapsed time of a run in progress, ticking once a second.

const LIVE = "run-live";
const RETRY_AFTER_MS = 5000;

async function longPoll() {
  window.sam3webLongPoll = true;
  for (;;) {
    const el = document.getElementById(LIVE);
    const url = el && el.getAttribute("hx-get");
    if (!url) return; // settled: nothing on the page will change by itself
    let response;
    try {
      response = await fetch(`${url}&wait=1`, {
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
      });
    } catch {
      return fallBack();
    }
    if (response.status === 204) continue; // nothing new yet: ask again
    if (!response.ok && response.status !== 286) return fallBack();
    const html = await response.text();
    // Still the same element? (A person may have navigated with htmx meanwhile.)
    if (document.getElementById(LIVE) !== el) return;
    // Announced like htmx's own swaps, so the page keeps what the person opened (run-page.js).
    el.dispatchEvent(new CustomEvent("sam3:beforeswap", { bubbles: true, detail: { target: el } }));
    htmx.swap(el, html, { swapStyle: "outerHTML" });
    document.dispatchEvent(new CustomEvent("sam3:afterswap"));
    if (response.status === 286) return; // the server says: settled, stop asking
  }
}

function fallBack() {
  // htmx's `every 1s` poll in the markup resumes; try the long poll again a little later.
  window.sam3webLongPoll = false;
  setTimeout(longPoll, RETRY_AFTER_MS);
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-elapsed-since]")) {
    const since = Date.parse(el.dataset.elapsedSince);
    if (Number.isNaN(since)) continue;
    const seconds = Math.max(0, Math.round((now - since) / 1000));
    el.textContent =
      seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  }
}

if (document.getElementById(LIVE)?.getAttribute("hx-get")) {
  longPoll();
  tick();
  setInterval(tick, 1000);
}
