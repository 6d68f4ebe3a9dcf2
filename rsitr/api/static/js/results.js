// The grid of result cards: thumbnail (opens the detail), scores, place, and wanted / not wanted marks.

// Every digit the API sends (JavaScript prints the shortest text that reads back as the same number).
export function formatBounds(bounds, crs) {
  if (!bounds) return "";
  const [left, bottom, right, top] = bounds.map(String);
  return `${crs}: ${left}, ${bottom} – ${right}, ${top}`;
}

export function formatWindow(window) {
  return `${window.width}×${window.height} at ${window.x},${window.y}`;
}

// A find-all probability: four decimals, or near 1 as many as tell it from 1 (two significant digits of 1 − p, up to
// 12), so the first page ranks (0.99998, 0.9999962) instead of reading 1.0000 each; as rsitr's format_probability.
export function formatProbability(p) {
  const gap = 1 - p;
  if (gap >= 1e-4) return p.toFixed(4);
  if (gap < 1e-12) return `>${(1 - 1e-12).toFixed(12)}`;
  return p.toFixed(Math.min(12, Math.ceil(-Math.log10(gap)) + 1));
}

// The chip's place in its image: its pixel window, or nothing for an image that was not tiled (the chip is all of it).
export function describeWindow(hit) {
  return hit.whole_image ? "the whole image" : formatWindow(hit.window);
}

function markButton(label, kind, pressed, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `mark-${kind}`;
  button.textContent = label;
  button.setAttribute("aria-pressed", String(pressed));
  button.addEventListener("click", onClick);
  return button;
}

// handlers: open(hit), mark(hit, kind), like(hit), hover(chipId | null); offset: the rank before the first hit
// (pages of "find all"), whose scores are probabilities
export function renderResults(grid, hits, marks, handlers, offset = 0, scoreName = "score") {
  grid.replaceChildren();
  hits.forEach((hit, index) => {
    const figure = document.createElement("figure");
    figure.className = "hit";
    figure.dataset.chipId = hit.chip_id;
    const mark = marks.get(hit.handle);
    if (mark) figure.classList.add(mark);
    const img = document.createElement("img");
    img.src = hit.thumbnail;
    img.alt = `${hit.path}, ${describeWindow(hit)}`;
    img.title = "Open the chip detail";
    img.addEventListener("click", () => handlers.open(hit));
    const caption = document.createElement("figcaption");
    const score = document.createElement("div");
    score.className = "score";
    const value = scoreName === "probability" ? formatProbability(hit.score) : hit.score.toFixed(4);
    score.textContent = `#${index + 1 + offset}  ${scoreName} ${value}`;
    const where = document.createElement("div");
    where.className = "where";
    where.textContent = hit.path;
    if (!hit.whole_image) {  // a chip of a tiled scene: where in it (kept on one line)
      const window = document.createElement("span");
      window.className = "window";
      window.textContent = `[${formatWindow(hit.window)}]`;
      where.append(" ", window);
    }
    caption.append(score, where);
    if (hit.stale) {
      const stale = document.createElement("div");
      stale.className = "stale";
      stale.textContent = "Stale: the image changed or vanished since indexing";
      caption.append(stale);
    }
    if (hit.bounds) {
      const coords = document.createElement("div");
      coords.className = "coords";
      coords.textContent = formatBounds(hit.bounds, hit.crs);
      caption.append(coords);
    }
    const buttons = document.createElement("div");
    buttons.className = "marks";
    buttons.append(
      markButton("Wanted", "wanted", mark === "wanted", () => handlers.mark(hit, "wanted")),
      markButton("Not wanted", "unwanted", mark === "unwanted", () => handlers.mark(hit, "unwanted")),
      markButton("More like this", "like", false, () => handlers.like(hit)));
    caption.append(buttons);
    figure.append(img, caption);
    figure.addEventListener("mouseenter", () => handlers.hover(hit.chip_id));
    figure.addEventListener("mouseleave", () => handlers.hover(null));
    grid.append(figure);
  });
}

export function highlightCard(grid, chipId) {
  for (const figure of grid.querySelectorAll("figure.hit")) {
    figure.classList.toggle("highlight", Number(figure.dataset.chipId) === chipId);
  }
}
