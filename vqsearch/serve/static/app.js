// vqsearch's page: ask by words, by a photo, or by a box drawn on a frame; watch where it was last seen.
// Plain JS, no build step, nothing fetched from outside. Every API call carries the token when one is set.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};
const basename = (path) => path.split(/[\\/]/).pop();
const seconds = (s) => `${s.toFixed(2)} s`;

const STRIP_FRAMES = 6;        // frames of the last sighting shown beside the player
const PLAYER_FRAMES = 120;     // at most this many frames of a sighting are played
const THUMB_WIDTH = 480;       // frames are asked scaled to this width, except to draw a box on
const PLAYER_WIDTH = 960;
const MAX_UPLOAD = 10 * 1024 * 1024;
const TOKEN_KEY = "vqsearch-token";

const state = { videos: new Map(), crop: null, cropName: "", seq: 0, answer: null, jobsTimer: null };

// --- the API --------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

(function tokenFromAddress() {  // ?token=T once: kept in this browser, taken out of the address bar
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    localStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
})();

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new ApiError(0, "Cannot reach the server: is `vqsearch serve` still running?");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (error) { /* not JSON: keep the status */ }
    if (response.status === 401) $("#token-form").hidden = false;
    throw new ApiError(response.status, message);
  }
  return response;
}
const getJSON = async (path, options) => (await api(path, options)).json();

