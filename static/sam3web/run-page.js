/* sam3web · the run page. While a run is on its way, htmx swaps the page's live part
 * (#run-live) for a fresh one each time the run moves on; the fresh one has every <details>
 * closed. Those the person had opened (the Details section, the request body, the actions
 * menu: each has an id) are opened again in the new part before it is painted. Without
 * JavaScript there is no swapping, and nothing to keep. */

const opened = new Set();

function remember(event) {
  const target = event.detail && event.detail.target;
  if (!target || target.id !== "run-live") return;
  opened.clear();
  for (const details of target.querySelectorAll("details[id]")) {
    if (details.open) opened.add(details.id);
  }
}

function reopen() {
  const live = document.getElementById("run-live");
  if (!live || !opened.size) return;
  for (const id of opened) {
    const details = document.getElementById(id);
    if (details && live.contains(details)) details.open = true;
  }
}

// htmx's one-second poll, and the long poll of live.js, which announces its swaps the same way.
document.addEventListener("htmx:beforeSwap", remember);
document.addEventListener("htmx:afterSwap", reopen);
document.addEventListener("sam3:beforeswap", remember);
document.addEventListener("sam3:afterswap", reopen);
