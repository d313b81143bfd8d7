/* sam3web viewer · drawing: the frame on the <canvas>, the instances' sprites, the image's
 * pyramid, boxes, score tags and prompts.
 *
 * Speed: each instance is rendered once per colour, mode and level into an offscreen canvas of
 * its crop's size (at 1/2^level of full resolution, the level following the zoom), and the image
 * has a pyramid of halved copies. A frame is then a few drawImage calls: the image, the visible
 * sprites into an overlay layer (so overlapping masks do not add up: the later one wins, as in
 * the server's composite), that layer at the chosen opacity, then boxes, tags and prompts.
 * Frames are drawn on requestAnimationFrame, only when something changed; no per-pixel work.
 *
 * `drawing` holds methods of the Viewer (mixed into it in core.js): they read the view (scale,
 * tx, ty, dpr, cssW, cssH), the instances and the display settings, and keep the offscreen
 * canvases (base, layer) and what needs painting again (baseDirty, layerDirty, dirtyRects,
 * shiftX, shiftY). */

import { clamp, makeCanvas } from "./util.js";

const FRAMES_KEPT = 200;

/* The mask in `src` (alpha) eroded by r pixels (a square), as a new canvas: separable, so
 * 4r drawImage calls. "destination-in" clears what the shifted copy does not cover, edges
 * of the canvas included. */
export function erode(src, r) {
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

/* White or black text, whichever reads better on the tag's colour. */
export function textColour(hex) {
  const n = parseInt(hex.slice(1), 16);
  const lin = (c) => {
    const v = c / 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  };
  const L = 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
  return (1.05 / (L + 0.05)) >= ((L + 0.05) / 0.05) ? "#fff" : "#111";
}

export const drawing = {
  /* The pyramid level for the current zoom: the smallest copy that still has at least one
   * pixel per device pixel. */
  levelIndex() {
    const s = this.scale * this.dpr;
    let k = 0;
    while (k < this.maxLevel && 2 ** -(k + 1) >= s) k++;
    return k;
  },

  baseLevel(k) {
    if (this.levels[k]) return this.levels[k];
    const prev = this.baseLevel(k - 1);
    const w = Math.ceil(this.W / 2 ** k);
    if (prev.width <= w + 1) {
      // A display copy already this small (a 4032 px photo's copy is 2016 px: level 1 as it
      // is): no copy of it at the same size.
      this.levels[k] = prev;
      return prev;
    }
    const c = makeCanvas(w, Math.ceil(this.H / 2 ** k));
    const g = c.getContext("2d");
    g.imageSmoothingQuality = "high";
    g.drawImage(prev, 0, 0, c.width, c.height);
    this.levels[k] = c;
    return c;
  },

  outlineRadius(k) {
    return k === 0 && this.scale * this.dpr >= 3 ? 1 : 2;
  },

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
  },

  /* The instance's region of the masks' layer needs painting again. */
  dirtyInst(inst) {
    if (inst.crop) this.dirtyRects.push(inst.crop);
    this.requestDraw();
  },

  requestDraw() {
    if (this.pending || this.disposed) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.drawNow();
    });
  },

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
    this.wantFull();
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

    // The instances lit up: the one selected and the one pointed at (or focused in the list).
    const lit = [...new Set([this.selected, this.hot])].filter(Boolean);
    for (const inst of lit) {
      if (!inst.bitmap) continue;
      // Its edge at full strength, over everything.
      const [x, y, w, h] = inst.crop;
      ctx.setTransform(s, 0, 0, s, ox, oy);
      ctx.imageSmoothingEnabled = smooth;
      ctx.drawImage(this.sprite(inst, k, "outline"), x, y, w, h);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
    }
    const toX = (x) => x * s + ox;
    const toY = (y) => y * s + oy;
    if (this.prompts && this.data.prompts) this.drawPrompts(toX, toY);
    for (const inst of shown) {
      if (!inst.box || !inView(inst)) continue;
      const isLit = lit.includes(inst);
      if (this.boxes || isLit) this.drawBox(inst, toX, toY, isLit);
    }
    for (const inst of lit) {
      if (!shown.includes(inst) && inst.box) this.drawBox(inst, toX, toY, true);
    }
    // Tags: the best scores on top (they come first), the lit ones above all.
    if (this.labels) {
      for (let n = shown.length - 1; n >= 0; n--) {
        const inst = shown[n];
        if (inst.box && !lit.includes(inst) && inView(inst)) this.drawTag(inst, toX, toY);
      }
    }
    for (const inst of lit) if (inst.box) this.drawTag(inst, toX, toY);

    const ms = performance.now() - t0;
    this.frames.push(ms);
    if (this.frames.length > FRAMES_KEPT) this.frames.shift();
    this.root.dataset.frameMs = ms.toFixed(2);
    return ms;
  },

  drawBox(inst, toX, toY, isHot) {
    const ctx = this.ctx;
    const dpr = this.dpr;
    const [x0, y0, x1, y1] = inst.box;
    ctx.lineWidth = (isHot ? 3 : 2) * dpr;
    ctx.strokeStyle = inst.colour;
    ctx.setLineDash(this.isShown(inst) ? [] : [4 * dpr, 3 * dpr]);
    ctx.strokeRect(toX(x0), toY(y0), toX(x1) - toX(x0), toY(y1) - toY(y0));
    ctx.setLineDash([]);
  },

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
    ctx.fillStyle = textColour(inst.colour);
    ctx.textBaseline = "middle";
    ctx.fillText(text, x + pad, y + th / 2 + 0.5 * dpr);
  },

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
  },
};
