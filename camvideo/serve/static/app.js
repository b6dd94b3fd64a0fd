// camvideo serve: the page. Frames arrive as binary messages (a 32-byte header, then a JPEG);
// each is drawn, then acknowledged, and the server sends the next (the newest) only then.
// Controls and status are small JSON messages on the same socket (camvideo/serve/protocol.py).
"use strict";

const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + query;
const $ = (id) => document.getElementById(id);
const canvas = $("view");
const ctx = canvas.getContext("2d");

// What the tests and the curious can read: frames drawn, latencies (ms), the last status.
const state = { frames: 0, lastSeq: 0, latencies: [], shown: [], status: null, options: {}, errors: [],
                uploads: 0, offset: 0, bestRtt: Infinity, browser: false, recording: false };
window.camvideo = state;

let ws = null;
let pendingAck = null;     // a frame drawn while the tab was hidden: acked when it shows again
let wantDownload = false;  // this viewer pressed Stop recording: download the file when it is ready
let uploading = false;
let uploadSent = 0;
let watching = false;      // serve browser: another viewer's camera feeds the session; ours waits

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function connect() {
  ws = new WebSocket(wsUrl);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { $("message").textContent = "Waiting for the first frame…"; for (let i = 0; i < 5; i++) setTimeout(() => send({ type: "ping", t: Date.now() }), 200 * i); };
  ws.onmessage = (event) => (typeof event.data === "string" ? onJson(JSON.parse(event.data)) : onFrame(event.data));
  ws.onclose = (event) => {
    $("message").textContent = event.code === 1001 ? "The server has stopped." : "Disconnected; reconnecting…";
    if (event.code !== 1001) setTimeout(connect, 1000);
  };
}

async function onFrame(buffer) {
  const head = new DataView(buffer, 0, 32);
  const seq = head.getUint32(4, true), captured = head.getFloat64(8, true), stamp = head.getFloat64(24, true);
  const bitmap = await createImageBitmap(new Blob([new Uint8Array(buffer, 32)], { type: "image/jpeg" }));
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const now = Date.now();
  // a frame from this browser's camera carries our own stamp; else the server's clock, corrected
  const latency = stamp > 0 ? now - stamp : now + state.offset - captured;
  state.frames += 1;
  state.lastSeq = seq;
  state.lastStamp = stamp;
  state.latencies.push(latency);
  state.shown.push(now);
  if (state.latencies.length > 300) state.latencies.shift();
  while (state.shown.length && state.shown[0] < now - 2000) state.shown.shift();
  $("message").textContent = "";
  if (document.hidden) pendingAck = seq;  // a hidden tab takes no more frames until it shows
  else send({ type: "ack", seq });
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && pendingAck !== null) { send({ type: "ack", seq: pendingAck }); pendingAck = null; }
});

function onJson(m) {
  if (m.type === "hello") {
    fill("method", m.methods);
    fill("colormap", m.colormaps);
    $("classes").replaceChildren(...m.classes.map((name) => Object.assign(document.createElement("option"), { value: name })));
    $("source").textContent = m.browser ? "· your camera" : "· " + m.source;
    state.browser = m.browser;
    showOptions(m.options);
    showStatus(m.status);
    if (m.browser) startCamera();
  } else if (m.type === "options") showOptions(m.options);
  else if (m.type === "status") showStatus(m);
  else if (m.type === "pong") {
    const now = Date.now(), rtt = now - m.t;
    if (rtt < state.bestRtt) { state.bestRtt = rtt; state.offset = m.server_ms - (m.t + now) / 2; }
  } else if (m.type === "uploaded") { uploading = false; state.uploads += 1; scheduleUpload(); }
  else if (m.type === "camera") {
    // one camera at a time: the holder's; the others watch until it leaves, then may take over
    watching = !m.free;
    state.watching = watching;
    uploading = false;
    if (watching) note(m.message);
    else if (state.browser) scheduleUpload();
  } else if (m.type === "recorded") {
    note("Recorded " + m.name);
    if (wantDownload) { wantDownload = false; download(m.url + query, m.name); }
  } else if (m.type === "notice") note(m.message);
  else if (m.type === "error") { state.errors.push(m.message); note(m.message); uploading = false; }
}

function fill(id, names) {
  $(id).replaceChildren(...names.map((name) => Object.assign(document.createElement("option"), { value: name, textContent: name })));
}

function showOptions(o) {
  state.options = o;
  for (const el of document.querySelectorAll("[data-option]")) {
    const value = o[el.dataset.option];
    if (value === undefined || el === document.activeElement && el.type !== "checkbox" && el.tagName !== "SELECT") continue;
    if (el.type === "checkbox") el.checked = value;
    else el.value = value;
  }
}

