// The job page (#/jobs/<id>): the job's record, its timeline across hops (the queen's
// GET /v1/jobs/<id>/trace, as `keeper jobs trace` shows it), its narration streamed live
// from the first event (a finished job's whole log), tokens as they arrive, a
// download's progress, and Cancel. A dropped stream resumes after the last event shown: no gaps, no repeats.

import { api, ApiError, FINAL_STATES, jobPath, streamJob } from "./api.js";
import { actorClass, byId, bytes, clock, dateTime, duration, el, queenNow, stateBadge } from "./dom.js";

const ELAPSED_TICK_MS = 1000; // how often a running job's elapsed time is redrawn

let current = null; // {id, controller, timer, state, created}
let pending = []; // log lines waiting for the next animation frame
let frameRequested = false;

export function showJob(jobId) {
  closeJob();
  const controller = new AbortController();
  current = { id: jobId, controller, state: null, created: null, ended: null, timer: null };
  byId("job-id").textContent = jobId;
  for (const id of ["job-op", "job-created", "job-elapsed"]) byId(id).textContent = "—";
  byId("job-state").replaceWith(Object.assign(stateBadge("…"), { id: "job-state" }));
  byId("job-log").replaceChildren();
  byId("job-trace").replaceChildren();
  byId("job-trace-card").hidden = true;
  byId("job-tokens").textContent = "";
  byId("job-tokens-card").hidden = true;
  byId("job-progress").hidden = true;
  byId("job-error").hidden = true;
  byId("job-end").textContent = "";
  byId("job-note").textContent = "";
  setCancellable(true);
  window.scrollTo(0, 0);
  byId("job-h").focus();
  loadRecord(current);
  loadTrace(current);
  current.timer = setInterval(() => drawElapsed(current), ELAPSED_TICK_MS);
  follow(current);
}

export function closeJob() {
  if (!current) return;
  current.controller.abort();
  clearInterval(current.timer);
  current = null;
  pending = [];
}

export function setupJobPage() {
  byId("job-cancel").addEventListener("click", cancel);
}

async function loadRecord(job) {
  try {
    const record = await api(jobPath(job.id));
    if (job !== current) return;
    byId("job-op").textContent = record.operation ?? "—";
    byId("job-created").textContent = dateTime(record.created_at);
    job.created = record.created_at;
    if (FINAL_STATES.has(record.state)) job.ended = record.updated_at;
    if (!job.state) setState(job, record.state, record.error);
    drawElapsed(job);
  } catch (error) {
    if (job === current) showError(error instanceof ApiError ? error.message : "The queen is not reachable.");
  }
}

async function follow(job) {
  try {
    await streamJob(job.id, {
      signal: job.controller.signal,
      onEvent: (kind, data, seq) => onEvent(job, kind, data, seq),
      onEnd: (kind, text) => onEnd(job, kind, text),
      onDrop: () => {
        if (job === current) byId("job-note").textContent = "Connection lost; resuming…";
      },
    });
  } catch (error) {
    if (job === current) showError(error instanceof ApiError ? error.message : String(error));
  }
}

function onEvent(job, kind, data, seq) {
  if (job !== current) return;
  if (byId("job-note").textContent === "Connection lost; resuming…") byId("job-note").textContent = "";
  if (kind === "token") {
    byId("job-tokens-card").hidden = false;
    byId("job-tokens").append(document.createTextNode(String(data.t ?? "")));
    return;
  }
  if (kind === "state") {
    setState(job, data.state, data.error);
    if (FINAL_STATES.has(data.state)) job.ended = data.ts;
    queueLine(stateLine(data, seq));
    return;
  }
  const fields = data.fields;
  if (fields && typeof fields.bytes === "number") drawProgress(fields);
  queueLine(narrationLine(kind, data, seq));
}

function onEnd(job, kind, text) {
  if (job !== current) return;
  const words = { DONE: "Job completed.", CANCELLED: "Job cancelled.", ERROR: "Job failed." };
  byId("job-end").textContent = words[kind] ?? "";
  byId("job-note").textContent = "";
  // The terminator names the final state even if its state event was never seen.
  const final = { DONE: "completed", CANCELLED: "cancelled", ERROR: "failed" }[kind];
  if (final && job.state !== final) setState(job, final, kind === "ERROR" ? text : null);
  setCancellable(false);
  flush();
  loadTrace(job);
}

