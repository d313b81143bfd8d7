/* sam3web · the prompt editor on the new-run page: click, shift-click and drag over the chosen
 * image to add include points, exclude points and boxes; zoom and pan to place them closely on
 * a large photo. run-form.js starts it (startEditor).
 *
 * The point_prompts / box_prompts textareas are the single source of truth: every change the
 * editor makes is written into them as the JSON the server validates, and the editor reads them
 * back (on load, whenever someone edits them by hand, and when Back or Forward brings the page
 * back with the browser's own copy of the form), so prefilled runs, forms shown again with
 * errors and typed JSON all appear on the image. Undo snapshots are the textareas' text.
 *
 * Coordinates are integer pixels of the image as the person sees it: the <img>'s naturalWidth
 * and naturalHeight, which already follow EXIF orientation (image-orientation: from-image is the
 * default), as the server's own sizes do. The overlay is an SVG whose viewBox is that size, laid
 * over the image in one layer, so markers stay in place at any display size and any zoom.
 *
 * Zoom and pan: the stage keeps the image's shape and clips; the layer inside it (image and
 * overlay) is made `z` times the stage's size and moved so that the image fraction (ox, oy)
 * sits at the stage's corner. Sizes are in percent of the stage, so a resize keeps the view.
 *
 * Chosen files are checked first (image-check.js): a file the server would refuse is never
 * drawn on, and the reason is shown beside the image field.
 */

import { readChecks, refusalOf, say, unsay } from "./image-check.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_OBJECTS = 64; // object_id 0–63, as the server allows
const DRAG_PX = 4; // a pointer that moves less than this (screen px) made a click, not a box
const MARKER_PX = 8; // point radius on screen, whatever the image's scale or the zoom
const ZOOM_STEP = 1.5; // one press of + or −
const MOST_PX_PER_PIXEL = 8; // zoomed all the way in: one image pixel is this many screen pixels
const INVITE = "Choose an image file or paste its URL to draw points and boxes on it.";
// Object colours: distinct from the include/exclude green and red.
const COLOURS = ["#2f6bff", "#f79009", "#9e77ed", "#06aed4", "#ee46bc", "#854a0e", "#5fe9d0", "#fde272"];
const TOOLS = { i: "include", e: "exclude", b: "box", h: "pan" };
const TOOL_NAMES = { include: "Include point", exclude: "Exclude point", box: "Box", pan: "Pan" };

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const hasId = (item) => item.object_id !== undefined && item.object_id !== null;
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const isObjectId = (v) => Number.isInteger(v) && v >= 0 && v < MAX_OBJECTS;

// One item per line, keys in the schema's order: readable in the textarea, minimal in bytes.
function format(items) {
  if (!items.length) return "";
  const line = (o) => "{" + Object.entries(o).map(([k, v]) => `"${k}": ${JSON.stringify(v)}`).join(", ") + "}";
  return "[" + items.map(line).join(",\n ") + "]";
}

// The items of one field, or an Error saying why the editor can't show them (the server
// will say it more precisely on submit; here it only decides whether drawing is safe).
function parse(text, keys, what) {
  if (!text.trim()) return [];
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return new Error(`The ${what} JSON below is not valid JSON.`);
  }
  if (!Array.isArray(value)) return new Error(`The ${what} JSON below is not a list.`);
  const bad = value.findIndex(
    (o) => !o || typeof o !== "object" || !keys.every((k) => isNumber(o[k])) || (hasId(o) && !isObjectId(o.object_id)),
  );
  if (bad >= 0) return new Error(`The ${what} JSON below has an item the editor can't read (number ${bad + 1}).`);
  return value;
}

function svg(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.append(el);
  return el;
}

