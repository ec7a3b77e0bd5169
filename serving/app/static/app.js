// The page of `python -m serving.app`: upload a song or pick a catalog track, see its top tags and
// similar songs with players. Plain DOM, no dependencies; every text from the API goes in as text, never HTML.
"use strict";

const byId = (id) => document.getElementById(id);
const TRACK_PAGE = 200;

/** Calls the API; rejects with the error's detail and reason (the service's JSON error model). */
async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    throw new Error(error ? `${error.detail} (${error.reason})` : `the server answered HTTP ${response.status}`);
  }
  return body;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function searchParams() {
  const k = Math.min(100, Math.max(1, parseInt(byId("k").value, 10) || 10));
  const params = new URLSearchParams({ k: String(k) });
  if (byId("max-per-artist").checked) params.set("max_per_artist", "1");
  return params;
}

function setBusy(busy) {
  for (const button of document.querySelectorAll("form button")) button.disabled = busy;
  document.body.setAttribute("aria-busy", busy ? "true" : "false");
}

function showError(message) {
  const error = byId("error");
  error.textContent = message ? `Error: ${message}` : "";
  error.hidden = !message;
}

function describeTrack(track) {
  const name = track.title || track.track_id;
  return track.artist ? `${name} by ${track.artist}` : name;
}