/** The timeline above the narration: one row per span, a bar on the request's time line. */
async function loadTrace(job) {
  let trace;
  try {
    trace = await api(`${jobPath(job.id)}/trace`);
  } catch {
    return; // the narration below still tells the story
  }
  if (job !== current || !trace || !Array.isArray(trace.spans)) return;
  const total = Math.max(trace.duration_s || 0, 1e-9);
  byId("job-trace-id").textContent = trace.trace_id ?? "—";
  byId("job-trace").replaceChildren(...trace.spans.map((span) => traceRow(span, total)));
  byId("job-trace-card").hidden = false;
}

function traceRow(span, total) {
  const left = (100 * span.offset_s) / total;
  const width = span.kind === "mark" ? 0 : Math.max((100 * span.duration_s) / total, 0.4);
  const bar = el("span", { class: `trace-bar kind-${span.kind}`, title: `${span.name}: ${seconds(span.duration_s)}` });
  bar.style.left = `${Math.min(left, 100)}%`;
  bar.style.width = `${Math.min(width, 100 - Math.min(left, 100))}%`;
  return el("tr", { class: `trace-row kind-${span.kind}`, data: { kind: span.kind } },
    el("td", { class: "trace-name", text: span.name }),
    el("td", { text: span.hop }),
    el("td", { text: span.host }),
    el("td", { class: "num", text: `+${seconds(span.offset_s)}` }),
    el("td", { class: "num", text: span.kind === "mark" ? "—" : seconds(span.duration_s) }),
    el("td", { class: "trace-lane" }, bar));
}

function seconds(value) {
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function narrationLine(kind, data, seq) {
  const level = ["debug", "info", "warn", "error"].includes(data.level) ? data.level : "info";
  const actor = data.actor ?? "?";
  const action = kind === "output" ? (data.stream ?? "output") : (data.action ?? "");
  return el("li", { class: `line level-${level} kind-${kind === "output" ? "output" : "narration"}`, data: { seq, kind } },
    el("span", { class: "seq", text: seq }),
    el("time", { class: "ts", text: clock(data.ts) }),
    el("span", { class: actorClass(actor), text: actor }),
    el("span", { class: "action", text: action }),
    el("span", { class: "human", text: data.human ?? "" }),
    data.origin ? el("span", { class: "origin", text: data.origin }) : null);
}

function stateLine(data, seq) {
  const text = data.state; // a failure's error is shown once, above the log
  return el("li", { class: "line kind-state", data: { seq, kind: "state" } },
    el("span", { class: "seq", text: seq }),
    el("time", { class: "ts", text: clock(data.ts) }),
    el("span", { class: "actor", text: "state" }),
    el("span", { class: "action", text: "" }),
    el("span", { class: "human", text }));
}

/** Lines are added once per animation frame, so a fast job costs one layout per frame. */
function queueLine(line) {
  pending.push(line);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(flush);
  }
}

function flush() {
  frameRequested = false;
  if (!pending.length) return;
  const log = byId("job-log");
  const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  log.append(...pending);
  pending = [];
  if (atBottom) window.scrollTo(0, document.body.scrollHeight);
}

function setState(job, state, error) {
  job.state = state;
  byId("job-state").replaceWith(Object.assign(stateBadge(state), { id: "job-state" }));
  if (FINAL_STATES.has(state)) {
    setCancellable(false);
    if (error) showError(error);
  }
  drawElapsed(job);
}

function drawElapsed(job) {
  if (!job || job !== current || typeof job.created !== "number") return;
  const end = job.ended ?? queenNow();
  byId("job-elapsed").textContent = duration(end - job.created);
}

function drawProgress(fields) {
  const bar = byId("job-progress-bar");
  byId("job-progress").hidden = false;
  if (typeof fields.total === "number" && fields.total > 0) {
    bar.max = fields.total;
    bar.value = Math.min(fields.bytes, fields.total);
    const percent = Math.floor((100 * fields.bytes) / fields.total);
    byId("job-progress-text").textContent = `${percent}% (${bytes(fields.bytes)} of ${bytes(fields.total)})`;
  } else {
    bar.removeAttribute("value"); // indeterminate: the size is unknown
    byId("job-progress-text").textContent = bytes(fields.bytes);
  }
}

function showError(message) {
  const shown = byId("job-error");
  shown.textContent = message;
  shown.hidden = false;
}

function setCancellable(on) {
  byId("job-cancel").disabled = !on;
}

async function cancel() {
  const job = current;
  if (!job) return;
  const note = byId("job-note");
  note.textContent = "Cancelling…";
  try {
    await api(jobPath(job.id), { method: "DELETE" });
  } catch (error) {
    if (job !== current) return;
    note.textContent = error instanceof ApiError && error.status === 409
      ? "The job had already ended."
      : error instanceof ApiError ? error.message : "The queen is not reachable.";
    return;
  }
  if (job === current) note.textContent = "";
}
