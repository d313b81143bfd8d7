/* sam3web viewer · the controls: the instance list (show, colour, score, area), the bars
 * (opacity, minimum score, filled or outline, boxes, tags, prompts, hide all, zoom), the hover
 * read-out, the pointer (drag to pan, wheel and pinch to zoom, point or tap to read out), and
 * the keyboard shortcuts with their help dialog ("?").
 *
 * `controls` holds methods of the Viewer (mixed into it in core.js). The controls call the
 * viewer's setters (setOn, setOpacity, ... in core.js) and the view's zoomBy, panBy and fit
 * (view.js); syncControls and updateRows make them show the viewer's state. */

const OPACITY_STEP = 0.05;
const THRESHOLD_STEP = 0.01;
const PAN_STEP = 60;
const ZOOM_STEP = 1.25;

function isTyping(el) {
  if (!el) return false;
  if (el.isContentEditable) return true;
  if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && /^(text|search|url|email|number|password|tel)$/.test(el.type);
}

export const controls = {
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
  },

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
  },

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
  },

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
  },

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
  },

  announce(text) {
    const el = this.$(".sv-announce");
    if (el) el.textContent = text;
  },

  /* --- pointer, wheel, keys ------------------------------------------------------------- */

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
  },

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
  },

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
  },

  hover(p) {
    const q = this.toImage(p);
    this.setHot(this.hitTest(q.x, q.y), "canvas");
  },

  /* The wheel zooms about the pointer; at "fit", turning it further out scrolls the page. */
  onWheel(e) {
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.cssH : 1;
    const p = this.local(e);
    if (this.zoomBy(Math.exp((-e.deltaY * unit) / 300), p.x, p.y) || e.ctrlKey) {
      e.preventDefault();
    }
  },

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
  },

  openHelp() {
    const help = this.$(".sv-help");
    if (help.open) return;
    this.helpReturn = document.activeElement;
    if (help.showModal) help.showModal();
    else help.setAttribute("open", "");
    const close = help.querySelector(".sv-help-close");
    if (close) close.focus();
  },
};
