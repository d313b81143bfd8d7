/* sam3web · the new-batch form:
 *
 * - files, or whole folders, dropped anywhere on the page join the images (a dropped ZIP goes to
 *   the ZIP field when that is empty); "Choose a folder…" picks a folder the same way; the page
 *   says how many files are chosen and how large they are, and what the server would refuse;
 * - the upload goes by XMLHttpRequest, with a progress bar; the concepts and options are sent
 *   before the files, so an upload the server stops part way still keeps them;
 * - once the server has the batch, the browser follows it to the batch page; a form with errors
 *   takes this one's place, with the messages beside the fields (and the files still chosen
 *   when none of the errors is about them).
 *
 * Without JavaScript none of this is needed: the form posts as it is. */
(() => {
  "use strict";

  const MB = 1000 * 1000;
  const megabytes = (n) => `${(n / MB).toFixed(n < 10 * MB ? 1 : 0)} MB`;
  const current = () => document.getElementById("batch-form");
  const isZip = (file) => /\.zip$/i.test(file.name) || file.type === "application/zip";
  const key = (file) => `${file.name}\u0000${file.size}\u0000${file.lastModified}`;

  function start(form) {
    if (!form) return;
    for (const el of form.querySelectorAll(".bt-js")) el.hidden = false;
    const images = form.querySelector('input[type="file"][name="images"]');
    const archive = form.querySelector('input[type="file"][name="archive"]');
    for (const input of [images, archive]) input?.addEventListener("change", () => summarize(form));
    chooseFolder(form);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      upload(form);
    });
    summarize(form);
  }

  // --- what is chosen ---------------------------------------------------------------------------

  function chosenFiles(form) {
    const images = form.querySelector('input[name="images"]');
    const archive = form.querySelector('input[name="archive"]');
    return { images: [...(images?.files || [])], archive: [...(archive?.files || [])] };
  }

  /** "N files chosen (X MB)", and what the server would refuse, before anything is sent. */
  function summarize(form) {
    const { images, archive } = chosenFiles(form);
    const line = document.getElementById("images-chosen");
    const bytes = [...images, ...archive].reduce((sum, f) => sum + f.size, 0);
    const problem = tooMuch(form, images, bytes);
    if (line) {
      line.textContent = images.length
        ? `${images.length.toLocaleString()} file${images.length === 1 ? "" : "s"} chosen (${megabytes(bytes)}).`
        : "";
    }
    let warning = form.querySelector('[data-role="too-much"]');
    if (problem) {
      if (!warning) {
        warning = Object.assign(document.createElement("p"), { className: "field-errors" });
        warning.dataset.role = "too-much";
        warning.setAttribute("role", "alert");
        line?.after(warning);
      }
      warning.textContent = problem;
    } else {
      warning?.remove();
    }
    return problem;
  }

  function tooMuch(form, images, bytes) {
    const maxBytes = Number(form.dataset.maxUploadBytes || 0);
    const maxImages = Number(form.dataset.maxImages || 0);
    if (maxImages && images.length > maxImages) {
      return `These are ${images.length.toLocaleString()} files; a batch takes at most ${maxImages.toLocaleString()} images. Split them into several batches, or put them in a ZIP.`;
    }
    if (maxBytes && bytes > maxBytes) {
      return `These files are ${megabytes(bytes)} in all; one upload takes at most ${form.dataset.maxUpload}. Split them into several batches.`;
    }
    return "";
  }

  /** Files join those already chosen (the same file twice is kept once). */
  function addFiles(form, files) {
    const images = form.querySelector('input[name="images"]');
    const archive = form.querySelector('input[name="archive"]');
    if (!images || !files.length) return;
    const list = new DataTransfer();
    const seen = new Set();
    for (const f of images.files) {
      list.items.add(f);
      seen.add(key(f));
    }
    let zip = null;
    for (const f of files) {
      if (!zip && archive && !archive.files.length && isZip(f)) {
        zip = f;
      } else if (!seen.has(key(f))) {
        seen.add(key(f));
        list.items.add(f);
      }
    }
    images.files = list.files;
    if (zip) {
      const one = new DataTransfer();
      one.items.add(zip);
      archive.files = one.files;
    }
    summarize(form);
  }

  function chooseFolder(form) {
    const button = form.querySelector('[data-role="folder"]');
    if (!button) return;
    // No name: it is never posted itself; what it picks joins the images.
    const picker = Object.assign(document.createElement("input"), {
      type: "file",
      multiple: true,
      hidden: true,
    });
    picker.setAttribute("webkitdirectory", "");
    picker.setAttribute("aria-hidden", "true");
    picker.tabIndex = -1;
    button.after(picker);
    button.addEventListener("click", () => picker.click());
    picker.addEventListener("change", () => {
      addFiles(form, [...picker.files].filter((f) => !f.name.startsWith(".")));
      picker.value = "";
    });
  }

  // --- dropping files and folders anywhere on the page -------------------------------------------

  const carriesFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  let depth = 0; // dragenter/dragleave come in pairs from every element crossed
  const showTarget = (on) => {
    const target = current()?.querySelector('[data-role="drop-target"]');
    if (target) target.hidden = !on;
  };

  document.addEventListener("dragenter", (e) => {
    if (!carriesFiles(e) || !current() || current().dataset.uploading) return;
    e.preventDefault();
    depth += 1;
    showTarget(true);
  });
  document.addEventListener("dragover", (e) => {
    if (!carriesFiles(e) || !current()) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = current().dataset.uploading ? "none" : "copy";
  });
  document.addEventListener("dragleave", (e) => {
    if (!carriesFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (!depth) showTarget(false);
  });
  document.addEventListener("drop", (e) => {
    if (!carriesFiles(e) || !current()) return;
    e.preventDefault(); // the browser would open the file in place of the page
    depth = 0;
    showTarget(false);
    const form = current();
    if (form.dataset.uploading) return;
    // Entries must be taken while the event lasts; their files can be read after.
    const taken = [...e.dataTransfer.items]
      .filter((item) => item.kind === "file")
      .map((item) => ({ entry: item.webkitGetAsEntry?.() || null, file: item.getAsFile() }));
    filesOf(taken).then((files) => addFiles(form, files));
  });
  document.addEventListener("dragend", () => {
    depth = 0;
    showTarget(false);
  });

  async function filesOf(taken) {
    const files = [];
    for (const { entry, file } of taken) {
      if (entry?.isDirectory) await walk(entry, files);
      else if (file) files.push(file);
    }
    return files;
  }

  /** Every file in a dropped folder and its folders, but hidden ones (.DS_Store and such). */
  async function walk(directory, files) {
    const reader = directory.createReader();
    for (;;) {
      // readEntries answers a part at a time (100 in Chromium), then nothing.
      const entries = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!entries.length) return;
      for (const entry of entries) {
        if (entry.name.startsWith(".")) continue;
        if (entry.isDirectory) await walk(entry, files);
        else files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
      }
    }
  }

  // --- the upload --------------------------------------------------------------------------------

  function upload(form) {
    if (form.dataset.uploading) return; // Enter pressed twice, say
    const problem = summarize(form);
    if (problem) return form.querySelector('[data-role="too-much"]')?.scrollIntoView({ block: "center" });
    const kept = chosenFiles(form);
    const data = new FormData();
    const entries = [...new FormData(form)];
    // The text first, then the files: what the server reads before a refusal is kept.
    for (const [name, value] of entries) if (!(value instanceof File)) data.append(name, value);
    for (const [name, value] of entries) {
      if (value instanceof File && (value.name || value.size)) data.append(name, value, value.name);
    }

    const box = document.getElementById("upload-progress");
    const bar = document.getElementById("upload-bar");
    const status = document.getElementById("upload-status");
    const button = form.querySelector('[data-role="submit"]');
    const abort = box?.querySelector('[data-role="abort"]');
    const label = button?.textContent;
    const say = (text) => status && (status.textContent = text);
    form.dataset.uploading = "true";
    if (button) {
      button.disabled = true;
      button.textContent = "Uploading…";
    }
    if (box) box.hidden = false;
    if (bar) bar.value = 0;
    say("Starting the upload…");

    const xhr = new XMLHttpRequest();
    const release = (text) => {
      delete form.dataset.uploading;
      if (button) {
        button.disabled = false;
        button.textContent = label;
      }
      say(text);
    };
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable || !bar) return;
      const percent = Math.floor((100 * e.loaded) / e.total);
      bar.value = percent;
      say(`Uploading: ${percent}% (${megabytes(e.loaded)} of ${megabytes(e.total)}).`);
    });
    xhr.upload.addEventListener("load", () => {
      if (bar) bar.value = 100;
      say("Uploaded. Making the batch…");
    });
    xhr.addEventListener("load", () => {
      const here = new URL(form.action || location.href, location.href).pathname;
      const landed = xhr.responseURL ? new URL(xhr.responseURL).pathname : here;
      if (xhr.status >= 200 && xhr.status < 300 && landed !== here) {
        say("Done. Opening the batch…");
        location.assign(xhr.responseURL);
        return;
      }
      showAnswer(xhr.responseText, xhr.status, kept);
    });
    xhr.addEventListener("error", () =>
      release("The upload failed: the connection to the server was lost. Nothing was made; try again."),
    );
    xhr.addEventListener("abort", () => release("Upload stopped. Nothing was made."));
    abort?.addEventListener("click", () => xhr.abort(), { once: true });
    xhr.open("POST", form.action || location.href);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.send(data);
  }

  /** The server's answer takes this form's place: the form with its errors beside the fields. */
  function showAnswer(html, status, kept) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    const fresh = doc.querySelector("main");
    if (!fresh || !doc.getElementById("batch-form")) {
      // Not the form (an error page): show it as it is.
      document.open();
      document.write(html);
      document.close();
      return;
    }
    document.title = doc.title;
    document.querySelector("main").replaceWith(document.adoptNode(fresh));
    const form = current();
    // The files go back unless an error is about them (too many, too large, not a ZIP).
    const aboutFiles =
      status === 413 ||
      form.querySelector(".errors.banner") ||
      form.querySelector("#field-images.has-error, #field-archive.has-error");
    if (!aboutFiles) {
      for (const [name, files] of Object.entries(kept)) {
        const input = form.querySelector(`input[type="file"][name="${name}"]`);
        if (!input || !files.length) continue;
        const list = new DataTransfer();
        for (const f of files) list.items.add(f);
        input.files = list.files;
      }
      if (kept.images.length || kept.archive.length) {
        for (const el of form.querySelectorAll('[data-role="files-lost"]')) el.hidden = true;
      }
    }
    start(form);
    document.getElementById("form-errors")?.scrollIntoView({ block: "start" });
  }

  start(current());
})();
