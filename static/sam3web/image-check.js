/* sam3web · image files checked in the browser before they are drawn on or sent: what the
 * server would refuse (segmentation/imaging), told in the server's own words.
 *
 * The page carries the server's limits and refusals on the file input (forms.image_checks):
 * data-max-bytes, data-max-pixels and data-refusals (a JSON object of messages). Only what is
 * certain is refused here: an empty file, one too large, one that is not an image of a kind
 * the server reads (told apart by its first bytes, as the server does, never by its name), and
 * one whose header claims too many pixels (read from the header, so a decompression bomb is
 * never decoded). Anything else goes to the server, which checks everything again.
 *
 * The refusal is shown beside the image field (#image-refusal), and cleared by unsay(). */

const HEAD_BYTES = 4096;
const JPEG_SCAN_BYTES = 512 * 1024; // EXIF and other segments come before the size
const HEIC_BRANDS = /hei[cxms]|hev[cx]/;
// The server's list of formats it names when refusing them (decode.unreadable).
const MAGIC = [
  [[0x42, 0x4d], "BMP"],
  [[0x00, 0x00, 0x01, 0x00], "ICO"],
  [[0x38, 0x42, 0x50, 0x53], "Photoshop (PSD)"],
  [[0xff, 0x0a], "JPEG XL"],
  [[0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20], "JPEG XL"],
  [[0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20], "JPEG 2000"],
  [[0xff, 0x4f, 0xff, 0x51], "JPEG 2000"],
  [[0x25, 0x50, 0x44, 0x46, 0x2d], "PDF"],
];
const STRIPPED = new Set([0xef, 0xbb, 0xbf, 0x20, 0x09, 0x0d, 0x0a, 0x0c]); // BOM, blanks

export function readChecks(input) {
  let refusals = {};
  try {
    refusals = JSON.parse(input?.dataset.refusals || "{}");
  } catch {
    // No messages: nothing is refused here, the server still says what is wrong.
  }
  return {
    maxBytes: Number(input?.dataset.maxBytes) || Infinity,
    maxPixels: Number(input?.dataset.maxPixels) || Infinity,
    refusals,
  };
}

/* What the server would say about this file, or null when it may well take it. */
export async function refusalOf(file, checks) {
  const said = checks.refusals;
  const refuse = (key, fill = {}) => {
    const text = said[key];
    return text ? text.replace(/\{(\w+)\}/g, (_, k) => fill[k] ?? "") : null;
  };
  if (file.size === 0) return refuse("empty");
  if (file.size > checks.maxBytes) return refuse("too_large");
  let head;
  try {
    head = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
  } catch {
    return null; // not readable here (a file gone from disk, say): the server will tell
  }
  const kind = sniff(head);
  if (kind.refuse) return refuse(kind.refuse, { format: kind.name });
  let bytes = head;
  if (kind.format === "JPEG" && file.size > HEAD_BYTES) {
    try {
      bytes = new Uint8Array(await file.slice(0, JPEG_SCAN_BYTES).arrayBuffer());
    } catch {
      return null;
    }
  }
  const size = headerSize(kind.format, bytes);
  if (!size) return null;
  if (size.w <= 0 || size.h <= 0) return refuse("no_pixels");
  if (size.w * size.h > checks.maxPixels) {
    const mp = (size.w * size.h) / 1e6;
    return refuse("too_many_pixels", {
      size: `${size.w.toLocaleString("en-US")}×${size.h.toLocaleString("en-US")}`,
      megapixels: mp
        .toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })
        .replace(/\.0$/, ""),
    });
  }
  return null;
}

const ascii = (b, from, to) => String.fromCharCode(...b.subarray(from, to));
const startsWith = (b, at, values) => values.every((v, i) => b[at + i] === v);
const has = (b, at, text) => ascii(b, at, at + text.length) === text;

/* The format the first bytes claim ({format}), or why the server would refuse them
 * ({refuse, name}): the server's own order (decode.open_header, then decode.unreadable). */
