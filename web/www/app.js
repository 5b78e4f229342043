// The page: wires the form, the buttons, the chart and the drawing pad to the wasm module,
// which does all the work (web/src/lib.rs). `window.mnist` holds the page's state for people
// and for the browser test (tests/browser.rs), which reads it through WebDriver.

import init, * as wasm from './pkg/mnist_wgpu_web.js';
import { Chart } from './chart.js';

const FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];
const FLAGS = ['recipe', 'epochs', 'batch-size', 'optimizer', 'lr', 'momentum', 'weight-decay', 'gamma', 'normalize', 'hidden', 'seeds'];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = (window.mnist = {
  phase: 'loading', // loading | ready | training | evaluating | checking | done | stopped | error
  webgpu: false,
  browser: '',
  device: '',
  note: '',
  log: [],
  epochs: [],
  errors: [],
  dataLoaded: false,
  haveModel: false,
  result: null, // the last training run's or evaluation's result
  selftest: null,
  prediction: null,
  timeToFirstStep: null, // seconds from navigation start to the first training step done
  chartBands: 0, // the bands the chart drew after the last epoch (one per figure for a set)
});

const chart = new Chart($('chart'));

function log(line, cls) {
  state.log.push(line);
  const el = $('log');
  const span = document.createElement('span');
  if (cls) span.className = cls;
  span.textContent = line + '\n';
  el.appendChild(span);
  el.scrollTop = el.scrollHeight;
}

function fail(what, e) {
  const line = `error: ${what}: ${e.message ?? e}`;
  state.errors.push(line);
  console.error(line);
  log(line, 'error');
  state.phase = 'error';
  buttons();
}

// Yields to the event loop without the timer throttling of background tabs.
const channel = new MessageChannel();
const queue = [];
channel.port1.onmessage = () => queue.shift()?.();
const yieldNow = () => new Promise((resolve) => { queue.push(resolve); channel.port2.postMessage(0); });

function buttons() {
  const busy = ['loading', 'training', 'evaluating', 'checking'].includes(state.phase);
  const haveData = state.dataLoaded;
  $('start').disabled = busy || !haveData;
  $('stop').disabled = state.phase !== 'training';
  $('evaluate').disabled = busy || !haveData || !state.haveModel;
  $('download').disabled = busy || !state.haveModel;
  $('selftest').disabled = busy || !state.webgpu;
  $('model-file').disabled = busy;
}

function formValues() {
  const values = {};
  for (const name of FLAGS) values[name] = $('flags').elements[name].value;
  return values;
}

let readyAt = null;
function onEvent(e) {
  switch (e.kind) {
    case 'log':
      log(e.line);
      break;
    case 'ready':
      readyAt = performance.now();
      break;
    case 'progress': {
      if (state.timeToFirstStep === null && readyAt !== null) {
        state.timeToFirstStep = (readyAt + (1000 * e.seconds) / e.step) / 1000;
        log(`first step done ${state.timeToFirstStep.toFixed(2)} s after the page started loading`);
      }
      const epochStr = `epoch ${e.epoch + 1}/${e.epochs}`;
      $('progress').textContent = `${epochStr} | step ${e.step}/${e.steps} | running loss ${e.loss.toFixed(4)} | ${(e.images_per_s / 1000).toFixed(1)}k img/s | ${(1000 * e.seconds / e.step).toFixed(2)} ms/step`;
      $('bar').value = (e.epoch + e.step / e.steps) / e.epochs;
      chart.progress(e);
      break;
    }
    case 'epoch':
      state.epochs.push({
        ...e,
        step_losses: Array.from(e.step_losses),
        models_train_loss: Array.from(e.models_train_loss),
        models_test_loss: Array.from(e.models_test_loss),
        models_accuracy: Array.from(e.models_accuracy),
      });
      log(e.line);
      chart.epoch(e);
      state.chartBands = chart.bands;
      break;
  }
  return yieldNow();
}

