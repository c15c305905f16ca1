// The dashboard: plain JavaScript over the service's own HTTP API (no build step).
// Jobs, policies and readiness are polled; the selected job's learning curve follows /jobs/{id}/events (SSE).
"use strict";

const REFRESH_MS = 2000;
const KEY_STORAGE = "ddpg-api-key";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  defaultPolicyId: null,
  selectedJobId: null,
  events: null, // the EventSource of the selected job
  chart: null,
  chartDirty: false,
  counts: { episodes: 0, evaluations: 0 },
  finalStatus: null, // the selected job's status once its event stream ended
};

const $ = (id) => document.getElementById(id);

// ---- HTTP ---------------------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Ask for the API key in a dialog; resolves to the key, or null when the user cancels.
function askForKey() {
  const dialog = $("key-dialog");
  const input = $("key-input");
  input.value = "";
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener("close", onClose);
      $("key-cancel").removeEventListener("click", onCancel);
      resolve(value);
    };
    const onClose = () => done(dialog.returnValue === "ok" && input.value ? input.value : null);
    const onCancel = () => dialog.close("cancel");
    dialog.addEventListener("close", onClose);
    $("key-cancel").addEventListener("click", onCancel);
    dialog.showModal();
    input.focus();
  });
}

// A mutating request: when the server answers 401, ask for the key, remember it for the tab, try again.
async function send(method, url, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = { ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(KEY_STORAGE);
    const key = await askForKey();
    if (key === null) return response;
    sessionStorage.setItem(KEY_STORAGE, key);
  }
  throw new Error("the API key was not accepted");
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return typeof body.error === "string" ? body.error : body.error.message;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

// ---- formatting -----------------------------------------------------------------------------------------

const fmtReturn = (value) => (value === null || value === undefined ? "–" : value.toFixed(1));
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---- readiness and the default policy -------------------------------------------------------------------

async function refreshReadiness() {
  const pill = $("readiness");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    pill.textContent = response.ok ? `ready · serving policy ${body.policy_id}` : `not ready · ${body.error.message}`;
    pill.className = `pill ${response.ok ? "ok" : "warn"}`;
  } catch (_) {
    pill.textContent = "server unreachable";
    pill.className = "pill bad";
  }
}

function showDefaultPolicy(policy) {
  const image = $("rollout");
  if (!policy) {
    $("default-id").textContent = "none yet";
    return;
  }
  $("default-id").textContent = `#${policy.id}`;
  $("default-score").textContent = fmtReturn(policy.eval_mean_return);
  $("default-job").textContent = policy.source_job_id ? `job #${policy.source_job_id}` : "uploaded file";
  $("default-hidden").textContent = policy.meta.hidden_size ?? "–";
  $("default-created").textContent = fmtTime(policy.created_at);
  if (state.defaultPolicyId !== policy.id) {
    // A new default: load its rollout (rendered on the server on first request, about a second).
    state.defaultPolicyId = policy.id;
    $("rollout-caption").textContent = `Rendering one episode of policy #${policy.id}…`;
    image.onload = () => {
      $("rollout-caption").textContent = `One Pendulum episode of policy #${policy.id}`;
    };
    image.onerror = () => {
      $("rollout-caption").textContent = "The rollout could not be rendered on this server.";
    };
    image.alt = `Animated Pendulum episode of policy ${policy.id}`;
    image.src = `/policies/${policy.id}/rollout.gif`;
    image.hidden = false;
  }
}

async function refreshPolicies() {
  const page = await getJson("/policies?limit=20");
  showDefaultPolicy(page.items.find((p) => p.is_default) || null);
  const body = $("policies-body");
  body.replaceChildren();
  if (page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No policies yet.")));
    return;
  }
  for (const policy of page.items) {
    const action = policy.is_default
      ? el("span", { class: "badge ok" }, "default")
      : el("button", { type: "button", onclick: () => promote(policy.id) }, `Promote #${policy.id}`);
    body.append(
      el(
        "tr",
        { "data-policy-id": String(policy.id) },
        el("td", {}, `#${policy.id}`),
        el("td", {}, fmtReturn(policy.eval_mean_return)),
        el("td", {}, policy.source_job_id ? `#${policy.source_job_id}` : "–"),
        el("td", {}, fmtTime(policy.created_at)),
        el("td", {}, el("div", { class: "actions" }, action)),
      ),
    );
  }
}

