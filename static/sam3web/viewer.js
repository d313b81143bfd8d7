/* sam3web · the run page's mask viewer.
 *
 * Draws the run's image and its instances on one <canvas>, from the small per-instance mask
 * crops (viewer_views.mask_crop) listed in viewer.json: a colour per instance, opacity, show and
 * hide, a minimum score, filled or outline masks, boxes and score tags, the prompts, a hover
 * read-out, zoom and pan, and keyboard shortcuts ("?" lists them). No framework, no build step.
 *
 * Speed: each instance is rendered once per colour, mode and level into an offscreen canvas of
 * its crop's size (at 1/2^level of full resolution, the level following the zoom), and the image
 * has a pyramid of halved copies. A frame is then a few drawImage calls: the image, the visible
 * sprites into an overlay layer (so overlapping masks do not add up: the later one wins, as in
 * the server's composite), that layer at the chosen opacity, then boxes, tags and prompts.
 * Frames are drawn on requestAnimationFrame, only when something changed; no per-pixel work.
 *
 * The run page's live region is swapped by htmx until the run is settled, so viewers are
 * started from htmx.onLoad as well as at load, and htmx may run this file again on each swap.
 *
 * A page may hold several viewers (the compare page). Viewers inside an element with
 * data-viewer-sync are kept in step: moving the opacity, the minimum score, zooming or panning
 * one applies it to the others. Zoom is shared relative to each one's "fit" and the view's
 * centre as a fraction of the image, so images of different sizes stay in step. The group's
 * data-viewer-sync="off" pauses it; a checkbox with data-viewer-sync-toggle in the group
 * switches it (revealed from its .sv-sync wrapper once this script runs).
 *
 * For other scripts (exports): window.sam3Viewer.visible(), threshold(), opacity(), colours(),
 * and a "sam3:viewchange" event on the viewer's root whenever one of them changes. These speak
 * of the latest viewer started (the run page has one); all() describes every viewer.
 */
