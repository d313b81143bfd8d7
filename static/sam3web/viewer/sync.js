/* sam3web viewer · the viewers on the page, and keeping several of them in step.
 *
 * A page may hold several viewers (the compare page). Viewers inside an element with
 * data-viewer-sync are kept in step: moving the opacity, the minimum score, zooming or panning
 * one applies it to the others. Zoom is shared relative to each one's "fit" and the view's
 * centre as a fraction of the image, so images of different sizes stay in step (sharedView and
 * setView, in view.js). The group's data-viewer-sync="off" pauses it; a checkbox with
 * data-viewer-sync-toggle in the group switches it (revealed from its .sv-sync wrapper once the
 * viewer's script runs).
 *
 * `syncing` holds methods of the Viewer (mixed into it in core.js). */

export const EVERYTHING = ["opacity", "threshold", "view"];

export const viewers = []; // every viewer started and still on the page, oldest first

// Kept here rather than on the elements: a module runs once per page, so its state lasts.
const bound = new WeakSet(); // groups whose "Keep in step" checkboxes are wired up
const leaders = new WeakMap(); // group → the viewer the person moved last

export const syncOn = (group) => Boolean(group) && group.dataset.viewerSync !== "off";

/* The other viewers of `viewer`'s group that can take a setting now (their data is in). */
function peersOf(viewer) {
  if (!syncOn(viewer.group)) return [];
  return viewers.filter(
    (o) => o !== viewer && o.group === viewer.group && o.data && !o.broken && !o.gone()
  );
}

export function bindSyncToggles(scope) {
  const groups = [];
  if (scope.matches && scope.matches("[data-viewer-sync]")) groups.push(scope);
  scope.querySelectorAll("[data-viewer-sync]").forEach((g) => groups.push(g));
  for (const group of groups) {
    if (bound.has(group)) continue;
    bound.add(group);
    for (const box of group.querySelectorAll("input[data-viewer-sync-toggle]")) {
      // A checkbox the browser restored on "back" must say what the group does.
      box.checked = syncOn(group);
      const wrap = box.closest(".sv-sync");
      if (wrap) wrap.hidden = false;
      box.addEventListener("change", () => {
        group.dataset.viewerSync = box.checked ? "on" : "off";
        if (!box.checked) return;
        // Back in step: the others take the view of the one the person moved last.
        const live = viewers.filter((o) => o.group === group && o.data && !o.broken && !o.gone());
        const leader = live.includes(leaders.get(group)) ? leaders.get(group) : live[0];
        if (leader) leader.share(EVERYTHING);
      });
    }
  }
}

export const syncing = {
  /* The person changed `what` here: the other viewers in step take it too. They apply it
   * with `following` set, so nothing comes back (no loop), whatever events it fires. */
  share(what) {
    if (this.following || !this.group) return;
    leaders.set(this.group, this); // remembered while paused, to align on resuming
    const peers = peersOf(this);
    if (!peers.length) return;
    const state = { opacity: this.opacity, threshold: this.threshold, view: this.sharedView() };
    for (const other of peers) other.follow(state, what);
  },

  follow(state, what) {
    this.following = true;
    try {
      if (what.includes("opacity") && state.opacity !== this.opacity) {
        this.setOpacity(state.opacity);
      }
      if (what.includes("threshold") && state.threshold !== this.threshold) {
        this.setThreshold(state.threshold);
      }
      if (what.includes("view") && state.view && this.cssW && this.levels.length) {
        this.setView(state.view);
      }
    } finally {
      this.following = false;
    }
  },

  /* Started after the others were moved: join them where they are. */
  joinLeader() {
    const leader = syncOn(this.group) ? leaders.get(this.group) : null;
    if (leader && leader !== this && leader.data && !leader.broken && !leader.gone()) {
      this.follow(
        { opacity: leader.opacity, threshold: leader.threshold, view: leader.sharedView() },
        EVERYTHING
      );
    }
  },
};
