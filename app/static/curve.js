// The dashboard's learning curve: the selected job's episode returns, their 10-episode average and its
// evaluations, drawn with Chart.js as they arrive over /jobs/{id}/events (server-sent events), and the heading
// naming the job's model. Uses app.js's state and helpers and catalog.js's modelOf; loaded after both.
"use strict";

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

// The selected job and its model, named in the heading (the curve's axes are that environment's returns).
function showCurveHeading() {
  const jobId = state.selectedJobId;
  if (jobId === null) return;
  const job = state.jobs.get(jobId);
  const model = job ? modelOf(job) : null;
  const text = model ? `— job #${jobId} · ${model.name} (${envLabel(model)})` : `— job #${jobId}`;
  if ($("curve-job").textContent !== text) $("curve-job").textContent = text;
}

function selectJob(jobId) {
  if (state.events) state.events.close();
  state.selectedJobId = jobId;
  state.counts = { episodes: 0, evaluations: 0 };
  state.finalStatus = null;
  for (const dataset of state.chart.data.datasets) dataset.data = [];
  state.chart.update("none");
  showCurveHeading();
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