async function train() {
  const values = formValues();
  state.phase = 'training';
  state.epochs = [];
  state.result = null;
  $('downloads').hidden = true;
  buttons();
  chart.reset(Number(values.epochs) || 5);
  try {
    state.result = await wasm.train(values, onEvent);
    state.haveModel = true;
    // One model trained: the name its recipe saves under (mnist_cnn-small.safetensors, ...),
    // kept for Download after an evaluation replaces the result.
    state.fileName = state.result.files?.length === 1 ? state.result.files[0] : null;
    downloadLinks(state.result.files);
    state.phase = state.result.stopped ? 'stopped' : 'done';
    predictNow();
  } catch (e) {
    fail('training', e);
    return;
  }
  buttons();
}

async function evaluate() {
  state.phase = 'evaluating';
  buttons();
  try {
    state.result = await wasm.evaluate(onEvent);
    state.phase = 'done';
  } catch (e) {
    fail('evaluating', e);
    return;
  }
  buttons();
}

async function selftest() {
  state.phase = 'checking';
  buttons();
  try {
    const r = await wasm.selftest();
    state.selftest = r;
    for (const f of r.failures) log(`FAILED ${f}`, 'error');
    log(`kernel checks on ${r.device}: ${r.checks} checks, ${r.failed} failed, ${r.seconds.toFixed(1)} s`);
    state.phase = 'done';
  } catch (e) {
    fail('checking the kernels', e);
    return;
  }
  buttons();
}

function loadModel(name, bytes) {
  log(wasm.load_model(name, bytes));
  state.fileName = name.split('/').pop();
  downloadLinks([]);
  $('downloads').hidden = true;
  state.haveModel = true;
  predictNow();
}

// A set's models, one button each, named as `train --save` names their files.
function downloadLinks(files) {
  const box = $('downloads');
  box.replaceChildren();
  if (files.length < 2) return;
  box.append(`${files.length} models: `);
  files.forEach((name, k) => {
    const b = document.createElement('button');
    b.textContent = name.replace(/^mnist_(mlp|cnn-small|cnn)-|\.safetensors$/g, '');
    b.title = `download ${name}`;
    b.className = 'model-download';
    b.onclick = () => download(k, name);
    box.append(b, ' ');
  });
  box.hidden = false;
}

// Model k of the last run (or, without k, the model the page holds) as a file.
function download(k, name) {
  const bytes = wasm.model_bytes(k);
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name ?? state.fileName ?? 'mnist_mlp.safetensors';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- the drawing pad ----

const pad = $('pad');
const pen = pad.getContext('2d');
function clearPad() {
  pen.fillStyle = '#000';
  pen.fillRect(0, 0, pad.width, pad.height);
  $('top').innerHTML = '<li>draw a digit</li>';
  state.prediction = null;
}
let drawing = false;
let last = null;
function at(e) {
  const r = pad.getBoundingClientRect();
  return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
}
pad.addEventListener('pointerdown', (e) => {
  drawing = true;
  last = at(e);
  pad.setPointerCapture?.(e.pointerId);
  stroke(last);
});
pad.addEventListener('pointermove', (e) => {
  if (drawing) stroke(at(e));
});
for (const ev of ['pointerup', 'pointercancel', 'pointerleave']) {
  pad.addEventListener(ev, () => {
    if (drawing) predictNow();
    drawing = false;
  });
}
function stroke(p) {
  pen.strokeStyle = '#fff';
  pen.lineWidth = 18;
  pen.lineCap = 'round';
  pen.lineJoin = 'round';
  pen.beginPath();
  pen.moveTo(...last);
  pen.lineTo(...p);
  pen.stroke();
  last = p;
  schedulePredict();
}
let pending = false;
function schedulePredict() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    predictNow();
  });
}
function predictNow() {
  if (!state.haveModel) return;
  const img = pen.getImageData(0, 0, pad.width, pad.height);
  let r;
  try {
    r = wasm.predict(new Uint8Array(img.data.buffer), pad.width, pad.height);
  } catch (e) {
    $('top').innerHTML = /blank/.test(e.message) ? '<li>draw a digit</li>' : `<li><small>${e.message}</small></li>`;
    state.prediction = null;
    return;
  }
  state.prediction = r.top.map(([digit, p]) => ({ digit, probability: p }));
  $('top').innerHTML = r.top.map(([d, p]) => `<li>${d} <small>${(100 * p).toFixed(1)} %</small></li>`).join('');
  const seen = $('seen').getContext('2d');
  const small = new ImageData(28, 28);
  r.image.forEach((v, i) => small.data.set([v, v, v, 255], 4 * i));
  const tmp = new OffscreenCanvas(28, 28);
  tmp.getContext('2d').putImageData(small, 0, 0);
  seen.imageSmoothingEnabled = false;
  seen.drawImage(tmp, 0, 0, 56, 56);
}

