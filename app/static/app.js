// The dashboard: plain JavaScript over the service's own HTTP API (no build step).
// Jobs, policies and readiness are polled (each named by its model from catalog.js); the selected job's learning
// curve (curve.js) follows /jobs/{id}/events (SSE).
"use strict";

const REFRESH_MS = 2000;
const KEY_STORAGE = "ddpg-api-key";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  defaultPolicyId: null,
  selectedJobId: null,
  jobs: new Map(), // the jobs listed, by id: the curve's heading names the selected one's model
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
  $("default-model").textContent = modelText(policy);
  $("default-score").textContent = fmtReturn(policy.eval_mean_return);
  // An imported policy names where it came from (sb3:TD3 2.9.2, cleanrl, onnx); a trained one its job.
  const origin = policy.origin && policy.origin !== "trained" ? policy.origin : "uploaded file";
  $("default-job").textContent = policy.source_job_id ? `job #${policy.source_job_id}` : origin;
  // ddpg-actor/1 files carry hidden_size; policy-mlp/1 files one width per hidden layer.
  const widths = policy.meta.hidden_sizes;
  $("default-hidden").textContent = policy.meta.hidden_size ?? (widths ? widths.join(" × ") || "none" : "–");
  $("default-created").textContent = fmtTime(policy.created_at);
  if (state.defaultPolicyId !== policy.id) {
    // A new default: load its rollout (rendered on the server on first request, about a second).
    state.defaultPolicyId = policy.id;
    $("rollout-caption").textContent = `Rendering one episode of policy #${policy.id}…`;
    image.onload = () => {
      $("rollout-caption").textContent = `One ${policy.env_id} episode of policy #${policy.id}`;
    };
    image.onerror = () => {
      $("rollout-caption").textContent = "The rollout could not be rendered on this server.";
    };
    image.alt = `Animated ${policy.env_id} episode of policy ${policy.id}`;
    image.src = `/policies/${policy.id}/rollout.gif`;
    image.hidden = false;
  }
}

async function refreshPolicies() {
  const page = await getJson("/policies?limit=50");
  showDefaultPolicy(page.items.find((p) => p.is_default) || null);
  const body = $("policies-body");
  body.replaceChildren();
  const shown = page.items.filter(matchesFilter);
  if (shown.length === 0) {
    const text = page.items.length ? `No policies of ${catalog.filter} among the newest ${page.items.length}.` : "No policies yet.";
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, text)));
    return;
  }
  for (const policy of shown) {
    // Each policy competes only within its model: "Promote" makes it that model's champion.
    let action;
    if (policy.is_default) action = el("span", { class: "badge ok" }, "default");
    else if (isChampion(policy)) action = el("span", { class: "badge ok" }, "champion");
    else action = el("button", { type: "button", onclick: () => promote(policy.id) }, `Promote #${policy.id}`);
    body.append(
      el(
        "tr",
        { "data-policy-id": String(policy.id) },
        el("td", {}, `#${policy.id}`),
        modelCell(policy),
        el("td", {}, fmtReturn(policy.eval_mean_return)),
        el("td", {}, policy.source_job_id ? `#${policy.source_job_id}` : importedFrom(policy)),
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
  const page = await getJson("/jobs?limit=50");
  state.jobs = new Map(page.items.map((job) => [job.id, job]));
  const shown = page.items.filter(matchesFilter);
  const body = $("jobs-body");
  body.replaceChildren();
  if (shown.length === 0) {
    const text = page.items.length ? `No jobs of ${catalog.filter} among the newest ${page.items.length}.` : "No jobs yet.";
    body.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, text)));
  }
  for (const job of shown) {
    const status = el("span", { class: `badge ${job.status}` }, job.cancel_requested && job.status === "running" ? "cancelling" : job.status);
    if (job.error) status.title = job.error;
    body.append(
      el(
        "tr",
        { "data-job-id": String(job.id), "data-status": job.status, class: job.id === state.selectedJobId ? "selected" : "" },
        el("td", {}, `#${job.id} `, trialBadge(job)),
        modelCell(job),
        el("td", {}, status),
        progressCell(job),
        el("td", {}, fmtReturn(job.progress.last_return)),
        el("td", {}, fmtReturn(job.progress.best_eval_return)),
        el("td", {}, job.policy_id ? `#${job.policy_id}` : "–"),
        jobActions(job),
      ),
    );
  }
  // Follow the newest job (of the model shown) until the user picks one.
  if (state.selectedJobId === null && shown.length > 0) selectJob(shown[0].id);
  showCurveHeading();
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
  else {
    const promoted = await response.json();
    const model = modelOf(promoted);
    const what = promoted.is_default ? "the default" : `the champion of ${model ? model.name : "its model"}`;
    showMessage(`Policy #${policyId} is now ${what}.`, "info");
  }
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

// ---- start ----------------------------------------------------------------------------------------------------

async function refreshAll() {
  try {
    // The catalog first: the tables name each row's model from it.
    await refreshCatalog();
    await Promise.all([refreshPolicies(), refreshJobs(), refreshReadiness()]);
    if ($("message").classList.contains("offline")) showMessage("");
  } catch (error) {
    showMessage(`Cannot reach the service: ${error.message}`, "offline");
  }
}

function start() {
  state.chart = makeChart();
  $("train-form").addEventListener("submit", startJob);
  startCatalog(refreshAll);
  refreshAll();
  setInterval(refreshAll, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);

// Where a policy without a job came from: its importer's origin (sb3:TD3 2.9.2, cleanrl, onnx), else nothing known.
function importedFrom(policy) {
  return policy.origin && policy.origin !== "trained" ? policy.origin : "–";
}
