// Wiring of the search page: the URL holds the search, the API ranks, this module only shows.
// No ranking happens here: feedback marks are sent to the API, which applies them.

import { getJSON } from "./api.js";
import { hasQuery, pushState, readState, toParams } from "./state.js";
import { highlightCard, renderResults } from "./results.js";
import { openDetail, setupDetail } from "./detail.js";
import { highlightFootprint, savedBasemap, setBasemap, showFootprints } from "./map.js";

const SPINNER_DELAY_MS = 300;
const INFO_REFRESH_MS = 10_000;
const $ = id => document.getElementById(id);
const grid = $("results");

let state = readState();  // the search the shown results answer
const marks = new Map();  // chip id -> "wanted" | "unwanted"; sent to the API on "Refine"
let hits = [];
let removed = 0;  // not-wanted chips the API left out of these results
let info = null;
let serial = 0;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

async function loadInfo() {
  try {
    info = await getJSON("/api/info");
  } catch (error) {
    $("index-info").textContent = error.message.replace("The search failed", "The index description failed");
    return;
  }
  const pretrained = info.pretrained ? ` (${info.pretrained.split(/[\\/]/).pop()})` : "";  // a checkpoint's name
  $("index-info").textContent = `${info.name} · ${plural(info.files, "file")} · ${plural(info.chips, "chip")} · ` +
    `model ${info.model}${pretrained} · ${info.index_type} index${info.settings.backend === "lancedb" ? " (LanceDB)" : ""}`;
  const notice = $("notice");
  if (info.incomplete_files > 0) {
    notice.textContent = `This index is still being built: ${info.files - info.incomplete_files} of ` +
      `${plural(info.files, "file")} (${plural(info.chips, "chip")}) are indexed so far; the new chips become ` +
      "searchable when the indexing run finishes.";
    notice.hidden = false;
    setTimeout(loadInfo, INFO_REFRESH_MS);
  } else if (info.chips === 0) {
    notice.textContent = "This index holds no chips yet: build it with `rsitr index`, then reload this page.";
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
}

function describe(current) {
  const what = current.image !== null ? "like the example image" : current.q ? `for “${current.q}”` :
    current.like !== null ? `like chip ${current.like}` : "from your marks";
  const feedback = current.positive.length + current.negative.length ?
    `, refined by ${current.positive.length} wanted and ${current.negative.length} not wanted` : "";
  const left = removed ? ` (${plural(removed, "not-wanted chip")} removed)` : "";
  return `${what}${feedback}${left}`;
}

function updateFeedbackBar() {
  const wanted = [...marks.values()].filter(kind => kind === "wanted").length;
  const unwanted = marks.size - wanted;
  const applied = state.positive.length + state.negative.length > 0;
  $("feedback").hidden = marks.size === 0 && !applied;
  $("marks").textContent = `${wanted} wanted, ${unwanted} not wanted`;
}

function show(body) {
  hits = body.results;
  removed = body.removed || 0;
  renderGrid();
  showFootprints(hits, hover);
  // fewer hits than asked for: every chip the search can reach is shown
  $("more").hidden = hits.length < state.k || state.k >= maxResults();
  const exports = $("exports");
  exports.hidden = hits.length === 0;
  if (!exports.hidden) {
    $("export-geojson").href = `/api/search?${toParams(state)}&format=geojson`;
    $("export-csv").href = `/api/search?${toParams(state)}&format=csv`;
  }
  if (hits.length) {
    setStatus(`${plural(hits.length, "result")} ${describe(state)}.`);
  } else if (info && info.chips === 0) {
    setStatus("No results: the index holds no chips yet.");
  } else {
    setStatus(`No chips match this search (${describe(state)}). Try other words or fewer marks.`);
  }
}

async function run(request) {
  const mine = ++serial;
  const timer = setTimeout(() => { if (mine === serial) $("spinner").hidden = false; }, SPINNER_DELAY_MS);
  setStatus("");
  try {
    const body = await request();
    if (mine === serial) show(body);
  } catch (error) {
    if (mine !== serial) return;
    show({ results: [] });
    setStatus(error.message, true);
  } finally {
    clearTimeout(timer);
    if (mine === serial) $("spinner").hidden = true;
  }
}

function maxResults() {
  return info ? info.max_results : Number($("k").max);
}

function showQueryImage() {
  $("query-image").hidden = state.image === null;
  if (state.image !== null) $("query-image-img").src = `/api/query-images/${state.image}`;
}

function searchFromState() {
  marks.clear();
  state.positive.forEach(id => marks.set(id, "wanted"));
  state.negative.forEach(id => marks.set(id, "unwanted"));
  $("query").value = state.q;
  $("k").value = state.k;
  showQueryImage();
  if (!hasQuery(state)) {
    show({ results: [] });
    setStatus("Type what you look for, or pick an example image.");
    return;
  }
  run(() => getJSON(`/api/search?${toParams(state)}`));
}

function go(next) {
  state = next;
  pushState(state);
  searchFromState();
}

function renderGrid() {
  renderResults(grid, hits, marks, { open: hit => openDetail(hit, detailActions), mark, like, hover });
  updateFeedbackBar();
}

function mark(hit, kind) {
  if (marks.get(hit.chip_id) === kind) marks.delete(hit.chip_id);
  else marks.set(hit.chip_id, kind);
  renderGrid();
}

function like(hit) {
  go({ q: "", k: state.k, like: hit.chip_id, image: null, positive: [], negative: [] });
}

function hover(chipId) {
  highlightCard(grid, chipId);
  highlightFootprint(chipId);
}

const detailActions = { like, mark, markOf: chipId => marks.get(chipId), fusion: () => info && info.fusion };
setupDetail(detailActions);

$("text-form").addEventListener("submit", event => {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) {
    setStatus("Type what you look for first, or pick an example image.");
    return;
  }
  go({ q, k: Number($("k").value) || 12, like: null, image: null, positive: [], negative: [] });
});

