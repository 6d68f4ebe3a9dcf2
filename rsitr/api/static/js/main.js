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
let fromImage = false;
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
    `model ${info.model}${pretrained} · ${info.settings.index_type} index`;
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
  const what = fromImage ? "for the example image" : current.q ? `for “${current.q}”` :
    current.like !== null ? `like chip ${current.like}` : "from your marks";
  const feedback = current.positive.length + current.negative.length ?
    `, refined by ${current.positive.length} wanted and ${current.negative.length} not wanted` : "";
  return `${what}${feedback}`;
}

function updateFeedbackBar() {
  const wanted = [...marks.values()].filter(kind => kind === "wanted").length;
  const unwanted = marks.size - wanted;
  const applied = state.positive.length + state.negative.length > 0;
  $("feedback").hidden = marks.size === 0 && !applied;
  $("marks").textContent = `${wanted} wanted, ${unwanted} not wanted`;
}

function show(results) {
  hits = results;
  renderGrid();
  showFootprints(hits, hover);
  const exports = $("exports");
  exports.hidden = fromImage || hits.length === 0;
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
    if (mine === serial) show(body.results);
  } catch (error) {
    if (mine !== serial) return;
    show([]);
    setStatus(error.message, true);
  } finally {
    clearTimeout(timer);
    if (mine === serial) $("spinner").hidden = true;
  }
}

function searchFromState() {
  fromImage = false;
  marks.clear();
  state.positive.forEach(id => marks.set(id, "wanted"));
  state.negative.forEach(id => marks.set(id, "unwanted"));
  $("query").value = state.q;
  $("k").value = state.k;
  if (!hasQuery(state)) {
    show([]);
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
  go({ q: "", k: state.k, like: hit.chip_id, positive: [], negative: [] });
}

function hover(chipId) {
  highlightCard(grid, chipId);
  highlightFootprint(chipId);
}

const detailActions = { like, mark, markOf: chipId => marks.get(chipId) };
setupDetail(detailActions);

$("text-form").addEventListener("submit", event => {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) {
    setStatus("Type what you look for first, or pick an example image.");
    return;
  }
  go({ q, k: Number($("k").value) || 12, like: null, positive: [], negative: [] });
});

$("image-form").addEventListener("submit", event => {
  event.preventDefault();
  const data = new FormData();
  data.append("file", $("image").files[0]);
  data.append("k", $("k").value);
  state = { q: "", k: Number($("k").value) || 12, like: null, positive: [], negative: [] };
  window.history.pushState(null, "", window.location.pathname);  // an upload cannot live in a link
  marks.clear();
  fromImage = true;
  run(() => getJSON("/api/search/image", { method: "POST", body: data }));
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
  if (state.positive.length + state.negative.length && (state.q || state.like !== null)) {
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
