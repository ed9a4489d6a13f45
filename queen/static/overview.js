// The dashboard view: queen status, hives, workers (from one queen_status watch job per
// tab), the job list (polled), and the action forms that submit operations.

import { api, ApiError, cancelOnUnload, FINAL_STATES, streamJob } from "./api.js";
import {
  byId, bytes, dateTime, duration, el, noteQueenTime, queenNow, stateBadge, syncRows,
} from "./dom.js";

const JOBS_POLL_MS = 2000; // how often the job list is refreshed
const JOBS_SHOWN = 50; // newest jobs listed
const STATUS_INTERVAL_S = 2; // the watch job's snapshot interval
const STATUS_RESTART_MS = 3000; // pause before a new watch job when the last one ended
const INT_FIELDS = new Set(["max_tokens"]);

// Which form fields each operation sends; the queen validates them (422 names a bad one).
const OPERATION_FIELDS = {
  queen_status: ["watch"],
  hive_start: ["hive_id"],
  hive_stop: ["hive_id"],
  worker_spawn: ["hive_id", "model", "device"],
  worker_stop: ["hive_id", "worker_id"],
  model_download: ["hive_id", "model"],
  model_delete: ["hive_id", "model"],
  infer: ["model", "prompt", "max_tokens"],
};

let statusJob = null; // the running watch job feeding the status cards

export function startOverview() {
  for (const form of document.querySelectorAll("form[data-action]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitAction(form, event.submitter);
    });
  }
  pollJobs();
  watchStatus();
}

/** Submit the operation a form's button names, then open its job page. */
export async function submitOperation(operation) {
  const shown = byId("action-error");
  shown.hidden = true;
  try {
    const created = await api("v1/jobs", { method: "POST", body: operation });
    location.hash = `#/jobs/${encodeURIComponent(created.job_id)}`;
  } catch (error) {
    const jobId = error instanceof ApiError ? error.detail?.job_id : undefined;
    if (jobId) {
      location.hash = `#/jobs/${encodeURIComponent(jobId)}`; // it exists and its log says why
      return;
    }
    shown.textContent = error instanceof ApiError ? error.message : "The queen is not reachable.";
    shown.hidden = false;
  }
}

function submitAction(form, button) {
  const name = button?.value;
  if (!name || !(name in OPERATION_FIELDS)) return;
  const operation = { operation: name };
  for (const field of OPERATION_FIELDS[name]) {
    const input = form.elements.namedItem(field);
    if (!input || input.value === "") continue; // the server's default applies
    if (field === "watch") operation.watch = input.value === "true";
    else if (INT_FIELDS.has(field)) operation[field] = Number.parseInt(input.value, 10);
    else operation[field] = input.value;
  }
  if (name === "queen_status") operation.interval_s = STATUS_INTERVAL_S;
  submitOperation(operation);
}

// -- job list ------------------------------------------------------------------------

async function pollJobs() {
  for (;;) {
    try {
      const answer = await api(`v1/jobs?limit=${JOBS_SHOWN}`);
      renderJobs(answer.jobs ?? []);
    } catch {
      // api() already reported an unreachable queen; keep polling until it is back
    }
    await new Promise((resolve) => setTimeout(resolve, JOBS_POLL_MS));
  }
}

const jobRows = new Map(); // job_id -> <tr>, kept so focus survives a refresh

function renderJobs(jobs) {
  const now = queenNow();
  syncRows(byId("jobs"), jobRows, jobs, (job) => job.job_id, (job) => {
    const link = el("a", { text: job.job_id });
    link.href = `#/jobs/${encodeURIComponent(job.job_id)}`;
    return el("tr", { data: { job: job.job_id } },
      el("td", {}, link), el("td"), el("td"), el("td"), el("td"));
  }, (row, job) => {
    const cells = row.children;
    cells[1].textContent = job.operation ?? "—";
    cells[2].replaceChildren(stateBadge(job.state));
    cells[3].textContent = dateTime(job.created_at);
    const end = FINAL_STATES.has(job.state) ? job.updated_at : now;
    cells[4].textContent = duration(end - job.created_at);
  });
  byId("jobs-empty").hidden = jobs.length > 0;
}

// -- status --------------------------------------------------------------------------

