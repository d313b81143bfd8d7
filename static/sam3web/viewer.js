/* sam3web · the run page's mask viewer: this module starts it.
 *
 * Draws the run's image and its instances on one <canvas>, from the small per-instance mask
 * crops (viewer_views.mask_crop) listed in viewer.json: a colour per instance, opacity, show and
 * hide, a minimum score, filled or outline masks, boxes and score tags, the prompts, a hover
 * read-out, selecting an instance, zoom and pan, and keyboard shortcuts ("?" lists them). The
 * photo is its display copy, stretched over the original's pixels (masks and coordinates stay in
 * those); zoomed in past the copy's detail, the original is loaded in its place. No framework,
 * no build step:
 * ES modules, loaded with <script type="module"> and served as they are (collectstatic's
 * manifest storage rewrites their imports to the hashed names, sam3web/storage.py).
 *
 *   viewer.js           this file: starts a viewer on each .sam3-viewer; window.sam3Viewer
 *   viewer/core.js      the Viewer: its state, the order it loads in, its setters
 *   viewer/data.js      viewer.json, the photo and the mask crops, mask bits for hit-testing
 *   viewer/draw.js      the frame: image pyramid, instance sprites, outlines, boxes, tags
 *   viewer/view.js      the canvas's size, fit, zoom, pan, and what lies under a point
 *   viewer/controls.js  the instance list, the bars, selecting, pointer, keys, help dialog
 *   viewer/sync.js      the viewers on the page; keeping those of a group in step (compare)
 *   viewer/util.js      clamp, round2, makeCanvas
 *
 * The run page's live region is swapped by htmx until the run is settled, so viewers are
 * started from htmx.onLoad as well as at load. htmx may put this file's <script> back on each
 * swap; a module runs once per page however often it is included.
 *
 * For other scripts (exports): window.sam3Viewer.visible(), threshold(), opacity(), colours(),
 * and a "sam3:viewchange" event on the viewer's root whenever one of them changes. These speak
 * of the latest viewer started (the run page has one); all() describes every viewer. This is
 * the viewer's only global.
 */

import { Viewer } from "./viewer/core.js";
import { bindSyncToggles, viewers } from "./viewer/sync.js";
// The rest of the viewer's modules, named here too so that the browser asks for all of them
// at once rather than finding them one level of imports at a time (a round trip each).
import "./viewer/controls.js";
import "./viewer/data.js";
import "./viewer/draw.js";
import "./viewer/util.js";
import "./viewer/view.js";

/* --- start viewers wherever they appear ------------------------------------------------- */

const started = new WeakSet(); // .sam3-viewer elements that have their Viewer

function scan(el) {
  const scope = el && el.querySelectorAll ? el : document;
  const roots = [];
  if (scope.matches && scope.matches(".sam3-viewer")) roots.push(scope);
  scope.querySelectorAll(".sam3-viewer").forEach((r) => roots.push(r));
  // Viewers whose part of the page htmx replaced are let go.
  for (let n = viewers.length - 1; n >= 0; n--) {
    if (viewers[n].gone()) viewers.splice(n, 1)[0].dispose();
  }
  for (const root of roots) {
    if (started.has(root)) continue;
    started.add(root);
    viewers.push(new Viewer(root));
  }
  bindSyncToggles(scope);
}

// The latest viewer started, once its data is in; before that (or if it failed, and the page
// shows the server's composite) there is no view: visible() is null, meaning "every instance".
const latest = () => {
  for (let n = viewers.length - 1; n >= 0; n--) if (!viewers[n].gone()) return viewers[n];
  return null;
};
const v = () => {
  const c = latest();
  return c && !c.broken && c.data ? c : null;
};
const inPageOrder = (a, b) =>
  a.root.compareDocumentPosition(b.root) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;

const api = {
  booted: true,
  /** Every viewer on the page, in page order: run, ready, opacity, threshold, visible, zoom
   * (relative to fit), centre (fractions of the image), scale, tx, ty, dpr, synced... */
  all: () => viewers.filter((x) => !x.gone()).sort(inPageOrder).map((x) => x.describe()),
  /** Numbers of the instances drawn now (shown, and at or above the minimum score). */
  visible: () => (v() ? v().visibleNumbers() : null),
  threshold: () => (v() ? v().threshold : 0),
  opacity: () => (v() ? v().opacity : 0.5),
  colours: () => (v() ? v().colourMap() : {}),
  mode: () => (v() ? v().mode : "filled"),
  state: () => (v() ? v().state() : null),
  root: () => (v() ? v().root : null),
  ready: () => Boolean(v() && v().ready),
  /** The last redraw durations in ms (performance.now() around each frame's drawing). */
  frameTimes: () => (v() ? v().frames.slice() : []),
  /** Image pixel (x, y) → CSS pixels in the canvas: x * scale + tx. */
  view: () => {
    const c = v();
    return c ? { scale: c.scale, tx: c.tx, ty: c.ty, dpr: c.dpr, width: c.W, height: c.H } : null;
  },
  /** Draws a frame at once (for benchmarks and tests; `full`: everything afresh, not only
   * what changed); returns its duration in ms. */
  redraw: (full = false) => {
    const c = v();
    if (!c) return 0;
    if (full) c.baseDirty = c.layerDirty = true;
    return c.drawNow();
  },
};

// A window.sam3Viewer already booted (the exports tests put a stand-in there) is left alone.
if (!(window.sam3Viewer && window.sam3Viewer.booted)) {
  window.sam3Viewer = api;
  scan(document);
  if (window.htmx && typeof window.htmx.onLoad === "function") window.htmx.onLoad(scan);
  else {
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) scan(n);
    }).observe(document.documentElement, { childList: true, subtree: true });
  }
}
