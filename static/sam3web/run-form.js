/* sam3web · the new-run form: starts the prompt editor (prompt-editor.js) and does what is the
 * form's rather than the editor's:
 *
 * - images in by dropping a file anywhere on the form (a drop target shows while dragging), or
 *   pasting one (Ctrl+V: an image, or a link to one, which goes into the URL field); checked
 *   as chosen files are (image-check.js), and nothing changes when what came is refused;
 * - Submit sends once: the button is disabled while the form is on its way, and given back
 *   when Back or Forward shows the page again;
 * - the form's one-time key (forms.SubmissionKeyField) survives Back: the browser gives the
 *   page back with the file and prompts as they were but, loading it afresh, a new key; the
 *   key submitted is kept in the page's history entry and put back, so Submit again is known
 *   for the same form (the server then leads to the run it made);
 * - "Max masks" is only read with "Return multiple masks": disabled, with the reason, while
 *   that is off. A disabled field is not posted, so a hidden copy posts its value, and the
 *   run stores what the form shows.
 *
 * Without JavaScript none of this is needed: the form posts as it is. */

import { readChecks, refusalOf, say, unsay } from "./image-check.js";
import { startEditor } from "./prompt-editor.js";

const KEY_STATE = "sam3SubmissionKey";
const SUBMIT_AGAIN_MS = 20_000; // a submission stopped by the person (Esc) must not lock the form

const form = document.getElementById("run-form");
if (form) start(form);

function start(form) {
  const editor = document.getElementById("prompt-editor");
  if (editor) startEditor(editor);
  for (const el of form.querySelectorAll(".rf-js")) el.hidden = false;
  // With the editor drawing them, the JSON fields are for those who want them.
  for (const details of form.querySelectorAll("details[data-fold]")) details.open = false;
  keepSubmissionKey(form);
  submitOnce(form);
  maxMasksFollowsMultiple(form);
  imagesIn(form);
}

function keepSubmissionKey(form) {
  const key = form.querySelector('input[name="submission_key"]');
  if (!key) return;
  const putBack = () => {
    const kept = history.state && history.state[KEY_STATE];
    if (kept) key.value = kept;
  };
  putBack();
  window.addEventListener("pageshow", putBack);
  form.addEventListener("submit", () => {
    history.replaceState({ ...(history.state || {}), [KEY_STATE]: key.value }, "");
  });
}

function submitOnce(form) {
  const button = form.querySelector('[data-role="submit"]');
  if (!button) return;
  const label = button.textContent;
  const blocked = button.disabled; // runs cannot be submitted at all: stays so
  let timer;
  const release = () => {
    clearTimeout(timer);
    delete form.dataset.submitting;
    button.disabled = blocked;
    button.textContent = label;
  };
  form.addEventListener("submit", (e) => {
    if (form.dataset.submitting) return e.preventDefault(); // Enter pressed twice, say
    form.dataset.submitting = "true";
    // Disabled once this submission is under way: it goes, a second click does not.
    button.disabled = true;
    button.textContent = "Submitting…";
    timer = setTimeout(release, SUBMIT_AGAIN_MS);
  });
  window.addEventListener("pageshow", release);
}

function maxMasksFollowsMultiple(form) {
  const multiple = document.getElementById("id_return_multiple_masks");
  const max = document.getElementById("id_max_masks");
  const reason = document.getElementById("max-masks-off");
  if (!multiple || !max) return;
  const field = max.closest(".field");
  let copy = null;
  const follow = () => {
    const off = !multiple.checked;
    max.disabled = off;
    field?.classList.toggle("is-off", off);
    if (reason) reason.hidden = !off;
    if (off) {
      copy ??= Object.assign(document.createElement("input"), { type: "hidden", name: max.name });
      copy.value = max.value;
      max.after(copy);
    } else {
      copy?.remove();
      copy = null;
    }
  };
  multiple.addEventListener("change", follow);
  window.addEventListener("pageshow", follow); // the browser may have put the tick back
  follow();
}

