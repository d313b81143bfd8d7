/* sam3web: "Copy" buttons beside the share panel's links. Without JavaScript the buttons stay
   hidden and the links are plain read-only fields to select. htmx may swap the panel in again
   (its script tag with it), so this sets itself up once and shows new buttons on each swap. */
(() => {
  "use strict";
  const show = () => {
    if (!navigator.clipboard) return; // without the Clipboard API, selecting the field it is
    document.querySelectorAll("button[data-copy]").forEach((b) => (b.hidden = false));
  };
  if (!window.sam3Share) {
    window.sam3Share = { show };
    document.addEventListener("click", async (event) => {
      const button = event.target.closest && event.target.closest("button[data-copy]");
      const field = button && document.getElementById(button.dataset.copy);
      if (!field) return;
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        button.firstChild.textContent = "Copied";
      } catch (error) {
        button.firstChild.textContent = "Press Ctrl+C";
      }
    });
    document.addEventListener("htmx:afterSettle", show);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", show);
  else show();
})();
