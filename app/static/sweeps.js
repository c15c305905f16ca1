// The sweep page: the sweeps, and one sweep's trials (a sortable table and their learning curves overlaid, the
// best marked). Plain JavaScript over GET /sweeps, GET /sweeps/{id} and each trial job's GET /jobs/{id}/rewards.
"use strict";

const REFRESH_MS = 3000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

const state = { sweepId: null, sweep: null, sortKey: "job_id", ascending: true, chart: null, curves: new Map() };

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) {
      // not our error shape: keep the status line
    }
    throw new Error(message);
  }
  return response.json();
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

const fmt = (value, digits = 1) => (typeof value === "number" ? value.toFixed(digits) : "–");
const params = (trial) =>
  Object.entries(trial.params)
    .map(([name, value]) => `${name}=${typeof value === "number" && !Number.isInteger(value) ? value.toPrecision(3) : value}`)
    .join(", ");

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function statusCell(status) {
  const td = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = `badge ${status}`;
  badge.textContent = status;
  td.append(badge);
  return td;
}

// ---- the sweeps ---------------------------------------------------------------------------------------

function renderSweeps(page) {
  const body = $("sweeps-body");
  body.replaceChildren();
  if (page.items.length === 0) {
    const empty = cell("no sweep yet: POST /sweeps");
    empty.colSpan = 8;
    empty.className = "muted";
    body.append(empty);
    return;
  }
  for (const sweep of page.items) {
    const best = sweep.trials.find((trial) => trial.job_id === sweep.best_job_id);
    const row = document.createElement("tr");
    row.append(
      cell(`#${sweep.id}`),
      cell(sweep.model),
      statusCell(sweep.status),
      cell(sweep.search + (sweep.early_stop ? ` + ${sweep.early_stop}` : "")),
      cell(`${sweep.trials.length} / ${sweep.trials_planned}`),
      cell(best ? fmt(best.heldout_return) : "–"),
      cell(sweep.policy_id === null ? "–" : `#${sweep.policy_id}`),
    );
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = sweep.id === state.sweepId ? "shown" : "show";
    open.addEventListener("click", () => selectSweep(sweep.id));
    const td = document.createElement("td");
    td.append(open);
    row.append(td);
    body.append(row);
  }
}

// ---- one sweep ----------------------------------------------------------------------------------------

function sortedTrials(trials) {
  const key = state.sortKey;
  const value = (trial) => (key === "params" ? params(trial) : trial[key]);
  return [...trials].sort((a, b) => {
    const x = value(a);
    const y = value(b);
    // Missing values (a trial still running has no held-out score) always sort last.
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return state.ascending ? order : -order;
  });
}

function renderTrials() {
  const sweep = state.sweep;
  const best = sweep.best_job_id;
  $("sweep-heading").textContent = `Sweep #${sweep.id} · ${sweep.status}`;
  const nodes = new Set(sweep.trials.map((trial) => trial.node).filter(Boolean));
  $("sweep-summary").textContent =
    `${sweep.trials.length} of ${sweep.trials_planned} trials on ${nodes.size} Ray node(s), ${sweep.max_concurrent} at once; ` +
    `model ${sweep.model}, promote ${sweep.promote}` +
    (best ? `; best: job #${best}, policy #${sweep.policy_id}` : "") +
    (sweep.error ? `; ${sweep.error}` : "");
  const body = $("trials-body");
  body.replaceChildren();
  for (const trial of sortedTrials(sweep.trials)) {
    const row = document.createElement("tr");
    if (trial.job_id === best) row.className = "best";
    row.append(
      cell(`#${trial.job_id}${trial.job_id === best ? " ★ best" : ""}`),
      statusCell(trial.status),
      cell(params(trial)),
      cell(fmt(trial.best_eval_return)),
      cell(fmt(trial.heldout_return)),
      cell(trial.node ? trial.node.slice(0, 8) : "–"),
      cell(fmt(trial.wall_time)),
    );
    row.title = trial.error || "";
    body.append(row);
  }
  for (const th of document.querySelectorAll("#trials-table th")) {
    th.setAttribute("aria-sort", th.dataset.key === state.sortKey ? (state.ascending ? "ascending" : "descending") : "none");
  }
}

// ---- why the best trial's policy is (or is not) its model's champion ----------------------------------------
// The sweep applies its `promote` rule once, when it succeeds; the rule's outcome is read back from the model's
// champion now and the two policies' evaluation scores (`if_better` compares those).

