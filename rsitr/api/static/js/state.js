// The search lives in the URL (q, k, like, image, positive, negative, and all, threshold, offset for "find all like
// these", and bbox, after, before for where and when: the API's own parameters), so a reload, back/forward and a
// pasted link reproduce the same results. Chips are named by handle (`like`, `positive`, `negative`: a hit's
// `handle`, its path or path:WxH+X+Y), which outlives a re-index where chip ids do not; ids are still read (older
// links). `image` is the id the server gave an uploaded query image; the server keeps the image for a while (see
// /api/query-images).

const IMAGE_ID = /^[0-9a-f]{16}$/;
export const DEFAULT_THRESHOLD = 0.5;

export function readState(search = window.location.search) {
  const params = new URLSearchParams(search);
  const handles = name => params.getAll(name).map(v => v.trim()).filter(Boolean);
  const like = (params.get("like") || "").trim();
  const image = params.get("image");
  const threshold = Number(params.get("threshold"));
  const offset = Number(params.get("offset"));
  return {
    q: params.get("q") || "",
    k: Number(params.get("k")) || 12,
    like: like || null,
    image: image !== null && IMAGE_ID.test(image) ? image : null,
    positive: handles("positive"),
    negative: handles("negative"),
    all: params.get("all") === "true",
    threshold: threshold > 0 && threshold < 1 ? threshold : DEFAULT_THRESHOLD,
    offset: Number.isInteger(offset) && offset > 0 ? offset : 0,
    ...readLimits(params),
  };
}

export const LIMITS = ["bbox", "after", "before"];

// Where and when the results are limited to (empty: not limited), as the API reads them.
function readLimits(params) {
  return Object.fromEntries(LIMITS.map(name => [name, params.get(name) || ""]));
}

export function limitParams(state) {
  const params = new URLSearchParams();
  for (const name of LIMITS) if (state[name]) params.set(name, state[name]);
  return params;
}

export function hasQuery(state) {
  return Boolean(state.q) || state.like !== null || state.image !== null || state.positive.length > 0;
}

export function toParams(state) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.like !== null) params.set("like", state.like);
  if (state.image !== null) params.set("image", state.image);
  params.set("k", state.k);
  for (const handle of state.positive) params.append("positive", handle);
  for (const handle of state.negative) params.append("negative", handle);
  if (state.all) {
    params.set("all", "true");
    params.set("threshold", state.threshold);
    if (state.offset) params.set("offset", state.offset);
  }
  for (const [name, value] of limitParams(state)) params.set(name, value);
  return params;
}

// replace: the same search shown longer ("more results"), not a new entry in the history
export function pushState(state, replace = false) {
  const url = `${window.location.pathname}?${toParams(state)}`;
  if (url === `${window.location.pathname}${window.location.search}`) return;
  if (replace) window.history.replaceState(null, "", url);
  else window.history.pushState(null, "", url);
}
