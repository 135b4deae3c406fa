// samjax annotate: the page. Slices and label maps come from the server as PNGs; clicks and boxes go back as
// JSON in the slice's pixel coordinates (x the column, a pixel's centre at +0.5), the convention of SAM's predictor.
"use strict";

const PALETTE = [[255, 64, 64], [64, 160, 255], [64, 220, 96], [255, 200, 40],
                 [200, 80, 255], [255, 128, 0], [0, 220, 220], [255, 96, 180]];  // samjax/utils/overlay.py's
const $ = (id) => document.getElementById(id);
const state = { info: null, axis: 2, index: 0, scale: 2, mode: "click", image: null, overlay: null, drag: null,
                lastMs: null, prompts: [] };

function status(message, error = false) {
  $("status").textContent = message;
  $("status").className = error ? "error" : "";
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const payload = response.headers.get("Content-Type") === "application/json" ? await response.json() : null;
  if (!response.ok) {
    const error = new Error(payload && payload.error ? payload.error : response.statusText);
    error.status = response.status;
    throw error;
  }
  return payload;
}

let version = 0;  // a new URL each time: a document reuses an image it loaded before by URL, whatever the cache says

function loadImage(url) {
  url += `&v=${++version}`;
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => fetch(url).then((r) => r.json()).then((p) => reject(new Error(p.error)),
                                                                  () => reject(new Error("cannot load " + url)));
    image.src = url;
  });
}

function sliceCount() {
  const info = state.info;
  return info.volume ? info.shape[state.axis] : 1;
}

function sliceShape() {  // (rows, columns) of the slice in view
  const shape = state.info.shape;
  if (!state.info.volume) return shape;
  return shape.filter((_, i) => i !== state.axis);
}

async function showSlice() {
  const [level, width] = [parseFloat($("level").value), parseFloat($("width").value)];
  const query = `axis=${state.axis}&index=${state.index}`;
  try {
    const [image, labels, prompts] = await Promise.all([
      loadImage(`/api/slice?${query}&level=${level}&width=${width}`), loadImage(`/api/labels?${query}`),
      api(`/api/prompts?${query}`)]);
    state.image = image;
    state.overlay = colorize(labels);
    state.prompts = prompts.objects;
    draw();
  } catch (error) {
    status(error.message, true);
  }
}

async function refreshLabels() {
  const query = `axis=${state.axis}&index=${state.index}`;
  const [labels, prompts] = await Promise.all([loadImage(`/api/labels?${query}`), api(`/api/prompts?${query}`)]);
  state.overlay = colorize(labels);
  state.prompts = prompts.objects;
  draw();
}

function drawPrompts(context) {  // each object's box in its label's colour, its clicks green (inside) or red (outside)
  const s = state.scale;
  for (const object of state.prompts) {
    const color = PALETTE[(object.label - 1) % PALETTE.length];
    for (const prompt of object.prompts) {
      if (prompt[0] === "box") {
        const [x0, y0, x1, y1] = prompt.slice(1);
        context.strokeStyle = `rgb(${color.join(",")})`;
        context.lineWidth = 2;
        context.strokeRect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s);
      } else if (prompt[0] === "click") {
        const [x, y, positive] = prompt.slice(1);
        context.beginPath();
        context.arc(x * s, y * s, Math.max(3, 1.5 * s), 0, 2 * Math.PI);
        context.fillStyle = positive ? "#00e040" : "#ff2020";
        context.fill();
        context.lineWidth = 1;
        context.strokeStyle = "#ffffff";
        context.stroke();
      }
    }
  }
}

function colorize(labels) {  // label PNG (value = label index) -> RGBA canvas
  const canvas = document.createElement("canvas");
  canvas.width = labels.width;
  canvas.height = labels.height;
  const context = canvas.getContext("2d");
  context.drawImage(labels, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < data.data.length; i += 4) {
    const label = data.data[i];
    if (label === 0) { data.data[i + 3] = 0; continue; }
    const color = PALETTE[(label - 1) % PALETTE.length];
    data.data.set([color[0], color[1], color[2], 115], i);
  }
  context.putImageData(data, 0, 0);
  return canvas;
}

