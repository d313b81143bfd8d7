/* sam3web viewer · one Viewer per .sam3-viewer element: its state, the order it loads in, the
 * setters the controls and shortcuts call, and what it tells other scripts.
 *
 * The Viewer's methods are grouped by what they do, in the modules imported below, and mixed
 * into its prototype at the end of this file: the view (view.js), drawing (draw.js), the
 * controls (controls.js) and keeping in step (sync.js). They all work on the fields set up in
 * the constructor. */

import { controls } from "./controls.js";
import { fetchData, instancesFrom, loadCrop, loadImage } from "./data.js";
import { drawing } from "./draw.js";
import { syncing, syncOn } from "./sync.js";
import { clamp, makeCanvas, round2 } from "./util.js";
import { viewing } from "./view.js";

const saved = new Map(); // viewer.json URL → the person's settings, kept across htmx swaps

export class Viewer {
  constructor(root) {
    this.root = root;
    this.url = root.dataset.viewer;
    this.group = root.closest("[data-viewer-sync]");
    this.following = false; // applying another viewer's setting: not to be passed on again
    this.figure = root.closest("figure") || root.parentElement;
    this.canvas = this.$(".sv-canvas");
    this.ctx = this.canvas.getContext("2d", { alpha: false });
    // The image as the view shows it, redrawn only when the view changes; the masks' layer,
    // repainted where an instance changed (or whole when the view or the mode changes).
    this.base = makeCanvas(1, 1);
    this.bctx = this.base.getContext("2d", { alpha: false });
    this.baseDirty = true;
    this.layer = makeCanvas(1, 1);
    this.lctx = this.layer.getContext("2d");
    this.layerDirty = true;
    this.dirtyRects = [];
    this.shiftX = 0; // device pixels the view moved by since the last frame (panning)
    this.shiftY = 0;
    this.insts = [];
    this.frames = [];
    this.levels = [];
    this.W = 1;
    this.H = 1;
    this.opacity = 0.5;
    this.threshold = 0;
    this.mode = "filled";
    this.boxes = true;
    this.labels = true;
    this.prompts = true;
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.fitted = true;
    this.cssW = 0;
    this.cssH = 0;
    this.dpr = 1;
    this.hot = null; // the instance pointed at (or focused in the list), for a moment
    this.selected = null; // the instance clicked on the image or chosen in the list
    this.detail = 1; // pixels of the image drawn per original pixel: < 1 for a display copy
    this.fullState = ""; // the original, when zoomed in past the copy: "loading", "done", "failed"
    this.pending = false;
    this.ready = false;
    this.disposed = false;
    this.pointers = new Map();
    this.drag = null;
    this.changeQueued = false;
    this.load().catch((err) => this.fail(err));
  }

  $(sel) {
    return this.root.querySelector(sel);
  }

  /* --- loading ------------------------------------------------------------------------- */

  async load() {
    performance.mark("sam3-viewer:start");
    const data = await fetchData(this.url);
    if (this.gone()) return;
    performance.mark("sam3-viewer:data");
    this.data = data;
    this.W = data.image.width;
    this.H = data.image.height;
    const keep = saved.get(this.url) || {};
    this.insts = instancesFrom(data, keep);
    for (const name of ["opacity", "threshold", "mode", "boxes", "labels", "prompts"]) {
      if (name in keep) this[name] = keep[name];
    }
    this.maxLevel = Math.max(0, Math.floor(Math.log2(Math.max(this.W, this.H) / 256)));
    this.bindControls();
    this.syncControls();
    // The crops load while the photo decodes; each is drawn as it arrives.
    const crops = Promise.all(this.insts.filter((i) => i.crop_url).map((i) => this.loadCrop(i)));
    // The display copy (the original when it is small): masks and coordinates stay in the
    // original's pixels, W × H, and the copy is drawn stretched over them.
    const image = await loadImage(data.image.url);
    if (this.gone()) return;
    performance.mark("sam3-viewer:image");
    this.levels = [image];
    this.detail = Math.min(1, image.width / this.W);
    // The page's list becomes the viewer's only now: should the image fail, it stays plain.
    this.buildList();
    if ("selected" in keep) this.select(this.insts.find((i) => i.number === keep.selected) || null);
    this.start();
    this.changed(); // the view is known now: exports can follow it
    await crops;
    if (this.gone()) return;
    this.ready = true;
    this.root.dataset.state = "ready";
    performance.mark("sam3-viewer:ready");
    this.$(".sv-status").textContent = "";
    this.requestDraw();
    this.root.dispatchEvent(new CustomEvent("sam3:ready", { bubbles: true }));
  }

