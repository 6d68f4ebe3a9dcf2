// The chip detail dialog: larger chip, file, window, score parts, bounds and CRS, the whole scene with the
// chip outlined, and the actions (more like this, marks).

import { getJSON } from "./api.js";
import { formatBounds, formatWindow } from "./results.js";

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

// actions: like(hit), mark(hit, kind), markOf(chipId)
export function setupDetail(actions) {
  document.getElementById("detail-like").addEventListener("click", () => { dialog.close(); actions.like(current); });
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
    document.getElementById(`detail-${kind}`).setAttribute("aria-pressed", String(actions.markOf(current.chip_id) === kind));
  }
}

export async function openDetail(hit, actions) {
  current = hit;
  document.getElementById("detail-image").src = `/api/chips/${hit.chip_id}/thumbnail?size=512`;
  document.getElementById("detail-image").alt = `${hit.path}, ${formatWindow(hit.window)}`;
  facts.replaceChildren(
    row("file", hit.path),
    row("window", formatWindow(hit.window)),
    row("score", hit.score.toFixed(4)),
    row("global (cosine)", hit.global_score.toFixed(4)),
    row("local (patch–word)", hit.local_score === null || hit.local_score === undefined ? "not used for this search"
                                                                                      : hit.local_score.toFixed(4)),
    row("bounds", hit.bounds ? formatBounds(hit.bounds, hit.crs) : "the image is not georeferenced"));
  if (hit.wgs84_bounds) facts.append(row("WGS84", formatBounds(hit.wgs84_bounds, "lon/lat")));
  refreshMarks(actions);
  const scene = document.getElementById("scene-image");
  document.getElementById("scene-outline").hidden = true;
  scene.src = `/api/files/preview?${new URLSearchParams({ path: hit.path, size: 512 })}`;
  if (!dialog.open) dialog.showModal();
  try {
    outline(await getJSON(`/api/chips/${hit.chip_id}`));
  } catch (error) {
    facts.append(row("scene", error.message));
  }
}
