// The models card's online learner (GET /models/{name}/learner): its state, transitions/s and updates/s, the achieved
// update-to-data ratio, its lag, and its learning curve: the mean return each published policy earned on live
// episodes, by the time it was published. The policies never met an environment on the server: the curve is what the
// clients' sessions returned. Uses app.js's $, models.js's modelsState and experience.js's
// fmtCount, loaded before it.
"use strict";

const LEARNER_REFRESH_MS = 2000;
const learnerState = { chart: null, shown: "" };

const fmtRate = (value) => (value === null || value === undefined ? "–" : value.toFixed(1));

function makeLearnerChart() {
  const css = getComputedStyle(document.documentElement);
  const colour = css.getPropertyValue("--series-live").trim();
  return new Chart($("learner-curve"), {
    type: "line",
    data: {
      datasets: [
        {
          label: "Live mean return of each published policy",
          data: [],
          pointRadius: 4,
          borderWidth: 2,
          tension: 0.2,
          borderColor: colour,
          backgroundColor: colour,
        },
      ],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "Published, seconds after the learner started" } },
        y: { title: { display: true, text: "Live mean return" } },
      },
      plugins: {
        legend: { position: "bottom", labels: { usePointStyle: true } },
        tooltip: {
          callbacks: {
            label: (item) => {
              const p = item.raw.policy;
              return `#${p.policy_id}: ${p.live_mean_return.toFixed(1)} over ${fmtCount(p.live_episodes)} episodes, ` +
                `${fmtCount(p.updates)} updates`;
            },
          },
        },
      },
    },
  });
}

// Each published policy with live episodes, oldest first: x is the time from the learner's start to its publish, in
// seconds for a young learner and minutes once its span passes two minutes.
function curvePoints(learner) {
  const origin = Date.parse(learner.started_at || learner.created_at);
  const points = learner.policies
    .filter((p) => p.live_episodes > 0 && p.live_mean_return !== null)
    .map((p) => ({ x: (Date.parse(p.published_at) - origin) / 1000, y: p.live_mean_return, policy: p }))
    .sort((a, b) => a.x - b.x);
  const minutes = points.length > 0 && points[points.length - 1].x > 120;
  if (minutes) for (const point of points) point.x /= 60;
  return { points, unit: minutes ? "minutes" : "seconds" };
}

function learnerStateText(learner) {
  const where = learner.worker_id ? ` on ${learner.worker_id}` : "";
  const attempt = learner.attempts > 1 ? ` · attempt ${learner.attempts}` : "";
  const why = learner.error && learner.status !== "running" ? ` · ${learner.error}` : "";
  return `${learner.status}${where}${attempt} · publishes as ${learner.publish} every ${fmtCount(learner.publish_every)} updates${why}`;
}

// Unread: recorded after its cursor; unlearned: those plus the read ones whose updates are still due.
function lagText(learner) {
  const seconds = learner.lag_seconds === null ? "" : ` · ${learner.lag_seconds.toFixed(1)} s behind the newest`;
  return `${fmtCount(learner.lag_transitions)} transitions unread, ${fmtCount(learner.unlearned_transitions)} unlearned${seconds}`;
}

function showLearner(learner) {
  $("learner-none").hidden = learner !== null;
  $("learner-block").hidden = learner === null;
  if (learner === null) return;
  $("learner-state").textContent = learnerStateText(learner);
  $("learner-transitions-rate").textContent = fmtRate(learner.transitions_per_second);
  $("learner-updates-rate").textContent = fmtRate(learner.updates_per_second);
  $("learner-utd").textContent = learner.update_to_data === null ? "–" : learner.update_to_data.toFixed(2);
  $("learner-lag").textContent = lagText(learner);
  $("learner-progress").textContent =
    `${fmtCount(learner.transitions_consumed)} transitions, ${fmtCount(learner.updates)} updates`;
  const last = learner.last_policy_id === null ? "" : `, the last #${learner.last_policy_id}`;
  $("learner-published").textContent = `${fmtCount(learner.publishes)} policies${last}`;

  const { points, unit } = curvePoints(learner);
  const key = JSON.stringify([unit, points.map((point) => [point.policy.policy_id, point.y, point.policy.live_episodes])]);
  if (key !== learnerState.shown) {
    learnerState.chart ||= makeLearnerChart();
    learnerState.chart.data.datasets[0].data = points;
    learnerState.chart.options.scales.x.title.text = `Published, ${unit} after the learner started`;
    learnerState.chart.update("none");
    learnerState.shown = key;
  }
  const waiting = learner.policies.length - points.length;
  $("learner-curve-summary").textContent =
    `${points.length} published policies with live episodes` + (waiting ? ` · ${waiting} waiting for their first` : "");
}

async function refreshLearner() {
  const name = modelsState.selected;
  if (!name) return;
  const model = modelsState.models.find((m) => m.name === name);
  if (model && model.learner === null) {
    showLearner(null); // it never had one: nothing to ask for
    return;
  }
  let learner;
  const response = await fetch(`/models/${encodeURIComponent(name)}/learner`, { headers: { Accept: "application/json" } });
  if (response.status === 404) {
    learner = null;
  } else if (response.ok) {
    learner = await response.json();
  } else {
    return; // app.js reports an unreachable service
  }
  if (name !== modelsState.selected) return; // the selection changed while this was in flight
  showLearner(learner);
}

function startLearner() {
  $("model-select").addEventListener("change", () => refreshLearner().catch(() => {}));
  const refresh = () => refreshLearner().catch(() => {}); // a dropped connection: app.js reports it
  refresh();
  setInterval(refresh, LEARNER_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", startLearner);