// --- images in: drop and paste ---------------------------------------------------------------

const typing = (el) =>
  el?.closest?.("textarea, select, [contenteditable], input:not([type=checkbox], [type=radio], [type=file], [type=button], [type=submit])");

// A link as the URL field takes it: http(s), or a bare host with a dot (https is assumed).
const looksLikeLink = (text) =>
  /^https?:\/\/\S+$/i.test(text) || /^(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?(?:\/\S*)?$/i.test(text);

function imagesIn(form) {
  const fileInput = form.querySelector('input[type="file"][name="image"]');
  const urlInput = form.querySelector('input[name="image_url"]');
  const target = form.querySelector('[data-role="drop-target"]');
  if (!fileInput) return;
  const checks = readChecks(fileInput);

  // One file, checked first: a refused one changes nothing, and says why.
  async function take(files, how) {
    if (files.length > 1) {
      return say(
        `This form takes one image, and ${files.length} files were ${how}. For many images, ` +
          "submit this run, then use “Same prompts on other images” on its page.",
      );
    }
    const [file] = files;
    const refusal = await refusalOf(file, checks);
    if (refusal) return say(refusal);
    const list = new DataTransfer();
    list.items.add(file);
    fileInput.files = list.files;
    if (urlInput) urlInput.value = ""; // the form takes a file or a URL: the newest wins
    fileInput.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function useLink(text) {
    if (!urlInput) return;
    fileInput.value = ""; // as above, the newest wins
    urlInput.value = text;
    unsay();
    urlInput.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // Files, or a link dragged from another page.
  const carries = (e) => {
    const types = [...(e.dataTransfer?.types || [])];
    return types.includes("Files") || types.includes("text/uri-list");
  };
  let depth = 0; // dragenter/dragleave pairs: children of the form fire them too
  const showTarget = (on) => {
    if (target) target.hidden = !on;
    form.classList.toggle("is-dropping", on);
  };
  form.addEventListener("dragenter", (e) => {
    if (!carries(e)) return;
    e.preventDefault();
    depth += 1;
    showTarget(true);
  });
  form.addEventListener("dragover", (e) => {
    if (!carries(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  form.addEventListener("dragleave", (e) => {
    if (!carries(e)) return;
    depth = Math.max(0, depth - 1);
    if (!depth) showTarget(false);
  });
  form.addEventListener("drop", (e) => {
    if (!carries(e)) return;
    e.preventDefault();
    depth = 0;
    showTarget(false);
    const files = [...e.dataTransfer.files];
    if (files.length) return take(files, "dropped");
    const link = (e.dataTransfer.getData("text/uri-list") || "").split(/\r?\n/).find((l) => l && !l.startsWith("#"));
    if (link && looksLikeLink(link.trim())) useLink(link.trim());
  });
  // Anywhere else on the page, a dropped file would replace the page with itself.
  document.addEventListener("dragover", (e) => {
    if (carries(e) && !form.contains(e.target)) {
      e.preventDefault();
      e.dataTransfer.dropEffect = "none";
    }
  });
  document.addEventListener("drop", (e) => {
    if (carries(e) && !form.contains(e.target)) e.preventDefault();
  });
  document.addEventListener("dragend", () => {
    depth = 0;
    showTarget(false);
  });

  document.addEventListener("paste", (e) => {
    const data = e.clipboardData;
    if (!data) return;
    const files = [...data.files];
    const text = (data.getData("text/plain") || "").trim();
    // Text into a text field is the browser's own paste (the URL field previews by itself).
    if (typing(e.target) && (text || !files.length)) return;
    if (files.length) {
      e.preventDefault();
      return take(files, "pasted");
    }
    if (!text) return;
    e.preventDefault();
    if (looksLikeLink(text)) useLink(text);
    else say("What you pasted is neither an image nor a link to one: copy an image, or an image URL such as https://example.com/photo.jpg.");
  });
}
