// The models card's recording facts: whether the selected model records, its recording rate (transitions per second
// between two polls of GET /models/{name}/experience), what is stored, the explore share, what was dropped, and the
// links to its exports (GET /models/{name}/experience/dataset?format=minari|parquet).
// Uses app.js's getJson and models.js's modelsState, loaded before it.
"use strict";

const EXPERIENCE_REFRESH_MS = 2000;
const experienceState = { model: null, transitions: null, at: null };

const fmtCount = (value) => Number(value).toLocaleString("en-US");

function recordingRate(name, stats) {
  const now = performance.now();
  let rate = null;
  if (experienceState.model === name && experienceState.at !== null && now > experienceState.at) {
    // Retention deletes old chunks, so the stored total can fall: a negative difference is no rate.
    const added = stats.transitions - experienceState.transitions;
    rate = Math.max(added, 0) / ((now - experienceState.at) / 1000);
  }
  Object.assign(experienceState, { model: name, transitions: stats.transitions, at: now });
  return rate;
}

function exploreShare(stats) {
  if (!stats.explore) return "no exploration";
  const arms = Object.fromEntries(stats.returns.map((arm) => [arm.arm, arm.episodes]));
  const explored = arms.explore || 0;
  const ended = explored + (arms.policy || 0);
  const recorded = ended ? ` (${fmtCount(explored)} of ${fmtCount(ended)} ended episodes)` : "";
  return `${stats.explore.percent}% of sessions, sigma ${stats.explore.sigma}${recorded}`;
}

function setExportLink(id, name, format, enabled) {
  const link = $(id);
  if (enabled) {
    link.href = `/models/${encodeURIComponent(name)}/experience/dataset?format=${format}`;
    link.removeAttribute("aria-disabled");
  } else {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
  }
}

async function refreshExperience() {
  const name = modelsState.selected;
  if (!name) return;
  let stats;
  try {
    stats = await getJson(`/models/${encodeURIComponent(name)}/experience`);
  } catch (_) {
    return; // app.js reports an unreachable service
  }
  if (name !== modelsState.selected) return; // the selection changed while this was in flight
  const rate = recordingRate(name, stats);
  $("recording-state").textContent = stats.record
    ? `on, keeping the newest ${fmtCount(stats.max_transitions)} transitions`
    : "off";
  $("recording-rate").textContent = rate === null ? "–" : rate.toFixed(1);
  $("recording-stored").textContent =
    `${fmtCount(stats.transitions)} transitions, ${fmtCount(stats.episodes)} episodes ended`;
  $("recording-explore").textContent = exploreShare(stats);
  $("recording-dropped").textContent = fmtCount(stats.dropped);
  const hasData = stats.transitions > 0;
  setExportLink("export-minari", name, "minari", hasData);
  setExportLink("export-parquet", name, "parquet", hasData);
}

function startExperience() {
  $("model-select").addEventListener("change", refreshExperience);
  refreshExperience();
  setInterval(refreshExperience, EXPERIENCE_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", startExperience);
