/* sam3web viewer · loading: viewer.json, the photo, and each instance's mask crop
 * (viewer_views.mask_crop) decoded into a bitmap; and the crop's pixels as bits, read once
 * for hit-testing. Plain functions: the viewer (core.js) decides what to do with the results. */

import { makeCanvas } from "./util.js";

export async function fetchData(url) {
  const res = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!res.ok) throw new Error(`viewer data: HTTP ${res.status}`);
  return res.json();
}

/* viewer.json's instances as the viewer keeps them, with the person's settings from `keep`
 * (a colour they chose, instances they hid) applied. */
export function instancesFrom(data, keep) {
  return data.instances.map((d) => ({
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
}

export async function loadImage(url) {
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

/* The crop at `url` as something drawImage takes; throws if it does not load. */
export async function loadCrop(url) {
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const blob = await res.blob();
  return window.createImageBitmap
    ? await createImageBitmap(blob)
    : await new Promise((resolve, reject) => {
        const img = new Image();
        img.onload = () => resolve(img);
        img.onerror = reject;
        img.src = URL.createObjectURL(blob);
      });
}

/* One byte per crop pixel (1 = object), read once from the crop when first needed. */
export function maskBits(inst) {
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