  async loadCrop(inst) {
    try {
      inst.bitmap = await loadCrop(inst.crop_url);
    } catch (err) {
      inst.failed = true;
      const note = inst.row && inst.row.querySelector(".sv-note");
      if (note) note.textContent = "mask did not load";
    }
    this.updateRows();
    this.dirtyInst(inst);
  }

  fail(err) {
    // The server's composite stays on the page: the viewer never replaces it. The composite's
    // mask layer is left out of the page where scripts run (<noscript>): put it back.
    if (window.console) console.warn("sam3web viewer:", err);
    this.broken = true;
    this.root.hidden = true;
    if (!this.figure) return;
    this.figure.classList.remove("sv-on");
    const wrap = this.figure.querySelector(".overlay-wrap[data-overlay]");
    if (wrap && !wrap.querySelector("img.masks")) {
      const img = document.createElement("img");
      img.className = "masks";
      img.src = wrap.dataset.overlay;
      img.alt = wrap.dataset.overlayAlt || "";
      wrap.insertBefore(img, wrap.querySelector("svg"));
    }
  }

  /* Zoomed in past what the display copy holds: the original, once, in its place. */
  wantFull() {
    const url = this.data && this.data.image.full_url;
    if (this.fullState || !url || this.detail >= 1) return;
    if (this.scale * this.dpr <= this.detail * 1.05) return;
    this.fullState = "loading";
    this.root.dataset.full = "loading";
    loadImage(url).then(
      (image) => {
        if (this.gone()) return;
        this.levels = [image]; // the reduced copies are made again from it, as needed
        this.detail = 1;
        this.fullState = this.root.dataset.full = "done";
        this.baseDirty = true;
        this.requestDraw();
      },
      () => {
        this.fullState = this.root.dataset.full = "failed"; // the display copy stays
      }
    );
  }

  gone() {
    return this.disposed || !this.root.isConnected;
  }

  dispose() {
    this.disposed = true;
    if (this.resizeObserver) this.resizeObserver.disconnect();
    window.removeEventListener("resize", this.onWindowResize);
  }

  /* The image is ready: the viewer takes the server composite's place. */
  start() {
    this.root.hidden = false;
    if (this.figure) this.figure.classList.add("sv-on");
    this.onWindowResize = () => this.resize();
    window.addEventListener("resize", this.onWindowResize);
    if (window.ResizeObserver) {
      this.resizeObserver = new ResizeObserver(() => this.resize());
      this.resizeObserver.observe(this.$(".sv-stage"));
    }
    this.resize();
    this.joinLeader();
  }

  /* --- state --------------------------------------------------------------------------- */

  passes(inst) {
    return inst.score == null || inst.score >= this.threshold - 1e-9;
  }

  isShown(inst) {
    return inst.on && Boolean(inst.crop_url) && !inst.failed && this.passes(inst);
  }

  setOn(inst, on) {
    if (!inst.crop_url) return;
    inst.on = on;
    this.updateRows();
    this.dirtyInst(inst);
    this.changed();
    if (this.hot === inst) this.readout();
  }

  setColour(inst, colour) {
    inst.colour = colour;
    inst.sprites.clear();
    const input = inst.row && inst.row.querySelector(".sv-colour");
    if (input && input.value !== colour) input.value = colour;
    this.dirtyInst(inst);
    this.changed();
  }

  setOpacity(v) {
    this.opacity = clamp(round2(v), 0, 1);
    this.$(".sv-opacity").value = this.opacity;
    this.$(".sv-opacity-out").textContent = `${Math.round(this.opacity * 100)}%`;
    this.requestDraw(); // the layer stays: only how it is laid over the image changes
    this.changed();
    this.share(["opacity"]);
  }

  setThreshold(v) {
    const before = this.insts.map((i) => this.isShown(i));
    this.threshold = clamp(round2(v), 0, 1);
    this.$(".sv-threshold").value = this.threshold;
    this.$(".sv-threshold-out").textContent = this.threshold.toFixed(2);
    this.updateRows();
    this.insts.forEach((inst, n) => before[n] !== this.isShown(inst) && this.dirtyInst(inst));
    this.requestDraw(); // the count and the tags change even when no mask does
    this.changed();
    if (this.hot) this.readout();
    this.share(["threshold"]);
  }