/**
 * Keep one queen_status watch job running while this tab is visible, and render its
 * snapshots. A watch job runs until cancelled and nobody else would cancel it, so the
 * tab cancels it when it is hidden or closed (visibilitychange is the last event a
 * browser reliably delivers) and starts a fresh one when it is shown again.
 */
function watchStatus() {
  let controller = null;
  const start = async () => {
    if (controller) return;
    const mine = (controller = new AbortController());
    while (!mine.signal.aborted) {
      try {
        const created = await api("v1/jobs", {
          method: "POST",
          body: { operation: "queen_status", watch: true, interval_s: STATUS_INTERVAL_S },
        });
        if (mine.signal.aborted) {
          cancelOnUnload(created.job_id); // hidden while the job was being created
          break;
        }
        statusJob = created.job_id;
        await streamJob(statusJob, {
          signal: mine.signal,
          onEvent(kind, data) {
            if (kind === "narration" && data.fields?.status) renderStatus(data.fields.status, data.ts);
            if (kind === "state" && data.result) renderStatus(data.result, data.ts);
          },
          onEnd() {},
        });
      } catch {
        // the queen is away or refused the job; try again in a moment
      }
      if (!mine.signal.aborted) await new Promise((resolve) => setTimeout(resolve, STATUS_RESTART_MS));
    }
  };
  const stop = () => {
    if (statusJob) cancelOnUnload(statusJob);
    statusJob = null;
    controller?.abort();
    controller = null;
  };
  document.addEventListener("visibilitychange", () => (document.hidden ? stop() : start()));
  window.addEventListener("pagehide", stop);
  if (!document.hidden) start();
}

function renderStatus(status, ts) {
  noteQueenTime(ts);
  byId("st-version").textContent = status.version ?? "—";
  byId("st-uptime").textContent = duration(status.uptime_s);
  const counts = Object.entries(status.jobs ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, n]) => `${n} ${state}`);
  byId("st-jobs").textContent = counts.length ? counts.join(", ") : "none";
  byId("st-updated").textContent = dateTime(ts);
  renderHives(Array.isArray(status.hives) ? status.hives : [], ts);
  const workers = Array.isArray(status.workers)
    ? status.workers
    : (status.hives ?? []).flatMap((h) => (h.workers ?? []).map((w) => ({ hive_id: h.hive_id, ...w })));
  renderWorkers(workers);
}

function renderHives(hives, ts) {
  const rows = hives.map((hive) => {
    const state = hive.stale ? "stale" : hive.last_seen ? "live" : "configured";
    const beat = hive.last_seen ? `${duration(ts - hive.last_seen)} ago` : "never";
    return el("tr", {},
      el("td", { text: hive.hive_id ?? "—" }),
      el("td", {}, stateBadge(state)),
      el("td", { text: beat, title: dateTime(hive.last_seen) }),
      el("td", { text: Array.isArray(hive.workers) ? hive.workers.length : "—" }),
      el("td", { text: hive.version ?? "—" }),
      el("td", { class: "url", text: hive.url ?? "—" }));
  });
  byId("hives").replaceChildren(...rows);
  byId("hives-empty").hidden = rows.length > 0;
}

const workerRows = new Map(); // worker key -> <tr>, kept so a focused Stop button stays

function renderWorkers(workers) {
  const keyOf = (worker) => `${worker.hive_id}/${worker.worker_id}`;
  syncRows(byId("workers"), workerRows, workers, keyOf, (worker) => {
    const stop = el("button", { text: "Stop", class: "small" });
    stop.type = "button";
    stop.setAttribute("aria-label", `Stop worker ${worker.worker_id} on ${worker.hive_id}`);
    stop.addEventListener("click", () => submitOperation({
      operation: "worker_stop", hive_id: worker.hive_id, worker_id: worker.worker_id,
    }));
    return el("tr", {}, el("td"), el("td"), el("td"), el("td"), el("td"), el("td"), el("td", {}, stop));
  }, (row, worker) => {
    const cells = row.children;
    cells[0].textContent = worker.worker_id ?? "—";
    cells[1].textContent = worker.hive_id ?? "—";
    cells[2].textContent = worker.model ?? "—";
    cells[3].textContent = worker.device ?? "—";
    cells[4].replaceChildren(stateBadge(worker.state ?? "unknown"));
    cells[5].textContent = bytes(worker.rss_bytes);
  });
  byId("workers-empty").hidden = workers.length > 0;
}
