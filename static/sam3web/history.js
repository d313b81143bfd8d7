/* sam3web · history page: says how many runs are ticked for comparing, and enables the
 * Compare button for 2 to 4 of them. Without this script the button always submits and the
 * compare page explains what is wrong. Delegated, so it survives htmx swapping the results. */
(function () {
  "use strict";
  const MIN = 2;
  const MAX = 4;

  function update() {
    const form = document.getElementById("compare-form");
    if (!form) return;
    const ticked = document.querySelectorAll('input[name="ids"][form="compare-form"]:checked').length;
    const button = form.querySelector("button[type=submit]");
    const hint = form.querySelector(".hint");
    button.disabled = ticked < MIN || ticked > MAX;
    if (ticked === 0) hint.textContent = "Tick 2 to 4 runs.";
    else if (ticked < MIN) hint.textContent = "1 ticked: tick one more.";
    else if (ticked > MAX) hint.textContent = `${ticked} ticked: at most ${MAX}.`;
    else hint.textContent = `${ticked} ticked.`;
  }

  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches('input[name="ids"]')) update();
  });
  document.addEventListener("htmx:afterSettle", update);
  update();
})();
