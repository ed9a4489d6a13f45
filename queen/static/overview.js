// The dashboard view: queen status, hives, workers (GET /v1/status, polled while the tab
// is visible: looking is not a job), the job list (polled), the hives' Start and Stop
// buttons, and the action forms that submit operations.

import { api, ApiError, FINAL_STATES } from "./api.js";
import {
  byId, bytes, dateTime, duration, el, noteQueenTime, queenNow, stateBadge, syncRows,
} from "./dom.js";

const JOBS_POLL_MS = 2000; // how often the job list is refreshed
const JOBS_SHOWN = 50; // newest jobs listed
const STATUS_INTERVAL_S = 2; // the snapshot interval of a watch job asked for by hand
const STATUS_POLL_MS = 1000; // how often a visible tab reads GET /v1/status
const INT_FIELDS = new Set(["max_tokens"]);

const DEFAULT_SYSTEM = "You are a helpful assistant."; // keeper infer's default, too
// Which form fields each operation sends; the queen validates them (422 names a bad one).
const OPERATION_FIELDS = {
  queen_status: ["watch"],
  worker_spawn: ["hive_id", "model", "device"],
  worker_stop: ["hive_id", "worker_id"],
  model_download: ["hive_id", "model"],
  model_delete: ["hive_id", "model"],
  infer: ["model", "prompt", "max_tokens"],
};

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
  if (name === "infer" && !form.elements.namedItem("raw")?.checked && operation.prompt) {
    // A chat, as `keeper infer` sends it: rendered through the model's own template.
    operation.messages = [
      { role: "system", content: DEFAULT_SYSTEM },
      { role: "user", content: operation.prompt },
    ];
    delete operation.prompt;
  }
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
 * Read the queen's status (a plain GET: it leaves no job behind) now and every
 * STATUS_POLL_MS while this tab is visible; a hidden tab stops asking, and asks again
 * at once when it is shown.
 */
function watchStatus() {
  let timer = null;
  let asking = false;
  const ask = async () => {
    timer = null;
    if (document.hidden || asking) return;
    asking = true;
    try {
      const status = await api("v1/status");
      renderStatus(status, status.taken_at);
    } catch {
      // api() already reported an unreachable queen; ask again in a moment
    } finally {
      asking = false;
    }
    if (!document.hidden && timer === null) timer = setTimeout(ask, STATUS_POLL_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
    } else if (timer === null) {
      ask();
    }
  });
  ask();
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
  renderHives(
    Array.isArray(status.hives) ? status.hives : [],
    Array.isArray(status.configured) ? status.configured : [],
    ts,
  );
  const workers = Array.isArray(status.workers)
    ? status.workers
    : (status.hives ?? []).flatMap((h) => (h.workers ?? []).map((w) => ({ hive_id: h.hive_id, ...w })));
  renderWorkers(workers);
}

const hiveRows = new Map(); // hive id -> <tr>, kept so a focused button stays

/**
 * The hives the queen knows (configured or heard from) and those it can start (its
 * configuration: localhost and the hives config). A configured hive that is not live
 * offers Start; a live one offers Stop; a hive known only by its beats offers neither
 * (the queen does not know how to reach its machine).
 */
function renderHives(known, configured, ts) {
  const byHive = new Map(known.map((hive) => [hive.hive_id, hive]));
  const where = new Map(configured.map((c) => [c.hive_id, c.where]));
  for (const id of where.keys()) if (!byHive.has(id)) byHive.set(id, { hive_id: id, down: true });
  const hives = [...byHive.values()].sort((a, b) => String(a.hive_id).localeCompare(String(b.hive_id)));
  syncRows(byId("hives"), hiveRows, hives, (hive) => hive.hive_id, (hive) => {
    const id = hive.hive_id;
    const start = el("button", { text: "Start", class: "small", data: { hiveStart: id } });
    start.type = "button";
    start.setAttribute("aria-label", `Start hive ${id}`);
    start.addEventListener("click", () => submitOperation({ operation: "hive_start", hive_id: id }));
    const stop = el("button", { text: "Stop", class: "small", data: { hiveStop: id } });
    stop.type = "button";
    stop.setAttribute("aria-label", `Stop hive ${id}`);
    stop.addEventListener("click", () => submitOperation({ operation: "hive_stop", hive_id: id }));
    return el("tr", { data: { hive: id } },
      el("td"), el("td"), el("td"), el("td"), el("td"), el("td", { class: "url" }), el("td", {}, start, stop));
  }, (row, hive) => {
    const cells = row.children;
    const state = hive.down ? "down" : hive.stale ? "stale" : hive.last_seen ? "live" : "configured";
    cells[0].textContent = hive.hive_id ?? "—";
    cells[1].replaceChildren(stateBadge(state));
    cells[2].textContent = hive.last_seen ? `${duration(ts - hive.last_seen)} ago` : "never";
    cells[2].title = dateTime(hive.last_seen);
    cells[3].textContent = Array.isArray(hive.workers) ? hive.workers.length : "—";
    cells[4].textContent = hive.version ?? "—";
    cells[5].textContent = hive.url ?? where.get(hive.hive_id) ?? "—";
    const startable = where.has(hive.hive_id);
    const [start, stop] = cells[6].children;
    start.hidden = !startable || state === "live";
    stop.hidden = !startable || state !== "live";
  });
  byId("hives-empty").hidden = hives.length > 0;
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
