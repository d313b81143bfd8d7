/* sam3web: the run page's Export card. With "Only what I see" ticked, the export links carry the
   viewer's current view (visible instances, threshold, colours, opacity) as query parameters, so
   the download matches the screen. Without JavaScript, or without the viewer, the links export
   everything. The viewer (window.sam3Viewer, static/sam3web/viewer.js) exposes visible(),
   threshold(), opacity(), colours() and ready(), fires "sam3:ready" once it has loaded and
   "sam3:viewchange" on its root element when anything changes. visible() already leaves out
   instances below the threshold; the threshold is sent as well, for the JSON's record.

   The card sits in the part of the page that htmx replaces while a run is still being copied,
   so this file may run more than once: it sets itself up once, listens on the document, and
   keeps the toggle's state across swaps. */
(() => {
  "use strict";
  if (window.sam3Exports) {
    window.sam3Exports.refresh();
    return;
  }

  let onlyView = false;

  const known = (card) =>
    new Set((card.dataset.instances || "").split(",").filter(Boolean).map(Number));

  const call = (v, name) => (typeof v[name] === "function" ? v[name]() : undefined);

  // A number from 0 to 1 as a short decimal the server accepts (never "1e-7"), or null.
  const fraction = (value) => {
    if (value === null || value === undefined || value === "") return null;
    const x = Number(value);
    if (!Number.isFinite(x)) return null;
    const clamped = Math.min(1, Math.max(0, x));
    return clamped < 1e-6 ? "0" : String(Math.round(clamped * 1e6) / 1e6);
  };

  const numbers = (value) => {
    if (value === null || value === undefined) return null; // every instance
    if (typeof value === "string") value = value.split(",");
    if (typeof value[Symbol.iterator] !== "function") return null;
    return Array.from(value, Number).filter(Number.isInteger);
  };

  const hex2 = (n) =>
    Math.min(255, Math.max(0, Math.round(Number(n)) || 0))
      .toString(16)
      .padStart(2, "0");

  // "#1f77b4", "1f77b4", "#abc", "rgb(31, 119, 180)" or [31, 119, 180] -> "1f77b4"; else null.
  const hexColour = (value) => {
    if (Array.isArray(value) && value.length >= 3) return value.slice(0, 3).map(hex2).join("");
    if (typeof value !== "string") return null;
    const text = value.trim().toLowerCase();
    let m = /^#?([0-9a-f]{6})$/.exec(text);
    if (m) return m[1];
    m = /^#?([0-9a-f])([0-9a-f])([0-9a-f])$/.exec(text);
    if (m) return m[1] + m[1] + m[2] + m[2] + m[3] + m[3];
    m = /^rgba?\(\s*(\d+)[\s,]+(\d+)[\s,]+(\d+)/.exec(text);
    return m ? [m[1], m[2], m[3]].map(hex2).join("") : null;
  };

  // A Map, an object or a list of [number, colour] pairs -> [[number, "rrggbb"], ...].
  const colourPairs = (value, ids) => {
    if (!value) return [];
    let entries;
    if (value instanceof Map) entries = Array.from(value.entries());
    else if (Array.isArray(value)) entries = value.filter((e) => Array.isArray(e) && e.length === 2);
    else if (typeof value === "object") entries = Object.entries(value);
    else return [];
    const pairs = new Map();
    for (const [key, colour] of entries) {
      const n = Number(key);
      const c = hexColour(colour);
      if (Number.isInteger(n) && ids.has(n) && c) pairs.set(n, c);
    }
    return Array.from(pairs).sort((a, b) => a[0] - b[0]);
  };

  // The viewer, once it has loaded the run's instances (before that, visible() is empty).
  const viewer = () => {
    const v = window.sam3Viewer;
    if (!v) return null;
    try {
      return typeof v.ready !== "function" || v.ready() ? v : null;
    } catch (error) {
      return null;
    }
  };

  // The query for the viewer's current view, with a sentence saying what it exports; null when
  // there is no viewer (or it fails), and the links then export everything.
  const viewQuery = (card) => {
    const v = viewer();
    if (!v) return null;
    const ids = known(card);
    const params = [];
    const said = [];
    try {
      const visible = numbers(call(v, "visible"));
      if (visible !== null) {
        const shown = Array.from(new Set(visible.filter((n) => ids.has(n)))).sort((a, b) => a - b);
        params.push("visible=" + shown.join(","));
        said.push(`${shown.length} of ${ids.size} instance${ids.size === 1 ? "" : "s"}`);
      } else {
        said.push("every instance");
      }
      const threshold = fraction(call(v, "threshold"));
      if (threshold !== null && threshold !== "0") {
        params.push("threshold=" + threshold);
        said.push(`scores ≥ ${threshold}`);
      }
      const colours = colourPairs(call(v, "colours"), ids);
      if (colours.length) params.push("colours=" + colours.map(([n, c]) => `${n}:${c}`).join(","));
      const opacity = fraction(call(v, "opacity"));
      if (opacity !== null) {
        params.push("opacity=" + opacity);
        said.push(`opacity ${Math.round(Number(opacity) * 100)}%`);
      }
    } catch (error) {
      console.warn("sam3web exports: could not read the viewer's state", error);
      return null;
    }
    return { query: params.join("&"), text: `Exports what the viewer shows: ${said.join(", ")}.` };
  };

  const EVERYTHING = "Exports every instance, in the usual colours.";

  const update = (card) => {
    const toggle = card.querySelector("[data-export-view]");
    const box = card.querySelector("#export-only-view");
    const scope = card.querySelector("#export-scope");
    if (toggle) toggle.hidden = !viewer();
    if (box) box.checked = onlyView;
    const view = onlyView ? viewQuery(card) : null;
    for (const link of card.querySelectorAll("a[data-export]")) {
      if (!link.dataset.base) link.dataset.base = link.getAttribute("href").split("?")[0];
      const href = view && view.query ? `${link.dataset.base}?${view.query}` : link.dataset.base;
      link.setAttribute("href", href);
    }
    if (scope) {
      const text = view ? view.text : EVERYTHING;
      if (scope.textContent !== text) scope.textContent = text;
    }
  };

  const refresh = () => document.querySelectorAll("section.exports").forEach(update);

  document.addEventListener("change", (event) => {
    if (event.target && event.target.id === "export-only-view") {
      onlyView = event.target.checked;
      refresh();
    }
  });
  // Capture: the viewer fires on its own root, and the event need not bubble.
  document.addEventListener("sam3:viewchange", refresh, true);
  document.addEventListener("sam3:ready", refresh, true);
  // Just before a download starts, in case the view changed without an event.
  document.addEventListener(
    "click",
    (event) => {
      const link = event.target.closest && event.target.closest("a[data-export]");
      const card = link && link.closest("section.exports");
      if (card) update(card);
    },
    true,
  );
  // A swapped-in card (the page is still polling) gets the toggle's state back.
  document.addEventListener("htmx:afterSettle", refresh);
  window.addEventListener("load", refresh);

  window.sam3Exports = { refresh, viewQuery };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", refresh);
  else refresh();
})();