// --- messages -------------------------------------------------------------------------------
function showError(message) {
  $("#message-text").textContent = message;
  $("#message").hidden = false;
}
function clearError() { $("#message").hidden = true; }
function setStatus(text) { $("#status").textContent = text; }
window.addEventListener("error", (event) => showError(`Something went wrong on this page: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => showError(event.reason?.message || String(event.reason)));
$("#message-close").addEventListener("click", clearError);
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token-form").hidden = true;
  clearError();
  loadVideos().catch((error) => showError(error.message));
});

// --- frames: fetched with the token, kept as object URLs ------------------------------------
const frames = new Map();
function frameURL(videoId, frame, width) {
  const key = `${videoId}/${frame}/${width || ""}`;
  if (!frames.has(key)) {
    const query = width ? `?width=${width}` : "";
    const url = api(`/api/videos/${videoId}/frames/${frame}.jpg${query}`)
      .then((response) => response.blob()).then((blob) => URL.createObjectURL(blob));
    url.catch(() => frames.delete(key));
    frames.set(key, url);
    if (frames.size > 300) {
      const [oldest, old] = frames.entries().next().value;
      frames.delete(oldest);
      old.then((u) => setTimeout(() => URL.revokeObjectURL(u), 5000), () => {});
    }
  }
  return frames.get(key);
}

function placeBox(node, box, video) {
  node.hidden = !box;
  if (!box) return;
  node.style.left = `${(box.x / video.width) * 100}%`;
  node.style.top = `${(box.y / video.height) * 100}%`;
  node.style.width = `${(box.width / video.width) * 100}%`;
  node.style.height = `${(box.height / video.height) * 100}%`;
}

// A frame with its box drawn over it, sized by the video's aspect before the image arrives.
function frameView(video, frame, box, className, width = THUMB_WIDTH, caption = "") {
  const view = el("div", `frame loading ${className}`);
  view.style.aspectRatio = `${video.width} / ${video.height}`;
  const image = el("img");
  image.alt = `${basename(video.video)}, frame ${frame}`;
  const boxNode = el("div", "box");
  view.append(image, boxNode);
  if (caption) view.append(el("span", "caption", caption));
  placeBox(boxNode, box, video);
  frameURL(video.id, frame, width)
    .then((url) => { image.src = url; view.classList.remove("loading"); })
    .catch((error) => { view.classList.remove("loading"); view.title = error.message; });
  return view;
}

function spread(items, count) {
  if (items.length <= count) return items.slice();
  return Array.from({ length: count }, (_, i) => items[Math.round((i * (items.length - 1)) / (count - 1))]);
}

// --- the library ----------------------------------------------------------------------------
async function loadVideos() {
  const { videos } = await getJSON("/api/videos");
  state.videos = new Map(videos.map((video) => [video.id, video]));
  const filter = $("#video-filter");
  const chosen = filter.value;
  filter.replaceChildren(new Option("All videos", ""), ...videos.map((v) => new Option(basename(v.video), v.id)));
  filter.value = state.videos.has(Number(chosen)) ? chosen : "";
  $("#pick-video").replaceChildren(...videos.map((v) => new Option(basename(v.video), v.id)));
  $("#pick-open").disabled = videos.length === 0;
  $("#welcome-library").textContent = videos.length
    ? `${videos.length} video${videos.length > 1 ? "s" : ""} indexed: ${videos.map((v) => basename(v.video)).join(", ")}.`
    : "No videos indexed yet: index one in the Library.";
  renderLibrary(videos);
}

async function video(id) {
  if (!state.videos.has(id)) await loadVideos();  // indexed since the page loaded
  const found = state.videos.get(id);
  if (!found) throw new ApiError(404, `video ${id} is no longer in the index`);
  return found;
}

function renderLibrary(videos) {
  const rows = videos.map((v) => {
    const row = el("tr");
    const name = el("td");
    name.append(el("strong", "", basename(v.video)), el("div", "muted", v.video));
    if (v.declared_frames) name.append(el("div", "muted", `partial: ${v.frames} of ${v.declared_frames} frames decode`));
    const cells = [seconds(v.duration), `${v.width}×${v.height}`, v.fps, v.frames_sampled, v.tracks,
      v.region_tokens, `${v.compression}×`].map((text) => el("td", "num", String(text)));
    const actions = el("td");
    const pick = el("button", "ghost", "Draw a box");
    pick.addEventListener("click", () => { showView("search"); openPicker(v.id, 0); });
    const remove = el("button", "ghost", "Remove");
    remove.addEventListener("click", () => removeVideo(v));
    actions.append(pick, " ", remove);
    row.append(name, ...cells, actions);
    return row;
  });
  $("#videos tbody").replaceChildren(...rows);
  $("#library-empty").hidden = videos.length > 0;
}

async function removeVideo(v) {
  if (!confirm(`Remove ${basename(v.video)} from the index? The video file stays where it is.`)) return;
  try {
    await api(`/api/videos/${v.id}`, { method: "DELETE" });
    clearError();
    await loadVideos();
  } catch (error) {
    showError(`Could not remove ${basename(v.video)}: ${error.message}`);
  }
}

$("#index-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const path = $("#index-path").value.trim();
  if (!path) { showError("Give the path of a video file on the server."); return; }
  try {
    const headers = { "Content-Type": "application/json" };
    await getJSON("/api/index", { method: "POST", headers, body: JSON.stringify({ path }) });
    $("#index-path").value = "";
    clearError();
    pollJobs();
  } catch (error) {
    showError(`Could not start indexing: ${error.message}`);
  }
});

let jobsSeen = new Map();
async function pollJobs() {
  clearTimeout(state.jobsTimer);
  let jobs;
  try {
    ({ jobs } = await getJSON("/api/jobs"));
  } catch (error) {
    showError(`Could not read the index jobs: ${error.message}`);
    return;
  }
  const finished = jobs.some((job) => job.state === "done" && jobsSeen.get(job.job) !== "done");
  jobsSeen = new Map(jobs.map((job) => [job.job, job.state]));
  $("#jobs").replaceChildren(...jobs.slice(-8).reverse().map((job) => {
    const row = el("div", `job ${job.state}`);
    const bar = el("progress");
    bar.max = 1;
    bar.value = job.progress;
    const said = job.state === "running" ? `running ${Math.round(job.progress * 100)} %` : job.state;
    row.append(el("span", "path", job.video), el("span", "state", said), bar);
    if (job.error) row.append(el("span", "error", job.error));
    const { result } = job;
    if (result) row.append(el("span", "muted", `${result.frames_sampled} frames → ${result.tracks} tracks in ${result.seconds.toFixed(1)} s`));
    return row;
  }));
  if (finished) await loadVideos();
  if (jobs.some((job) => job.state === "queued" || job.state === "running")) state.jobsTimer = setTimeout(pollJobs, 800);
}

// --- the query ------------------------------------------------------------------------------
function queryForm(text, relocate) {
  const form = new FormData();
  if (text) form.append("text", text);
  if (state.crop) form.append("crop", state.crop, state.cropName);
  const only = $("#video-filter").value;
  if (only) form.append("video_id", only);
  form.append("top_k", "8");
  form.append("relocate", relocate ? "true" : "false");
  return form;
}

// The index answers at once with the tracks' coarse boxes; then the same query is asked again
// with relocate=true, which decodes the last sighting and gives it a tight box on every frame.
async function search(event) {
  event?.preventDefault();
  clearError();
  const text = $("#text").value.trim();
  if (!text && !state.crop) { showError("Type what you are looking for, or give a photo of it."); return; }
  const seq = ++state.seq;
  const button = $("#search-button");
  button.disabled = true;
  setStatus("Searching…");
  let answer;
  try {
    answer = await getJSON("/api/query", { method: "POST", body: queryForm(text, false) });
  } catch (error) {
    if (seq === state.seq) { showError(error.message); setStatus(""); }
    return;
  } finally {
    button.disabled = false;
  }
  if (seq !== state.seq) return;
  await render(answer, answer.last_seen ? "pending" : "");
  if (!answer.last_seen) return;
  try {
    const refined = await getJSON("/api/query", { method: "POST", body: queryForm(text, true) });
    if (seq === state.seq) await render(refined, "done");
  } catch (error) {
    if (seq !== state.seq) return;
    setBoxState("failed");
    showError(`Could not refine the boxes (the index's coarse boxes stay): ${error.message}`);
  }
}
$("#search-form").addEventListener("submit", search);

function setBoxState(boxes) {
  const badge = $("#box-state");
  badge.className = `badge ${boxes}`;
  const said = { pending: "refining boxes…", done: "tight box on every frame", failed: "coarse boxes (index)" };
  badge.textContent = said[boxes] || "";
}

async function render(answer, boxes) {
  state.answer = answer;
  const hits = [answer.last_seen, ...answer.results].filter(Boolean);
  for (const id of new Set([...hits.map((h) => h.video_id), ...answer.occurrences.map((o) => o.video_id)])) await video(id);
  $("#welcome").hidden = true;
  $("#answer").hidden = false;
  const last = answer.last_seen;
  $("#last-seen").hidden = !last;
  $("#not-found").hidden = Boolean(last);
  if (last) {
    setBoxState(boxes);
    showLastSeen(last);
  }
  renderTimelines(answer);
  renderResults(answer);
  const { text, crop } = answer.query;
  const asked = [text && `“${text}”`, crop && `the photo ${crop}`].filter(Boolean).join(" and ");
  const sightings = `${answer.occurrences.length} sighting${answer.occurrences.length === 1 ? "" : "s"} in all`;
  setStatus(last
    ? `Last seen in ${basename(last.video)} at ${seconds(last.start_time)}–${seconds(last.end_time)} (${asked}); ${sightings}.`
    : `Not found above the model's threshold (${asked}).`);
}

function showLastSeen(hit) {
  const v = state.videos.get(hit.video_id);
  $("#player-title").textContent = "Last seen";
  $("#back-to-last").hidden = true;
  document.querySelectorAll(".result-card.playing").forEach((card) => card.classList.remove("playing"));
  $("#last-video").textContent = basename(hit.video);
  $("#last-window").textContent = `${seconds(hit.start_time)} – ${seconds(hit.end_time)}`;
  const facts = [["video", hit.video], ["time", `${seconds(hit.start_time)} – ${seconds(hit.end_time)}`],
    ["frames", `${hit.start_frame} – ${hit.end_frame}`], ["boxes", `${hit.boxes.length} frames`],
    ["score", hit.score.toFixed(3)]];
  $("#last-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", "", term), el("dd", "", value)]));
  $("#strip").replaceChildren(...spread(hit.boxes, STRIP_FRAMES).map((box) => {
    const view = frameView(v, box.frame, box, "", THUMB_WIDTH, seconds(box.frame / v.fps));
    view.addEventListener("click", () => player.seek(box.frame));
    return view;
  }));
  player.load(hit, v);
}

