/* sam3web viewer · the controls: the instance list (the page's own table, taken over: show,
 * colour, select; score, area, box, mask PNG), the bars (opacity, minimum score, filled or
 * outline, boxes, tags, prompts, hide all, zoom), the hover read-out and the label beside the
 * pointer, selecting (a click on the image selects in the list, a row lights up its instance on
 * the image), the pointer (drag to pan, wheel and pinch to zoom, point or tap to read out), and
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
  /* The instance list. On the run page (and a public page) it is the page's own table
   * (_instances.html, named by the viewer's data-list): rows the server wrote, which the viewer
   * takes over; elsewhere (compare) the viewer's own table, whose rows it writes the same way.
   * Each row gets a show checkbox, a colour and a select button in its first cell. */
  buildList() {
    const listed = this.root.dataset.list && document.getElementById(this.root.dataset.list);
    this.list = listed || this.$(".sv-list");
    if (!this.list) return;
    const body = this.list.querySelector("tbody");
    const rows = new Map();
    for (const tr of body.querySelectorAll("tr[data-number]")) {
      rows.set(Number(tr.dataset.number), tr);
    }
    for (const inst of this.insts) {
      let tr = rows.get(inst.number);
      if (!tr) {
        tr = this.plainRow(inst);
        body.appendChild(tr);
      }
      this.takeRow(tr, inst);
    }
    this.list.classList.add("is-live");
    if (!this.list.dataset.bound) {
      // A list outside the viewer (the run page's) hears the shortcuts too, and its own keys.
      this.list.dataset.bound = "1";
      this.list.addEventListener("keydown", (e) => this.onListKey(e));
    }
    this.updateRows();
  },

  /* A row as _instances.html writes it, for a viewer with a list of its own. */
  plainRow(inst) {
    const tr = document.createElement("tr");
    tr.dataset.number = inst.number;
    tr.innerHTML =
      `<th scope="row"><span class="sv-inst"></span></th><td class="sv-score"></td>` +
      `<td class="sv-area"></td><td class="sv-box"></td><td class="sv-mask"></td>`;
    tr.querySelector(".sv-score").textContent =
      inst.score == null ? "—" : inst.score.toFixed(3);
    const area = tr.querySelector(".sv-area");
    if (inst.area == null) area.textContent = "—";
    else {
      area.textContent = `${inst.area.toLocaleString("en-US")} `;
      const pct = document.createElement("span");
      pct.className = "sv-pct";
      pct.textContent = `(${((100 * inst.area) / (this.W * this.H)).toFixed(1)}%)`;
      area.appendChild(pct);
    }
    tr.querySelector(".sv-box").textContent = inst.box ? `[${inst.box.join(", ")}]` : "—";
    const mask = tr.querySelector(".sv-mask");
    if (inst.mask_url) {
      const a = document.createElement("a");
      a.href = inst.mask_url;
      a.innerHTML = `PNG<span class="sv-sr"> of mask ${inst.number}</span>`;
      mask.appendChild(a);
    } else {
      mask.innerHTML = `<span class="bad-text"></span>`;
      mask.firstChild.textContent = inst.error || "not available";
    }
    return tr;
  },

  /* The row of `inst` becomes the viewer's: show, colour, select; pointing at it lights the
   * instance up on the image, clicking it selects it. */
  takeRow(tr, inst) {
    const can = Boolean(inst.crop_url);
    const cell = tr.querySelector(".sv-inst") || tr.querySelector("th");
    cell.innerHTML =
      `<input type="checkbox" class="sv-on"><input type="color" class="sv-colour">` +
      `<button type="button" class="sv-pick" aria-pressed="false">` +
      `<span class="sv-sr">Select instance </span></button>`;
    const box = cell.querySelector(".sv-on");
    box.checked = inst.on;
    box.disabled = !can;
    box.setAttribute("aria-label", `Show instance ${inst.number}`);
    const colour = cell.querySelector(".sv-colour");
    colour.value = inst.colour;
    colour.disabled = !can;
    colour.setAttribute("aria-label", `Colour of instance ${inst.number}`);
    const pick = cell.querySelector(".sv-pick");
    pick.append(String(inst.number));
    pick.title = "Select it: outlined on the image";
    let note = tr.querySelector(".sv-note");
    if (!note) {
      note = document.createElement("span");
      note.className = "sv-note";
      (tr.querySelector(".sv-mask") || tr.lastElementChild).append(" ", note);
    }
    if (inst.failed) note.textContent = "mask did not load";
    else if (!can && inst.mask_url) note.textContent = "empty mask";
    box.addEventListener("change", () => this.setOn(inst, box.checked));
    colour.addEventListener("input", () => this.setColour(inst, colour.value));
    pick.addEventListener("click", () => this.select(this.selected === inst ? null : inst, "list"));
    tr.addEventListener("click", (e) => {
      // The row's own controls do their own thing; anywhere else on it selects it.
      if (e.target.closest("input, button, a, label")) return;
      this.select(this.selected === inst ? null : inst, "list");
    });
    tr.addEventListener("pointerenter", () => this.setHot(inst, "list"));
    tr.addEventListener("pointerleave", () => this.hot === inst && this.setHot(null));
    tr.addEventListener("focusin", () => this.setHot(inst, "list"));
    tr.addEventListener("focusout", () => this.hot === inst && this.setHot(null));
    tr.classList.toggle("is-selected", this.selected === inst);
    pick.setAttribute("aria-pressed", String(this.selected === inst));
    inst.row = tr;
  },

  /* In the list: ↑ and ↓ (Home, End) move between the select buttons and select as they go;
   * other keys are the viewer's shortcuts, as on the image. */
  onListKey(e) {
    const pick = e.target.closest && e.target.closest(".sv-pick");
    const moves = { ArrowUp: -1, ArrowDown: 1, Home: -Infinity, End: Infinity };
    if (pick && e.key in moves && !(e.ctrlKey || e.metaKey || e.altKey || e.shiftKey)) {
      const picks = [...this.list.querySelectorAll(".sv-pick")];
      const at = picks.indexOf(pick);
      const next = picks[Math.max(0, Math.min(picks.length - 1, at + moves[e.key]))];
      e.preventDefault();
      if (!next || next === pick) return;
      next.focus();
      const inst = this.insts.find((i) => i.row && i.row.contains(next));
      if (inst) this.select(inst, "list");
      return;
    }
    // (Arrows elsewhere in the list are the page's, not a pan of the image.)
    if (!this.root.contains(this.list) && !e.key.startsWith("Arrow")) this.onKey(e);
  },

  /* The selected row in sight in the list's own scrolling box (never the page: on a phone the
   * list is below the image, which must stay where the person is looking). */
  revealRow(inst) {
    const wrap = inst.row.closest(".sv-list-wrap");
    if (!wrap) return;
    const head = wrap.querySelector("thead");
    const top = wrap.getBoundingClientRect().top + (head ? head.offsetHeight : 0);
    const bottom = wrap.getBoundingClientRect().bottom;
    const r = inst.row.getBoundingClientRect();
    if (r.top < top) wrap.scrollTop -= top - r.top + 2;
    else if (r.bottom > bottom) wrap.scrollTop += r.bottom - bottom + 2;
  },

  /* "Instance 3, score 0.870, 12,345 px (4.10% of the image)". */
  describeInstance(inst) {
    const parts = [`Instance ${inst.number}`];
    parts.push(inst.score == null ? "no score" : `score ${inst.score.toFixed(3)}`);
    if (inst.area != null) {
      const pct = ((100 * inst.area) / (this.W * this.H)).toFixed(2);
      parts.push(`area ${inst.area.toLocaleString("en-US")} px (${pct}% of the image)`);
    }
    if (!this.passes(inst)) parts.push("below the minimum score");
    else if (!inst.on) parts.push("hidden");
    return parts.join(" · ");
  },

  /* The small label beside the pointer over the image: the instance's score and area. Kept
   * inside the image's box, and inside the window, whichever side of the pointer that needs. */
  showTip(inst, p) {
    const tip = this.$(".sv-tip");
    if (!tip) return;
    if (!inst || !p) {
      tip.hidden = true;
      return;
    }
    const pct = inst.area == null ? null : ((100 * inst.area) / (this.W * this.H)).toFixed(2);
    tip.textContent = "";
    const head = document.createElement("strong");
    head.textContent = `#${inst.number}`;
    head.style.setProperty("--sv-inst", inst.colour);
    const score = document.createElement("span");
    score.textContent = inst.score == null ? " no score" : ` score ${inst.score.toFixed(3)}`;
    const area = document.createElement("span");
    area.className = "sv-tip-area";
    area.textContent =
      inst.area == null
        ? "area unknown"
        : `${inst.area.toLocaleString("en-US")} px · ${pct}% of the image`;
    tip.append(head, score, area);
    tip.hidden = false;
    const gap = 4;
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    // The part of the canvas on screen, in canvas pixels.
    const r = this.canvas.getBoundingClientRect();
    const minX = Math.max(0, -r.left) + gap;
    const minY = Math.max(0, -r.top) + gap;
    const maxX = Math.min(this.cssW, window.innerWidth - r.left) - w - gap;
    const maxY = Math.min(this.cssH, window.innerHeight - r.top) - h - gap;
    let x = p.x + 14;
    let y = p.y + 18;
    if (x > maxX) x = p.x - 14 - w; // no room to the right: to the left of the pointer
    if (y > maxY) y = p.y - 12 - h; // no room below: above it
    x = Math.max(minX, Math.min(x, maxX));
    y = Math.max(minY, Math.min(y, maxY));
    tip.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
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
      // (A finger's pointer leaves as it lifts: the label of a tap stays until the next.)
      if (e.pointerType !== "mouse" || this.drag) return;
      if (this.hotFrom === "canvas") this.setHot(null);
      this.showTip(null);
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
    const inst = this.hot || this.selected;
    if (!inst) {
      out.textContent = "Point at an instance to read its score and area; click it to select it.";
      return;
    }
    const selected = inst === this.selected ? " (selected)" : "";
    out.textContent = this.describeInstance(inst).replace(
      `Instance ${inst.number}`,
      (m) => m + selected
    );
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
      this.showTip(null);
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
    if (tap && e.type === "pointerup") {
      // A click or a tap selects what is under it (nothing: the selection is cleared), and
      // reads it out beside the finger as the mouse's hover does.
      const q = this.toImage(p);
      const inst = this.hitTest(q.x, q.y);
      this.select(inst, "canvas");
      this.setHot(inst, "canvas");
      this.showTip(inst, p);
    }
  },

  hover(p) {
    const q = this.toImage(p);
    const inst = this.hitTest(q.x, q.y);
    this.setHot(inst, "canvas");
    this.showTip(inst, p);
  },

  /* The wheel zooms about the pointer; at "fit", turning it further out scrolls the page. */
  onWheel(e) {
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.cssH : 1;
    const p = this.local(e);
    if (this.zoomBy(Math.exp((-e.deltaY * unit) / 300), p.x, p.y) || e.ctrlKey) {
      e.preventDefault();
      this.hover(p); // the image moved under the pointer
    }
  },

  onKey(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target)) return;
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
    else if (k === "Escape" && this.selected) this.select(null, "key");
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
