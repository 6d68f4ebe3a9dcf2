// The footprint map (Leaflet, vendored): each georeferenced hit's WGS84 bounds as an outlined rectangle with
// its thumbnail placed at those bounds. No tiles unless a basemap URL is set (kept in localStorage).

const BASEMAP_KEY = "rsitr.basemap";
const panel = document.getElementById("map-panel");
let map = null;
let layers = null;
let basemap = null;
const footprints = new Map();

function ensureMap() {
  if (map) return;
  map = L.map("map", { attributionControl: true, zoomSnap: 0.25 });
  layers = L.layerGroup().addTo(map);
  setBasemap(localStorage.getItem(BASEMAP_KEY) || "");
}

export function setBasemap(url) {
  localStorage.setItem(BASEMAP_KEY, url);
  if (!map) return;
  if (basemap) basemap.remove();
  basemap = url ? L.tileLayer(url, { maxZoom: 22, attribution: "basemap: " + new URL(url).host }).addTo(map) : null;
  if (basemap) basemap.bringToBack();
}

export function savedBasemap() {
  return localStorage.getItem(BASEMAP_KEY) || "";
}

// onHover(chipId | null)
export function showFootprints(hits, onHover) {
  const placed = hits.filter(hit => hit.wgs84_bounds);
  footprints.clear();
  panel.hidden = placed.length === 0;
  if (!placed.length) return;
  ensureMap();
  layers.clearLayers();
  const cornersOf = hit => [[hit.wgs84_bounds[1], hit.wgs84_bounds[0]], [hit.wgs84_bounds[3], hit.wgs84_bounds[2]]];
  map.invalidateSize();
  map.fitBounds(L.latLngBounds(placed.flatMap(cornersOf)), { padding: [20, 20] });  // paths render once a view is set
  for (const hit of placed) {
    const corners = cornersOf(hit);
    L.imageOverlay(hit.thumbnail, corners, { opacity: 0.9 }).addTo(layers);
    const rectangle = L.rectangle(corners, { className: "footprint", weight: 2, color: "#1c7ed6", fill: true,
                                             fillOpacity: 0 });
    rectangle.bindTooltip(`${hit.path} (chip ${hit.chip_id})`);
    rectangle.on("mouseover", () => onHover(hit.chip_id));
    rectangle.on("mouseout", () => onHover(null));
    rectangle.addTo(layers);
    rectangle.getElement().dataset.chipId = hit.chip_id;
    footprints.set(hit.chip_id, rectangle);
  }
}

export function highlightFootprint(chipId) {
  for (const [id, rectangle] of footprints) {
    rectangle.getElement()?.classList.toggle("highlight", id === chipId);
    if (id === chipId) rectangle.bringToFront();
  }
}
