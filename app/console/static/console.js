// The operator page (app/console): polls /console/state.json and follows each running job's
// event stream. Every text a tenant could have written (ids, errors, file names) goes in as
// textContent, never as HTML. The admin key lives in this tab's sessionStorage only and goes
// out as the X-API-Key header: EventSource cannot send headers, so streams are read by fetch.
"use strict";

const ROOT = document.body.dataset.root || "";
const KEY_STORE = "comfy-gateway.console.key";
const POLL_MS = 2000;
const MAX_STREAMS = 8; // running jobs followed live at once; the rest update by the poll

const streams = new Map(); // job key -> {card, abort}
const thumbnails = new Map(); // job key -> object URL, or "" while asked / when none

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function headers() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

function jobKey(job) {
  return `${job.owner ?? ""}\u0000${job.id}`;
}

function ownerQuery(job) {
  return job.owner == null ? "" : `?owner=${encodeURIComponent(job.owner)}`;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells, wrap = []) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => tr.append(el("td", cell, wrap.includes(i) ? "wrap" : "")));
  return tr;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function megabytes(bytes) {
  return bytes == null ? "–" : `${(bytes / 2 ** 20).toFixed(0)} MB`;
}

function owner(job) {
  return job.owner ?? "–";
}

function showProblem(text) {
  const problem = document.getElementById("problem");
  problem.textContent = text;
  problem.hidden = !text;
}

function askForKey(text) {
  sessionStorage.removeItem(KEY_STORE);
  document.getElementById("console").hidden = true;
  document.getElementById("key-form").hidden = false;
  document.getElementById("summary").textContent = "";
  showProblem(text);
}

// -- the state, polled ---------------------------------------------------------------------

async function poll() {
  try {
    const response = await fetch(`${ROOT}/console/state.json`, { headers: headers() });
    if (response.status === 401) {
      askForKey(apiKey() ? "That key is not accepted." : "");
      return; // polling starts again when a key is entered
    }
    if (response.status === 403) {
      askForKey("That key is not an admin key (ADMIN_API_KEYS).");
      return;
    }
    if (!response.ok) {
      showProblem(`state.json answered ${response.status}`);
    } else {
      showProblem("");
      render(await response.json());
    }
  } catch (error) {
    showProblem(`the gateway did not answer: ${error.message}`);
  }
  setTimeout(poll, POLL_MS);
}

function render(state) {
  document.getElementById("key-form").hidden = true;
  document.getElementById("console").hidden = false;
  const ready = state.not_ready ? `not ready: ${state.not_ready}` : "ready";
  document.getElementById("summary").textContent =
    `ComfyUI ${state.comfyui_version ?? "?"} · ${ready} · ${state.queue_depth} queued or running`;
  renderInstances(state.instances);
  renderRunning(state.running);
  renderQueue(state.queue, state.queue_depth);
  renderFinished(state.finished);
  renderModels(state.models);
  renderPeers(state.peers);
}

function renderInstances(instances) {
  fill(
    "instances",
    instances.map((i) => {
      const gpus = i.devices.map((d) =>
        d.vram_total ? `${d.name} (${megabytes(d.vram_total)})` : d.name,
      );
      const gpu = gpus.join(", ") || (i.gpu == null ? "–" : `GPU ${i.gpu}`);
      const state = i.draining ? `${i.state} (draining)` : i.state;
      const rss = i.rss_mb == null ? "–" : `${i.rss_mb.toFixed(0)} MB`;
      return row([i.index, state, gpu, i.comfyui_version ?? "–", i.jobs_run, i.restarts, rss,
        i.jobs.join(", ") || "–"]);
    }),
  );
}

function renderQueue(queue, depth) {
  document.getElementById("queue-count").textContent = `(${queue.length} waiting, ${depth} in all)`;
  fill(
    "queue",
    queue.map((job) => row([job.position, job.priority, job.id, owner(job),
      `${job.waited_s.toFixed(0)} s`])),
  );
}

// -- running jobs, followed live -----------------------------------------------------------

function renderRunning(running) {
  const container = document.getElementById("running");
  const listed = new Set(running.map(jobKey));
  for (const [key, stream] of streams) {
    if (!listed.has(key)) {
      stream.abort.abort();
      streams.delete(key);
    }
  }
  for (const job of running) {
    const key = jobKey(job);
    if (!streams.has(key)) {
      const stream = { card: runningCard(job), abort: new AbortController(), live: false };
      streams.set(key, stream);
      if ([...streams.values()].filter((s) => s.live).length < MAX_STREAMS) {
        stream.live = true;
        follow(job, stream);
      }
    }
    const stream = streams.get(key);
    if (!stream.live) showProgress(stream.card, job.progress.node, job.progress.step, job.progress.max);
  }
  container.replaceChildren(...running.map((job) => streams.get(jobKey(job)).card));
  if (running.length === 0) container.replaceChildren(el("p", "nothing runs now", "muted"));
}