  setMode(mode) {
    this.mode = mode === "outline" ? "outline" : "filled";
    this.syncControls();
    this.layerDirty = true;
    this.requestDraw();
    this.changed();
  }

  setFlag(name, on) {
    this[name] = on;
    const box = this.$(`.sv-${name}`);
    if (box) box.checked = on;
    this.requestDraw();
    this.changed();
  }

  hideOrShowAll() {
    const anyOn = this.insts.some((i) => i.on && i.crop_url);
    for (const inst of this.insts) inst.on = !anyOn;
    this.updateRows();
    this.layerDirty = true;
    this.requestDraw();
    this.changed();
    return !anyOn;
  }

  visibleNumbers() {
    return this.insts.filter((i) => this.isShown(i)).map((i) => i.number);
  }

  colourMap() {
    const out = {};
    for (const inst of this.insts) out[inst.number] = inst.colour;
    return out;
  }

  state() {
    return {
      visible: this.visibleNumbers(),
      threshold: this.threshold,
      opacity: this.opacity,
      colours: this.colourMap(),
      mode: this.mode,
      boxes: this.boxes,
      labels: this.labels,
      prompts: this.prompts,
    };
  }

  /* Remember the settings (an htmx swap starts a new viewer) and tell listeners, once per
   * burst of changes. */
  changed() {
    saved.set(this.url, {
      hidden: this.insts.filter((i) => !i.on).map((i) => i.number),
      colours: Object.fromEntries(
        this.insts.filter((i) => i.colour !== i.defaultColour).map((i) => [i.number, i.colour])
      ),
      opacity: this.opacity,
      threshold: this.threshold,
      mode: this.mode,
      boxes: this.boxes,
      labels: this.labels,
      prompts: this.prompts,
      selected: this.selected ? this.selected.number : null,
    });
    if (this.changeQueued) return;
    this.changeQueued = true;
    queueMicrotask(() => {
      this.changeQueued = false;
      this.root.dispatchEvent(
        new CustomEvent("sam3:viewchange", { bubbles: true, detail: this.state() })
      );
    });
  }

  setHot(inst, from) {
    if (this.hot === inst) return;
    if (this.hot && this.hot.row) this.hot.row.classList.remove("is-hot");
    this.hot = inst;
    this.hotFrom = inst ? from : null;
    if (inst && inst.row) inst.row.classList.add("is-hot");
    this.readout();
    this.requestDraw();
  }

  /* Select an instance (null: none): its row is marked and, when the click was on the image,
   * scrolled into view in the list; chosen in the list, it is outlined on the image and brought
   * into view there. Kept across htmx swaps like the other settings. */
  select(inst, from = "") {
    const before = this.selected;
    if (before && before.row) {
      before.row.classList.remove("is-selected");
      const pick = before.row.querySelector(".sv-pick");
      if (pick) pick.setAttribute("aria-pressed", "false");
    }
    this.selected = inst;
    if (inst && inst.row) {
      inst.row.classList.add("is-selected");
      const pick = inst.row.querySelector(".sv-pick");
      if (pick) pick.setAttribute("aria-pressed", "true");
      if (from === "canvas") this.revealRow(inst);
    }
    if (inst && from === "list") this.revealInstance(inst);
    const keep = saved.get(this.url);
    if (keep) keep.selected = inst ? inst.number : null;
    this.readout();
    this.requestDraw();
    if (from && inst !== before) {
      this.announce(inst ? `Selected: ${this.describeInstance(inst)}` : "No instance selected");
    }
  }

  /* For window.sam3Viewer.all(): what this viewer shows now. */
  describe() {
    const view = this.data ? this.sharedView() : null;
    return {
      url: this.url,
      run: this.data ? this.data.run : null,
      ready: this.ready,
      broken: Boolean(this.broken),
      synced: syncOn(this.group),
      opacity: this.opacity,
      threshold: this.threshold,
      visible: this.data ? this.visibleNumbers() : null,
      shown: this.data ? this.visibleNumbers().length : null,
      scale: this.scale,
      zoom: view ? view.zoom : null,
      centre: view ? { x: view.cx, y: view.cy } : null,
      tx: this.tx,
      ty: this.ty,
      dpr: this.dpr,
      width: this.W,
      height: this.H,
    };
  }
}

Object.assign(Viewer.prototype, viewing, drawing, controls, syncing);
