// Wiring of the search page: the URL holds the search, the API ranks, this module only shows.
// No ranking happens here: feedback marks are sent to the API, which applies them.

import { getJSON } from "./api.js";
import { DEFAULT_THRESHOLD, LIMITS, hasQuery, limitParams, pushState, readState, toParams } from "./state.js";
import { highlightCard, renderResults } from "./results.js";
import { openDetail, setupDetail } from "./detail.js";
import { highlightFootprint, refreshView, savedBasemap, setBasemap, setServerBasemap, showFootprints,
  viewBounds } from "./map.js";
import { clearHeat, setupHeat, showHeat } from "./heatmap.js";

const SPINNER_DELAY_MS = 300;
const INFO_REFRESH_MS = 10_000;
const $ = id => document.getElementById(id);
const grid = $("results");

let state = readState();  // the search the shown results answer
const marks = new Map();  // chip handle -> "wanted" | "unwanted"; sent to the API on "Refine" or "Find all"
let hits = [];
let removed = 0;  // not-wanted chips the API left out of these results
let found = null;  // "find all": {count, scored, calibrated} of the shown search
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
  setServerBasemap(info.basemap);
  $("basemap").value = savedBasemap();
  $("settings").hidden = info.georeferenced_files === 0;  // no map: no map settings
  showMapNote();
}

// Why there is no map, when there is none: an archive without coordinates, or results without any.
function showMapNote() {
  const note = $("map-note");
  const placed = hits.some(hit => hit.wgs84_bounds);
  if (info && info.georeferenced_files === 0) {
    note.textContent = `No map: none of the ${plural(info.files, "image")} of this index is georeferenced (plain ` +
      "JPEG and PNG files carry no coordinates; GeoTIFFs do).";
  } else if (hits.length && !placed) {
    note.textContent = "No map for these results: none of them lies in a georeferenced image.";
  } else {
    note.textContent = "";
  }
  note.hidden = note.textContent === "";
  $("view-tabs").hidden = $("map-panel").hidden;
  if ($("view-tabs").hidden) showView("results");
}

function showView(view) {
  document.body.dataset.view = view;
  $("tab-results").setAttribute("aria-pressed", String(view === "results"));
  $("tab-map").setAttribute("aria-pressed", String(view === "map"));
  if (view === "map") refreshView();
}

function describe(current) {
  const what = current.image !== null ? "like the example image" : current.q ? `for “${current.q}”` :
    current.like !== null ? `like ${/^\d+$/.test(current.like) ? "chip " : ""}${current.like}` : "from your marks";
  const feedback = current.positive.length + current.negative.length ?
    `, refined by ${current.positive.length} wanted and ${current.negative.length} not wanted` : "";
  const left = removed ? ` (${plural(removed, "not-wanted chip")} removed)` : "";
  return `${what}${feedback}${left}`;
}

// The marks the search shown applied (its URL's): each chip once, however it was named.
function applied(kind) {
  return new Set(kind === "wanted" ? state.positive : state.negative).size;
}

// The marks of the chips shown, and apart from them the marks of chips that are not (refine removed the not-wanted
// ones; wanted ones may lie on another page): all of them still apply. The counts are the status line's; marks
// changed since the search shown was run are said to be so, not counted apart.
function updateFeedbackBar() {
  const shown = new Set(hits.map(hit => hit.handle));
  const count = (kind, onPage) => [...marks].filter(([id, mark]) => mark === kind && shown.has(id) === onPage).length;
  const anyApplied = state.positive.length + state.negative.length > 0;
  $("feedback").hidden = marks.size === 0 && !anyApplied;
  // Every mark is counted, shown or not, so the numbers are the status line's ("like your 8 wanted")
  const hidden = [count("unwanted", false) ? `${count("unwanted", false)} not wanted left out of the results` : "",
                  count("wanted", false) ? `${count("wanted", false)} wanted not on this page` : ""].filter(Boolean);
  const wanted = count("wanted", true) + count("wanted", false);
  const unwanted = count("unwanted", true) + count("unwanted", false);
  const changed = anyApplied && (wanted !== applied("wanted") || unwanted !== applied("unwanted") ||
                                 [...marks].some(([handle, mark]) => !state[mark === "wanted" ? "positive" : "negative"]
                                                                       .includes(handle)));
  $("marks").textContent = `${wanted} wanted, ${unwanted} not wanted` +
    (hidden.length ? ` (${hidden.join("; ")})` : "") +
    (changed ? ": changed since this search, which used " +
               `${applied("wanted")} wanted and ${applied("unwanted")} not wanted` : "");
  $("find-all").disabled = ![...marks.values()].includes("wanted");
}

// Chips the URL names by id (an older link, or typed) and the results show are named by their handle from now on,
// in the marks and the URL, so the link outlives a re-index.
function renameByHandle() {
  const handleOf = new Map(hits.map(hit => [String(hit.chip_id), hit.handle]));
  const renamed = list => list.map(name => handleOf.get(name) || name);
  const positive = renamed(state.positive), negative = renamed(state.negative);
  for (const [name, mark] of [...marks]) {
    if (handleOf.has(name) && handleOf.get(name) !== name) {
      marks.delete(name);
      marks.set(handleOf.get(name), mark);
    }
  }
  const differs = (names, before) => names.some((name, i) => name !== before[i]);
  if (differs(positive, state.positive) || differs(negative, state.negative)) {
    state = { ...state, positive, negative };
    pushState(state, true);
  }
}