function draw() {
  const canvas = $("canvas");
  const [rows, cols] = sliceShape();
  state.scale = Math.max(1, Math.floor(Math.min(720 / rows, 1000 / cols)));
  canvas.width = cols * state.scale;
  canvas.height = rows * state.scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  if (state.image) context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  if (state.overlay) context.drawImage(state.overlay, 0, 0, canvas.width, canvas.height);
  drawPrompts(context);
  if (state.drag) {
    context.strokeStyle = "#ffe600";
    context.lineWidth = 2;
    const [x0, y0, x1, y1] = state.drag;
    context.strokeRect(x0 * state.scale, y0 * state.scale, (x1 - x0) * state.scale, (y1 - y0) * state.scale);
  }
}

function pixel(event) {  // canvas position -> continuous slice pixel coordinates
  const rect = $("canvas").getBoundingClientRect();
  return [(event.clientX - rect.left) / state.scale, (event.clientY - rect.top) / state.scale];
}

let pending = Promise.resolve();  // prompts, undos and saves run one after another, in the order given
function enqueue(action) {
  pending = pending.then(action, action);
  return pending;
}

function sendPrompt(prompt) {
  return enqueue(() => promptNow(prompt));
}

async function promptNow(prompt) {
  const label = parseInt($("label").value, 10);
  const object = parseInt($("object").value, 10) * 1000 + label;  // one object per (number, label)
  try {
    status("segmenting...");
    const result = await api("/api/prompt", { axis: state.axis, index: state.index, object, label, prompt });
    state.lastMs = result.ms;
    await refreshLabels();
    status(`mask of ${result.pixels} pixels in ${result.ms} ms`);
  } catch (error) {
    status(error.message, true);
  }
}

function setSlice(index) {
  const n = sliceCount();
  state.index = Math.max(0, Math.min(n - 1, index));
  $("slice").value = state.index;
  $("slice-number").value = state.index;
  showSlice();
}