function readOption(el) {
  if (el.type === "checkbox") return el.checked;
  if (el.type === "range" || el.type === "number") return el.id === "every" ? Math.max(0, Math.round(+el.value)) : +el.value;
  return el.value.trim() || "top1";
}

for (const el of document.querySelectorAll("[data-option]")) {
  el.addEventListener(el.type === "range" ? "input" : "change", () => send({ type: "options", [el.dataset.option]: readOption(el) }));
}
$("top1").onclick = () => send({ type: "options", target: "top1" });
$("pause").onclick = () => send({ type: state.status && state.status.paused ? "resume" : "pause" });
$("step").onclick = () => send({ type: "step" });
$("record").onclick = toggleRecord;
$("snapshot").onclick = () => download("snapshot.png" + query, "camvideo-snapshot.png");

function toggleRecord() {
  wantDownload = state.recording;
  send({ type: "record", on: !state.recording });
}

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  const actions = { " ": () => $("pause").click(), ".": () => $("step").click(), ArrowRight: () => $("step").click(),
                    r: toggleRecord, s: () => $("snapshot").click() };
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
});

function download(url, name) {
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

let noteTimer = null;
function note(text) {
  state.note = text;
  clearTimeout(noteTimer);
  noteTimer = setTimeout(() => { state.note = ""; }, 6000);
}

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * sorted.length))];
}

function showStatus(s) {
  state.status = s;
  state.recording = s.recording;
  $("pause").textContent = s.paused ? "Resume" : "Pause";
  $("record").textContent = s.recording ? "Stop recording" : "Record";
  $("record").classList.toggle("on", s.recording);
  const now = Date.now();  // frames shown in the last 2 s: a pause or a stall ages the figure out
  while (state.shown.length && state.shown[0] < now - 2000) state.shown.shift();
  const fps = state.shown.length > 1 ? (state.shown.length - 1) / ((state.shown[state.shown.length - 1] - state.shown[0]) / 1000) : 0;
  const recent = state.latencies.slice(-60);
  const parts = [fps.toFixed(1) + " fps"];
  if (recent.length) parts.push(`latency ${percentile(recent, 50).toFixed(0)} / ${percentile(recent, 95).toFixed(0)} ms (p50 / p95)`);
  if (s.model_ms) parts.push(`model ${s.model_ms.toFixed(0)} ms, every ${s.every}${s.every_auto ? " (auto)" : ""}`);
  parts.push(`dropped ${s.dropped}`);
  if (s.device) parts.push(s.device);
  if (s.viewers > 1) parts.push(`${s.viewers} viewers`);
  if (watching) parts.push("watching another viewer's camera");
  if (s.paused) parts.push("paused");
  if (!["live", "playing", "starting"].includes(s.source)) parts.push(s.source);
  if (s.recording) parts.push(`● REC ${s.recorded} frames`);
  if (state.note) parts.push(state.note);
  $("status").textContent = parts.join("  ·  ");
  if (s.error) $("message").textContent = s.error;
  else if (s.state === "ended") $("message").textContent = "End of the video";
}

// serve browser: this page's camera is the source. A frame goes up only when the server
// has taken the previous one, so uploads run at the rate the server keeps up with.
const grab = document.createElement("canvas");
async function startCamera() {
  const video = $("camera");
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    await video.play();
  } catch (err) {
    $("message").textContent = "No camera: " + err.message + " (the page needs http://localhost or https, and your permission)";
    return;
  }
  scheduleUpload();
  setInterval(() => { if (uploading && !watching && Date.now() - uploadSent > 3000) { uploading = false; scheduleUpload(); } }, 1000);
}

function scheduleUpload() {
  const video = $("camera");
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(upload);
  else setTimeout(upload, 1000 / 30);
}

function upload() {
  const video = $("camera");
  if (watching) return;  // uploads resume on the server's {type: "camera", free: true}
  if (uploading || !ws || ws.readyState !== WebSocket.OPEN || video.readyState < 2) { if (!uploading) setTimeout(scheduleUpload, 100); return; }
  const stamp = Date.now();
  grab.width = video.videoWidth;
  grab.height = video.videoHeight;
  grab.getContext("2d").drawImage(video, 0, 0);
  uploading = true;
  uploadSent = stamp;
  grab.toBlob(async (blob) => {
    const head = new DataView(new ArrayBuffer(12));
    "CVU1".split("").forEach((c, i) => head.setUint8(i, c.charCodeAt(0)));
    head.setFloat64(4, stamp, true);
    const body = new Uint8Array(await blob.arrayBuffer());
    const message = new Uint8Array(12 + body.length);
    message.set(new Uint8Array(head.buffer), 0);
    message.set(body, 12);
    ws.send(message);
  }, "image/jpeg", 0.85);
}

setInterval(() => { if (state.status) showStatus(state.status); }, 500);
connect();