function runningCard(job) {
  const card = el("div", null, "card running");
  card.dataset.job = job.id;
  card.append(el("div", job.id, "id"), el("div", `${owner(job)} · ${job.workflow}`, "muted"));
  const node = el("div", "", "node muted");
  const bar = el("progress");
  bar.max = 1;
  bar.value = 0;
  const img = el("img");
  img.alt = "newest preview";
  img.hidden = true;
  card.append(node, bar, img);
  showProgress(card, job.progress.node, job.progress.step, job.progress.max);
  return card;
}

function showProgress(card, node, step, max) {
  const bar = card.querySelector("progress");
  bar.max = max || 1;
  bar.value = max ? step : 0;
  card.querySelector(".node").textContent =
    node == null ? "waiting to start" : max ? `node ${node}: step ${step} of ${max}` : `node ${node}`;
}

function showPreview(card, data) {
  // Only an image as a data URL: nothing else may become the src of an element here.
  if (typeof data.image !== "string" || !data.image.startsWith("data:image/")) return;
  const img = card.querySelector("img");
  img.src = data.image;
  img.hidden = false;
  const where = data.node_name || data.node;
  if (where != null && data.max) {
    card.querySelector(".node").textContent = `${where}: step ${data.step} of ${data.max}`;
  }
}

async function follow(job, stream) {
  const url = `${ROOT}/prompt/${encodeURIComponent(job.id)}/events${ownerQuery(job)}`;
  try {
    const response = await fetch(url, { headers: headers(), signal: stream.abort.signal });
    if (!response.ok || !response.body) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(stream.card, buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") showProblem(`a job's event stream broke: ${error.message}`);
  } finally {
    stream.live = false;
  }
}

function onEvent(card, frame) {
  let type = "message";
  const lines = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
  }
  if (lines.length === 0) return;
  let data;
  try {
    data = JSON.parse(lines.join("\n"));
  } catch {
    return;
  }
  if (type === "executing") showProgress(card, data.node, 0, 0);
  else if (type === "progress") showProgress(card, data.node, data.value, data.max);
  else if (type === "preview") showPreview(card, data);
}

// -- finished jobs, their thumbnails and failures --------------------------------------------

function renderFinished(finished) {
  const listed = new Set(finished.map(jobKey));
  for (const [key, url] of thumbnails) {
    if (!listed.has(key)) {
      if (url) URL.revokeObjectURL(url);
      thumbnails.delete(key);
    }
  }
  const cards = finished.map((job) => {
    const card = el("div", null, `card ${job.status}`);
    card.dataset.job = job.id;
    card.append(el("div", job.id, "id"), el("div", `${owner(job)} · ${job.workflow}`, "muted"));
    card.append(el("div", job.status, "status"));
    if (job.error) card.append(el("div", job.error.message, "error"));
    if (job.files && job.files.length) card.append(el("div", job.files[0], "file muted"));
    if (job.thumbnail) thumbnailInto(card, job);
    return card;
  });
  const container = document.getElementById("finished");
  container.replaceChildren(...cards);
  if (cards.length === 0) container.replaceChildren(el("p", "no job has finished yet", "muted"));
  fill(
    "failures",
    finished
      .filter((job) => job.status === "failed" && job.error)
      .map((job) => {
        const e = job.error;
        const message = e.node_id ? `${e.exception_type}: ${e.exception_message}` : e.message;
        return row([job.id, owner(job), e.node_id ?? "–", e.class_type ?? e.code, message], [4]);
      }),
  );
}

function thumbnailInto(card, job) {
  const key = jobKey(job);
  const img = el("img");
  img.alt = `thumbnail of ${job.id}`;
  img.className = "thumbnail";
  const known = thumbnails.get(key);
  if (known) {
    img.src = known;
    card.append(img);
    return;
  }
  if (known === "") return; // asked already: it is coming, or there is none
  thumbnails.set(key, "");
  const url = `${ROOT}/console/jobs/${encodeURIComponent(job.id)}/thumbnail${ownerQuery(job)}`;
  fetch(url, { headers: headers() })
    .then((response) => (response.ok ? response.blob() : null))
    .then((blob) => {
      if (!blob || !thumbnails.has(key)) return;
      const objectUrl = URL.createObjectURL(blob);
      thumbnails.set(key, objectUrl);
      img.src = objectUrl;
      card.append(img);
    })
    .catch(() => {});
}

// -- the model cache and the fleet ---------------------------------------------------------

function renderModels(models) {
  const cap = models.max_bytes ? ` of ${megabytes(models.max_bytes)}` : "";
  document.getElementById("models-use").textContent = `(${megabytes(models.used_bytes)}${cap})`;
  fill(
    "models",
    models.models.map((m) => row([`${m.folder}/${m.filename}`, megabytes(m.bytes),
      m.pinned ? "pinned" : "", m.in_use || "", m.last_used], [0])),
  );
}

function renderPeers(peers) {
  document.getElementById("peers-section").hidden = peers.length === 0;
  fill(
    "peers",
    peers.map((p) => row([p.this ? `${p.name} (this one)` : p.name, p.holding,
      `${p.idle_s.toFixed(0)} s`])),
  );
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  sessionStorage.setItem(KEY_STORE, input.value.trim());
  input.value = "";
  showProblem("");
  poll();
});

poll();
