// The queen's public job API, as the page uses it: JSON requests with the tab's bearer
// token, and job streams read with fetch + a stream reader (EventSource cannot send an
// Authorization header, and the token must never go into a URL).

const TOKEN_KEY = "rbee.queen.token"; // sessionStorage: this tab only, gone when it closes
const RETRY_MIN_MS = 250; // first pause before reconnecting a dropped stream
const RETRY_MAX_MS = 4000; // longest pause between reconnects while the queen is away

export const FINAL_STATES = new Set(["completed", "failed", "cancelled"]);

/** An HTTP answer that is not a success: `status`, the server's one-sentence `message`, `detail`. */
export class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);
let asking = null; // the one pending token prompt, shared by every request that got 401
let onConnection = () => {};

/** Call `fn(ok, why)` whenever the queen becomes reachable or not. */
export function watchConnection(fn) {
  onConnection = fn;
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

/** Ask for the token once (a form in a modal dialog), however many requests wait for it. */
function askToken(refused) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const why = document.getElementById("token-why");
    if (refused) why.textContent = "The queen refused that token: enter the token it was started with (RBEE_TOKEN).";
    input.value = "";
    // Escape would close the dialog and leave every request waiting: the page needs a token.
    const stay = (event) => event.preventDefault();
    const submit = (event) => {
      event.preventDefault();
      const given = input.value.trim();
      if (!given) return;
      token = given;
      sessionStorage.setItem(TOKEN_KEY, token);
      form.removeEventListener("submit", submit);
      dialog.removeEventListener("cancel", stay);
      dialog.close();
      asking = null;
      resolve();
    };
    form.addEventListener("submit", submit);
    dialog.addEventListener("cancel", stay);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** fetch with the token; a 401 asks for the token and tries again. */
async function authorizedFetch(path, init = {}) {
  for (;;) {
    const sent = token;
    let response;
    try {
      response = await fetch(path, { cache: "no-store", ...init, headers: headers(init.headers) });
    } catch (error) {
      if (error.name !== "AbortError") onConnection(false, "the queen is not reachable; retrying");
      throw error;
    }
    onConnection(true);
    if (response.status !== 401) return response;
    await askToken(Boolean(sent));
  }
}

/** A JSON request; resolves to the body, rejects with ApiError on an error status. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  // A job submitted here is a user's request: it starts a trace (W3C traceparent).
  if (method === "POST" && path === "v1/jobs") init.headers = { ...init.headers, traceparent: traceparent() };
  const response = await authorizedFetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null; // an empty or non-JSON body: the status says enough
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message, data ? data.detail : null);
  }
  return data;
}

/** Cancel `jobId` even while the page unloads (keepalive); errors are ignored. */
export function cancelOnUnload(jobId) {
  fetch(jobPath(jobId), { method: "DELETE", keepalive: true, headers: headers() }).catch(() => {});
}

/** A fresh W3C traceparent, `00-<32 hex trace>-<16 hex span>-01` (docs/tracing.md). */
export function traceparent() {
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `00-${hex(16)}-${hex(8)}-01`;
}

export function jobPath(jobId) {
  return `v1/jobs/${encodeURIComponent(jobId)}`;
}

/**
 * Read a job's event stream until its terminator, resuming after a dropped connection.
 *
 * `onEvent(kind, data, seq)` gets every event once, in order: the last seq seen is sent
 * as Last-Event-ID on reconnect and anything at or below it is skipped. `onEnd(kind,
 * text)` gets the terminator (`DONE`, `ERROR`, `CANCELLED`). Resolves when the stream
 * ended or `signal` aborted; rejects with ApiError on a 4xx (no such job). A dropped
 * connection, an unreachable queen or a 5xx is retried with growing pauses.
 */
export async function streamJob(jobId, { onEvent, onEnd, onDrop, signal }) {
  let last = 0;
  let pause = RETRY_MIN_MS;
  while (!signal.aborted) {
    try {
      const init = { signal, headers: last ? { "Last-Event-ID": String(last) } : {} };
      const response = await authorizedFetch(`${jobPath(jobId)}/stream`, init);
      if (!response.ok) {
        let data = null;
        try {
          data = await response.json();
        } catch {
          data = null;
        }
        throw new ApiError(response.status, data?.error ?? `HTTP ${response.status}`, data?.detail);
      }
      const ended = await readFrames(response.body, (frame) => {
        if (frame.id === null) {
          const match = /^\[(DONE|ERROR|CANCELLED)\] ?(.*)$/s.exec(frame.data ?? "");
          if (match) {
            onEnd(match[1], match[2]);
            return true;
          }
          return false;
        }
        if (frame.id <= last) return false; // already shown before the reconnect
        last = frame.id;
        pause = RETRY_MIN_MS;
        onEvent(frame.event, JSON.parse(frame.data), frame.id);
        return false;
      });
      if (ended) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error; // no such job, bad id
    }
    onDrop?.(last);
    await sleep(pause, signal);
    pause = Math.min(pause * 2, RETRY_MAX_MS);
  }
}

/** Split an SSE body into frames; `handle(frame)` returns true at the terminator. */
async function readFrames(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false; // closed without a terminator: the connection dropped
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const frame = parseFrame(block);
        if (frame && handle(frame)) return true;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseFrame(block) {
  const frame = { id: null, event: "message", data: null };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // keep-alive comment
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "id") frame.id = Number.parseInt(value, 10);
    else if (name === "event") frame.event = value;
    else if (name === "data") frame.data = frame.data === null ? value : `${frame.data}\n${value}`;
  }
  return frame.data === null ? null : frame;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