// ---- start-up ----

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// What the browser says its adapter is (wgpu maps only the often empty description; Firefox
// leaves all of GPUAdapter.info empty).
async function adapterName() {
  try {
    const info = (await navigator.gpu?.requestAdapter())?.info;
    const name = info ? [info.vendor, info.architecture, info.description].filter((s) => s).join(' ') : '';
    return name || 'adapter not reported by the browser';
  } catch {
    return 'adapter not reported by the browser';
  }
}

// The browser and its major version, from what it says of itself.
function browserName() {
  const brands = navigator.userAgentData?.brands ?? [];
  const own = brands.find((b) => !/not.?a.?brand|^chromium$/i.test(b.brand)) ?? brands.find((b) => /chromium/i.test(b.brand));
  if (own) return `${own.brand} ${own.version}`;
  const ua = navigator.userAgent;
  const known = ua.match(/(Firefox|Edg|OPR|Chrome)\/(\d+)/);
  if (known) return `${known[1] === 'Edg' ? 'Edge' : known[1]} ${known[2]}`;
  const safari = ua.match(/Version\/(\d+)\S* Safari/);
  return safari ? `Safari ${safari[1]}` : 'an unrecognised browser';
}

async function main() {
  await init();
  const defaults = wasm.defaults(params.get('recipe') ?? '');
  // seed= (one model) is what older links say.
  for (const name of FLAGS) $('flags').elements[name].value = params.get(name) ?? (name === 'seeds' ? params.get('seed') : null) ?? defaults[name];
  // Another recipe brings its own defaults into every field but the seeds.
  $('flags').elements.recipe.onchange = () => {
    const d = wasm.defaults($('flags').elements.recipe.value);
    for (const name of FLAGS) if (name !== 'seeds') $('flags').elements[name].value = d[name];
  };
  const dev = await wasm.open_device(params.get('kernels') ?? 'auto', params.get('schedule') ?? 'auto', params.get('retune') === '1', await adapterName());
  Object.assign(state, { webgpu: dev.webgpu, device: dev.device, note: dev.note, browser: browserName() });
  $('device').textContent = `${state.browser} | ${dev.webgpu ? 'WebGPU' : 'no WebGPU'}: ${dev.device}`;
  if (dev.note) {
    $('note').hidden = false;
    $('note').textContent = dev.note;
    console.warn(dev.note);
  }
  const files = await Promise.all(FILES.map((f) => fetchBytes(`data/${f}.gz`).then((b) => [`data/${f}.gz`, b])));
  for (const [url, bytes] of files) wasm.add_data_file(url, bytes);
  log(wasm.load_data());
  state.dataLoaded = true;
  state.phase = 'ready';
  $('progress').textContent = 'ready';
  buttons();
  const model = params.get('model');
  if (model) loadModel(model, await fetchBytes(model));
  if (params.get('selftest') === '1') await selftest();
  if (params.get('autostart') === '1') await (model ? evaluate() : train());
}

$('start').onclick = train;
$('stop').onclick = () => wasm.stop();
$('evaluate').onclick = evaluate;
$('download').onclick = () => download();
$('selftest').onclick = selftest;
$('clear').onclick = clearPad;
$('model-file').onchange = async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  try {
    loadModel(file.name, new Uint8Array(await file.arrayBuffer()));
    buttons();
  } catch (err) {
    fail(`loading ${file.name}`, err);
    state.phase = 'ready';
    buttons();
  }
  e.target.value = '';
};
// What nothing caught still reaches the page's error list (the browser tests read it).
window.addEventListener('error', (e) => state.errors.push(`uncaught: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => state.errors.push(`unhandled rejection: ${e.reason?.message ?? e.reason}`));
clearPad();
chart.draw();
main().catch((e) => fail('starting', e));