// ---- jobs -------------------------------------------------------------------------------------------------

function progressCell(job) {
  const { episodes_done: done, episodes_total: total } = job.progress;
  const label = total ? `${done} / ${total} episodes` : `${done} episodes`;
  const bar = el("progress", { max: String(total || 1), value: String(total ? done : 0), "aria-label": `job ${job.id}: ${label}` });
  return el("td", {}, el("div", { class: "progress" }, bar, el("span", { class: "small" }, label)));
}

function jobActions(job) {
  const cell = el("div", { class: "actions" });
  cell.append(
    el("button", { type: "button", onclick: () => selectJob(job.id), "aria-pressed": String(job.id === state.selectedJobId) }, "Curve"),
  );
  if (job.status === "queued" || job.status === "running") {
    const cancel = el("button", { type: "button", class: "danger", onclick: () => cancelJob(job.id) }, "Cancel");
    if (job.cancel_requested) cancel.disabled = true;
    cell.append(cancel);
  }
  if (job.status === "succeeded" && job.policy_id && job.policy_id !== state.defaultPolicyId) {
    cell.append(el("button", { type: "button", onclick: () => promote(job.policy_id) }, `Promote #${job.policy_id}`));
  }
  return el("td", {}, cell);
}

async function refreshJobs() {
  const page = await getJson("/jobs?limit=20");
  const body = $("jobs-body");
  body.replaceChildren();
  if (page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No jobs yet.")));
  }
  for (const job of page.items) {
    const status = el("span", { class: `badge ${job.status}` }, job.cancel_requested && job.status === "running" ? "cancelling" : job.status);
    if (job.error) status.title = job.error;
    body.append(
      el(
        "tr",
        { "data-job-id": String(job.id), "data-status": job.status, class: job.id === state.selectedJobId ? "selected" : "" },
        el("td", {}, `#${job.id}`),
        el("td", {}, status),
        progressCell(job),
        el("td", {}, fmtReturn(job.progress.last_return)),
        el("td", {}, fmtReturn(job.progress.best_eval_return)),
        el("td", {}, job.policy_id ? `#${job.policy_id}` : "–"),
        jobActions(job),
      ),
    );
  }
  // Follow the newest job until the user picks one.
  if (state.selectedJobId === null && page.items.length > 0) selectJob(page.items[0].id);
}

async function cancelJob(jobId) {
  const response = await send("POST", `/jobs/${jobId}/cancel`);
  if (!response.ok) showMessage(`Cannot cancel job #${jobId}: ${await errorText(response)}`);
  else showMessage(`Job #${jobId}: cancellation requested.`, "info");
  await refreshAll();
}

async function promote(policyId) {
  const response = await send("POST", `/policies/${policyId}/promote`);
  if (!response.ok) showMessage(`Cannot promote policy #${policyId}: ${await errorText(response)}`);
  else showMessage(`Policy #${policyId} is now the default.`, "info");
  await refreshAll();
}

// ---- the training form ------------------------------------------------------------------------------------

async function startJob(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { preset: form.get("preset"), promote: form.get("promote") };
  for (const name of ["episodes", "seed", "hidden_size"]) {
    const value = form.get(name);
    if (value !== "") body[name] = Number(value);
  }
  if (form.get("noise")) body.noise = form.get("noise");
  for (const name of ["model", "env_id"]) {
    if (form.get(name)) body[name] = form.get(name).trim();
  }
  const response = await send("POST", "/train", body);
  if (response.status !== 202) {
    showMessage(`Cannot start the job: ${await errorText(response)}`);
    return;
  }
  const job = await response.json();
  showMessage(`Job #${job.id} queued.`, "info");
  selectJob(job.id);
  await refreshAll();
}