function sniff(b) {
  if (startsWith(b, 0, [0xff, 0xd8, 0xff])) return { format: "JPEG" };
  if (startsWith(b, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return { format: "PNG" };
  if (has(b, 0, "GIF87a") || has(b, 0, "GIF89a")) return { format: "GIF" };
  if (has(b, 0, "RIFF") && has(b, 8, "WEBP") && ["VP8 ", "VP8L", "VP8X"].includes(ascii(b, 12, 16))) {
    return { format: "WEBP" };
  }
  const iso = has(b, 4, "ftyp");
  const major = iso ? ascii(b, 8, 12) : "";
  if (major === "avif" || major === "avis") return { format: "AVIF" };
  // TIFF and HEIC are taken in (and converted) by the server, though most browsers cannot
  // show them: the editor then says so, and the run page shows the converted image.
  if (iso && HEIC_BRANDS.test(ascii(b, 8, 64))) return { format: "HEIC" };
  if (major === "mif1" || major === "msf1") return { format: "AVIF" };
  if (startsWith(b, 0, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, 0, [0x4d, 0x4d, 0x00, 0x2a])) {
    return { format: "TIFF" };
  }
  let i = 0;
  while (i < b.length && STRIPPED.has(b[i])) i++;
  const text = ascii(b, i, b.length).toLowerCase();
  if (text.startsWith("<")) {
    if (text.includes("<svg") && !text.includes("<html")) return { refuse: "svg" };
    if (text.includes("<html") || !text.startsWith("<?xml")) return { refuse: "web_page" };
  }
  for (const [magic, name] of MAGIC) {
    if (startsWith(b, 0, magic)) return { refuse: "unsupported", name };
  }
  return { refuse: "not_image" };
}

const u16be = (b, i) => (b[i] << 8) | b[i + 1];
const u16le = (b, i) => b[i] | (b[i + 1] << 8);
const u24le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32be = (b, i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);

/* Width and height as the header says (before EXIF orientation: the pixel count is the same),
 * or null where the header is not there to read. */
function headerSize(format, b) {
  if (format === "PNG" && b.length >= 24 && has(b, 12, "IHDR")) return { w: u32be(b, 16), h: u32be(b, 20) };
  if (format === "GIF" && b.length >= 10) return { w: u16le(b, 6), h: u16le(b, 8) };
  if (format === "WEBP" && b.length >= 30) {
    const chunk = ascii(b, 12, 16);
    if (chunk === "VP8 " && startsWith(b, 23, [0x9d, 0x01, 0x2a])) {
      return { w: u16le(b, 26) & 0x3fff, h: u16le(b, 28) & 0x3fff };
    }
    if (chunk === "VP8L" && b[20] === 0x2f) {
      const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
      return { w: (bits & 0x3fff) + 1, h: ((bits >>> 14) & 0x3fff) + 1 };
    }
    if (chunk === "VP8X") return { w: u24le(b, 24) + 1, h: u24le(b, 27) + 1 };
  }
  if (format === "JPEG") return jpegSize(b);
  return null;
}

function jpegSize(b) {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i += 1; // fill byte
    } else if (marker === 0x01 || marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7)) {
      i += 2; // no length
    } else if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { w: u16be(b, i + 7), h: u16be(b, i + 5) }; // a start of frame
    } else {
      i += 2 + u16be(b, i + 2);
    }
  }
  return null;
}

/* The refusal beside the image field: the field is marked, and its input described by it. */
export function say(message) {
  const note = document.getElementById("image-refusal");
  if (!note) return;
  note.textContent = message;
  note.hidden = false;
  note.closest(".field")?.classList.add("has-error");
  const input = document.querySelector("#field-image input[type=file]");
  if (input) {
    const ids = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    if (!ids.includes(note.id)) input.setAttribute("aria-describedby", [note.id, ...ids].join(" "));
    input.setAttribute("aria-invalid", "true");
  }
}

/* A new choice of image: the refusal goes, and so does what the server said of the last one. */
export function unsay() {
  const note = document.getElementById("image-refusal");
  if (!note) return;
  const field = note.closest(".field");
  for (const old of field?.querySelectorAll(".field-errors:not(#image-refusal)") ?? []) old.remove();
  field?.classList.remove("has-error");
  note.hidden = true;
  note.textContent = "";
  const input = field?.querySelector("input[type=file]");
  if (input) {
    const ids = (input.getAttribute("aria-describedby") || "").split(/\s+/);
    const kept = ids.filter((id) => id && id !== note.id && !id.endsWith("_error"));
    input.setAttribute("aria-describedby", kept.join(" "));
    input.removeAttribute("aria-invalid");
  }
}