function sameHit(a, b) {
  return a && b && a.video_id === b.video_id && a.start_frame === b.start_frame && a.end_frame === b.end_frame;
}

function overlaps(hit, span) {
  return hit.video_id === span.video_id && hit.start_frame <= span.end_frame && span.start_frame <= hit.end_frame;
}

function renderResults(answer) {
  const cards = answer.results.map((hit, i) => {
    const v = state.videos.get(hit.video_id);
    const card = el("article", "result-card");
    const middle = hit.boxes[Math.floor(hit.boxes.length / 2)] || { frame: hit.start_frame };
    card.append(frameView(v, middle.frame, hit.boxes.length ? middle : null, "result"));
    const meta = el("div", "meta");
    meta.append(el("span", "name", `#${i + 1} ${basename(hit.video)}`), el("span", "muted", hit.score.toFixed(3)));
    card.append(meta, el("div", "muted", `${seconds(hit.start_time)} – ${seconds(hit.end_time)}`));
    card.addEventListener("click", () => playResult(hit, i, card));
    return card;
  });
  $("#results").replaceChildren(...(cards.length ? cards : [el("p", "muted", "No results.")]));
}

function playResult(hit, rank, card) {
  if (sameHit(hit, state.answer.last_seen)) { showLastSeen(state.answer.last_seen); return; }
  document.querySelectorAll(".result-card.playing").forEach((other) => other.classList.remove("playing"));
  card?.classList.add("playing");
  $("#last-seen").hidden = false;
  $("#player-title").textContent = `Result #${rank + 1}`;
  $("#back-to-last").hidden = !state.answer.last_seen;
  player.load(hit, state.videos.get(hit.video_id));
  $("#last-seen").scrollIntoView({ behavior: "smooth", block: "start" });
}
$("#back-to-last").addEventListener("click", () => showLastSeen(state.answer.last_seen));