(function () {
  "use strict";
  if (window.sam3Viewer && window.sam3Viewer.booted) return;

  const FRAMES_KEPT = 200;
  const MAX_SCALE = 16; // CSS pixels per image pixel, zoomed all the way in
  const OPACITY_STEP = 0.05;
  const THRESHOLD_STEP = 0.01;
  const PAN_STEP = 60;
  const ZOOM_STEP = 1.25;
  const saved = new Map(); // viewer.json URL → the person's settings, kept across htmx swaps
  const viewers = []; // every viewer started and still on the page, oldest first
  const EVERYTHING = ["opacity", "threshold", "view"];

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const round2 = (v) => Math.round(v * 100) / 100;

  function makeCanvas(w, h) {
    const c = document.createElement("canvas");
    c.width = Math.max(1, w);
    c.height = Math.max(1, h);
    return c;
  }

  /* The mask in `src` (alpha) eroded by r pixels (a square), as a new canvas: separable, so
   * 4r drawImage calls. "destination-in" clears what the shifted copy does not cover, edges
   * of the canvas included. */
  function erode(src, r) {
    const w = src.width;
    const h = src.height;
    const a = makeCanvas(w, h);
    const ga = a.getContext("2d");
    ga.drawImage(src, 0, 0);
    ga.globalCompositeOperation = "destination-in";
    for (let d = 1; d <= r; d++) {
      ga.drawImage(src, d, 0);
      ga.drawImage(src, -d, 0);
    }
    const b = makeCanvas(w, h);
    const gb = b.getContext("2d");
    gb.drawImage(a, 0, 0);
    gb.globalCompositeOperation = "destination-in";
    for (let d = 1; d <= r; d++) {
      gb.drawImage(a, 0, d);
      gb.drawImage(a, 0, -d);
    }
    return b;
  }

  function isTyping(el) {
    if (!el) return false;
    if (el.isContentEditable) return true;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && /^(text|search|url|email|number|password|tel)$/.test(el.type);
  }

  /* --- keeping viewers in step --------------------------------------------------------------- */

  const syncOn = (group) => Boolean(group) && group.dataset.viewerSync !== "off";

  /* The other viewers of `viewer`'s group that can take a setting now (their data is in). */
  function peersOf(viewer) {
    if (!syncOn(viewer.group)) return [];
    return viewers.filter(
      (o) => o !== viewer && o.group === viewer.group && o.data && !o.broken && !o.gone()
    );
  }

  function bindSyncToggles(scope) {
    const groups = [];
    if (scope.matches && scope.matches("[data-viewer-sync]")) groups.push(scope);
    scope.querySelectorAll("[data-viewer-sync]").forEach((g) => groups.push(g));
    for (const group of groups) {
      if (group.sam3SyncBound) continue;
      group.sam3SyncBound = true;
      for (const box of group.querySelectorAll("input[data-viewer-sync-toggle]")) {
        // A checkbox the browser restored on "back" must say what the group does.
        box.checked = syncOn(group);
        const wrap = box.closest(".sv-sync");
        if (wrap) wrap.hidden = false;
        box.addEventListener("change", () => {
          group.dataset.viewerSync = box.checked ? "on" : "off";
          if (!box.checked) return;
          // Back in step: the others take the view of the one the person moved last.
          const live = viewers.filter((o) => o.group === group && o.data && !o.broken && !o.gone());
          const leader = live.includes(group.sam3Leader) ? group.sam3Leader : live[0];
          if (leader) leader.share(EVERYTHING);
        });
      }
    }
  }

  class Viewer {
    constructor(root) {
      this.root = root;
      root.sam3viewer = this;
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
      this.hot = null;
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

    /* --- loading ----------------------------------------------------------------------- */

    async load() {
      performance.mark("sam3-viewer:start");
      const res = await fetch(this.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!res.ok) throw new Error(`viewer data: HTTP ${res.status}`);
      const data = await res.json();
      if (this.gone()) return;
      performance.mark("sam3-viewer:data");
      this.data = data;
      this.W = data.image.width;
      this.H = data.image.height;
      const keep = saved.get(this.url) || {};
      this.insts = data.instances.map((d) => ({
        ...d,
        defaultColour: d.colour,
        colour: (keep.colours && keep.colours[d.number]) || d.colour,
        on: !(keep.hidden && keep.hidden.includes(d.number)),
        bitmap: null,
        sprites: new Map(),
        bits: null,
        row: null,
        failed: false,
      }));
      for (const name of ["opacity", "threshold", "mode", "boxes", "labels", "prompts"]) {
        if (name in keep) this[name] = keep[name];
      }
      this.maxLevel = Math.max(0, Math.floor(Math.log2(Math.max(this.W, this.H) / 256)));
      this.buildList();
      this.bindControls();
      this.syncControls();
      // The crops load while the photo decodes; each is drawn as it arrives.
      const crops = Promise.all(this.insts.filter((i) => i.crop_url).map((i) => this.loadCrop(i)));
      const image = await this.loadImage(data.image.url);
      if (this.gone()) return;
      performance.mark("sam3-viewer:image");
      this.levels = [image];
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

    async loadImage(url) {
      const img = new Image();
      img.decoding = "async";
      img.src = url; // the page's own <img> fetched it already: this comes from the cache
      await img.decode();
      if (window.createImageBitmap) {
        try {
          return await createImageBitmap(img);
        } catch (err) {
          return img;
        }
      }
      return img;
    }

    async loadCrop(inst) {
      try {
        const res = await fetch(inst.crop_url, { credentials: "same-origin" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const blob = await res.blob();
        inst.bitmap = window.createImageBitmap
          ? await createImageBitmap(blob)
          : await new Promise((resolve, reject) => {
              const img = new Image();
              img.onload = () => resolve(img);
              img.onerror = reject;
              img.src = URL.createObjectURL(blob);
            });
      } catch (err) {
        inst.failed = true;
        if (inst.row) inst.row.querySelector(".sv-note").textContent = "mask did not load";
      }
      this.updateRows();
      this.dirtyInst(inst);
    }

    fail(err) {
      // The server's composite stays on the page: the viewer never replaces it.
      if (window.console) console.warn("sam3web viewer:", err);
      this.broken = true;
      this.root.hidden = true;
      if (this.figure) this.figure.classList.remove("sv-on");
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
      // Started after the others were moved: join them where they are.
      const leader = syncOn(this.group) ? this.group.sam3Leader : null;
      if (leader && leader !== this && leader.data && !leader.broken && !leader.gone()) {
        this.follow(
          { opacity: leader.opacity, threshold: leader.threshold, view: leader.sharedView() },
          EVERYTHING
        );
      }
    }

    /* --- the instance list and the controls -------------------------------------------- */

    buildList() {
      const body = this.$(".sv-list tbody");
      body.textContent = "";
      const area = this.W * this.H;
      for (const inst of this.insts) {
        const tr = document.createElement("tr");
        tr.dataset.number = inst.number;
        const can = Boolean(inst.crop_url);
        const score = inst.score == null ? "—" : inst.score.toFixed(3);
        const pct = inst.area == null ? "" : ` (${((100 * inst.area) / area).toFixed(1)}%)`;
        tr.innerHTML =
          `<td><input type="checkbox" class="sv-on"></td>` +
          `<td><input type="color" class="sv-colour"></td>` +
          `<th scope="row"></th><td class="sv-score"></td><td><span class="sv-area"></span> <span class="sv-note"></span></td>`;
        const box = tr.querySelector(".sv-on");
        box.checked = inst.on;
        box.disabled = !can;
        box.setAttribute("aria-label", `Show instance ${inst.number}`);
        const colour = tr.querySelector(".sv-colour");
        colour.value = inst.colour;
        colour.disabled = !can;
        colour.setAttribute("aria-label", `Colour of instance ${inst.number}`);
        tr.querySelector("th").textContent = inst.number;
        tr.querySelector(".sv-score").textContent = score;
        tr.querySelector(".sv-area").textContent =
          inst.area == null ? "—" : `${inst.area.toLocaleString()} px${pct}`;
        if (inst.error) tr.querySelector(".sv-note").textContent = inst.error;
        else if (!can) tr.querySelector(".sv-note").textContent = "empty mask";
        box.addEventListener("change", () => this.setOn(inst, box.checked));
        colour.addEventListener("input", () => this.setColour(inst, colour.value));
        tr.addEventListener("pointerenter", () => this.setHot(inst, "list"));
        tr.addEventListener("pointerleave", () => this.hot === inst && this.setHot(null));
        tr.addEventListener("focusin", () => this.setHot(inst, "list"));
        tr.addEventListener("focusout", () => this.hot === inst && this.setHot(null));
        inst.row = tr;
        body.appendChild(tr);
      }
      this.updateRows();
    }

    bindControls() {
      const opacity = this.$(".sv-opacity");
      opacity.addEventListener("input", () => this.setOpacity(Number(opacity.value)));
      const threshold = this.$(".sv-threshold");
      threshold.addEventListener("input", () => this.setThreshold(Number(threshold.value)));
      for (const radio of this.root.querySelectorAll(".sv-mode input")) {
        radio.addEventListener("change", () => radio.checked && this.setMode(radio.value));
      }
      for (const name of ["boxes", "labels", "prompts"]) {
        const box = this.$(`.sv-${name}`);
        if (box) box.addEventListener("change", () => this.setFlag(name, box.checked));
      }
      this.$(".sv-all").addEventListener("click", () => this.hideOrShowAll());
      this.$(".sv-zoom-in").addEventListener("click", () => this.zoomBy(ZOOM_STEP));
      this.$(".sv-zoom-out").addEventListener("click", () => this.zoomBy(1 / ZOOM_STEP));
      this.$(".sv-fit").addEventListener("click", () => this.fit());
      this.$(".sv-help-open").addEventListener("click", () => this.openHelp());
      const help = this.$(".sv-help");
      help.addEventListener("close", () => {
        if (this.helpReturn && this.helpReturn.isConnected) this.helpReturn.focus();
        this.helpReturn = null;
      });
      this.root.addEventListener("keydown", (e) => this.onKey(e));
      const c = this.canvas;
      c.addEventListener("pointerdown", (e) => this.onPointerDown(e));
      c.addEventListener("pointermove", (e) => this.onPointerMove(e));
      c.addEventListener("pointerup", (e) => this.onPointerUp(e));
      c.addEventListener("pointercancel", (e) => this.onPointerUp(e));
      c.addEventListener("pointerleave", (e) => {
        if (e.pointerType === "mouse" && !this.drag && this.hotFrom === "canvas") this.setHot(null);
      });
      c.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
      c.addEventListener("dblclick", (e) => {
        const p = this.local(e);
        this.zoomBy(e.shiftKey ? 1 / 2 : 2, p.x, p.y);
      });
    }

    /* Controls show the state (after a restore, or a shortcut). */
    syncControls() {
      this.$(".sv-opacity").value = this.opacity;
      this.$(".sv-opacity-out").textContent = `${Math.round(this.opacity * 100)}%`;
      this.$(".sv-threshold").value = this.threshold;
      this.$(".sv-threshold-out").textContent = this.threshold.toFixed(2);
      for (const radio of this.root.querySelectorAll(".sv-mode input")) {
        radio.checked = radio.value === this.mode;
      }
      for (const name of ["boxes", "labels", "prompts"]) {
        const box = this.$(`.sv-${name}`);
        if (box) box.checked = this[name];
      }
      this.updateRows();
    }

    updateRows() {
      let shown = 0;
      for (const inst of this.insts) {
        const visible = this.isShown(inst);
        if (visible) shown++;
        if (!inst.row) continue;
        inst.row.classList.toggle("is-below", !this.passes(inst));
        inst.row.classList.toggle("is-off", !visible);
        inst.row.querySelector(".sv-on").checked = inst.on;
        inst.row.title = this.passes(inst) ? "" : "Below the minimum score";
      }
      this.$(".sv-count").textContent = `${shown} of ${this.insts.length} shown`;
      this.$(".sv-all").textContent = this.insts.some((i) => i.on && i.crop_url)
        ? "Hide all"
        : "Show all";
      this.root.dataset.shown = shown;
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

    readout() {
      const out = this.$(".sv-readout");
      const inst = this.hot;
      if (!inst) {
        out.textContent = "Point at an instance to read its score and area.";
        return;
      }
      const parts = [`Instance ${inst.number}`];
      parts.push(inst.score == null ? "no score" : `score ${inst.score.toFixed(3)}`);
      if (inst.area != null) {
        const pct = ((100 * inst.area) / (this.W * this.H)).toFixed(2);
        parts.push(`area ${inst.area.toLocaleString()} px (${pct}% of the image)`);
      }
      if (!this.passes(inst)) parts.push("below the minimum score");
      else if (!inst.on) parts.push("hidden");
      out.textContent = parts.join(" · ");
    }

    announce(text) {
      const el = this.$(".sv-announce");
      if (el) el.textContent = text;
    }

    /* --- view: size, fit, zoom, pan ------------------------------------------------------ */

    resize() {
      if (this.gone()) return;
      const stage = this.$(".sv-stage");
      const w = Math.floor(stage.clientWidth);
      if (!w) return;
      const maxH = Math.max(220, Math.round(window.innerHeight * 0.78));
      const h = Math.max(120, Math.min(Math.round((w * this.H) / this.W), maxH));
      const dpr = window.devicePixelRatio || 1;
      if (w === this.cssW && h === this.cssH && dpr === this.dpr) return;
      this.cssW = w;
      this.cssH = h;
      this.dpr = dpr;
      this.canvas.style.height = `${h}px`;
      for (const c of [this.canvas, this.base, this.layer]) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      if (this.fitted) this.fit(false);
      else this.clampPan();
      this.baseDirty = this.layerDirty = true;
      this.drawNow();
    }

    fitScale() {
      return Math.min(this.cssW / this.W, this.cssH / this.H);
    }

    /* `share`: false when the canvas changed size (each viewer has its own), not the person. */
    fit(share = true) {
      this.scale = this.fitScale();
      this.tx = (this.cssW - this.W * this.scale) / 2;
      this.ty = (this.cssH - this.H * this.scale) / 2;
      this.fitted = true;
      this.viewChanged();
      if (share) this.share(["view"]);
    }

    /* Zoom about (cx, cy) (CSS pixels in the canvas), between "fit" and MAX_SCALE; returns
     * whether anything changed. */
    zoomBy(factor, cx = this.cssW / 2, cy = this.cssH / 2) {
      const fit = this.fitScale();
      const next = clamp(this.scale * factor, fit, Math.max(MAX_SCALE, fit));
      if (Math.abs(next - this.scale) < 1e-9) return false;
      this.tx = cx - ((cx - this.tx) * next) / this.scale;
      this.ty = cy - ((cy - this.ty) * next) / this.scale;
      this.scale = next;
      this.fitted = Math.abs(next - fit) < 1e-6;
      this.clampPan();
      this.viewChanged();
      this.share(["view"]);
      return true;
    }

    panBy(dx, dy) {
      const tx = this.tx;
      const ty = this.ty;
      this.tx += dx;
      this.ty += dy;
      this.fitted = false;
      this.clampPan();
      if (this.tx === tx && this.ty === ty) return; // at the edge already
      if (this.baseDirty || this.layerDirty) {
        this.viewChanged();
      } else {
        // Same scale: the next frame moves what is drawn and paints only the uncovered strips.
        this.shiftX += (this.tx - tx) * this.dpr;
        this.shiftY += (this.ty - ty) * this.dpr;
        this.requestDraw();
      }
      this.share(["view"]);
    }

    /* The view as viewers in step share it: the zoom relative to "fit", and the point at the
     * canvas's centre as a fraction of the image's width and height. Null until the canvas
     * has a size. */
    sharedView() {
      if (!this.cssW || !this.cssH) return null;
      return {
        zoom: this.scale / this.fitScale(),
        cx: (this.cssW / 2 - this.tx) / this.scale / this.W,
        cy: (this.cssH / 2 - this.ty) / this.scale / this.H,
      };
    }

    setView(view) {
      const fit = this.fitScale();
      const next = clamp(fit * view.zoom, fit, Math.max(MAX_SCALE, fit));
      this.scale = next;
      this.tx = this.cssW / 2 - view.cx * this.W * next;
      this.ty = this.cssH / 2 - view.cy * this.H * next;
      this.fitted = Math.abs(next - fit) < 1e-6;
      this.clampPan(); // also centres an image smaller than the canvas, as fit() does
      this.viewChanged();
    }

    /* The person changed `what` here: the other viewers in step take it too. They apply it
     * with `following` set, so nothing comes back (no loop), whatever events it fires. */
    share(what) {
      if (this.following || !this.group) return;
      this.group.sam3Leader = this; // remembered while paused, to align on resuming
      const peers = peersOf(this);
      if (!peers.length) return;
      const state = { opacity: this.opacity, threshold: this.threshold, view: this.sharedView() };
      for (const other of peers) other.follow(state, what);
    }

    follow(state, what) {
      this.following = true;
      try {
        if (what.includes("opacity") && state.opacity !== this.opacity) {
          this.setOpacity(state.opacity);
        }
        if (what.includes("threshold") && state.threshold !== this.threshold) {
          this.setThreshold(state.threshold);
        }
        if (what.includes("view") && state.view && this.cssW && this.levels.length) {
          this.setView(state.view);
        }
      } finally {
        this.following = false;
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

    /* An image larger than the canvas cannot leave a gap at its edges; a smaller one stays
     * centred. */
    clampPan() {
      const iw = this.W * this.scale;
      const ih = this.H * this.scale;
      this.tx = iw <= this.cssW ? (this.cssW - iw) / 2 : clamp(this.tx, this.cssW - iw, 0);
      this.ty = ih <= this.cssH ? (this.cssH - ih) / 2 : clamp(this.ty, this.cssH - ih, 0);
    }

    viewChanged() {
      const zoomed = this.scale > this.fitScale() * 1.001;
      this.canvas.classList.toggle("is-zoomed", zoomed);
      this.$(".sv-zoom-val").textContent = `${Math.round(this.scale * 100)}%`;
      this.baseDirty = this.layerDirty = true;
      this.requestDraw();
    }

    /* CSS pixels in the canvas ↔ image pixels. */
    local(e) {
      const r = this.canvas.getBoundingClientRect();
      return { x: e.clientX - r.left, y: e.clientY - r.top };
    }

    toImage(p) {
      return { x: (p.x - this.tx) / this.scale, y: (p.y - this.ty) / this.scale };
    }

    /* --- pointer, wheel, keys -------------------------------------------------------------- */

    onPointerDown(e) {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      this.canvas.focus({ preventScroll: true });
      this.canvas.setPointerCapture(e.pointerId);
      const p = this.local(e);
      this.pointers.set(e.pointerId, p);
      if (this.pointers.size === 1) {
        this.drag = { x: p.x, y: p.y, startX: p.x, startY: p.y, moved: false };
      } else if (this.pointers.size === 2) {
        const [a, b] = [...this.pointers.values()];
        this.pinch = { dist: Math.hypot(a.x - b.x, a.y - b.y) || 1 };
        this.drag = null;
      }
    }

    onPointerMove(e) {
      const p = this.local(e);
      if (this.pointers.has(e.pointerId)) this.pointers.set(e.pointerId, p);
      if (this.pinch && this.pointers.size === 2) {
        const [a, b] = [...this.pointers.values()];
        const dist = Math.hypot(a.x - b.x, a.y - b.y) || 1;
        this.zoomBy(dist / this.pinch.dist, (a.x + b.x) / 2, (a.y + b.y) / 2);
        this.pinch.dist = dist;
        return;
      }
      if (this.drag) {
        const dx = p.x - this.drag.x;
        const dy = p.y - this.drag.y;
        if (!this.drag.moved && Math.hypot(p.x - this.drag.startX, p.y - this.drag.startY) < 4) {
          return;
        }
        this.drag.moved = true;
        this.canvas.classList.add("is-dragging");
        this.drag.x = p.x;
        this.drag.y = p.y;
        this.panBy(dx, dy);
        return;
      }
      if (e.pointerType === "mouse") this.hover(p);
    }

    onPointerUp(e) {
      const p = this.local(e);
      const tap = this.drag && !this.drag.moved;
      this.pointers.delete(e.pointerId);
      if (this.pointers.size < 2) this.pinch = null;
      if (this.pointers.size === 0) {
        this.drag = null;
        this.canvas.classList.remove("is-dragging");
      }
      if (tap && e.type === "pointerup") this.hover(p); // a tap reads the instance out
    }

    hover(p) {
      const q = this.toImage(p);
      this.setHot(this.hitTest(q.x, q.y), "canvas");
    }

    /* The wheel zooms about the pointer; at "fit", turning it further out scrolls the page. */
    onWheel(e) {
      const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.cssH : 1;
      const p = this.local(e);
      if (this.zoomBy(Math.exp((-e.deltaY * unit) / 300), p.x, p.y) || e.ctrlKey) {
        e.preventDefault();
      }
    }

    onKey(e) {
      if (e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target)) return;
      const help = this.$(".sv-help");
      if (help.open) {
        if (e.key === "?") {
          help.close();
          e.preventDefault();
        }
        return;
      }
      const target = e.target;
      const nativeArrows =
        target.tagName === "INPUT" && (target.type === "range" || target.type === "radio");
      const k = e.key;
      let handled = true;
      if (k === "?") this.openHelp();
      else if (/^[1-9]$/.test(k)) {
        const inst = this.insts.find((i) => i.number === Number(k));
        if (inst && inst.crop_url) {
          this.setOn(inst, !inst.on);
          this.setHot(inst, "key");
          this.announce(`Instance ${inst.number} ${inst.on ? "shown" : "hidden"}`);
        }
      } else if (k === "h" || k === "H") {
        this.announce(this.hideOrShowAll() ? "All instances shown" : "All instances hidden");
      } else if (k === "b" || k === "B") {
        this.setFlag("boxes", !this.boxes);
        this.announce(this.boxes ? "Boxes shown" : "Boxes hidden");
      } else if (k === "s" || k === "S") {
        this.setFlag("labels", !this.labels);
        this.announce(this.labels ? "Score tags shown" : "Score tags hidden");
      } else if ((k === "p" || k === "P") && this.$(".sv-prompts")) {
        this.setFlag("prompts", !this.prompts);
        this.announce(this.prompts ? "Prompts shown" : "Prompts hidden");
      } else if (k === "o" || k === "O") {
        this.setMode(this.mode === "filled" ? "outline" : "filled");
        this.announce(this.mode === "outline" ? "Outlines" : "Filled masks");
      } else if (k === "[" || k === "]") {
        this.setOpacity(this.opacity + (k === "]" ? OPACITY_STEP : -OPACITY_STEP));
        this.announce(`Opacity ${Math.round(this.opacity * 100)}%`);
      } else if (k === "," || k === "." || k === "<" || k === ">") {
        const step = (e.shiftKey ? 5 : 1) * THRESHOLD_STEP;
        this.setThreshold(this.threshold + (k === "." || k === ">" ? step : -step));
        this.announce(`Minimum score ${this.threshold.toFixed(2)}`);
      } else if (k === "+" || k === "=") this.zoomBy(ZOOM_STEP);
      else if (k === "-" || k === "_") this.zoomBy(1 / ZOOM_STEP);
      else if (k === "0") this.fit();
      else if (k.startsWith("Arrow") && !nativeArrows) {
        const step = e.shiftKey ? PAN_STEP * 4 : PAN_STEP;
        const d = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] }[k];
        this.panBy(d[0], d[1]);
      } else handled = false;
      if (handled) e.preventDefault();
    }

    openHelp() {
      const help = this.$(".sv-help");
      if (help.open) return;
      this.helpReturn = document.activeElement;
      if (help.showModal) help.showModal();
      else help.setAttribute("open", "");
      const close = help.querySelector(".sv-help-close");
      if (close) close.focus();
    }

    /* --- hit-testing ----------------------------------------------------------------------- */

    /* The topmost shown instance whose mask has the image pixel (x, y), or null. */
    hitTest(x, y) {
      for (let n = this.insts.length - 1; n >= 0; n--) {
        const inst = this.insts[n];
        if (!inst.bitmap || !this.isShown(inst)) continue;
        const [cx, cy, cw, ch] = inst.crop;
        const px = Math.floor(x - cx);
        const py = Math.floor(y - cy);
        if (px < 0 || py < 0 || px >= cw || py >= ch) continue;
        if (this.bits(inst)[py * cw + px]) return inst;
      }
      return null;
    }

    /* One byte per crop pixel (1 = object), read once from the crop when first needed. */
    bits(inst) {
      if (inst.bits) return inst.bits;
      const [, , w, h] = inst.crop;
      const c = makeCanvas(w, h);
      const g = c.getContext("2d", { willReadFrequently: true });
      g.drawImage(inst.bitmap, 0, 0);
      const rgba = g.getImageData(0, 0, w, h).data;
      const bits = new Uint8Array(w * h);
      for (let i = 0, j = 3; i < bits.length; i++, j += 4) bits[i] = rgba[j] >= 128 ? 1 : 0;
      inst.bits = bits;
      return bits;
    }

    /* --- drawing --------------------------------------------------------------------------- */

    /* The pyramid level for the current zoom: the smallest copy that still has at least one
     * pixel per device pixel. */
    levelIndex() {
      const s = this.scale * this.dpr;
      let k = 0;
      while (k < this.maxLevel && 2 ** -(k + 1) >= s) k++;
      return k;
    }

    baseLevel(k) {
      if (this.levels[k]) return this.levels[k];
      const prev = this.baseLevel(k - 1);
      const c = makeCanvas(Math.ceil(this.W / 2 ** k), Math.ceil(this.H / 2 ** k));
      const g = c.getContext("2d");
      g.imageSmoothingQuality = "high";
      g.drawImage(prev, 0, 0, c.width, c.height);
      this.levels[k] = c;
      return c;
    }

    outlineRadius(k) {
      return k === 0 && this.scale * this.dpr >= 3 ? 1 : 2;
    }

    /* The instance in its colour at level k, filled or as its edge, made once and kept. */
    sprite(inst, k, mode) {
      const r = mode === "outline" ? this.outlineRadius(k) : 0;
      const key = `${mode}:${k}:${r}`;
      let c = inst.sprites.get(key);
      if (c) return c;
      const [, , w, h] = inst.crop;
      const f = 2 ** -k;
      c = makeCanvas(Math.ceil(w * f), Math.ceil(h * f));
      const g = c.getContext("2d");
      g.imageSmoothingEnabled = k > 0;
      g.imageSmoothingQuality = "medium";
      g.drawImage(inst.bitmap, 0, 0, c.width, c.height);
      if (mode === "outline") {
        g.globalCompositeOperation = "destination-out";
        g.drawImage(erode(c, r), 0, 0);
      }
      g.globalCompositeOperation = "source-in";
      g.fillStyle = inst.colour;
      g.fillRect(0, 0, c.width, c.height);
      inst.sprites.set(key, c);
      return c;
    }

    /* The instance's region of the masks' layer needs painting again. */
    dirtyInst(inst) {
      if (inst.crop) this.dirtyRects.push(inst.crop);
      this.requestDraw();
    }

    requestDraw() {
      if (this.pending || this.disposed) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.drawNow();
      });
    }

    /* Draws a frame now; returns how long it took (ms), also kept in frameTimes(). */
    drawNow() {
      if (this.gone() || !this.levels.length || !this.cssW) return 0;
      const t0 = performance.now();
      const ctx = this.ctx;
      const dpr = this.dpr;
      const s = this.scale * dpr;
      const ox = this.tx * dpr;
      const oy = this.ty * dpr;
      const k = this.levelIndex();
      const smooth = s < 3;
      const paintBase = (clip) => {
        const b = this.bctx;
        b.save();
        b.setTransform(1, 0, 0, 1, 0, 0);
        if (clip) {
          b.beginPath();
          b.rect(clip[0], clip[1], clip[2], clip[3]);
          b.clip();
        }
        b.fillStyle = "#e9ecf0";
        b.fillRect(0, 0, this.base.width, this.base.height);
        b.imageSmoothingEnabled = smooth;
        b.imageSmoothingQuality = "low";
        const level = this.baseLevel(k);
        b.setTransform(s, 0, 0, s, ox, oy);
        b.drawImage(level, 0, 0, level.width, level.height, 0, 0, this.W, this.H);
        b.restore();
      };
      const sx = this.shiftX;
      const sy = this.shiftY;
      if ((sx || sy) && !this.baseDirty && !this.layerDirty) {
        const cw = this.base.width;
        const chh = this.base.height;
        const whole = (v) => Math.abs(v - Math.round(v)) < 1e-6;
        if (whole(sx) && whole(sy) && Math.abs(sx) < cw && Math.abs(sy) < chh) {
          // Panning: move the image and the masks' layer by whole device pixels, then paint
          // the strips that came into view (the same drawing, clipped: the same pixels).
          const dx = Math.round(sx);
          const dy = Math.round(sy);
          for (const [g, c] of [[this.bctx, this.base], [this.lctx, this.layer]]) {
            g.save();
            g.setTransform(1, 0, 0, 1, 0, 0);
            g.globalCompositeOperation = "copy";
            g.imageSmoothingEnabled = false;
            g.drawImage(c, dx, dy);
            g.restore();
          }
          const strips = [];
          if (dx > 0) strips.push([0, 0, dx, chh]);
          if (dx < 0) strips.push([cw + dx, 0, -dx, chh]);
          if (dy > 0) strips.push([0, 0, cw, dy]);
          if (dy < 0) strips.push([0, chh + dy, cw, -dy]);
          for (const strip of strips) {
            paintBase(strip);
            const [x, y, w, h] = strip;
            this.dirtyRects.push([(x - ox) / s, (y - oy) / s, w / s, h / s]);
          }
        } else {
          this.baseDirty = this.layerDirty = true;
        }
      }
      this.shiftX = this.shiftY = 0;
      if (this.baseDirty) {
        paintBase(null);
        this.baseDirty = false;
      }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = 1;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.base, 0, 0);

      // The visible image region, to skip instances outside it.
      const vx0 = -this.tx / this.scale;
      const vy0 = -this.ty / this.scale;
      const vx1 = vx0 + this.cssW / this.scale;
      const vy1 = vy0 + this.cssH / this.scale;
      const meets = (inst, x0, y0, x1, y1) => {
        const [x, y, w, h] = inst.crop;
        return x < x1 && y < y1 && x + w > x0 && y + h > y0;
      };
      const inView = (inst) => meets(inst, vx0, vy0, vx1, vy1);
      const shown = this.insts.filter((i) => i.bitmap && this.isShown(i));

      const g = this.lctx;
      const paint = (x0, y0, x1, y1) => {
        g.setTransform(s, 0, 0, s, ox, oy);
        g.imageSmoothingEnabled = smooth;
        for (const inst of shown) {
          if (!meets(inst, x0, y0, x1, y1)) continue;
          const [x, y, w, h] = inst.crop;
          g.drawImage(this.sprite(inst, k, this.mode), x, y, w, h);
        }
      };
      if (this.layerDirty || this.dirtyRects.length > 8) {
        g.setTransform(1, 0, 0, 1, 0, 0);
        g.clearRect(0, 0, this.layer.width, this.layer.height);
        paint(vx0, vy0, vx1, vy1);
      } else {
        // Only where something changed: clear that region (with a pixel or two of margin for
        // smoothed edges) and paint again every instance that reaches into it.
        for (const [x, y, w, h] of this.dirtyRects) {
          const dx0 = Math.max(0, Math.floor(x * s + ox) - 2);
          const dy0 = Math.max(0, Math.floor(y * s + oy) - 2);
          const dx1 = Math.min(this.layer.width, Math.ceil((x + w) * s + ox) + 2);
          const dy1 = Math.min(this.layer.height, Math.ceil((y + h) * s + oy) + 2);
          if (dx1 <= dx0 || dy1 <= dy0) continue;
          g.save();
          g.setTransform(1, 0, 0, 1, 0, 0);
          g.beginPath();
          g.rect(dx0, dy0, dx1 - dx0, dy1 - dy0);
          g.clip();
          g.clearRect(dx0, dy0, dx1 - dx0, dy1 - dy0);
          paint((dx0 - ox) / s, (dy0 - oy) / s, (dx1 - ox) / s, (dy1 - oy) / s);
          g.restore();
        }
      }
      this.layerDirty = false;
      this.dirtyRects = [];
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = this.opacity;
      ctx.drawImage(this.layer, 0, 0);
      ctx.globalAlpha = 1;

      const hot = this.hot && this.hot.bitmap ? this.hot : null;
      if (hot) {
        // The instance pointed at: its edge at full strength, over everything.
        const [x, y, w, h] = hot.crop;
        ctx.setTransform(s, 0, 0, s, ox, oy);
        ctx.imageSmoothingEnabled = smooth;
        ctx.drawImage(this.sprite(hot, k, "outline"), x, y, w, h);
        ctx.setTransform(1, 0, 0, 1, 0, 0);
      }
      const toX = (x) => x * s + ox;
      const toY = (y) => y * s + oy;
      if (this.prompts && this.data.prompts) this.drawPrompts(toX, toY);
      for (const inst of shown) {
        if (!inst.box || !inView(inst)) continue;
        const isHot = inst === hot;
        if (this.boxes || isHot) this.drawBox(inst, toX, toY, isHot);
      }
      if (hot && !shown.includes(hot) && hot.box) this.drawBox(hot, toX, toY, true);
      // Tags: the best scores on top (they come first), the one pointed at above all.
      if (this.labels) {
        for (let n = shown.length - 1; n >= 0; n--) {
          const inst = shown[n];
          if (inst.box && inst !== hot && inView(inst)) this.drawTag(inst, toX, toY);
        }
      }
      if (hot && hot.box) this.drawTag(hot, toX, toY);

      const ms = performance.now() - t0;
      this.frames.push(ms);
      if (this.frames.length > FRAMES_KEPT) this.frames.shift();
      this.root.dataset.frameMs = ms.toFixed(2);
      return ms;
    }

    drawBox(inst, toX, toY, isHot) {
      const ctx = this.ctx;
      const dpr = this.dpr;
      const [x0, y0, x1, y1] = inst.box;
      ctx.lineWidth = (isHot ? 3 : 2) * dpr;
      ctx.strokeStyle = inst.colour;
      ctx.setLineDash(this.isShown(inst) ? [] : [4 * dpr, 3 * dpr]);
      ctx.strokeRect(toX(x0), toY(y0), toX(x1) - toX(x0), toY(y1) - toY(y0));
      ctx.setLineDash([]);
    }

    drawTag(inst, toX, toY) {
      const ctx = this.ctx;
      const dpr = this.dpr;
      const text = `#${inst.number}` + (inst.score == null ? "" : ` ${inst.score.toFixed(2)}`);
      ctx.font = `600 ${12 * dpr}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
      const pad = 4 * dpr;
      const th = 17 * dpr;
      const tw = ctx.measureText(text).width + 2 * pad;
      let x = toX(inst.box[0]);
      let y = toY(inst.box[1]) - th;
      if (y < 0) y = Math.max(0, toY(inst.box[1]));
      x = clamp(x, 0, Math.max(0, this.canvas.width - tw));
      ctx.fillStyle = inst.colour;
      ctx.fillRect(x, y, tw, th);
      ctx.fillStyle = this.textColour(inst.colour);
      ctx.textBaseline = "middle";
      ctx.fillText(text, x + pad, y + th / 2 + 0.5 * dpr);
    }

    /* White or black text, whichever reads better on the tag's colour. */
    textColour(hex) {
      const n = parseInt(hex.slice(1), 16);
      const lin = (c) => {
        const v = c / 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      };
      const L = 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
      return (1.05 / (L + 0.05)) >= ((L + 0.05) / 0.05) ? "#fff" : "#111";
    }

    drawPrompts(toX, toY) {
      const ctx = this.ctx;
      const dpr = this.dpr;
      const { points = [], boxes = [] } = this.data.prompts;
      ctx.lineWidth = 2 * dpr;
      for (const b of boxes) {
        const x = toX(b.x_min);
        const y = toY(b.y_min);
        const w = toX(b.x_max) - x;
        const h = toY(b.y_max) - y;
        ctx.setLineDash([6 * dpr, 4 * dpr]);
        ctx.strokeStyle = "rgba(0,0,0,.7)";
        ctx.lineWidth = 4 * dpr;
        ctx.strokeRect(x, y, w, h);
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = 2 * dpr;
        ctx.strokeRect(x, y, w, h);
        ctx.setLineDash([]);
      }
      for (const p of points) {
        ctx.beginPath();
        ctx.arc(toX(p.x + 0.5), toY(p.y + 0.5), 5 * dpr, 0, 2 * Math.PI);
        ctx.fillStyle = p.label === 1 ? "#12b76a" : "#f04438";
        ctx.fill();
        ctx.strokeStyle = "#fff";
        ctx.stroke();
      }
    }
  }

  /* --- start viewers wherever they appear ------------------------------------------------- */

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
      if (!root.sam3viewer) viewers.push(new Viewer(root));
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
  window.sam3Viewer = {
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

  scan(document);
  if (window.htmx && typeof window.htmx.onLoad === "function") window.htmx.onLoad(scan);
  else {
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1) scan(n);
    }).observe(document.documentElement, { childList: true, subtree: true });
  }
})();
