// The dashboard's models card: pick a model; its policies, aliases and rollout (live returns, shadow figures,
// history) on one page, and the controls to start, promote or roll back a rollout.
// Uses app.js's helpers ($, el, send, getJson, errorText, showMessage, fmtReturn, fmtTime), loaded before it.
"use strict";

const MODELS_REFRESH_MS = 2000;
const modelsState = { selected: null, models: [] };

const fmtNumber = (value, digits = 3) => (value === null || value === undefined ? "–" : value.toFixed(digits));

function bounds(low, high) {
  return low.map((l, i) => `[${fmtNumber(l, 2)}, ${fmtNumber(high[i], 2)}]`).join(" ");
}

async function refreshModels() {
  let models;
  try {
    models = (await getJson("/models")).items;
  } catch (_) {
    return; // app.js reports an unreachable service
  }
  modelsState.models = models;
  const select = $("model-select");
  if (modelsState.selected === null || !models.some((m) => m.name === modelsState.selected)) {
    const preferred = models.find((m) => m.is_default) || models[0];
    modelsState.selected = preferred ? preferred.name : null;
  }
  const names = models.map((m) => m.name).join(",");
  if (select.dataset.names !== names) {
    select.replaceChildren(...models.map((m) => el("option", { value: m.name }, `${m.name} (${envLabel(m)})`)));
    select.dataset.names = names;
  }
  select.value = modelsState.selected || "";
  const model = models.find((m) => m.name === modelsState.selected);
  if (!model) return;
  showModel(model);
  const [policies, rollout] = await Promise.all([
    getJson(`/models/${model.name}/policies?limit=50`),
    getJson(`/models/${model.name}/rollout`),
  ]);
  showModelPolicies(model, policies.items);
  showRollout(rollout);
}

function showModel(model) {
  const spaces = model.spaces;
  $("model-env").textContent = envLabel(model) + (model.is_default ? " · the default model" : "");
  $("model-sizes").textContent = `${spaces.obs_dim} / ${spaces.act_dim}`;
  $("model-bounds").textContent = bounds(spaces.action_low, spaces.action_high);
  $("model-champion").textContent = model.champion_id === null ? "none yet" : `#${model.champion_id}`;
  const aliases = Object.entries(model.aliases).map(([alias, id]) => `${alias} → #${id}`);
  $("model-aliases").textContent = aliases.length ? aliases.join(", ") : "–";
}

function showModelPolicies(model, policies) {
  const aliasesOf = {};
  for (const [alias, id] of Object.entries(model.aliases)) (aliasesOf[id] ||= []).push(alias);
  const body = $("model-policies-body");
  if (!policies.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No policies yet.")));
  } else {
    body.replaceChildren(
      ...policies.map((policy) => {
        const isChampion = policy.id === model.champion_id;
        const actions = el("td", {});
        if (!isChampion) {
          actions.append(
            el("button", { type: "button", onclick: () => makeChampion(model.name, policy.id) }, `Make #${policy.id} champion`),
          );
        }
        return el(
          "tr",
          { "data-policy-id": String(policy.id) },
          el("td", {}, `#${policy.id}`),
          el("td", {}, fmtReturn(policy.eval_mean_return)),
          el("td", {}, (aliasesOf[policy.id] || []).join(", ") || "–"),
          el("td", {}, policy.source_job_id !== null ? `#${policy.source_job_id}` : policy.origin && policy.origin !== "trained" ? policy.origin : "–"),
          actions,
        );
      }),
    );
  }
  const challenger = $("rollout-challenger");
  const candidates = policies.filter((p) => p.id !== model.champion_id);
  const ids = candidates.map((p) => p.id).join(",");
  if (challenger.dataset.ids !== ids) {
    challenger.replaceChildren(...candidates.map((p) => el("option", { value: String(p.id) }, `#${p.id}`)));
    challenger.dataset.ids = ids;
  }
}

function showRollout(state) {
  const active = state.active;
  $("rollout-buttons").hidden = !active;
  $("rollout-live-wrap").hidden = !active;
  if (!active) {
    $("rollout-status").textContent = "No rollout.";
    $("rollout-shadow").textContent = "";
  } else {
    const guard = active.guard
      ? `guard: roll back after ${active.guard.min_episodes} episodes more than ${active.guard.max_regression} worse`
      : "no guard";
    $("rollout-status").textContent =
      `${active.mode} at ${active.percent}%: challenger #${active.challenger_id} against champion ` +
      `#${active.champion_id}, since ${fmtTime(active.started_at)}; ${guard}.`;
    $("rollout-live-body").replaceChildren(
      ...active.live.map((row) =>
        el(
          "tr",
          { "data-role": row.role },
          el("td", {}, `#${row.policy_id}`),
          el("td", {}, row.role),
          el("td", {}, String(row.episodes)),
          el("td", {}, fmtReturn(row.mean_return)),
          el("td", {}, row.ci95_low === null ? "–" : `${fmtReturn(row.ci95_low)} … ${fmtReturn(row.ci95_high)}`),
        ),
      ),
    );
    const shadow = active.shadow;
    $("rollout-shadow").textContent = shadow.samples
      ? `Shadow: ${shadow.samples} observations compared; mean |champion − challenger| ` +
        `${fmtNumber(shadow.mean_divergence)}, shadow latency ${fmtNumber(shadow.mean_latency_seconds * 1000, 2)} ms.`
      : "";
  }
  const history = state.history.filter((r) => r.status !== "active");
  $("rollout-history").replaceChildren(
    ...(history.length
      ? history.map((r) =>
          el(
            "li",
            { "data-status": r.status },
            `#${r.challenger_id} (${r.mode} ${r.percent}%): ${r.status.replace("_", " ")} ${fmtTime(r.ended_at)}` +
              (r.end_reason ? ` — ${r.end_reason}` : ""),
          ),
        )
      : [el("li", { class: "muted" }, "None yet.")]),
  );
}

async function rolloutRequest(method, path, body, done) {
  const name = modelsState.selected;
  const response = await send(method, `/models/${name}/rollout${path}`, body);
  if (!response.ok) showMessage(`Rollout of ${name}: ${await errorText(response)}`);
  else showMessage(done, "info");
  await refreshModels();
}

async function startRollout(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    challenger: Number(form.get("challenger")),
    mode: form.get("mode"),
    percent: Number(form.get("percent")),
    guard: form.get("min_episodes")
      ? { min_episodes: Number(form.get("min_episodes")), max_regression: Number(form.get("max_regression") || 0) }
      : null,
  };
  await rolloutRequest("PUT", "", body, `Rollout of #${body.challenger} started.`);
}

async function makeChampion(name, policyId) {
  const response = await send("PUT", `/models/${name}/aliases/champion`, { policy_id: policyId });
  if (!response.ok) showMessage(`Cannot make #${policyId} champion: ${await errorText(response)}`);
  else showMessage(`Policy #${policyId} is now the champion of ${name}.`, "info");
  await refreshModels();
}

function startModels() {
  $("model-select").addEventListener("change", (event) => {
    modelsState.selected = event.target.value;
    refreshModels();
  });
  $("rollout-form").addEventListener("submit", startRollout);
  $("rollout-promote").addEventListener("click", () =>
    rolloutRequest("POST", "/promote", undefined, "The challenger is now the champion."),
  );
  $("rollout-rollback").addEventListener("click", () =>
    rolloutRequest("POST", "/rollback", undefined, "Rolled back: new sessions get the champion."),
  );
  refreshModels();
  setInterval(refreshModels, MODELS_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", startModels);