function renderTimelines(answer) {
  const byVideo = new Map();
  const add = (id) => { if (!byVideo.has(id)) byVideo.set(id, []); return byVideo.get(id); };
  answer.occurrences.forEach((span) => add(span.video_id).push(["occ", span]));
  answer.results.forEach((hit, i) => add(hit.video_id).push(["result", hit, i]));
  if (answer.last_seen) add(answer.last_seen.video_id).push(["last", answer.last_seen]);
  const rows = [...state.videos.values()].filter((v) => byVideo.has(v.id)).map((v) => {
    const row = el("div", "timeline");
    const name = el("div", "name", basename(v.video));
    name.title = v.video;
    const track = el("div", "track");
    for (const [kind, span, rank] of byVideo.get(v.id)) {
      const seg = el("div", `seg ${kind}`);
      seg.style.left = `${(span.start_time / v.duration) * 100}%`;
      seg.style.width = `${(Math.max(span.end_time - span.start_time, 0) / v.duration) * 100}%`;
      seg.title = `${kind === "last" ? "last seen" : kind === "result" ? `result #${rank + 1}` : "seen"}: `
        + `${seconds(span.start_time)} – ${seconds(span.end_time)}, score ${span.score.toFixed(3)}`;
      seg.addEventListener("click", () => {
        const hit = kind === "occ" ? answer.results.find((h) => overlaps(h, span)) : span;
        if (hit) playResult(hit, answer.results.indexOf(hit));
        else openPicker(v.id, span.start_frame);
      });
      track.append(seg);
    }
    const start = el("span", "axis", "0 s");
    const end = el("span", "axis", seconds(v.duration));
    end.style.right = "0";
    track.append(start, end);
    row.append(name, track);
    return row;
  });
  $("#timelines").replaceChildren(...(rows.length ? rows : [el("p", "muted", "No sightings.")]));
}