function setupEvents() {
  const canvas = $("canvas");
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("mousedown", (event) => {
    const [x, y] = pixel(event);
    if (state.mode === "box") {
      state.drag = [x, y, x, y];
      state.dragStart = [x, y];
      return;
    }
    const positive = event.button === 0 && !event.shiftKey ? 1 : 0;
    sendPrompt(["click", Math.floor(x) + 0.5, Math.floor(y) + 0.5, positive]);
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!state.drag) return;
    const [x, y] = pixel(event);
    const [sx, sy] = state.dragStart;
    state.drag = [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)];
    draw();
  });
  canvas.addEventListener("mouseup", () => {
    if (!state.drag) return;
    const [x0, y0, x1, y1] = state.drag;
    state.drag = null;
    draw();
    const [rows, cols] = sliceShape();
    if (x1 - x0 < 1 || y1 - y0 < 1) { status("drag a larger box", true); return; }
    sendPrompt(["box", Math.max(0, Math.floor(x0)), Math.max(0, Math.floor(y0)),
                Math.min(cols, Math.ceil(x1)), Math.min(rows, Math.ceil(y1))]);
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    setSlice(state.index + (event.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT") return;
    if (event.key === "ArrowUp" || event.key === "ArrowRight") setSlice(state.index + 1);
    else if (event.key === "ArrowDown" || event.key === "ArrowLeft") setSlice(state.index - 1);
    else if ((event.ctrlKey || event.metaKey) && event.key === "z") undo();
    else if ((event.key === "p" || event.key === "P") && state.info.propose) propose();
    else if (/^[1-9]$/.test(event.key) && parseInt(event.key, 10) < state.info.labels.length) {
      $("label").value = event.key;
    }
  });
  $("slice").addEventListener("input", () => setSlice(parseInt($("slice").value, 10)));
  $("slice-number").addEventListener("change", () => setSlice(parseInt($("slice-number").value, 10)));
  $("axis").addEventListener("change", () => {
    state.axis = parseInt($("axis").value, 10);
    $("slice").max = sliceCount() - 1;
    setSlice(Math.floor(sliceCount() / 2));
  });
  for (const id of ["level", "width"]) $(id).addEventListener("change", showSlice);
  $("preset").addEventListener("change", () => {
    const value = $("preset").value;
    const [level, width] = value === "auto" ? state.info.window : value.split(",").map(Number);
    if (value) { $("level").value = level; $("width").value = width; showSlice(); }
  });
  $("mode-click").addEventListener("click", () => setMode("click"));
  $("mode-box").addEventListener("click", () => setMode("box"));
  $("undo").addEventListener("click", undo);
  $("propose").addEventListener("click", propose);
  $("input").addEventListener("change", () => enqueue(() => openInput(parseInt($("input").value, 10))));
  $("save").addEventListener("click", () => enqueue(() => save(false)));
}

function setMode(mode) {
  state.mode = mode;
  $("mode-click").className = mode === "click" ? "active" : "";
  $("mode-box").className = mode === "box" ? "active" : "";
}

function undo() {
  return enqueue(undoNow);
}

async function undoNow() {
  const label = parseInt($("label").value, 10);
  const object = parseInt($("object").value, 10) * 1000 + label;
  try {
    await api("/api/undo", { axis: state.axis, index: state.index, object });
    await refreshLabels();
    status("undone");
  } catch (error) {
    status(error.message, true);
  }
}

function propose() {
  return enqueue(async () => {
    try {
      status("proposing...");
      const result = await api("/api/propose", { axis: state.axis, index: state.index });
      await refreshLabels();
      status(result.labels.length ? `proposed ${result.labels.join(", ")} in ${result.ms} ms`
                                  : "nothing new to propose on this slice");
    } catch (error) {
      status(error.message, true);
    }
  });
}

async function openInput(index) {
  try {
    status("opening...");
    showInfo(await api("/api/open", { input: index }));
    setSlice(Math.floor(sliceCount() / 2));
    status(openedMessage());
  } catch (error) {
    $("input").value = state.info.current;  // the open input stays open
    status(error.message, true);
  }
}

function openedMessage() {
  const restored = state.info.objects.length;
  return restored ? `${restored} object(s) restored from earlier work` : "ready";
}

async function save(overwrite) {
  try {
    const result = await api("/api/save", { overwrite });
    showInputs(result.inputs, state.info.current);  // this input is now "(saved)"
    status(`saved ${result.saved}`);
  } catch (error) {
    if (error.status === 409 && !overwrite && window.confirm(`${error.message}?`)) return save(true);
    status(error.message, true);
  }
}

function showInfo(info) {  // the open input: its name, output, axes and window
  state.info = info;
  $("name").textContent = info.input;
  $("output").textContent = "saves to " + info.output;
  $("axis-box").style.display = info.volume ? "" : "none";
  state.axis = info.axis;
  $("axis").value = info.axis;
  $("level").value = info.window[0].toPrecision(4);
  $("width").value = info.window[1].toPrecision(4);
  $("slice").max = sliceCount() - 1;
  showInputs(info.inputs, info.current);
}

function showInputs(inputs, current) {  // the input list, each marked "(saved)" or "(in progress)"
  $("input").innerHTML = "";
  inputs.forEach((entry, index) => {
    const option = document.createElement("option");
    option.value = index;
    option.textContent = entry.name + (entry.saved ? " (saved)" : entry.in_progress ? " (in progress)" : "");
    $("input").appendChild(option);
  });
  $("input").value = current;
  $("input-box").style.display = inputs.length > 1 ? "" : "none";
}

async function start() {
  try {
    showInfo(await api("/api/info"));
  } catch (error) {
    status(error.message, true);
    return;
  }
  state.info.labels.forEach((name, index) => {
    if (index === 0) return;
    const option = document.createElement("option");
    option.value = index;
    option.textContent = `${index} ${name}`;
    option.style.color = `rgb(${PALETTE[(index - 1) % PALETTE.length].join(",")})`;
    $("label").appendChild(option);
  });
  $("propose").style.display = state.info.propose ? "" : "none";
  setupEvents();
  setSlice(Math.floor(sliceCount() / 2));
  status(openedMessage());
}

start();
