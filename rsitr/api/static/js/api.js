// Talking to the JSON API; every failure becomes a sentence a person can act on (never raw JSON).

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {  // FastAPI validation errors: [{loc: [...], msg: "..."}]
    return "the request was not valid: " + detail.map(item => {
      const where = (item.loc || []).filter(part => part !== "query" && part !== "body").join(" ");
      return where ? `${where}: ${item.msg}` : item.msg;
    }).join("; ");
  }
  return "the server gave no reason";
}

export async function getJSON(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new Error("The server could not be reached. Is `rsitr serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy error page, for instance
  }
  if (!response.ok) {
    const reason = body ? describeDetail(body.detail) : `HTTP status ${response.status}`;
    throw new Error(`The search failed: ${reason}.`.replace(/\.\.$/, "."));
  }
  return body;
}