// --- the player: the sighting frame by frame, at the video's pace, its box following ------
class Player {
  constructor(root) {
    this.view = $(".player-frame", root);
    this.image = $("img", this.view);
    this.box = $(".box", this.view);
    this.scrub = $(".scrub", root);
    this.time = $(".time", root);
    this.button = $(".play", root);
    this.frames = [];
    this.at = 0;
    this.run = 0;  // a new load, seek or pause ends the run before it
    this.button.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.scrub.addEventListener("input", () => { this.pause(); this.show(Number(this.scrub.value)); });
  }

  load(hit, video) {
    this.hit = hit;
    this.video = video;
    this.frames = spread(hit.boxes.length ? hit.boxes : [{ frame: hit.start_frame }], PLAYER_FRAMES);
    this.view.style.aspectRatio = `${video.width} / ${video.height}`;
    this.scrub.max = String(this.frames.length - 1);
    this.pause();
    this.show(0).then((shown) => { if (shown) this.play(); });
  }

  async show(i) {
    const run = this.run;
    const box = this.frames[i];
    const url = await frameURL(this.video.id, box.frame, PLAYER_WIDTH)
      .catch((error) => { showError(error.message); return null; });
    if (run !== this.run || !url) return false;
    this.image.src = url;
    placeBox(this.box, box.width ? box : null, this.video);
    this.at = i;
    this.scrub.value = String(i);
    this.time.textContent = `${seconds(box.frame / this.video.fps)} · frame ${box.frame}`;
    for (const next of this.frames.slice(i + 1, i + 6)) frameURL(this.video.id, next.frame, PLAYER_WIDTH).catch(() => {});
    return true;
  }

  play() {
    this.pause();
    this.playing = true;
    this.button.textContent = "Pause";
    this.next(++this.run);
  }

  pause() {
    this.playing = false;
    this.run += 1;
    this.button.textContent = "Play";
  }

  async next(run) {
    if (run !== this.run || this.frames.length < 2) return;
    const following = (this.at + 1) % this.frames.length;
    const wait = following === 0 ? 1200 : ((this.frames[following].frame - this.frames[this.at].frame) / this.video.fps) * 1000;
    const started = performance.now();
    await frameURL(this.video.id, this.frames[following].frame, PLAYER_WIDTH).catch(() => {});
    setTimeout(async () => {
      if (run === this.run && (await this.show(following))) this.next(run);
    }, Math.max(0, Math.max(wait, 33) - (performance.now() - started)));
  }

  seek(frame) {
    const nearest = this.frames.reduce((best, box, i) =>
      (Math.abs(box.frame - frame) < Math.abs(this.frames[best].frame - frame) ? i : best), 0);
    this.pause();
    this.show(nearest);
  }

  current() { return { videoId: this.video.id, frame: this.frames[this.at].frame }; }
}
const player = new Player($("#player"));
$("#pick-here").addEventListener("click", () => {
  const { videoId, frame } = player.current();
  player.pause();
  openPicker(videoId, frame);
});

// --- the crop: a photo dropped, pasted or chosen, or a box drawn on a frame ---------------
function setCrop(blob, name) {
  if (!blob) return;
  if (!blob.type.startsWith("image/")) { showError(`${name} is not an image.`); return; }
  if (blob.size > MAX_UPLOAD) { showError(`${name} is over 10 MB: crop it to the object.`); return; }
  clearError();
  state.crop = blob;
  state.cropName = name;
  const preview = $("#crop-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("#drop-hint").textContent = `${name} (drop, paste or choose another to replace it)`;
  $("#crop-clear").hidden = false;
}

function clearCrop() {
  state.crop = null;
  $("#crop-preview").hidden = true;
  $("#crop-file").value = "";
  $("#drop-hint").innerHTML = "Drop a photo of the object here, paste one, or <u>choose a file</u>";
  $("#crop-clear").hidden = true;
}

const drop = $("#drop");
$("#crop-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) setCrop(file, file.name);
});
$("#crop-clear").addEventListener("click", clearCrop);
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("#crop-file").click();
  }
});
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) setCrop(file, file.name);
  else showError("Drop an image file (a photo of the object).");
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) setCrop(item.getAsFile(), "pasted image.png");
});

