// The chain's page: follows the server's event stream, sends writes with the CSRF token.
"use strict";

const $ = id => document.getElementById(id);
const values = {};       // "device/attribute" -> value, as the server's stream says
const shown = {};        // setting attribute -> value in force the editor was last filled with
const SETTINGS = ["poniPath", "maskPath", "bins", "unit"];
const COLUMNS = ["framesReceived", "framesProcessed", "framesFailed", "throughput", "latency", "queueDepth",
  "upstreamConnected", "currentScan"];
let layout = null, scanFetch = null, scanAgain = false, resultsTimer = null;

function csrf() {
  const m = document.cookie.match(/(?:^|; )xrd_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function call(method, url, body) {
  const options = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  const response = await fetch(url, options);
  let data = {};
  try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function say(id, text, error) {
  const el = $(id); el.textContent = text; el.className = "message " + (error ? "error" : "done");
}

function fmt(attr, v) {
  if (v === null || v === undefined) return "—";
  if (attr === "throughput") return Number(v).toFixed(1);
  if (attr === "latency") return Number(v).toFixed(3);
  if (attr === "upstreamConnected") return v ? "connected" : "NOT connected";
  return String(v);
}

function cell(device, attr) {
  return document.querySelector(`td[data-device="${device}"][data-attr="${attr}"]`);
}

function buildDevices() {
  const body = $("devices").querySelector("tbody");
  for (const d of layout.devices) {
    const row = document.createElement("tr");
    const name = document.createElement("td"); name.textContent = d.name; row.appendChild(name);
    for (const attr of ["State", ...COLUMNS]) {
      const td = document.createElement("td");
      td.dataset.device = d.name; td.dataset.attr = attr; td.textContent = "—";
      if (attr === "State") td.className = "state";
      row.appendChild(td);
    }
    body.appendChild(row);
  }
}

function paintState(device, state) {
  const td = cell(device, "State");
  if (!td) return;
  const name = state || "UNKNOWN";
  td.textContent = name;
  const colour = layout.state_colours[name] || layout.state_colours.UNKNOWN;
  td.style.background = colour;
  const [r, g, b] = colour.match(/\d+/g).map(Number);
  td.style.color = 0.299 * r + 0.587 * g + 0.114 * b < 110 ? "white" : "black";
}

function alarms() {
  const lines = [];
  for (const d of layout.devices) {
    const state = values[`${d.name}/State`], status = values[`${d.name}/Status`];
    if (state && !["ON", "RUNNING"].includes(state)) lines.push(`${d.name} — ${state}: ${status || ""}`);
  }
  $("alarms").textContent = lines.join("\n") || "no device in ALARM";
}

function integrators() { return layout.devices.filter(d => d.role === "integrator").map(d => d.name); }
function merger() { return layout.devices.find(d => d.role === "merger").name; }
function stitcher() { return layout.devices.find(d => d.role === "stitcher").name; }

function drawPattern() {
  const series = integrators().map(d => ({ name: d, x: values[`${d}/radialAxis`] || [], y: values[`${d}/lastPattern`] || [] }));
  const unit = values[`${integrators()[0]}/unit`] || values[`${stitcher()}/unit`];
  linePlot($("pattern"), series, layout.units[unit] || unit || "radial axis", "intensity (counts)", "no pattern yet");
}

function drawPressure() {
  const m = merger(), trace = values[`${m}/pressureTrace`] || [];
  const p = values[`${m}/pressure`], sigma = values[`${m}/pressureSigma`], rate = values[`${m}/compressionRate`];
  const has = trace.length || (p !== undefined && p !== null);
  $("pressure-section").hidden = !has;
  if (!has) return;
  const parts = [];
  if (p !== null && p !== undefined) parts.push(`P = ${p.toFixed(2)}` + (sigma !== null && sigma !== undefined ? ` ± ${sigma.toFixed(2)}` : "") + " GPa");
  if (rate !== null && rate !== undefined) parts.push(`rate ${rate.toFixed(3)} GPa/s`);
  $("pressure-text").textContent = parts.join(", ");
  linePlot($("pressure"), [{ name: "P", x: trace.map(r => r[0]), y: trace.map(r => r[1]) }],
    "frame number", "pressure (GPa)", "no pressure yet");
}

async function drawScan() {
  if (scanFetch) { scanAgain = true; return; }
  scanFetch = fetch("/api/scan").then(r => r.json()).then(picture => {
    heatmapPlot($("heatmap"), picture);
    $("scan-title").textContent = picture.frames ? `${picture.name}: ${picture.frames} frames (${picture.status})` : "";
    $("heatmap").dataset.frames = String(picture.frames || 0);
  }).catch(() => {}).finally(() => { scanFetch = null; if (scanAgain) { scanAgain = false; drawScan(); } });
}

function followSetting(attr, value) {
  $(`force-${attr}`).textContent = value === "" ? "none" : String(value ?? "—");
  const editor = $(`edit-${attr}`);
  if (String(editor.value) === String(shown[attr] ?? "") || shown[attr] === undefined) editor.value = value ?? "";
  shown[attr] = value ?? "";
}

function showJobs(jobs) {
  const body = $("jobs").querySelector("tbody"); body.textContent = "";
  for (const job of (jobs || []).slice().reverse()) {
    const row = document.createElement("tr"); row.dataset.job = job.id;
    const progress = document.createElement("progress"); progress.max = 1; progress.value = job.progress || 0;
    const texts = [job.id, job.backend, job.state, null, `${job.frames_done}/${job.frames_total}` +
      (job.frames_failed ? ` (${job.frames_failed} failed)` : ""), job.reason || "", job.output || ""];
    texts.forEach((t, i) => {
      const td = document.createElement("td");
      if (i === 3) td.appendChild(progress); else td.textContent = t;
      if (i === 2) td.className = "job-state";
      row.appendChild(td);
    });
    const td = document.createElement("td");
    if (["pending", "running", "merging"].includes(job.state)) {
      const b = document.createElement("button"); b.textContent = "Cancel"; b.className = "write cancel";
      b.onclick = () => call("POST", `/api/jobs/${encodeURIComponent(job.id)}/cancel`)
        .then(r => say("job-message", r.answer)).catch(e => say("job-message", e.message, true));
      td.appendChild(b);
    }
    row.appendChild(td); body.appendChild(row);
  }
}

function audit(entry) {
  const body = $("audit").querySelector("tbody"), row = document.createElement("tr");
  for (const t of [entry.time, `${entry.user} (${entry.how})`, entry.action, entry.detail, entry.answer]) {
    const td = document.createElement("td"); td.textContent = t; row.appendChild(td);
  }
  body.insertBefore(row, body.firstChild);
}

function apply(message) {
  const key = message.k, v = message.v;
  values[key] = v;
  if (key === "scan") { drawScan(); return; }
  if (key === "audit") { audit(v); return; }
  const cut = key.lastIndexOf("/"), device = key.slice(0, cut), attr = key.slice(cut + 1);
  if (attr === "State") { paintState(device, message.e ? "UNKNOWN" : v); alarms(); }
  else if (attr === "Status") alarms();
  const td = cell(device, attr);
  if (td) td.textContent = message.e ? "—" : fmt(attr, v);
  if (device === stitcher() && SETTINGS.includes(attr)) followSetting(attr, v);
  if (device === stitcher() && attr === "jobs") showJobs(v);
  if (["lastPattern", "radialAxis"].includes(attr)) drawPattern();
  if (device === merger() && attr.startsWith("pressure") || attr === "compressionRate") drawPressure();
  if (device === merger() && attr === "lastOutputFile") { clearTimeout(resultsTimer); resultsTimer = setTimeout(results, 300); }
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("snapshot", e => {
    $("live").textContent = "live"; $("live").className = "badge ok";
    JSON.parse(e.data).filter(m => m.k !== "audit").forEach(apply);  // the audit table is fetched whole
  });
  source.onmessage = e => apply(JSON.parse(e.data));
  source.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "badge"; };
}

async function results() {
  try {
    const data = await call("GET", "/api/results");
    $("results-folder").textContent = data.folder;
    const body = $("results").querySelector("tbody"); body.textContent = "";
    for (const f of data.files) {
      const row = document.createElement("tr"); row.dataset.file = f.name;
      for (const t of [f.name, f.status, `${(f.size / 1e6).toFixed(2)} MB`]) {
        const td = document.createElement("td"); td.textContent = t; row.appendChild(td);
      }
      const td = document.createElement("td"), base = `/api/results/${encodeURIComponent(f.name)}`;
      const links = [["NeXus", base], ["heatmap PNG", `${base}/heatmap.png`]];
      if (f.pressure) links.push(["pressure CSV", `${base}/pressure.csv`]);
      for (const [text, href] of links) {
        const a = document.createElement("a"); a.textContent = text; a.href = href; a.className = "download";
        td.appendChild(a); td.appendChild(document.createTextNode(" "));
      }
      row.appendChild(td); body.appendChild(row);
    }
  } catch (e) { $("results-folder").textContent = e.message; }
}

// -- browsing inside the roots ----------------------------------------------------------------------
let browseTarget = null, browseKind = null;
async function browse(path) {
  try {
    const data = await call("GET", `/api/browse?kind=${browseKind}&path=${encodeURIComponent(path)}`);
    $("browser-path").textContent = data.path || "(roots)";
    const list = $("browser-entries"); list.textContent = "";
    if (data.parent !== null) {
      const up = document.createElement("li"); up.textContent = "⬑ ..";
      up.onclick = () => browse(data.parent); list.appendChild(up);
    }
    for (const e of data.entries) {
      const li = document.createElement("li"); li.textContent = (e.folder ? "📁 " : "") + e.name; li.dataset.path = e.path;
      li.onclick = () => { if (e.folder) browse(e.path); else { $(browseTarget).value = e.path; $("browser").close(); } };
      list.appendChild(li);
    }
    $("browser-message").textContent = "";
  } catch (err) { $("browser-message").textContent = err.message; $("browser-message").className = "message error"; }
}

function edited() {
  const changes = {};
  for (const attr of SETTINGS) {
    let v = $(`edit-${attr}`).value;
    if (attr === "bins") v = parseInt(v, 10);
    if (String(v) !== String(shown[attr] ?? "")) changes[attr] = v;
  }
  return changes;
}

function wire() {
  $("start-button").onclick = () => command("start");
  $("stop-button").onclick = () => command("stop");
  $("clear-button").onclick = () => command("clear-errors");
  $("apply-button").onclick = async () => {
    const changes = edited();
    if (!Object.keys(changes).length) { say("settings-message", "nothing to apply: the editor shows the settings in force"); return; }
    try {
      await call("POST", "/api/settings", changes);
      say("settings-message", "applied: " + Object.entries(changes).map(([k, v]) => `${k} ${v === "" ? "none" : v}`).join(", "));
    } catch (e) { say("settings-message", e.message, true); }
  };
  $("revert-button").onclick = () => { for (const a of SETTINGS) $(`edit-${a}`).value = shown[a] ?? ""; say("settings-message", ""); };
  $("job-button").onclick = async () => {
    try { const r = await call("POST", "/api/jobs", { path: $("job-path").value }); say("job-message", `submitted: ${r.answer}`); }
    catch (e) { say("job-message", e.message, true); }
  };
  for (const b of document.querySelectorAll("button.browse")) {
    b.onclick = () => {
      browseTarget = b.dataset.target; browseKind = b.dataset.kind;
      $("browser-title").textContent = `Choose a file under the ${browseKind} roots`;
      $("browser").showModal(); browse("");
    };
  }
  $("browser-close").onclick = () => $("browser").close();
  $("results-button").onclick = results;
  $("login-form").onsubmit = async e => {
    e.preventDefault();
    try { await call("POST", "/api/login", { user: $("login-user").value, password: $("login-password").value }); location.reload(); }
    catch (err) { say("login-message", err.message, true); }
  };
  $("logout-button").onclick = () => call("POST", "/api/logout").finally(() => location.reload());
}

async function command(name) {
  try { const r = await call("POST", `/api/chain/${name}`); say("control-message", r.answer); }
  catch (e) { say("control-message", e.message, true); }
}

async function main() {
  layout = await call("GET", "/api/layout");
  $("chain-name").textContent = `— ${layout.devices[0].name} on ${layout.tango_host}`;
  $("calibration-roots").textContent = layout.calibration_roots.join(", ") || "none configured";
  for (const [name, label] of Object.entries(layout.units)) {
    const o = document.createElement("option"); o.value = name; o.textContent = `${name} — ${label}`; $("edit-unit").appendChild(o);
  }
  $("edit-bins").max = layout.max_bins;
  if (layout.user) {
    $("user-text").textContent = `${layout.user.name} (${layout.user.how})`;
    $("logout-button").hidden = layout.user.how !== "account";
  } else {
    document.body.classList.add("read-only");
    $("login-form").hidden = !layout.logins.accounts;
    $("user-text").textContent = "read-only visitor";
  }
  buildDevices(); wire(); connect(); results();
  (await call("GET", "/api/audit")).forEach(audit);
}

main().catch(e => { $("live").textContent = `cannot load: ${e.message}`; });