// ---- the learning curve (SSE) -----------------------------------------------------------------------------

function makeChart() {
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  return new Chart($("curve"), {
    type: "line",
    data: {
      datasets: [
        {
          label: "Episode return",
          data: [],
          showLine: false,
          pointRadius: 3,
          borderColor: colour("--series-return"),
          backgroundColor: colour("--series-return"),
        },
        {
          label: "10-episode average",
          data: [],
          pointRadius: 0,
          borderWidth: 2.5,
          tension: 0.25,
          borderColor: colour("--series-average"),
          backgroundColor: colour("--series-average"),
        },
        {
          label: "Evaluation (mean return)",
          data: [],
          pointRadius: 6,
          pointStyle: "rectRot",
          borderWidth: 1.5,
          borderDash: [6, 4],
          borderColor: colour("--series-eval"),
          backgroundColor: colour("--series-eval"),
        },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "Episode" }, ticks: { precision: 0 } },
        y: { title: { display: true, text: "Return" } },
      },
      plugins: { legend: { position: "bottom", labels: { usePointStyle: true } } },
    },
  });
}

// Many events arrive at once when a finished job is replayed: redraw once per frame, not once per event.
function scheduleRedraw() {
  if (state.chartDirty) return;
  state.chartDirty = true;
  requestAnimationFrame(() => {
    state.chartDirty = false;
    state.chart.update("none");
    showCurveSummary();
  });
}

function showCurveSummary() {
  const { episodes, evaluations } = state.counts;
  const ended = state.finalStatus ? ` · job ${state.finalStatus}` : "";
  $("curve-summary").textContent = `${episodes} episodes · ${evaluations} evaluations${ended}`;
}

function selectJob(jobId) {
  if (state.events) state.events.close();
  state.selectedJobId = jobId;
  state.counts = { episodes: 0, evaluations: 0 };
  state.finalStatus = null;
  for (const dataset of state.chart.data.datasets) dataset.data = [];
  state.chart.update("none");
  $("curve-job").textContent = `— job #${jobId}`;
  $("curve-summary").textContent = "waiting for the first episode…";
  for (const row of document.querySelectorAll("#jobs-body tr[data-job-id]")) {
    row.classList.toggle("selected", row.dataset.jobId === String(jobId));
  }

  // EventSource replays the history, then follows it; on a dropped connection it reconnects by itself and
  // sends Last-Event-ID, so the server resumes right after the last point drawn.
  const source = new EventSource(`/jobs/${jobId}/events`);
  state.events = source;
  const [returns, averages, evaluations] = state.chart.data.datasets;
  source.addEventListener("episode", (message) => {
    const row = JSON.parse(message.data);
    returns.data.push({ x: row.episode + 1, y: row.episode_return });
    averages.data.push({ x: row.episode + 1, y: row.avg_return_10 });
    state.counts.episodes += 1;
    scheduleRedraw();
  });
  source.addEventListener("evaluation", (message) => {
    const row = JSON.parse(message.data);
    evaluations.data.push({ x: row.episode + 1, y: row.mean_return });
    state.counts.evaluations += 1;
    scheduleRedraw();
  });
  source.addEventListener("status", (message) => {
    // The job ended: the stream is complete, so stop EventSource from reconnecting.
    source.close();
    state.finalStatus = JSON.parse(message.data).status;
    showCurveSummary();
    refreshAll();
  });
}

// ---- start ----------------------------------------------------------------------------------------------------

async function refreshAll() {
  try {
    await Promise.all([refreshPolicies(), refreshJobs(), refreshReadiness()]);
    if ($("message").classList.contains("offline")) showMessage("");
  } catch (error) {
    showMessage(`Cannot reach the service: ${error.message}`, "offline");
  }
}

function start() {
  state.chart = makeChart();
  $("train-form").addEventListener("submit", startJob);
  refreshAll();
  setInterval(refreshAll, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