// The picker: a frame of an indexed video at full size; drag to draw a box; its pixels become the crop.
const picker = { videoId: null, frame: 0, rect: null, start: null, timer: null };
const pickArea = $("#pick-area");
const pickImage = $("img", pickArea);
const pickBox = $(".box", pickArea);

function openPicker(videoId, frame) {
  const v = state.videos.get(videoId);
  if (!v) return;
  $("#picker").hidden = false;
  $("#pick-video").value = String(videoId);
  const slider = $("#pick-frame");
  slider.max = String(v.frames - 1);
  slider.step = String(Math.max(1, Math.round(v.fps / 5)));
  slider.value = String(frame);
  showPickFrame(videoId, frame);
  $("#picker").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function showPickFrame(videoId, frame) {
  const v = state.videos.get(videoId);
  picker.videoId = videoId;
  picker.frame = frame;
  picker.rect = null;
  pickBox.hidden = true;
  $("#pick-use").disabled = true;
  pickArea.style.aspectRatio = `${v.width} / ${v.height}`;
  $("#pick-label").textContent = `frame ${frame} · ${seconds(frame / v.fps)}`;
  try {
    const url = await frameURL(videoId, frame);
    if (picker.videoId === videoId && picker.frame === frame) pickImage.src = url;
  } catch (error) {
    showError(error.message);
  }
}

$("#pick-open").addEventListener("click", () => {
  const first = state.videos.keys().next().value;
  if (first !== undefined) openPicker(picker.videoId ?? first, picker.frame);
});
$("#pick-close").addEventListener("click", () => { $("#picker").hidden = true; });
$("#pick-video").addEventListener("change", (event) => openPicker(Number(event.target.value), 0));
$("#pick-frame").addEventListener("input", (event) => {
  clearTimeout(picker.timer);
  picker.timer = setTimeout(() => showPickFrame(picker.videoId, Number(event.target.value)), 120);
});

function pointIn(event) {
  const area = pickArea.getBoundingClientRect();
  return { x: Math.min(Math.max(event.clientX - area.left, 0), area.width) / area.width,
           y: Math.min(Math.max(event.clientY - area.top, 0), area.height) / area.height };
}
pickArea.addEventListener("pointerdown", (event) => {
  picker.start = pointIn(event);
  pickArea.setPointerCapture(event.pointerId);
});
pickArea.addEventListener("pointermove", (event) => {
  if (!picker.start) return;
  const end = pointIn(event);
  const v = state.videos.get(picker.videoId);
  picker.rect = { x: Math.min(picker.start.x, end.x) * v.width, y: Math.min(picker.start.y, end.y) * v.height,
                  width: Math.abs(end.x - picker.start.x) * v.width, height: Math.abs(end.y - picker.start.y) * v.height };
  placeBox(pickBox, picker.rect, v);
  $("#pick-use").disabled = picker.rect.width < 8 || picker.rect.height < 8;
});
pickArea.addEventListener("pointerup", () => { picker.start = null; });

$("#pick-use").addEventListener("click", () => {
  const { x, y, width, height } = picker.rect;
  const canvas = el("canvas");
  canvas.width = Math.round(width);
  canvas.height = Math.round(height);
  canvas.getContext("2d").drawImage(pickImage, x, y, width, height, 0, 0, canvas.width, canvas.height);
  const v = state.videos.get(picker.videoId);
  canvas.toBlob((blob) => {
    setCrop(blob, `${basename(v.video).replace(/\.[^.]+$/, "")}-frame${picker.frame}.png`);
    $("#picker").hidden = true;
    search();
  }, "image/png");
});

// --- views ----------------------------------------------------------------------------------
function showView(name) {
  $("#search-view").hidden = name !== "search";
  $("#library-view").hidden = name !== "library";
  document.querySelectorAll(".tab[data-view]").forEach((tab) => tab.classList.toggle("active", tab.dataset.view === name));
  if (name === "library") pollJobs();
}
window.addEventListener("hashchange", () => showView(location.hash === "#library" ? "library" : "search"));
showView(location.hash === "#library" ? "library" : "search");
loadVideos().catch((error) => showError(error.message));
