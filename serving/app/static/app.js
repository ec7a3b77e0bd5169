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
});