export function startEditor(root) {
  const byData = (name) => document.getElementById(root.dataset[name]);
  const pointsField = byData("pointsField");
  const boxesField = byData("boxesField");
  const fileInput = byData("fileField");
  const urlInput = byData("urlField");
  const listWrap = byData("list");
  if (!pointsField || !boxesField || !listWrap) return;
  const $ = (sel, within = root) => within.querySelector(sel);
  const img = $('[data-role="image"]');
  const overlay = $('[data-role="overlay"]');
  const stage = $(".pe-stage");
  const placeholder = $('[data-role="placeholder"]');
  const layer = $('[data-role="layer"]');
  const zoomLevel = $('[data-role="zoom"]');
  const objectSelect = $('[data-role="object"]');
  const items = $('[data-role="items"]', listWrap);
  const none = $('[data-role="none"]', listWrap);
  const brokenNote = $('[data-role="broken"]', listWrap);
  const status = $('[data-role="status"]', listWrap);
  const button = (action) => $(`[data-action="${action}"]`);
  const checks = readChecks(fileInput);

  let points = [];
  let boxes = [];
  let broken = { points: null, boxes: null }; // an Error per field the editor can't read
  let objects = 1; // how many objects exist (Object 1 … N), at least the ids in use
  let current = 0; // the object new prompts go to (its object_id)
  let tool = "include";
  let size = null; // {w, h} of the image shown, or null while there is none
  let undoStack = [];
  let redoStack = [];
  let synced; // the textareas' text (and object count) as the editor last read them

  // Grouping starts with a second object, or with ids the JSON already has.
  const grouped = () => objects > 1 || points.some(hasId) || boxes.some(hasId);
  const snapshot = () => ({ points: pointsField.value, boxes: boxesField.value, objects });

  function read() {
    const p = parse(pointsField.value, ["x", "y", "label"], "point");
    const b = parse(boxesField.value, ["x_min", "y_min", "x_max", "y_max"], "box");
    broken = { points: p instanceof Error ? p : null, boxes: b instanceof Error ? b : null };
    points = broken.points ? [] : p;
    boxes = broken.boxes ? [] : b;
    const ids = [...points, ...boxes].filter(hasId).map((o) => o.object_id);
    objects = Math.max(objects, ids.length ? Math.max(...ids) + 1 : 1);
    current = Math.min(current, objects - 1);
    synced = snapshot();
    render();
  }

  function restore(snap) {
    pointsField.value = snap.points;
    boxesField.value = snap.boxes;
    objects = snap.objects;
    read();
  }

  // Someone typed in a textarea and went on without leaving it (a tap on the image does
  // not always blur it): take their text in first, as its own undo step, so it is not lost.
  function catchUp() {
    if (pointsField.value === synced.points && boxesField.value === synced.boxes) return;
    undoStack.push({ ...synced });
    redoStack = [];
    read();
  }

  function commit(nextPoints, nextBoxes, nextObjects, message) {
    undoStack.push(synced);
    redoStack = [];
    // A field the editor could not read keeps its text unless the change is to it (Clear all).
    if (!broken.points || nextPoints !== points) pointsField.value = format(nextPoints);
    if (!broken.boxes || nextBoxes !== boxes) boxesField.value = format(nextBoxes);
    objects = nextObjects;
    read();
    announce(message);
  }

  function announce(message) {
    status.textContent = message;
  }

  function undo() {
    catchUp();
    if (!undoStack.length) return;
    redoStack.push(synced);
    restore(undoStack.pop());
    announce("Undone.");
  }

  function redo() {
    catchUp();
    if (!redoStack.length) return;
    undoStack.push(synced);
    restore(redoStack.pop());
    announce("Redone.");
  }

  // --- adding and removing prompts --------------------------------------------------------

  const withObject = (item) => (grouped() ? { ...item, object_id: current } : item);

  function addPoint(u, v, label) {
    catchUp();
    if (broken.points) return announce(broken.points.message + " Fix it, or Clear all, to draw points.");
    const p = withObject({ x: Math.min(Math.floor(u), size.w - 1), y: Math.min(Math.floor(v), size.h - 1), label });
    const kind = label ? "include" : "exclude";
    commit([...points, p], boxes, objects, `Added point ${points.length + 1}: ${kind} (${p.x}, ${p.y}).`);
  }

  // Whole pixels that cover the drawn rectangle; never empty, never past the image's edge.
  function boxFrom(a, b) {
    const x_min = Math.min(Math.floor(Math.min(a.u, b.u)), size.w - 1);
    const y_min = Math.min(Math.floor(Math.min(a.v, b.v)), size.h - 1);
    const x_max = Math.max(Math.ceil(Math.max(a.u, b.u)), x_min + 1);
    const y_max = Math.max(Math.ceil(Math.max(a.v, b.v)), y_min + 1);
    return { x_min, y_min, x_max, y_max };
  }

  function addBox(a, b) {
    catchUp();
    if (broken.boxes) return announce(broken.boxes.message + " Fix it, or Clear all, to draw boxes.");
    const box = withObject(boxFrom(a, b));
    commit(points, [...boxes, box], objects,
      `Added box ${boxes.length + 1}: (${box.x_min}, ${box.y_min}) to (${box.x_max}, ${box.y_max}).`);
  }

  function remove(kind, index) {
    catchUp();
    const nextPoints = kind === "p" ? points.filter((_, i) => i !== index) : points;
    const nextBoxes = kind === "b" ? boxes.filter((_, i) => i !== index) : boxes;
    commit(nextPoints, nextBoxes, objects, `Deleted ${kind === "p" ? "point" : "box"} ${index + 1}.`);
  }

  function newObject() {
    catchUp();
    if (objects >= MAX_OBJECTS) return announce(`${MAX_OBJECTS} objects is the most a run can have.`);
    // The prompts drawn so far were Object 1's: say so, now that there is more than one.
    const claim = (o) => (hasId(o) ? o : { ...o, object_id: 0 });
    current = objects;
    const claimAll = (list, unreadable) => (unreadable ? list : list.map(claim));
    commit(claimAll(points, broken.points), claimAll(boxes, broken.boxes), objects + 1,
      `Object ${objects + 1} added: new points and boxes go to it.`);
  }

  function clearAll() {
    catchUp();
    current = 0;
    commit([], [], 1, "Cleared all points and boxes. Undo brings them back.");
  }

  // --- drawing ------------------------------------------------------------------------------

  function render() {
    // Object choices
    if (objectSelect.options.length !== objects) {
      objectSelect.replaceChildren(
        ...Array.from({ length: objects }, (_, i) => new Option(`Object ${i + 1}`, String(i))),
      );
    }
    objectSelect.value = String(current);
    button("undo").disabled = !undoStack.length;
    button("redo").disabled = !redoStack.length;
    button("clear").disabled = !pointsField.value.trim() && !boxesField.value.trim() && objects === 1;
    root.classList.toggle("is-grouped", grouped());
    renderList();
    renderOverlay();
  }

  const outside = (kind, o) =>
    size && (kind === "p" ? o.x >= size.w || o.y >= size.h : o.x_max > size.w || o.y_max > size.h);

  function describe(kind, o, i) {
    if (kind === "p") return `Point ${i + 1}: ${o.label === 0 ? "exclude" : "include"} (${o.x}, ${o.y})`;
    return `Box ${i + 1}: (${o.x_min}, ${o.y_min}) to (${o.x_max}, ${o.y_max})`;
  }

  function renderList() {
    const entries = [...points.map((o, i) => ["p", o, i]), ...boxes.map((o, i) => ["b", o, i])];
    items.replaceChildren(
      ...entries.map(([kind, o, i]) => {
        const li = document.createElement("li");
        li.className = "pe-item";
        li.dataset.key = kind + i;
        const mark = document.createElement("span");
        mark.className = kind === "p" ? `pe-dot ${o.label === 0 ? "neg" : "pos"}` : "pe-sq";
        mark.setAttribute("aria-hidden", "true");
        if (hasId(o)) mark.style.setProperty("--obj", COLOURS[o.object_id % COLOURS.length]);
        const text = document.createElement("span");
        text.className = "pe-text";
        text.textContent = describe(kind, o, i);
        if (hasId(o)) text.textContent += ` · Object ${o.object_id + 1}`;
        if (outside(kind, o)) {
          li.classList.add("is-outside");
          text.textContent += " · outside this image";
        }
        const del = document.createElement("button");
        del.type = "button";
        del.className = "pe-del";
        del.textContent = "Delete";
        del.setAttribute("aria-label", `Delete ${describe(kind, o, i).toLowerCase()}`);
        del.addEventListener("click", () => {
          const at = [...items.children].indexOf(li);
          remove(kind, i);
          // Keyboard users stay in the list: focus the entry that took this one's place.
          const next = items.children[Math.min(at, items.children.length - 1)];
          (next ? next.querySelector("button") : listWrap.querySelector("h2")).focus();
        });
        li.append(mark, text, del);
        return li;
      }),
    );
    none.hidden = entries.length > 0;
    const problems = [broken.points, broken.boxes].filter(Boolean).map((e) => e.message);
    brokenNote.hidden = !problems.length;
    brokenNote.textContent = problems.join(" ");
  }

  function renderOverlay() {
    overlay.replaceChildren();
    if (!size) return;
    const rect = overlay.getBoundingClientRect();
    // Image pixels per screen pixel, so markers keep one size on screen.
    const unit = rect.width ? size.w / rect.width : 1;
    const colour = (o) => (hasId(o) ? COLOURS[o.object_id % COLOURS.length] : null);
    boxes.forEach((o, i) => {
      const g = svg("g", { class: "pe-mark", "data-key": "b" + i }, overlay);
      const r = svg("rect", {
        class: "pe-box", x: o.x_min, y: o.y_min, width: o.x_max - o.x_min, height: o.y_max - o.y_min,
      }, g);
      if (colour(o)) r.style.stroke = colour(o);
      if (hasId(o)) {
        const label = svg("text", { class: "pe-tag", x: o.x_min + 3 * unit, y: o.y_min + 13 * unit }, g);
        label.style.fontSize = `${12 * unit}px`;
        label.textContent = `Object ${o.object_id + 1}`;
      }
    });
    points.forEach((o, i) => {
      const cx = o.x + 0.5;
      const cy = o.y + 0.5;
      const m = MARKER_PX * unit;
      const g = svg("g", { class: `pe-mark pe-pt ${o.label === 0 ? "neg" : "pos"}`, "data-key": "p" + i }, overlay);
      const c = svg("circle", { cx, cy, r: m }, g);
      if (colour(o)) c.style.stroke = colour(o);
      // A plus or a minus inside, so include and exclude differ by more than colour.
      const h = m * 0.55;
      const sign = `M${cx - h} ${cy}H${cx + h}` + (o.label === 0 ? "" : `M${cx} ${cy - h}V${cy + h}`);
      svg("path", { d: sign, class: "pe-sign" }, g);
    });
  }

  // --- the image ----------------------------------------------------------------------------

  let objectUrl = null;
  let loading = 0; // only the latest image to be asked for may show
  let shown = null; // which choice (file, URL or staged image) the editor last showed

  // No image to draw on: the invitation to choose one, or why the chosen one can't be shown.
  function showNothing(text = INVITE) {
    ++loading;
    size = null;
    stage.hidden = true;
    placeholder.hidden = false;
    placeholder.textContent = text;
    viewChanged();
    render();
  }

  // An image to draw on; `unavailable` says why if the browser cannot show it after all.
  function show(src, unavailable) {
    const ticket = ++loading;
    size = null;
    stage.hidden = true;
    placeholder.hidden = false;
    placeholder.textContent = "Loading the preview…";
    img.onload = () => {
      if (ticket !== loading) return;
      size = { w: img.naturalWidth, h: img.naturalHeight };
      overlay.setAttribute("viewBox", `0 0 ${size.w} ${size.h}`);
      overlay.setAttribute("preserveAspectRatio", "none");
      // The stage keeps the image's shape; tall images are held to most of the window's height.
      stage.style.aspectRatio = `${size.w} / ${size.h}`;
      stage.style.maxWidth = `min(100%, calc(75vh * ${size.w / size.h}))`;
      stage.hidden = false;
      placeholder.hidden = true;
      fit();
      render();
    };
    img.onerror = () => {
      if (ticket === loading) showNothing(unavailable);
    };
    // The same image again (a file input cleared back to the staged image) may not fire load.
    if (img.getAttribute("src") === src && img.complete && img.naturalWidth) img.onload();
    else img.src = src;
  }

  const chosenFile = () => (fileInput && fileInput.files && fileInput.files[0]) || null;
  const chosenUrl = () => (urlInput ? urlInput.value.trim() : "");

  // What the server will use, as one string: the file, else the URL, else the staged image.
  function choice() {
    const file = chosenFile();
    if (file) return `file:${file.name}:${file.size}:${file.lastModified}`;
    const url = chosenUrl();
    return url ? `url:${url}` : `staged:${root.dataset.imageSrc || ""}`;
  }

  // Show what the server will use: a chosen file (once checked), else a URL, else the image
  // already staged, else the invitation to choose one.
  async function chooseImage() {
    shown = choice();
    const ticket = ++loading;
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
    const file = chosenFile();
    if (file) {
      placeholder.textContent = "Checking the file…";
      const refusal = await refusalOf(file, checks);
      if (ticket !== loading) return; // another choice came meanwhile
      if (refusal) {
        // Nothing the server would refuse is drawn on, or sent: the field is emptied.
        fileInput.value = "";
        say(refusal);
        return chooseImage();
      }
      objectUrl = URL.createObjectURL(file);
      return show(
        objectUrl,
        "This browser cannot show this file (TIFF and HEIC often), so points and boxes cannot be " +
          "drawn on it here: a text prompt works, and the run's page shows the image converted.",
      );
    }
    let url = chosenUrl();
    if (url) {
      if (!/^[a-z][a-z0-9+.-]*:/i.test(url)) url = "https://" + url; // as the form assumes
      const unavailable = "Preview unavailable; the server will fetch it.";
      return /^https?:\/\//i.test(url) ? show(url, unavailable) : showNothing(unavailable);
    }
    if (root.dataset.imageSrc) return show(root.dataset.imageSrc, "Preview unavailable.");
    showNothing();
  }

  // --- zoom and pan -------------------------------------------------------------------------

  // z: how many times the stage's size the image is drawn; (ox, oy): the image fraction at the
  // stage's top-left corner. z = 1 is "fit": the whole image.
  const view = { z: 1, ox: 0, oy: 0 };

  function mostZoom() {
    const width = stage.clientWidth;
    if (!size || !width) return 1;
    return clamp((MOST_PX_PER_PIXEL * size.w) / width, 4, 64);
  }

  // The view as it is on screen. (Its zoom is limited where the person zooms, not here: a
  // resize, a full-page screenshot say, must not take the zoom away.)
  function viewChanged() {
    view.z = Math.max(1, view.z);
    view.ox = clamp(view.ox, 0, 1 - 1 / view.z);
    view.oy = clamp(view.oy, 0, 1 - 1 / view.z);
    layer.style.width = layer.style.height = `${view.z * 100}%`;
    layer.style.left = `${-view.ox * view.z * 100}%`;
    layer.style.top = `${-view.oy * view.z * 100}%`;
    const zoomed = Boolean(size) && view.z > 1.001;
    root.classList.toggle("is-zoomed", zoomed);
    button("zoom-in").disabled = !size || view.z >= mostZoom() * 0.999;
    button("zoom-out").disabled = !zoomed;
    button("fit").disabled = !zoomed;
    // As the run page's viewer says it: screen pixels per image pixel.
    const width = stage.clientWidth;
    const scale = size && width ? (view.z * width) / size.w : 0;
    zoomLevel.textContent = scale ? `${Math.round(scale * 100)}%` : "–";
    root.classList.toggle("is-magnified", scale > 2);
    renderOverlay(); // markers keep their size on screen
  }

  // Zoom by `factor` about a point of the screen (the stage's centre unless given); whether
  // anything changed.
  function zoomAt(factor, clientX, clientY) {
    if (!size) return false;
    const r = stage.getBoundingClientRect();
    const fx = clientX === undefined ? 0.5 : clamp((clientX - r.left) / r.width, 0, 1);
    const fy = clientY === undefined ? 0.5 : clamp((clientY - r.top) / r.height, 0, 1);
    const next = clamp(view.z * factor, 1, mostZoom());
    if (Math.abs(next - view.z) < 1e-9) return false;
    // The image point under (fx, fy) stays there.
    const px = view.ox + fx / view.z;
    const py = view.oy + fy / view.z;
    view.ox = px - fx / next;
    view.oy = py - fy / next;
    view.z = next;
    viewChanged();
    return true;
  }

  function panBy(dx, dy) {
    const r = stage.getBoundingClientRect();
    if (!r.width || !r.height) return;
    view.ox -= dx / (r.width * view.z);
    view.oy -= dy / (r.height * view.z);
    viewChanged();
  }

  function fit() {
    view.z = 1;
    view.ox = view.oy = 0;
    viewChanged();
  }

  // --- pointer: draw, pan, pinch ------------------------------------------------------------

  // Pointer events cover mouse, pen and touch alike.
  let drag = null; // the one pointer drawing a box, placing a point, or panning
  let pinch = null; // two fingers on the image: {dist, x, y}
  const pointers = new Map(); // pointerId -> {x, y}, the pointers down on the image
  let spaceHeld = false;
  let overImage = false;

  function toImage(e) {
    const r = overlay.getBoundingClientRect();
    return {
      u: clamp(((e.clientX - r.left) / r.width) * size.w, 0, size.w),
      v: clamp(((e.clientY - r.top) / r.height) * size.h, 0, size.h),
    };
  }

  const pinchOf = () => {
    const [a, b] = [...pointers.values()];
    return { dist: Math.hypot(a.x - b.x, a.y - b.y) || 1, x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
  };

  const cancelDrag = () => {
    const had = Boolean(drag && !drag.pan && drag.moved);
    drag?.preview?.remove();
    drag = null;
    root.classList.remove("is-panning");
    return had;
  };

  overlay.addEventListener("pointerdown", (e) => {
    if (!size) return;
    const mouse = e.pointerType === "mouse";
    if (mouse && e.button !== 0 && e.button !== 1) return;
    overlay.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pointers.size === 2) {
      cancelDrag(); // a second finger: the first was the start of a pinch, not a prompt
      pinch = pinchOf();
      return;
    }
    if (pointers.size > 2 || drag) return;
    const pan = tool === "pan" || spaceHeld || (mouse && e.button === 1);
    if (pan) e.preventDefault(); // no autoscroll from the middle button
    drag = { id: e.pointerId, x: e.clientX, y: e.clientY, shift: e.shiftKey, from: toImage(e), moved: false, preview: null, pan };
    root.classList.toggle("is-panning", pan);
  });

  overlay.addEventListener("pointermove", (e) => {
    if (pointers.has(e.pointerId)) pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pinch && pointers.size === 2) {
      const now = pinchOf();
      panBy(now.x - pinch.x, now.y - pinch.y);
      zoomAt(now.dist / pinch.dist, now.x, now.y);
      pinch = now;
      return;
    }
    if (!drag || e.pointerId !== drag.id) return;
    if (!drag.moved && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < DRAG_PX) return;
    if (drag.pan) {
      panBy(e.clientX - (drag.lastX ?? drag.x), e.clientY - (drag.lastY ?? drag.y));
      drag.lastX = e.clientX;
      drag.lastY = e.clientY;
      drag.moved = true;
      return;
    }
    drag.moved = true;
    const b = boxFrom(drag.from, toImage(e));
    // (A resize mid-drag redraws the overlay and takes the preview with it.)
    if (!drag.preview?.isConnected) drag.preview = svg("rect", { class: "pe-box pe-preview" }, overlay);
    for (const [k, v] of Object.entries({ x: b.x_min, y: b.y_min, width: b.x_max - b.x_min, height: b.y_max - b.y_min })) {
      drag.preview.setAttribute(k, v);
    }
  });

  overlay.addEventListener("pointerup", (e) => {
    pointers.delete(e.pointerId);
    if (pointers.size < 2) pinch = null;
    if (!drag || e.pointerId !== drag.id) return;
    const d = drag;
    cancelDrag();
    if (d.pan) return;
    const to = toImage(e);
    if (d.moved) addBox(d.from, to);
    else if (tool === "box") announce("Drag across the object to draw a box.");
    else addPoint(to.u, to.v, (tool === "exclude") !== d.shift ? 0 : 1);
  });

  overlay.addEventListener("pointercancel", (e) => {
    pointers.delete(e.pointerId);
    if (pointers.size < 2) pinch = null;
    if (drag && e.pointerId === drag.id) cancelDrag();
  });

  // The wheel zooms about the pointer; at "fit", turning it further out scrolls the page (as
  // on the run page's viewer). A trackpad's pinch arrives as a wheel with the Ctrl key.
  stage.addEventListener("wheel", (e) => {
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? stage.clientHeight : 1;
    if (zoomAt(Math.exp((-e.deltaY * unit) / 300), e.clientX, e.clientY) || e.ctrlKey) e.preventDefault();
  }, { passive: false });
  stage.addEventListener("pointerenter", () => { overImage = true; });
  stage.addEventListener("pointerleave", () => { overImage = false; });

  // --- tools and keys -----------------------------------------------------------------------

  function setTool(name, tell = false) {
    tool = name;
    for (const b of root.querySelectorAll("[data-tool]")) b.setAttribute("aria-pressed", String(b.dataset.tool === name));
    root.dataset.tool = name;
    if (tell) announce(`${TOOL_NAMES[name]} tool.`);
  }

  for (const b of root.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  button("undo").addEventListener("click", undo);
  button("redo").addEventListener("click", redo);
  button("clear").addEventListener("click", clearAll);
  button("new-object").addEventListener("click", newObject);
  button("zoom-in").addEventListener("click", () => zoomAt(ZOOM_STEP));
  button("zoom-out").addEventListener("click", () => zoomAt(1 / ZOOM_STEP));
  button("fit").addEventListener("click", fit);
  objectSelect.addEventListener("change", () => {
    current = Number(objectSelect.value);
  });

  // Hand-edited JSON shows on the image once the person leaves the field. Re-reading can
  // lengthen the list and so move everything below it, Submit included: never between a
  // press and its click (leaving the field by clicking Submit would then miss the button).
  let pressed = false;
  let rereadAfterPress = false;
  const rereadLater = () => {
    if (pressed) rereadAfterPress = true;
    else setTimeout(catchUp); // after the click this blur may be part of (touch taps)
  };
  for (const field of [pointsField, boxesField]) {
    field.addEventListener("change", rereadLater);
    field.addEventListener("blur", rereadLater);
  }
  document.addEventListener("pointerdown", () => { pressed = true; }, true);
  for (const type of ["pointerup", "pointercancel"]) {
    document.addEventListener(type, () => {
      pressed = false;
      if (rereadAfterPress) setTimeout(catchUp); // once the click has been dispatched
      rereadAfterPress = false;
    }, true);
  }

  // Where keys are text (or a choice) rather than shortcuts.
  const typing = (el) =>
    el?.closest?.("textarea, select, [contenteditable], input:not([type=checkbox], [type=radio], [type=file], [type=button], [type=submit])");

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      if (cancelDrag()) {
        announce("Box cancelled.");
        return e.preventDefault();
      }
      // Deselect: an entry of the list picked out (focused) lets go of its marker.
      if (items.contains(document.activeElement)) {
        document.activeElement.blur();
        for (const m of overlay.querySelectorAll(".is-hl")) m.classList.remove("is-hl");
      }
      return;
    }
    if (e.ctrlKey || e.metaKey) {
      if (e.altKey || typing(e.target)) return; // text fields keep their own undo
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) undo();
      else if ((key === "z" && e.shiftKey) || (key === "y" && !e.shiftKey)) redo();
      else return;
      return e.preventDefault();
    }
    if (e.altKey || typing(e.target) || root.hidden) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key === " ") {
      // Space held over the image pans, as in drawing programs; elsewhere it scrolls or clicks.
      if (!size || !(overImage || drag)) return;
      spaceHeld = true;
      root.classList.add("is-space");
      return e.preventDefault();
    }
    if (TOOLS[key] && !e.shiftKey) setTool(TOOLS[key], true);
    else if (key === "+" || key === "=") zoomAt(ZOOM_STEP);
    else if (key === "-" || key === "_") zoomAt(1 / ZOOM_STEP);
    else if (key === "0") fit();
    else return;
    e.preventDefault();
  });
  const releaseSpace = () => {
    spaceHeld = false;
    root.classList.remove("is-space");
  };
  document.addEventListener("keyup", (e) => {
    if (e.key === " ") releaseSpace();
  });
  window.addEventListener("blur", releaseSpace);

  // Hovering or focusing an entry in the list picks out its marker on the image.
  const highlight = (e, on) => {
    const li = e.target.closest?.(".pe-item");
    if (!li) return;
    overlay.querySelector(`[data-key="${li.dataset.key}"]`)?.classList.toggle("is-hl", on);
  };
  items.addEventListener("mouseover", (e) => highlight(e, true));
  items.addEventListener("mouseout", (e) => highlight(e, false));
  items.addEventListener("focusin", (e) => highlight(e, true));
  items.addEventListener("focusout", (e) => highlight(e, false));

  // A new choice of image: whatever was said of the last one no longer holds.
  fileInput?.addEventListener("change", () => {
    unsay();
    chooseImage();
  });
  let urlTimer;
  urlInput?.addEventListener("input", () => {
    clearTimeout(urlTimer);
    unsay();
    urlTimer = setTimeout(chooseImage, 400); // not one request per keystroke
  });
  urlInput?.addEventListener("change", () => {
    clearTimeout(urlTimer);
    chooseImage();
  });

  // Back or Forward. From the back/forward cache the page is as it was left, but a gesture
  // cut short by leaving it is not coming back. Loaded afresh, the browser puts the form's
  // values back (file included) after the editor first read them, without telling it: read
  // them again, and show the restored image.
  window.addEventListener("pageshow", () => {
    cancelDrag();
    pointers.clear();
    pinch = null;
    pressed = rereadAfterPress = false;
    releaseSpace();
    if (pointsField.value !== synced.points || boxesField.value !== synced.boxes) read();
    if (choice() !== shown) chooseImage();
  });

  // Marker sizes follow the display size (positions follow by themselves, through the viewBox).
  new ResizeObserver(() => viewChanged()).observe(stage);

  root.hidden = false;
  listWrap.hidden = false;
  setTool(tool);
  read();
  chooseImage();
  root.dataset.ready = "true"; // tests wait for this
}