$("image-form").addEventListener("submit", event => {
  event.preventDefault();
  const data = new FormData();
  data.append("file", $("image").files[0]);
  data.append("k", $("k").value);
  const k = Number($("k").value) || 12;
  marks.clear();
  $("query").value = "";
  // The server keeps the image under an id: the id goes into the URL like a text query does.
  const mine = serial + 1;  // the number run() gives this search; a later search supersedes it
  run(async () => {
    const body = await getJSON("/api/search/image", { method: "POST", body: data });
    if (mine === serial) {
      state = { q: "", k, like: null, image: body.image, positive: [], negative: [] };
      pushState(state);
      showQueryImage();
    }
    return body;
  });
});

$("more").addEventListener("click", () => {
  // the same search, shown longer: marks not yet applied stay
  state = { ...state, k: Math.min(state.k + (Number($("k").value) || 12), maxResults()) };
  pushState(state, true);
  run(() => getJSON(`/api/search?${toParams(state)}`));
});

$("refine").addEventListener("click", () => {
  const positive = [...marks].filter(([, kind]) => kind === "wanted").map(([id]) => id);
  const negative = [...marks].filter(([, kind]) => kind === "unwanted").map(([id]) => id);
  if (!hasQuery({ ...state, positive })) {
    setStatus("Mark at least one result as wanted to refine a search by image.", true);
    return;
  }
  go({ ...state, positive, negative });
});

$("clear-marks").addEventListener("click", () => {
  if (state.positive.length + state.negative.length && hasQuery({ ...state, positive: [] })) {
    go({ ...state, positive: [], negative: [] });
  } else {
    marks.clear();
    renderGrid();
  }
});

$("basemap").value = savedBasemap();
$("basemap").addEventListener("change", event => {
  try {
    setBasemap(event.target.value.trim());
  } catch {
    setStatus("The basemap URL is not a valid URL; it should look like https://host/{z}/{x}/{y}.png.", true);
  }
});

window.addEventListener("popstate", () => {
  state = readState();
  searchFromState();
});

loadInfo();
searchFromState();
