// What the dashboard knows about models and sweeps, so that every job, policy and learning curve names its model
// and environment, sweep trials are marked, and the tables can be filtered by model. Refreshed with the rest
// (app.js's refreshAll). Uses app.js's helpers ($, el, getJson), called only once the page has started.
"use strict";

const catalog = {
  models: new Map(), // model id -> the model as in GET /models
  trialOf: new Map(), // job id -> the sweep whose trial the job is
  filter: "", // a model name, or "" for every model
};

async function refreshCatalog() {
  const [models, sweeps] = await Promise.all([getJson("/models"), getJson("/sweeps?limit=50")]);
  catalog.models = new Map(models.items.map((model) => [model.id, model]));
  catalog.trialOf = new Map(sweeps.items.flatMap((sweep) => sweep.trials.map((trial) => [trial.job_id, sweep.id])));
  showFilterChoices(models.items);
}

// A model's environment as shown: its gymnasium id, or, for a model created from its spaces, where it lives.
const envLabel = (model) => model.env_id ?? "its clients' environment";

function defaultModel() {
  return [...catalog.models.values()].find((model) => model.is_default) || null;
}

// The model of a job or a policy. Jobs queued before models existed have none: their policy joins the model of
// their environment (the default model's when the config names none).
function modelOf(item) {
  if (item.model_id !== null && item.model_id !== undefined) return catalog.models.get(item.model_id) || null;
  const envId = item.env_id || (item.config && item.config.env_id) || (defaultModel() || {}).env_id;
  return [...catalog.models.values()].find((model) => model.env_id === envId) || null;
}

// "name (environment)", for headings and messages.
function modelText(item) {
  const model = modelOf(item);
  return model ? `${model.name} (${envLabel(model)})` : "an unknown model";
}

function modelCell(item) {
  const model = modelOf(item);
  if (!model) return el("td", { class: "muted" }, "–");
  return el("td", { "data-model": model.name }, model.name, " ", el("span", { class: "muted small" }, envLabel(model)));
}

function matchesFilter(item) {
  if (!catalog.filter) return true;
  const model = modelOf(item);
  return model !== null && model.name === catalog.filter;
}

// A sweep trial's marker (a link to its sweep), or nothing for an ordinary job.
function trialBadge(job) {
  const sweepId = catalog.trialOf.get(job.id);
  if (sweepId === undefined) return "";
  return el("a", { class: "badge trial", href: `/static/sweeps.html?sweep=${sweepId}`, title: "a trial of this sweep" }, `sweep #${sweepId} trial`);
}

function isChampion(policy) {
  const model = modelOf(policy);
  return model !== null && model.champion_id === policy.id;
}

function showFilterChoices(models) {
  const select = $("model-filter");
  const names = models.map((model) => model.name).join(",");
  if (select.dataset.names === names) return;
  select.replaceChildren(
    el("option", { value: "" }, "every model"),
    ...models.map((model) => el("option", { value: model.name }, `${model.name} (${envLabel(model)})`)),
  );
  select.dataset.names = names;
  select.value = models.some((model) => model.name === catalog.filter) ? catalog.filter : "";
  catalog.filter = select.value;
}

function startCatalog(onChange) {
  $("model-filter").addEventListener("change", (event) => {
    catalog.filter = event.target.value;
    onChange();
  });
}
