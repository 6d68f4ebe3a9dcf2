// The heat layer over one georeferenced scene: each chip window drawn in the colour of its score for the current
// query (the API scores; this module only colours), a legend from the lowest to the highest score, an opacity
// slider and the score raster's GeoTIFF link. Names reach the page as text only (textContent).

import { fitView, leafletMap } from "./map.js";

const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];  // viridis, as in the CSS
const $ = id => document.getElementById(id);
let layer = null;

// t in [0, 1] -> an rgb() colour of the ramp
export function rampColour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const mix = RAMP[i].map((low, c) => Math.round(low + (x - i) * (RAMP[i + 1][c] - low)));
  return `rgb(${mix.join(", ")})`;
}

function opacity() {
  return Number($("heat-opacity").value);
}

function tooltip(cell, kind) {
  const text = document.createElement("span");
  text.textContent = `chip ${cell.chip_id}: ${kind} ${cell.score.toFixed(4)}`;
  return text;
}

// body: the API's /api/heatmap answer; geotiffUrl: the same query's score raster
export function showHeat(body, geotiffUrl) {
  clearHeat();
  const map = leafletMap();
  layer = L.layerGroup().addTo(map);
  const span = body.max - body.min || 1;
  const corners = [];
  for (const cell of body.chips.filter(chip => chip.wgs84_bounds)) {
    const [west, south, east, north] = cell.wgs84_bounds;
    corners.push([south, west], [north, east]);
    const rectangle = L.rectangle([[south, west], [north, east]], {
      className: "heat-cell", stroke: false, fill: true, fillColor: rampColour((cell.score - body.min) / span),
      fillOpacity: opacity(),
    }).bindTooltip(tooltip(cell, body.kind)).addTo(layer);
    rectangle.getElement().dataset.chipId = cell.chip_id;
    rectangle.getElement().dataset.score = cell.score;
  }
  $("heat-title").textContent = `${body.path}: ${body.explained}`;
  $("heat-min").textContent = body.min.toFixed(3);
  $("heat-max").textContent = body.max.toFixed(3);
  $("heat-geotiff").href = geotiffUrl;
  $("heat-controls").hidden = false;
  if (corners.length) fitView(L.latLngBounds(corners));
}

export function clearHeat() {
  if (layer) layer.remove();
  layer = null;
  $("heat-controls").hidden = true;
}

export function setupHeat() {
  $("heat-opacity").addEventListener("input", () => {
    if (layer) layer.eachLayer(cell => cell.setStyle({ fillOpacity: opacity() }));
  });
  $("heat-hide").addEventListener("click", clearHeat);
}
