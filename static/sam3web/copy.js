/* sam3web: "Copy" buttons (the API page). A button names what it copies by id
   (data-copy-from): a read-only field's value or a code block's text. Without JavaScript the
   buttons stay hidden and the text is there to select. The Clipboard API exists only on
   https:// and localhost; on a team's plain http:// address the selection is copied the older
   way. A status line says what happened, for screen readers too. */
(() => {
  "use strict";
  const status = document.getElementById("copy-status");

  const say = (button, text) => {
    const label = button.querySelector("[data-label]") || button;
    const before = label.dataset.label || label.textContent;
    label.dataset.label = before;
    label.textContent = text;
    if (status) status.textContent = text === "Copied" ? `Copied ${button.dataset.what || ""}.` : text;
    clearTimeout(button.sam3Timer);
    button.sam3Timer = setTimeout(() => (label.textContent = before), 2500);
  };

  const isField = (source) =>
    source instanceof HTMLInputElement || source instanceof HTMLTextAreaElement;

  const select = (source) => {
    if (isField(source)) {
      source.focus();
      source.select();
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  };

  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest("button[data-copy-from]");
    const source = button && document.getElementById(button.dataset.copyFrom);
    if (!source) return;
    const text = isField(source) ? source.value : source.textContent;
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no Clipboard API");
      await navigator.clipboard.writeText(text);
      say(button, "Copied");
    } catch (error) {
      select(source);
      let copied = false;
      try {
        copied = document.execCommand("copy");
      } catch (ignored) {
        copied = false;
      }
      say(button, copied ? "Copied" : "Selected: press Ctrl+C");
    }
  });

  const show = () => document.querySelectorAll("button[data-copy-from]").forEach((b) => (b.hidden = false));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", show);
  else show();
})();
