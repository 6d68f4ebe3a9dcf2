// The search lives in the URL (q, k, like, positive, negative: the API's own parameters), so a reload,
// back/forward and a pasted link reproduce the same results.

export function readState(search = window.location.search) {
  const params = new URLSearchParams(search);
  const ids = name => params.getAll(name).flatMap(v => v.split(",")).map(Number).filter(Number.isInteger);
  const like = params.get("like");
  return {
    q: params.get("q") || "",
    k: Number(params.get("k")) || 12,
    like: like !== null && Number.isInteger(Number(like)) ? Number(like) : null,
    positive: ids("positive"),
    negative: ids("negative"),
  };
}

export function hasQuery(state) {
  return Boolean(state.q) || state.like !== null || state.positive.length > 0;
}

export function toParams(state) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.like !== null) params.set("like", state.like);
  params.set("k", state.k);
  for (const id of state.positive) params.append("positive", id);
  for (const id of state.negative) params.append("negative", id);
  return params;
}

export function pushState(state) {
  const url = `${window.location.pathname}?${toParams(state)}`;
  if (url !== `${window.location.pathname}${window.location.search}`) window.history.pushState(null, "", url);
}
