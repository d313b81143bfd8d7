/* sam3web viewer · the view: the canvas's size, fit, zoom and pan, and where a point of the
 * canvas falls on the image (and on which instance).
 *
 * `viewing` holds methods of the Viewer (mixed into it in core.js). The view is `scale` (CSS
 * pixels per image pixel) and `tx`, `ty` (where the image's corner is, in CSS pixels in the
 * canvas): image pixel (x, y) is drawn at (x * scale + tx, y * scale + ty). */

import { maskBits } from "./data.js";
import { clamp } from "./util.js";

const MAX_SCALE = 16; // CSS pixels per image pixel, zoomed all the way in

export const viewing = {
  resize() {
    if (this.gone()) return;
    const stage = this.$(".sv-stage");
    const w = Math.floor(stage.clientWidth);
    if (!w) return;
    // At most two thirds of the window's height: the whole image on the first screen, under
    // the page's bar, title and status (a portrait photo too), on a phone as on a desktop.
    const maxH = Math.max(220, Math.round(window.innerHeight * 0.66));
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
  },

  fitScale() {
    return Math.min(this.cssW / this.W, this.cssH / this.H);
  },

  /* `share`: false when the canvas changed size (each viewer has its own), not the person. */
  fit(share = true) {
    this.scale = this.fitScale();
    this.tx = (this.cssW - this.W * this.scale) / 2;
    this.ty = (this.cssH - this.H * this.scale) / 2;
    this.fitted = true;
    this.viewChanged();
    if (share) this.share(["view"]);
  },

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
  },

  panBy(dx, dy) {
    const tx = this.tx;
    const ty = this.ty;
    this.tx += dx;
    this.ty += dy;
    this.fitted = false;
    this.clampPan();
    if (this.tx === tx && this.ty === ty) return; // at the edge already
    this.showTip(null);
    if (this.baseDirty || this.layerDirty) {
      this.viewChanged();
    } else {
      // Same scale: the next frame moves what is drawn and paints only the uncovered strips.
      this.shiftX += (this.tx - tx) * this.dpr;
      this.shiftY += (this.ty - ty) * this.dpr;
      this.requestDraw();
    }
    this.share(["view"]);
  },

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
  },

  setView(view) {
    const fit = this.fitScale();
    const next = clamp(fit * view.zoom, fit, Math.max(MAX_SCALE, fit));
    this.scale = next;
    this.tx = this.cssW / 2 - view.cx * this.W * next;
    this.ty = this.cssH / 2 - view.cy * this.H * next;
    this.fitted = Math.abs(next - fit) < 1e-6;
    this.clampPan(); // also centres an image smaller than the canvas, as fit() does
    this.viewChanged();
  },

  /* An image larger than the canvas cannot leave a gap at its edges; a smaller one stays
   * centred. */
  clampPan() {
    const iw = this.W * this.scale;
    const ih = this.H * this.scale;
    this.tx = iw <= this.cssW ? (this.cssW - iw) / 2 : clamp(this.tx, this.cssW - iw, 0);
    this.ty = ih <= this.cssH ? (this.cssH - ih) / 2 : clamp(this.ty, this.cssH - ih, 0);
  },

  viewChanged() {
    this.showTip(null); // the image moved under it
    const zoomed = this.scale > this.fitScale() * 1.001;
    this.canvas.classList.toggle("is-zoomed", zoomed);
    this.$(".sv-zoom-val").textContent = `${Math.round(this.scale * 100)}%`;
    this.baseDirty = this.layerDirty = true;
    this.requestDraw();
  },

  /* Bring an instance chosen in the list into view when it is outside the view (zoomed in):
   * centred, at the same zoom. */
  revealInstance(inst) {
    const b = inst.box;
    const box = b && [b[0], b[1], b[2] - b[0], b[3] - b[1]];
    const rect = inst.crop || box;
    if (!rect || !this.cssW) return;
    const [x, y, w, h] = rect;
    const x0 = x * this.scale + this.tx;
    const y0 = y * this.scale + this.ty;
    const x1 = (x + w) * this.scale + this.tx;
    const y1 = (y + h) * this.scale + this.ty;
    if (x0 >= 0 && y0 >= 0 && x1 <= this.cssW && y1 <= this.cssH) return;
    this.tx = this.cssW / 2 - (x + w / 2) * this.scale;
    this.ty = this.cssH / 2 - (y + h / 2) * this.scale;
    this.fitted = false;
    this.clampPan();
    this.viewChanged();
    this.share(["view"]);
  },

  /* CSS pixels in the canvas ↔ image pixels. */
  local(e) {
    const r = this.canvas.getBoundingClientRect();
    return { x: e.clientX - r.left, y: e.clientY - r.top };
  },

  toImage(p) {
    return { x: (p.x - this.tx) / this.scale, y: (p.y - this.ty) / this.scale };
  },

  /* The topmost shown instance whose mask has the image pixel (x, y), or null. */
  hitTest(x, y) {
    for (let n = this.insts.length - 1; n >= 0; n--) {
      const inst = this.insts[n];
      if (!inst.bitmap || !this.isShown(inst)) continue;
      const [cx, cy, cw, ch] = inst.crop;
      const px = Math.floor(x - cx);
      const py = Math.floor(y - cy);
      if (px < 0 || py < 0 || px >= cw || py >= ch) continue;
      if (maskBits(inst)[py * cw + px]) return inst;
    }
    return null;
  },
};
