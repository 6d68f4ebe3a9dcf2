// The chip detail dialog: larger chip, file, window, score parts, bounds and CRS, acquisition time and STAC item
// and asset (where known), the whole scene with the chip outlined (for a chip of a tiled scene), and the actions
// (more like this, marks).

import { getJSON } from "./api.js";
import { describeWindow, formatBounds, formatProbability } from "./results.js";

const dialog = document.getElementById("detail");
const facts = document.getElementById("detail-facts");
let current = null;

function row(label, value) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  th.textContent = label;
  const td = document.createElement("td");
  td.textContent = value;
  tr.append(th, td);
  return tr;
}

function outline(chip) {
  const box = document.getElementById("scene-outline");
  const { width, height } = chip.scene;
  if (!width || !height) { box.hidden = true; return; }
  box.hidden = false;
  box.style.left = `${100 * chip.window.x / width}%`;
  box.style.top = `${100 * chip.window.y / height}%`;
  box.style.width = `${100 * chip.window.width / width}%`;
  box.style.height = `${100 * chip.window.height / height}%`;
}

// actions: like(hit), mark(hit, kind), markOf(handle), heat(hit) (the scene's heat map), scoring() (how the shown
// results are scored: {findAll, text, localRerank, fusion})
export function setupDetail(actions) {
  document.getElementById("detail-like").addEventListener("click", () => { dialog.close(); actions.like(current); });
  document.getElementById("detail-heat").addEventListener("click", () => { dialog.close(); actions.heat(current); });
  for (const kind of ["wanted", "unwanted"]) {
    const button = document.getElementById(`detail-${kind}`);
    button.addEventListener("click", () => {
      actions.mark(current, kind);
      refreshMarks(actions);
    });
  }
}

function refreshMarks(actions) {
  for (const kind of ["wanted", "unwanted"]) {
    const pressed = actions.markOf(current.handle) === kind;
    document.getElementById(`detail-${kind}`).setAttribute("aria-pressed", String(pressed));
  }
}

// The score's parts as rows, and a sentence on how to read them (as the README explains them). scoring: how the
// shown results were scored: findAll, text (a text query), localRerank and fusion (the API's /api/info).
function scoreRows(hit, scoring) {
  const explain = document.getElementById("detail-scores");
  if (scoring.findAll) {
    explain.textContent = "Find all like these fits a classifier (a logistic regression, calibrated on held-out " +
      "marks) on the chips you marked wanted and not wanted, the query only guiding it, and scores every chip of " +
      "the index: the probability says how likely the chip is wanted (0.5: even odds). Every chip at or above the " +
      "threshold is found.";
    return [row("probability", `${formatProbability(hit.score)}: how likely this chip is one you want, from 0 to 1`)];
  }
  const rows = [row("score", `${hit.score.toFixed(4)} (ranks the results, highest first)`),
                row("global (cosine)", `${hit.global_score.toFixed(4)}: the whole chip against the whole query, ` +
                                       "from −1 to 1 (1: the same direction)")];
  if (hit.local_score === null || hit.local_score === undefined) {
    explain.textContent = (scoring.text && !scoring.localRerank ?
      "Text searches on this index rank by the global cosine alone: its model was trained without the local " +
      "(patch–word) similarity, or the index keeps no patch tokens, so the score is that cosine." :
      "This search ranks by the global cosine alone (searches by example image, by a chip and without " +
      "re-ranking do), so the score is that cosine.") + " Compare scores within one search.";
    return [...rows, row("local (patch–word)", "not used for this search")];
  }
  const { global_weight: a, local_weight: b } = scoring.fusion || { global_weight: "a", local_weight: "b" };
  explain.textContent = `The score fuses two similarities: ${a} × global + ${b} × local. The local part ` +
    "compares every patch of the chip with every word of the query (the root of the summed squared cosines of " +
    "all patch–word pairs): it grows with the number of pairs that match and is not bounded by 1, so a fused " +
    "score can exceed 1. Compare scores within one search, not across searches.";
  return [...rows,
          row("local (patch–word)", `${hit.local_score.toFixed(4)}: each patch against each word, 0 and up`),
          row("fused", `${a} × ${hit.global_score.toFixed(4)} + ${b} × ${hit.local_score.toFixed(4)} = ` +
                       hit.score.toFixed(4))];
}

export async function openDetail(hit, actions) {
  current = hit;
  document.getElementById("detail-image").src = `/api/chips/${hit.chip_id}/thumbnail?size=512`;
  document.getElementById("detail-image").alt = `${hit.path}, ${describeWindow(hit)}`;
  document.getElementById("detail-heat").hidden = !hit.wgs84_bounds;
  facts.replaceChildren(
    row("file", hit.path),
    row("window", describeWindow(hit)),
    ...scoreRows(hit, actions.scoring()),
    row("bounds", hit.bounds ? formatBounds(hit.bounds, hit.crs) : "the image is not georeferenced"));
  if (hit.wgs84_bounds) facts.append(row("WGS84", formatBounds(hit.wgs84_bounds, "lon/lat")));
  if (hit.acquired) facts.append(row("acquired", hit.acquired));
  if (hit.item_id) facts.append(row("STAC item", hit.item_id));
  if (hit.href) facts.append(row("asset", hit.href));
  refreshMarks(actions);
  // the whole scene with the chip outlined; not for a chip that is its whole image (the same picture twice)
  const scene = document.getElementById("scene-image");
  document.getElementById("scene").hidden = hit.whole_image;
  document.getElementById("scene-outline").hidden = true;
  scene.removeAttribute("src");
  if (!hit.whole_image) scene.src = `/api/files/preview?${new URLSearchParams({ path: hit.path, size: 512 })}`;
  if (!dialog.open) dialog.showModal();
  if (hit.whole_image) return;
  try {
    outline(await getJSON(`/api/chips/${hit.chip_id}`));
  } catch (error) {
    facts.append(row("scene", error.message));
  }
}