function show(body) {
  hits = body.results;
  renameByHandle();
  removed = body.removed || 0;
  found = body.count === undefined ? null : body;
  renderGrid();
  clearHeat();
  showFootprints(hits, hover);
  showMapNote();
  // fewer hits than asked for: every chip the search can reach is shown
  $("more").hidden = found !== null || hits.length < state.k || state.k >= maxResults();
  showPager();
  const exports = $("exports");
  exports.hidden = hits.length === 0;
  if (!exports.hidden) {
    $("export-geojson").href = `/api/search?${toParams(state)}&format=geojson`;
    $("export-csv").href = `/api/search?${toParams(state)}&format=csv`;
  }
  if (found) {
    setStatus(`Found ${plural(found.count, "chip")} like your ${applied("wanted")} wanted with a probability of ` +
              `at least ${state.threshold} (of ${plural(found.scored, "chip")} scored)` +
              (found.calibrated ? "." : "; mark two or more wanted chips for calibrated probabilities."));
  } else if (hits.length) {
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

// "find all": the threshold and the pages of what was found
function showPager() {
  $("pager").hidden = !found;
  if (!found) return;
  $("threshold").value = state.threshold;
  $("page-info").textContent = found.count ?
    `${state.offset + 1}–${state.offset + hits.length} of ${found.count}` : "nothing found";
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = state.offset + state.k >= found.count;
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

// The where-and-when fields of the form, which every new search takes along.
function formLimits() {
  return Object.fromEntries(LIMITS.map(name => [name, $(name).value.trim()]));
}

function showLimits() {
  for (const name of LIMITS) $(name).value = state[name];
  $("limits").open = LIMITS.some(name => state[name]);
}

function go(next) {
  state = { ...next, ...formLimits() };
  pushState(state);
  searchFromState();
}

function renderGrid() {
  renderResults(grid, hits, marks, { open: hit => openDetail(hit, detailActions), mark, like, hover },
                found ? state.offset : 0, found ? "probability" : "score");
  updateFeedbackBar();
}

function mark(hit, kind) {
  if (marks.get(hit.handle) === kind) marks.delete(hit.handle);
  else marks.set(hit.handle, kind);
  renderGrid();
}

const RANKED = { all: false, threshold: DEFAULT_THRESHOLD, offset: 0 };

function like(hit) {
  go({ q: "", k: state.k, like: hit.handle, image: null, positive: [], negative: [], ...RANKED });
}

// The heat map of the hit's scene for the search shown (its scores: the API's)
async function heat(hit) {
  const params = toParams(state);
  for (const name of ["k", "offset", "threshold"]) params.delete(name);
  params.set("path", hit.path);
  try {
    const body = await getJSON(`/api/heatmap?${params}`);
    params.set("format", "geotiff");
    showView("map");
    showHeat(body, `/api/heatmap?${params}`);
  } catch (error) {
    setStatus(error.message.replace("The search failed", "The heat map failed"), true);
  }
}

function hover(chipId) {
  highlightCard(grid, chipId);
  highlightFootprint(chipId);
}

const detailActions = {
  like, mark, heat, markOf: handle => marks.get(handle),
  scoring: () => ({ findAll: found !== null, text: Boolean(state.q), localRerank: Boolean(info && info.local_rerank),
                    fusion: info && info.fusion }),
};
setupDetail(detailActions);
setupHeat();

$("text-form").addEventListener("submit", event => {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) {
    setStatus("Type what you look for first, or pick an example image.");
    return;
  }
  go({ q, k: Number($("k").value) || 12, like: null, image: null, positive: [], negative: [], ...RANKED });
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
    const limits = formLimits();
    const body = await getJSON(`/api/search/image?${limitParams(limits)}`, { method: "POST", body: data });
    if (mine === serial) {
      state = { q: "", k, like: null, image: body.image, positive: [], negative: [], ...RANKED, ...limits };
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

function marked(kind) {
  return [...marks].filter(([, mark]) => mark === kind).map(([id]) => id);
}

$("refine").addEventListener("click", () => {
  const positive = marked("wanted");
  if (!hasQuery({ ...state, positive })) {
    setStatus("Mark at least one result as wanted to refine a search by image.", true);
    return;
  }
  go({ ...state, positive, negative: marked("unwanted"), ...RANKED });
});

$("find-all").addEventListener("click", () => {
  go({ ...state, positive: marked("wanted"), negative: marked("unwanted"), all: true, offset: 0 });
});

$("threshold").addEventListener("change", () => {
  const threshold = Number($("threshold").value);
  if (!(threshold > 0 && threshold < 1)) {
    setStatus("The probability threshold lies between 0 and 1 (exclusive), e.g. 0.5.", true);
    return;
  }
  // A second change event for the same value (the field losing focus, e.g. to "Next page") must not reset the page.
  if (threshold === state.threshold) return;
  go({ ...state, threshold, offset: 0 });
});

$("page-prev").addEventListener("click", () => go({ ...state, offset: Math.max(0, state.offset - state.k) }));
$("page-next").addEventListener("click", () => go({ ...state, offset: state.offset + state.k }));
$("back-to-search").addEventListener("click", () => go({ ...state, ...RANKED }));
$("tab-results").addEventListener("click", () => showView("results"));
$("tab-map").addEventListener("click", () => showView("map"));

$("clear-marks").addEventListener("click", () => {
  if (state.positive.length + state.negative.length && hasQuery({ ...state, positive: [] })) {
    go({ ...state, positive: [], negative: [], ...RANKED });
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

$("bbox-from-map").addEventListener("click", () => {
  const bounds = viewBounds();
  if (bounds) $("bbox").value = bounds;
  else setStatus("The map shows no area yet: search first, then zoom the map to the area to keep.", true);
});

window.addEventListener("popstate", () => {
  state = readState();
  showLimits();
  searchFromState();
});

loadInfo();
showLimits();
searchFromState();