async function promotionText(sweep) {
  const rule = `promote: ${sweep.promote}`;
  if (!TERMINAL.has(sweep.status)) return `When the sweep succeeds, its best trial's policy is promoted by its rule (${rule}).`;
  if (sweep.policy_id === null) return `Nothing to promote: the sweep ${sweep.status} without a best policy.`;
  const best = `Policy #${sweep.policy_id} (job #${sweep.best_job_id})`;
  const model = await getJson(`/models/${encodeURIComponent(sweep.model)}`);
  if (model.champion_id === sweep.policy_id) return `${best} is the champion of ${sweep.model} (${rule}).`;
  if (sweep.status !== "succeeded") return `${best} was not promoted: only a sweep that succeeds promotes (it ${sweep.status}).`;
  if (sweep.promote === "never") return `${best} was not promoted: the sweep's rule is never (promote it by hand if wanted).`;
  if (model.champion_id === null) return `${best} is not the champion of ${sweep.model}: it has none now.`;
  const [candidate, champion] = await Promise.all([
    getJson(`/policies/${sweep.policy_id}`),
    getJson(`/policies/${model.champion_id}`),
  ]);
  const scores = `${fmt(candidate.eval_mean_return)} against champion #${champion.id}'s ${fmt(champion.eval_mean_return)}`;
  const beats =
    candidate.eval_mean_return !== null &&
    (champion.eval_mean_return === null || candidate.eval_mean_return > champion.eval_mean_return);
  if (sweep.promote === "if_better" && !beats) {
    return `${best} was not promoted: under if_better it did not beat the champion of ${sweep.model} (${scores}).`;
  }
  return `${best} is not the champion of ${sweep.model} now: #${champion.id} became champion since (${scores}).`;
}

// The curves of finished trials never change: fetched once. Running ones are fetched again on each refresh.
async function refreshCurves() {
  const sweep = state.sweep;
  await Promise.all(
    sweep.trials.map(async (trial) => {
      const known = state.curves.get(trial.job_id);
      if (known && known.final) return;
      const rewards = await getJson(`/jobs/${trial.job_id}/rewards`);
      state.curves.set(trial.job_id, {
        points: rewards.evaluations.map((row) => ({ x: row.env_steps, y: row.mean_return })),
        final: TERMINAL.has(trial.status),
      });
    }),
  );
  drawCurves();
}

function drawCurves() {
  const best = state.sweep.best_job_id;
  const datasets = state.sweep.trials.map((trial) => {
    const isBest = trial.job_id === best;
    return {
      label: `#${trial.job_id}${isBest ? " (best)" : ""}`,
      data: (state.curves.get(trial.job_id) || { points: [] }).points,
      borderColor: isBest ? "#d9480f" : "rgba(37, 86, 201, 0.35)",
      borderWidth: isBest ? 3 : 1,
      pointRadius: isBest ? 2 : 0,
      order: isBest ? 0 : 1, // drawn on top
    };
  });
  if (state.chart === null) {
    state.chart = new Chart($("curves"), {
      type: "line",
      data: { datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "environment steps" } },
          y: { title: { display: true, text: "evaluation mean return" } },
        },
        plugins: { legend: { display: datasets.length <= 16 } },
      },
    });
  } else {
    state.chart.data.datasets = datasets;
    state.chart.update();
  }
}

async function selectSweep(id) {
  if (state.sweepId !== id) {
    state.sweepId = id;
    state.curves.clear();
    history.replaceState(null, "", `?sweep=${id}`);
  }
  await refreshSweep();
}

async function refreshSweep() {
  if (state.sweepId === null) return;
  state.sweep = await getJson(`/sweeps/${state.sweepId}`);
  $("sweep-card").hidden = false;
  renderTrials();
  $("sweep-promotion").textContent = await promotionText(state.sweep);
  await refreshCurves();
}

async function refresh() {
  try {
    renderSweeps(await getJson("/sweeps?limit=50"));
    await refreshSweep();
    showMessage("");
  } catch (error) {
    showMessage(`Could not refresh: ${error.message}`);
  }
}

function start() {
  for (const th of document.querySelectorAll("#trials-table th")) {
    th.querySelector("button").addEventListener("click", () => {
      state.ascending = state.sortKey === th.dataset.key ? !state.ascending : true;
      state.sortKey = th.dataset.key;
      if (state.sweep) renderTrials();
    });
  }
  const wanted = Number(new URLSearchParams(location.search).get("sweep"));
  if (Number.isInteger(wanted) && wanted > 0) state.sweepId = wanted;
  refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
