// The footprint map (Leaflet, vendored): each georeferenced hit's WGS84 bounds as an outlined rectangle with
// its thumbnail placed at those bounds, the view fitted to the hits. A footprint smaller than a few pixels at
// the current zoom (hits far apart) also gets a round marker of fixed size, so every hit stays visible.
// No tiles unless a basemap URL is set: by the user (kept in localStorage) or by `rsitr serve --basemap`.

const BASEMAP_KEY = "rsitr.basemap";
const MIN_FOOTPRINT_PX = 8;  // narrower or lower than this on screen: drawn as a marker too
const panel = document.getElementById("map-panel");
let map = null;
let layers = null;
let basemap = null;
let serverBasemap = "";
let fitted = null;  // the bounds the view was last fitted to
const footprints = new Map();  // chip id -> { rectangle, marker }

function ensureMap() {
  if (map) return;
  map = L.map("map", { attributionControl: true, zoomSnap: 0.25 });
  layers = L.layerGroup().addTo(map);
  map.on("zoomend", showSmallFootprintsAsMarkers);
  showBasemap(savedBasemap());
}

function showBasemap(url) {
  if (!map) return;
  if (basemap) basemap.remove();
  basemap = url ? L.tileLayer(url, { maxZoom: 22, attribution: "basemap: " + new URL(url).host }).addTo(map) : null;
  if (basemap) basemap.bringToBack();
}

// The user's own choice (kept in localStorage; empty: no tiles), which wins over the server's.
export function setBasemap(url) {
  localStorage.setItem(BASEMAP_KEY, url);
  showBasemap(url);
}

// The tiles `rsitr serve --basemap` named (null: none), shown while the user has chosen none of their own.
export function setServerBasemap(url) {
  serverBasemap = url || "";
  showBasemap(savedBasemap());
}

// The map's view as the API's bbox, "WEST,SOUTH,EAST,NORTH" in degrees (clamped to the globe); null: no map yet.
export function viewBounds() {
  if (!map || !fitted) return null;
  const view = map.getBounds();
  const round = value => Number(value.toFixed(5));
  return [Math.max(-180, view.getWest()), Math.max(-90, view.getSouth()), Math.min(180, view.getEast()),
          Math.min(90, view.getNorth())].map(round).join(",");
}

export function savedBasemap() {
  const own = localStorage.getItem(BASEMAP_KEY);
  return own === null ? serverBasemap : own;
}

function onScreenSize(rectangle) {
  const bounds = rectangle.getBounds();
  const a = map.latLngToLayerPoint(bounds.getSouthWest());
  const b = map.latLngToLayerPoint(bounds.getNorthEast());
  return Math.min(Math.abs(b.x - a.x), Math.abs(b.y - a.y));
}

function showSmallFootprintsAsMarkers() {
  for (const { rectangle, marker } of footprints.values()) {
    const small = onScreenSize(rectangle) < MIN_FOOTPRINT_PX;
    if (small && !layers.hasLayer(marker)) {
      marker.addTo(layers);
      marker.getElement().dataset.chipId = rectangle.getElement().dataset.chipId;
    } else if (!small && layers.hasLayer(marker)) {
      marker.remove();
    }
  }
}

function hoverable(layer, hit, onHover) {
  const label = document.createElement("span");  // Leaflet reads a string tooltip as HTML: a file name is text
  label.textContent = `${hit.path} (chip ${hit.chip_id})`;
  layer.bindTooltip(label);
  layer.on("mouseover", () => onHover(hit.chip_id));
  layer.on("mouseout", () => onHover(null));
  return layer;
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
  // paths render once a view is set; the view holds every hit
  fitView(L.latLngBounds(placed.flatMap(cornersOf)));
  for (const hit of placed) {
    const corners = cornersOf(hit);
    L.imageOverlay(hit.thumbnail, corners, { opacity: 0.9 }).addTo(layers);
    const rectangle = hoverable(L.rectangle(corners, { className: "footprint", weight: 2, color: "#1c7ed6",
                                                       fill: true, fillOpacity: 0 }), hit, onHover);
    rectangle.addTo(layers);
    rectangle.getElement().dataset.chipId = hit.chip_id;
    const marker = hoverable(L.circleMarker(L.latLngBounds(corners).getCenter(), {
      className: "footprint-marker", radius: 7, weight: 2, color: "#1c7ed6", fillColor: "#1c7ed6", fillOpacity: 0.35,
    }), hit, onHover);
    footprints.set(hit.chip_id, { rectangle, marker });
  }
  showSmallFootprintsAsMarkers();
}

// The Leaflet map (made on first use), for other layers (the heat map).
export function leafletMap() {
  ensureMap();
  return map;
}

// Fit the view to bounds at once (not animated); refreshView() fits them again once the map is shown after being
// hidden (the phone's tabs), when Leaflet has to measure its size anew.
export function fitView(bounds) {
  fitted = bounds;
  map.invalidateSize();
  if (map.getSize().x === 0) {  // hidden (the phone's results tab): a provisional view, fitted when shown
    map.setView(bounds.getCenter(), 1, { animate: false });
  } else {
    map.fitBounds(bounds, { padding: [24, 24], animate: false });
  }
}

export function refreshView() {
  if (map && fitted) fitView(fitted);
}

export function highlightFootprint(chipId) {
  for (const [id, { rectangle, marker }] of footprints) {
    for (const layer of [rectangle, marker]) {
      layer.getElement()?.classList.toggle("highlight", id === chipId);
      if (id === chipId && layers.hasLayer(layer)) layer.bringToFront();
    }
  }
}