function renderTags(body) {
  const chart = byId("tag-chart");
  chart.replaceChildren();
  const inSet = new Set(body.query_tags.map((t) => t.tag));
  if (!body.query.top_tags.length) {
    chart.append(element("li", "", "This index has no tag model."));
    return;
  }
  for (const { tag, probability } of body.query.top_tags) {
    const row = element("li", inSet.has(tag) ? "in-set" : "");
    const value = probability.toFixed(2);
    row.setAttribute("aria-label", `${tag}: ${value}${inSet.has(tag) ? ", in the query's tag set" : ""}`);
    const bar = element("span", "bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = element("span", "fill");
    fill.style.width = `${Math.round(Math.max(0, Math.min(1, probability)) * 100)}%`;
    bar.append(fill);
    row.append(element("span", "tag-name", tag), bar, element("span", "tag-value", value));
    chart.append(row);
  }
}

function renderRecommendation(item) {
  const row = element("li", "recommendation");
  row.dataset.trackId = item.track_id;
  const head = element("div", "head");
  head.append(element("span", "track-title", item.title || item.track_id));
  if (item.artist) head.append(document.createTextNode(" — "), element("span", "artist", item.artist));
  if (item.album) head.append(document.createTextNode(" · "), element("span", "album", item.album));
  head.append(element("span", "score", `score ${item.score.toFixed(3)}`));
  row.append(head);
  const shared = item.shared_tags.map((t) => `${t.tag} (${t.query_probability.toFixed(2)} / ${t.track_probability.toFixed(2)})`);
  row.append(element("p", "shared", shared.length ? `Shared tags: ${shared.join(", ")}` : "No shared tags"));
  const controls = element("div", "controls");
  if (item.audio_url) {
    const player = element("audio");
    player.controls = true;
    player.preload = "none";
    player.src = item.audio_url;
    player.setAttribute("aria-label", `Play ${describeTrack(item)}`);
    controls.append(player);
  }
  const more = element("button", "secondary", "More like this");
  more.type = "button";
  more.setAttribute("aria-label", `More like ${describeTrack(item)}`);
  more.addEventListener("click", () => recommendForTrack(item.track_id, describeTrack(item)));
  controls.append(more);
  row.append(controls);
  return row;
}

function render(body, label) {
  byId("results").hidden = false;
  const what = body.query.kind === "upload" ? `${label} (${body.query.duration_s.toFixed(1)} s)` : label;
  byId("query-summary").textContent = `Songs similar to ${what}: ${body.found} of ${body.k} found.`;
  const madeBy = [body.models.tags ? `Tags by ${body.models.tags}.` : "", `Ranked by ${body.models.ranking}.`];
  byId("made-by").textContent = madeBy.filter(Boolean).join(" ");
  renderTags(body);
  byId("recommendations").replaceChildren(...body.recommendations.map(renderRecommendation));
  byId("notes").replaceChildren(...body.notes.map((note) => element("li", "", `Note: ${note}`)));
}

async function run(label, request) {
  setBusy(true);
  showError("");
  byId("status").textContent = `Finding songs similar to ${label}…`;
  try {
    const body = await request();
    render(body, label);
    showQueryOnMap(body);
    byId("status").textContent = `Found ${body.found} songs similar to ${label}.`;
  } catch (error) {
    byId("status").textContent = "";
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

function recommendForTrack(trackId, label) {
  const url = `/tracks/${encodeURIComponent(trackId)}/similar?${searchParams()}`;
  return run(label, () => api(url));
}

function recommendForFile(file) {
  const form = new FormData();
  form.append("audio", file, file.name);
  return run(file.name, () => api(`/recommend?${searchParams()}`, { method: "POST", body: form }));
}

async function loadTracks(filter) {
  const select = byId("track-select");
  const params = new URLSearchParams({ limit: String(TRACK_PAGE) });
  if (filter) params.set("q", filter);
  try {
    const page = await api(`/tracks?${params}`);
    select.replaceChildren(
      ...page.tracks.map((track) => {
        const option = element("option", "", describeTrack(track));
        option.value = track.track_id;
        return option;
      }),
    );
    if (page.total > page.tracks.length) {
      const more = element("option", "", `… ${page.total - page.tracks.length} more: filter to narrow down`);
      more.disabled = true;
      select.append(more);
    }
  } catch (error) {
    showError(`cannot list the catalog: ${error.message}`);
  }
}

// The catalog map (`GET /map`): one canvas of points, drawn once per size (a 100,000-track map draws in tens of
// milliseconds), and an overlay for the pointed-at track and the query's answers, redrawn alone. Hit tests go
// through a grid of the points, so pointing costs the same at any catalog size.
const MAP_PAD = 12;
const MAP_GRID = 64;
const catalogMap = {
  data: null, colours: [], byTag: [], grid: new Map(), index: new Map(), hover: -1, query: null, answers: [],
  drawMs: 0,
  layout: { side: 0, left: 0, top: 0 },
  /** Where the square of the map lies in the canvas (CSS pixels), read once per draw, not once per point. */
  measure() {
    const canvas = byId("map-points");
    const w = canvas.clientWidth, h = canvas.clientHeight;
    const side = Math.max(1, Math.min(w, h) - 2 * MAP_PAD);
    this.layout = { side, left: (w - side) / 2, top: (h - side) / 2 };
  },
  /** A point's position in canvas pixels (CSS). */
  canvasPoint(i) {
    return this.canvasPosition([this.data.x[i], this.data.y[i]]);
  },
  /** A position on the map ([0, 1]^2) in canvas pixels. */
  canvasPosition([x, y]) {
    const { side, left, top } = this.layout;
    return [left + x * side, top + (1 - y) * side];
  },
  /** A point's position in the page's viewport (what a pointer reports). */
  clientPoint(i) {
    const box = byId("map-points").getBoundingClientRect();
    const [x, y] = this.canvasPoint(i);
    return [box.left + x, box.top + y];
  },
};
window.catalogMap = catalogMap;

function tagColour(tag, count) {
  return tag < 0 ? "#2458a6" : `hsl(${Math.round((tag * 360) / Math.max(count, 1))}, 62%, 42%)`;
}

function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

function drawMapPoints() {
  const data = catalogMap.data;
  if (!data) return;
  const started = performance.now();
  const context = sizeCanvas(byId("map-points"));
  catalogMap.measure();
  const size = data.track_ids.length > 20000 ? 2 : data.track_ids.length > 2000 ? 3 : 6;
  const { side, left, top } = catalogMap.layout;
  const cell = side / MAP_GRID;
  const grid = new Map();
  for (let tag = 0; tag < catalogMap.byTag.length; tag++) {
    context.fillStyle = catalogMap.colours[tag];
    for (const i of catalogMap.byTag[tag]) {
      const x = left + data.x[i] * side, y = top + (1 - data.y[i]) * side;
      context.fillRect(x - size / 2, y - size / 2, size, size);
      const key = gridKey(Math.floor((x - left) / cell), Math.floor((y - top) / cell));
      const members = grid.get(key);
      if (members) members.push(i);
      else grid.set(key, [i]);
    }
  }
  catalogMap.grid = grid;
  catalogMap.cell = cell;
  catalogMap.drawMs = performance.now() - started;
  byId("map-points").dataset.points = String(data.track_ids.length);
  drawMapOverlay();
}

function drawMapOverlay() {
  const context = sizeCanvas(byId("map-overlay"));
  if (!catalogMap.data) return;
  if (catalogMap.query) {
    const [qx, qy] = catalogMap.canvasPosition(catalogMap.query);
    context.strokeStyle = "rgba(29, 29, 31, 0.55)";
    context.lineWidth = 1.5;
    for (const i of catalogMap.answers) {
      const [x, y] = catalogMap.canvasPoint(i);
      context.beginPath();
      context.moveTo(qx, qy);
      context.lineTo(x, y);
      context.stroke();
    }
    context.beginPath();
    context.arc(qx, qy, 7, 0, 2 * Math.PI);
    context.lineWidth = 3;
    context.strokeStyle = "#f2a900";
    context.stroke();
  }
  if (catalogMap.hover >= 0) {
    const [x, y] = catalogMap.canvasPoint(catalogMap.hover);
    context.beginPath();
    context.arc(x, y, 6, 0, 2 * Math.PI);
    context.lineWidth = 2;
    context.strokeStyle = "#1d1d1f";
    context.stroke();
  }
}

/** A grid cell's key (cells may lie a little outside the square: a point's size spills over). */
function gridKey(column, row) {
  return (column + 1024) * 4096 + (row + 1024);
}

/** The track nearest the pointer within 8 px, or -1. */
function pointAt(event) {
  const box = byId("map-overlay").getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  const { left, top } = catalogMap.layout;
  const column = Math.floor((x - left) / catalogMap.cell), row = Math.floor((y - top) / catalogMap.cell);
  let best = -1, bestDistance = 64;
  for (let dx = -1; dx <= 1; dx++) {
    for (let dy = -1; dy <= 1; dy++) {
      for (const i of catalogMap.grid.get(gridKey(column + dx, row + dy)) || []) {
        const [px, py] = catalogMap.canvasPoint(i);
        const distance = (px - x) ** 2 + (py - y) ** 2;
        if (distance < bestDistance) [best, bestDistance] = [i, distance];
      }
    }
  }
  return best;
}

function describePoint(i) {
  const data = catalogMap.data;
  const tag = data.top_tag[i] >= 0 ? ` (${data.tags[data.top_tag[i]]})` : "";
  return `${data.labels[i]}${tag}`;
}

function hoverMap(event) {
  const i = pointAt(event);
  if (i === catalogMap.hover) return;
  catalogMap.hover = i;
  const tooltip = byId("map-tooltip");
  if (i < 0) {
    tooltip.hidden = true;
  } else {
    const [x, y] = catalogMap.canvasPoint(i);
    tooltip.textContent = describePoint(i);
    tooltip.style.left = `${x}px`;
    tooltip.style.top = `${y}px`;
    tooltip.hidden = false;
  }
  drawMapOverlay();
}

function clickMap(event) {
  const i = pointAt(event);
  if (i < 0) return;
  const trackId = catalogMap.data.track_ids[i];
  const player = byId("map-player");
  player.src = `/tracks/${encodeURIComponent(trackId)}/audio`;
  player.hidden = false;
  player.setAttribute("aria-label", `Play ${catalogMap.data.labels[i]}`);
  player.play().catch(() => {}); // A service without catalog audio answers 404: the player says so.
  recommendForTrack(trackId, catalogMap.data.labels[i]);
}

function showQueryOnMap(body) {
  if (!catalogMap.data) return;
  catalogMap.query = body.map_position || null;
  catalogMap.answers = body.recommendations.map((r) => catalogMap.index.get(r.track_id)).filter((i) => i !== undefined);
  byId("map-overlay").dataset.query = catalogMap.query ? catalogMap.query.map((v) => v.toFixed(4)).join(",") : "";
  byId("map-overlay").dataset.answers = String(catalogMap.query ? catalogMap.answers.length : 0);
  drawMapOverlay();
}

async function loadMap() {
  const status = byId("map-status");
  let data;
  try {
    data = await api("/map");
  } catch (error) {
    byId("map-frame").hidden = true;
    status.textContent = `No map: ${error.message}`;
    return;
  }
  catalogMap.data = data;
  catalogMap.index = new Map(data.track_ids.map((id, i) => [id, i]));
  const tagCount = Math.max(data.tags.length, 1);
  catalogMap.colours = data.tags.length ? data.tags.map((_, t) => tagColour(t, tagCount)) : [tagColour(-1, 1)];
  catalogMap.byTag = catalogMap.colours.map(() => []);
  data.top_tag.forEach((tag, i) => catalogMap.byTag[Math.max(tag, 0)].push(i));
  const legend = byId("map-legend");
  const shown = catalogMap.byTag
    .map((members, tag) => [tag, members.length])
    .filter(([, count]) => count > 0)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12);
  legend.replaceChildren(
    ...shown.map(([tag, count]) => {
      const item = element("li");
      const swatch = element("span", "swatch");
      swatch.style.background = catalogMap.colours[tag];
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, document.createTextNode(`${data.tags.length ? data.tags[tag] : "tracks"} (${count})`));
      return item;
    }),
  );
  byId("map-points").setAttribute("aria-label", `Map of the catalog: ${data.track_ids.length} tracks`);
  drawMapPoints();
  status.textContent = `${data.track_ids.length} tracks (${data.method}).`;
  const overlay = byId("map-overlay");
  overlay.addEventListener("mousemove", hoverMap);
  overlay.addEventListener("mouseleave", () => {
    catalogMap.hover = -1;
    byId("map-tooltip").hidden = true;
    drawMapOverlay();
  });
  overlay.addEventListener("click", clickMap);
  window.addEventListener("resize", debounce(drawMapPoints, 150));
}

function debounce(callback, milliseconds) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => callback(...args), milliseconds);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  byId("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = byId("audio-file").files[0];
    if (file) recommendForFile(file);
  });
  byId("track-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const select = byId("track-select");
    if (select.value) recommendForTrack(select.value, select.selectedOptions[0].textContent);
  });
  byId("track-search").addEventListener("input", debounce((event) => loadTracks(event.target.value.trim()), 250));
  loadTracks("");
  loadMap();
});
