// The batch page: live progress, throughput and latency charts, breakdowns, and the results table.
//
// Every fact arrives as a numbered event (websocket, or polling when websockets fail). Events are
// applied once each (by seq) and results kept once each (by URL index), so a reload, a reconnect or a
// replayed event never loses or doubles a row. Rendering is batched per animation frame; charts are
// redrawn at most four times a second.
import {
  FINAL_STATUSES, LiveSocket, api, atMostEvery, badgeClass, byId, doneOf, fmtBytes, fmtClock, fmtDuration,
  fmtInt, fmtMs, fmtRate, h, liveModeFor, paintBar, perFrame, setText, showLiveMode, sleep, svg, withId,
  withQuery,
} from './common.js';

const config = byId('page').dataset;
const PAGE_SIZE = 100;
const POLL_MS = 1000;

// ---- state -------------------------------------------------------------------------------------

let batch = JSON.parse(config.batch);
let summarySeq = batch.last_seq || 0; // the seq that batch.counts / batch.stats reflect
let lastSeq = 0; // the newest event applied; reconnects and polls ask for what comes after it
let ended = false;
let liveState = 'connecting';
const results = new Map(); // URL index -> Result
let okResults = 0;
const progressPoints = []; // {t (ms since epoch), fetched (ok + failed)} from progress events

const view = { filter: 'all', sort: 'index', dir: 1, page: 0, expanded: new Set() };
let tableDirty = true;

// ---- applying what the server says -------------------------------------------------------------

function applySnapshot(snapshot) {
  if (!snapshot) return;
  const seq = snapshot.last_seq ?? lastSeq;
  if (seq >= summarySeq) {
    batch = { ...batch, ...snapshot };
    summarySeq = seq;
  }
  changed();
}

function applyEvent(event) {
  if (event.seq <= lastSeq) return; // seen already (a replay after a reconnect)
  lastSeq = event.seq;
  const data = event.data || {};
  if (event.type === 'result') {
    const previous = results.get(data.index);
    if (previous && previous.ok) okResults -= 1;
    if (data.ok) okResults += 1;
    results.set(data.index, data);
    tableDirty = true;
  } else if (event.type === 'progress') {
    noteProgress(event.at, data.counts);
    if (event.seq > summarySeq) {
      batch.counts = data.counts;
      batch.stats = data.stats;
      summarySeq = event.seq;
    }
  } else if (event.type === 'batch') {
    if (data.counts) noteProgress(data.finished_at || event.at, data.counts);
    if (event.seq > summarySeq) {
      for (const key of ['status', 'started_at', 'finished_at', 'counts', 'stats']) {
        if (data[key] !== undefined) batch[key] = data[key];
      }
      if (data.counts) summarySeq = event.seq;
    }
  }
}

function applyEvents(events) {
  for (const event of events || []) applyEvent(event);
  changed();
}

// A point for the throughput chart: how many URLs had been fetched (ok or failed) at a time.
// Events come in seq order, which is time order; a point no later than the last one adds nothing.
function noteProgress(at, counts) {
  if (!at || !counts) return;
  const t = Date.parse(at);
  const last = progressPoints[progressPoints.length - 1];
  if (Number.isNaN(t) || (last && t <= last.t)) return;
  progressPoints.push({ t, fetched: (counts.ok || 0) + (counts.failed || 0) });
}

// ---- summary: status, progress, counts, stats, buttons -----------------------------------------

const els = {
  status: byId('batch-status'),
  times: byId('batch-times'),
  options: byId('batch-options'),
  pct: byId('progress-pct'),
  progressText: byId('progress-text'),
  bar: byId('progress'),
  cancel: byId('cancel'),
  rerunAll: byId('rerun-all'),
  rerunFailed: byId('rerun-failed'),
  remove: byId('delete'),
  actionError: byId('action-error'),
};

function renderSummary() {
  // Counts and statistics are the server's (one place computes them), as of the latest progress event.
  const counts = batch.counts || { total: 0 };
  const stats = batch.stats || {};
  const final = FINAL_STATUSES.has(batch.status);
  els.status.className = badgeClass(batch.status);
  setText(els.status, batch.status);
  const pct = paintBar(els.bar, counts);
  setText(els.pct, `${pct}%`);
  setText(els.progressText, `${fmtInt(doneOf(counts))} of ${fmtInt(counts.total)} URLs done`);
  for (const key of ['ok', 'failed', 'cancelled', 'running', 'pending']) setText(byId(`count-${key}`), fmtInt(counts[key] || 0));
  setText(byId('stat-rate'), fmtRate(stats.urls_per_s));
  setText(byId('stat-p50'), fmtMs(stats.p50_ms));
  setText(byId('stat-p90'), fmtMs(stats.p90_ms));
  setText(byId('stat-p99'), fmtMs(stats.p99_ms));
  setText(byId('stat-max'), fmtMs(stats.max_ms));
  setText(byId('stat-bytes'), stats.bytes === undefined ? '–' : fmtBytes(stats.bytes));
  setText(els.times, timesText());
  setText(els.options, optionsText(batch.options || {}));

  els.cancel.hidden = final;
  const unfinished = (counts.failed || 0) + (counts.cancelled || 0);
  els.rerunFailed.disabled = !final || unfinished === 0;
  els.rerunFailed.title = !final ? 'Available once the batch ends' : unfinished === 0 ? 'Every URL ended ok' : `Run the ${unfinished} URLs that did not end ok again`;
  els.remove.disabled = !final;
  els.remove.title = final ? 'Delete this batch and its results' : 'Cancel the batch before deleting it';
  document.title = `${pct}% ${batch.name} · greenbatch`;
  if (ended) showLiveMode(...finishedMode());
}

function timesText() {
  if (!batch.started_at) return `created ${fmtClock(batch.created_at)} · waiting for a free slot`;
  const start = Date.parse(batch.started_at);
  if (batch.finished_at) {
    return `started ${fmtClock(batch.started_at)} · took ${fmtDuration((Date.parse(batch.finished_at) - start) / 1000)}`;
  }
  return `started ${fmtClock(batch.started_at)} · running for ${fmtDuration(Math.max(0, Date.now() - start) / 1000)}`;
}

function optionsText(o) {
  const parts = [o.method, `concurrency ${o.concurrency}`, `timeout ${o.timeout} s`, `≤${o.max_redirects} redirects`];
  if (o.retries) parts.push(`${o.retries} retr${o.retries === 1 ? 'y' : 'ies'}`);
  parts.push(`ok = ${o.accept_status}`);
  const headers = Object.keys(o.headers || {}).length;
  if (headers) parts.push(`${headers} header${headers === 1 ? '' : 's'}`);
  return parts.filter(Boolean).join(' · ');
}

function finishedMode() {
  const [text, kind] = liveModeFor(liveState);
  return liveState === 'polling' ? [`${text} · batch ${batch.status}`, kind] : [`Batch ${batch.status} · all results loaded`, 'done'];
}

// ---- charts ------------------------------------------------------------------------------------

const throughputSvg = byId('throughput-chart');
const histogramSvg = byId('histogram-chart');
const CHART_HEIGHT = 170;

// A round number at or above `value` for an axis maximum.
function niceCeil(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function sizeSvg(node) {
  const width = Math.max(200, Math.round(node.clientWidth || node.parentElement.clientWidth));
  node.setAttribute('viewBox', `0 0 ${width} ${CHART_HEIGHT}`);
  node.setAttribute('height', String(CHART_HEIGHT));
  return width;
}

function placeholder(node, width, text) {
  node.replaceChildren(svg('text', { x: width / 2, y: CHART_HEIGHT / 2, class: 'chart-empty', 'text-anchor': 'middle' }, text));
}

// Throughput per progress interval: fetched URLs between two progress events over the time between them.
function drawThroughput() {
  const width = sizeSvg(throughputSvg);
  const start = batch.started_at ? Date.parse(batch.started_at) : progressPoints.length ? progressPoints[0].t : null;
  const points = [];
  let prev = start === null ? null : { t: start, fetched: 0 };
  for (const p of progressPoints) {
    if (prev && p.t > prev.t) points.push({ x: (p.t - start) / 1000, y: ((p.fetched - prev.fetched) * 1000) / (p.t - prev.t) });
    prev = p;
  }
  if (points.length < 1 || start === null) {
    placeholder(throughputSvg, width, batch.status === 'queued' ? 'Waiting to start…' : 'Waiting for the first progress report…');
    return;
  }
  const m = { left: 40, right: 12, top: 12, bottom: 22 };
  const plotW = width - m.left - m.right;
  const plotH = CHART_HEIGHT - m.top - m.bottom;
  const maxX = Math.max(0.1, points[points.length - 1].x);
  const maxY = niceCeil(Math.max(...points.map((p) => p.y)) * 1.05);
  const tick = (v) => (maxY >= 10 ? fmtInt(Math.round(v)) : v.toFixed(1));
  const sx = (x) => m.left + (x / maxX) * plotW;
  const sy = (y) => m.top + plotH - (y / maxY) * plotH;
  const line = [{ x: 0, y: points[0].y }, ...points].map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join('');
  const area = `${line}L${sx(maxX).toFixed(1)},${sy(0)}L${sx(0)},${sy(0)}Z`;
  const nodes = [];
  for (const fraction of [0, 0.5, 1]) {
    const y = sy(maxY * fraction);
    nodes.push(svg('line', { x1: m.left, x2: width - m.right, y1: y, y2: y, class: 'grid' }));
    nodes.push(svg('text', { x: m.left - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' }, tick(maxY * fraction)));
  }
  nodes.push(svg('path', { d: area, class: 'area' }), svg('path', { d: line, class: 'line' }));
  const lastPoint = points[points.length - 1];
  nodes.push(svg('circle', { cx: sx(lastPoint.x), cy: sy(lastPoint.y), r: 3, class: 'dot' }));
  nodes.push(svg('text', { x: m.left, y: CHART_HEIGHT - 6, class: 'tick' }, '0 s'));
  nodes.push(svg('text', { x: width - m.right, y: CHART_HEIGHT - 6, 'text-anchor': 'end', class: 'tick' }, fmtDuration(maxX)));
  nodes.push(svg('title', null, `latest ${fmtRate(lastPoint.y)} URLs/s`));
  throughputSvg.replaceChildren(...nodes);
}

function bucketLabel(le) {
  if (le === null) return '>10 s';
  return le >= 1000 ? `${le / 1000} s` : `${le}`;
}

function drawHistogram() {
  const width = sizeSvg(histogramSvg);
  const buckets = (batch.stats && batch.stats.histogram) || [];
  const total = buckets.reduce((sum, b) => sum + b.count, 0);
  if (!total) {
    placeholder(histogramSvg, width, 'No latencies yet');
    return;
  }
  const m = { left: 8, right: 8, top: 16, bottom: 22 };
  const plotH = CHART_HEIGHT - m.top - m.bottom;
  const slot = (width - m.left - m.right) / buckets.length;
  const maxCount = Math.max(...buckets.map((b) => b.count));
  const nodes = [svg('line', { x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH, class: 'axis' })];
  buckets.forEach((b, i) => {
    const x = m.left + i * slot;
    const barH = b.count ? Math.max(2, (b.count / maxCount) * plotH) : 0;
    const previous = i === 0 ? 0 : buckets[i - 1].le_ms;
    const range = b.le_ms === null ? 'over 10 s' : `${fmtMs(previous)}–${fmtMs(b.le_ms)}`;
    const bar = svg('rect', { x: x + 3, y: m.top + plotH - barH, width: Math.max(1, slot - 6), height: barH, rx: 2, class: 'bar' },
      svg('title', null, `${range}: ${fmtInt(b.count)} URL${b.count === 1 ? '' : 's'} (${((100 * b.count) / total).toFixed(1)}%)`));
    nodes.push(bar);
    if (b.count) nodes.push(svg('text', { x: x + slot / 2, y: m.top + plotH - barH - 4, 'text-anchor': 'middle', class: 'count' }, fmtInt(b.count)));
    nodes.push(svg('text', { x: x + slot / 2, y: CHART_HEIGHT - 6, 'text-anchor': 'middle', class: 'tick' }, bucketLabel(b.le_ms)));
  });
  histogramSvg.replaceChildren(...nodes);
}

function statusClass(code) {
  if (code === null || code === undefined) return 'code none';
  return `code c${String(code)[0]}xx`;
}

function drawBreakdown(list, entries, kind) {
  if (!entries.length) {
    list.replaceChildren(h('li', { class: 'none' }, kind === 'status' ? 'No responses yet' : 'No errors'));
    return;
  }
  const max = Math.max(...entries.map(([, n]) => n));
  list.replaceChildren(...entries.map(([key, n]) => {
    const fill = h('span', { class: `fill ${kind === 'status' ? `c${key[0]}xx` : 'error'}` });
    fill.style.width = `${(100 * n) / max}%`;
    return h('li', { title: `${key}: ${fmtInt(n)}` },
      h('span', { class: kind === 'status' ? statusClass(Number(key)) : 'kind' }, key),
      h('span', { class: 'track' }, fill),
      h('span', { class: 'n num' }, fmtInt(n)));
  }));
}

const drawCharts = atMostEvery(250, () => {
  drawThroughput();
  drawHistogram();
  const stats = batch.stats || {};
  drawBreakdown(byId('by-status'), Object.entries(stats.by_status || {}), 'status');
  drawBreakdown(byId('by-error'), Object.entries(stats.by_error || {}).sort((a, b) => b[1] - a[1]), 'error');
});

new ResizeObserver(drawCharts).observe(throughputSvg.parentElement);

// ---- results table -----------------------------------------------------------------------------

const tbody = byId('result-rows');
const pageInfo = byId('page-info');
const emptyNote = byId('results-empty');
const SORT_KEYS = {
  index: (r) => r.index,
  latency: (r) => (r.timings ? r.timings.total : null),
  status: (r) => r.status_code,
  size: (r) => (r.status_code === null || r.status_code === undefined ? null : r.bytes),
};
let sortedCache = null;

function outcomeOf(r) {
  if (r.ok) return 'ok';
  return r.error && r.error.kind === 'cancelled' ? 'cancelled' : 'failed';
}

// The filtered, sorted results; rows without a value for the sort key always go last.
function currentRows() {
  if (sortedCache && !tableDirty) return sortedCache;
  let list = [...results.values()];
  if (view.filter === 'ok') list = list.filter((r) => r.ok);
  else if (view.filter === 'failed') list = list.filter((r) => !r.ok);
  const key = SORT_KEYS[view.sort];
  list.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    const aMissing = ka === null || ka === undefined;
    const bMissing = kb === null || kb === undefined;
    if (aMissing !== bMissing) return aMissing ? 1 : -1;
    if (!aMissing && ka !== kb) return (ka < kb ? -1 : 1) * view.dir;
    return a.index - b.index;
  });
  sortedCache = list;
  return list;
}

function resultRow(r) {
  const outcome = outcomeOf(r);
  const expanded = view.expanded.has(r.index);
  const urlCell = h('td', { class: 'col-url' }, h('div', { class: 'url', title: r.url }, r.url));
  if (r.final_url && r.final_url !== r.url) {
    urlCell.append(h('div', { class: 'final-url', title: r.final_url }, `→ ${r.final_url}`));
  }
  const redirects = (r.redirects || []).length;
  const statusCell = h('td', { class: 'col-status' },
    r.status_code === null || r.status_code === undefined ? h('span', { class: 'code none' }, '—') : h('span', { class: statusClass(r.status_code) }, String(r.status_code)),
    redirects ? h('span', { class: 'hops', title: `${redirects} redirect${redirects === 1 ? '' : 's'}` }, `↪${redirects}`) : null);
  const errorCell = h('td', { class: 'col-error' });
  if (r.error) {
    errorCell.append(h('span', { class: `kind ${r.error.kind === 'cancelled' ? 'muted' : ''}` }, r.error.kind), ' ',
      h('span', { class: 'message', title: r.error.message }, r.error.message));
  }
  return h('tr', {
    class: `result-row ${outcome}`, tabindex: '0', 'aria-expanded': String(expanded), dataset: { index: String(r.index) },
  },
  h('td', { class: 'num col-index' }, String(r.index + 1)),
  urlCell,
  statusCell,
  h('td', { class: 'num col-latency' }, fmtMs(r.timings && r.timings.total)),
  h('td', { class: 'num col-size' }, SORT_KEYS.size(r) === null ? '–' : fmtBytes(r.bytes)),
  h('td', { class: 'col-type', title: r.content_type || '' }, r.content_type || ''),
  errorCell);
}

const PHASES = [
  ['redirect', 'Redirects'], ['dns', 'DNS'], ['connect', 'Connect'], ['tls', 'TLS'], ['wait', 'Wait'], ['download', 'Download'],
];

// Timing phases as bars on one time axis: each starts where the previous one ended.
function waterfall(r) {
  const t = r.timings || {};
  const known = PHASES.filter(([key]) => typeof t[key] === 'number');
  if (!known.length) {
    return h('p', { class: 'muted' }, r.error ? 'No timing: the fetch ended before a response.' : 'No timing recorded.');
  }
  const sum = known.reduce((acc, [key]) => acc + t[key], 0);
  const scale = Math.max(t.total || 0, sum) || 1;
  let offset = 0;
  const rows = PHASES.map(([key, label]) => {
    const value = t[key];
    const bar = h('span', { class: `wbar ${key}` });
    if (typeof value === 'number') {
      bar.style.left = `${(100 * offset) / scale}%`;
      bar.style.width = `${Math.max(0.3, (100 * value) / scale)}%`;
      offset += value;
    }
    let note = fmtMs(value);
    if (value === null || value === undefined) {
      if (key === 'tls' && r.final_url && r.final_url.startsWith('http:')) note = 'plain http';
      else if (['dns', 'connect', 'tls'].includes(key) && r.status_code !== null && r.status_code !== undefined) note = 'reused connection';
      else note = '–';
    }
    return h('div', { class: 'wrow' }, h('span', { class: 'wlabel' }, label), h('span', { class: 'wtrack' }, bar), h('span', { class: 'wvalue num' }, note));
  });
  rows.push(h('div', { class: 'wrow total' }, h('span', { class: 'wlabel' }, 'Total'), h('span', { class: 'wtrack' }),
    h('span', { class: 'wvalue num' }, `${fmtMs(t.total)}${typeof t.ttfb === 'number' ? ` · TTFB ${fmtMs(t.ttfb)}` : ''}`)));
  return h('div', { class: 'waterfall' }, rows);
}

function detailRow(r) {
  const chain = h('ol', { class: 'chain' });
  for (const hop of r.redirects || []) {
    chain.append(h('li', null, h('span', { class: statusClass(hop.status) }, String(hop.status)), ' ', h('span', { class: 'url' }, hop.url)));
  }
  if (r.final_url) {
    chain.append(h('li', { class: 'final' }, h('span', { class: statusClass(r.status_code) }, String(r.status_code ?? '—')), ' ', h('span', { class: 'url' }, r.final_url)));
  } else {
    chain.append(h('li', { class: 'final' }, h('span', { class: 'code none' }, '—'), ' ', h('span', { class: 'url' }, r.url)));
  }
  const facts = h('dl', { class: 'facts' },
    h('dt', null, 'Outcome'), h('dd', { class: `${outcomeOf(r)}-text` }, outcomeOf(r)),
    h('dt', null, 'Content type'), h('dd', null, r.content_type || '–'),
    h('dt', null, 'Size'), h('dd', { class: 'num' }, `${fmtBytes(r.bytes)}${r.bytes >= 1024 ? ` (${fmtInt(r.bytes)} B)` : ''}`),
    h('dt', null, 'Attempts'), h('dd', { class: 'num' }, String(r.attempts ?? '–')),
    h('dt', null, 'Started'), h('dd', { class: 'num' }, r.started_at || '–'),
    h('dt', null, 'Finished'), h('dd', { class: 'num' }, r.finished_at || '–'));
  if (r.error) facts.append(h('dt', null, 'Error'), h('dd', { class: 'error-text' }, `${r.error.kind}: ${r.error.message}`));
  return h('tr', { class: 'detail', dataset: { detailFor: String(r.index) } },
    h('td', { colspan: '7' }, h('div', { class: 'detail-grid' },
      h('section', null, h('h4', null, (r.redirects || []).length ? `Redirect chain (${r.redirects.length})` : 'Request'), chain, facts),
      h('section', null, h('h4', null, 'Timing'), waterfall(r)))));
}

function renderTable() {
  const list = currentRows();
  tableDirty = false;
  const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
  view.page = Math.min(view.page, pages - 1);
  const first = view.page * PAGE_SIZE;
  const slice = list.slice(first, first + PAGE_SIZE);
  const nodes = [];
  for (const r of slice) {
    nodes.push(resultRow(r));
    if (view.expanded.has(r.index)) nodes.push(detailRow(r));
  }
  tbody.replaceChildren(...nodes);
  setText(pageInfo, list.length ? `${fmtInt(first + 1)}–${fmtInt(first + slice.length)} of ${fmtInt(list.length)}` : '0 results');
  byId('page-prev').disabled = view.page === 0;
  byId('page-next').disabled = view.page >= pages - 1;
  setText(document.querySelector('[data-n="all"]'), fmtInt(results.size));
  setText(document.querySelector('[data-n="ok"]'), fmtInt(okResults));
  setText(document.querySelector('[data-n="failed"]'), fmtInt(results.size - okResults));
  emptyNote.hidden = list.length > 0;
  if (!list.length) {
    setText(emptyNote, results.size ? `No ${view.filter === 'ok' ? 'ok' : 'failed'} results.` : 'No results yet: rows appear as URLs finish.');
  }
  for (const th of document.querySelectorAll('#results th')) th.removeAttribute('aria-sort');
  const active = document.querySelector(`#results button[data-sort="${view.sort}"]`);
  active.parentElement.setAttribute('aria-sort', view.dir === 1 ? 'ascending' : 'descending');
}

function invalidateTable() {
  tableDirty = true;
  sortedCache = null;
  render();
}

tbody.addEventListener('click', (event) => {
  if (window.getSelection().toString()) return; // selecting text to copy, not toggling
  const row = event.target.closest('tr.result-row');
  if (!row) return;
  const index = Number(row.dataset.index);
  if (view.expanded.has(index)) view.expanded.delete(index); else view.expanded.add(index);
  invalidateTable();
});
tbody.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') {
    const row = event.target.closest('tr.result-row');
    if (!row) return;
    event.preventDefault();
    row.click();
  }
});
document.querySelector('.segmented').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-filter]');
  if (!button) return;
  view.filter = button.dataset.filter;
  view.page = 0;
  for (const b of document.querySelectorAll('.segmented button')) b.setAttribute('aria-pressed', String(b === button));
  invalidateTable();
});
document.querySelector('#results thead').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-sort]');
  if (!button) return;
  const key = button.dataset.sort;
  // Latency and size read best slowest/largest first; index and status ascending.
  if (view.sort === key) view.dir = -view.dir; else { view.sort = key; view.dir = key === 'latency' || key === 'size' ? -1 : 1; }
  view.page = 0;
  invalidateTable();
});
byId('page-prev').addEventListener('click', () => { view.page = Math.max(0, view.page - 1); invalidateTable(); });
byId('page-next').addEventListener('click', () => { view.page += 1; invalidateTable(); });

// ---- rendering ---------------------------------------------------------------------------------

const render = perFrame(() => {
  renderSummary();
  if (tableDirty) {
    sortedCache = null;
    renderTable();
  }
});

function changed() {
  render();
  drawCharts();
}

// The elapsed time ticks while the batch runs.
setInterval(() => { if (batch.started_at && !batch.finished_at) setText(els.times, timesText()); }, 1000);

// ---- actions -----------------------------------------------------------------------------------

function showActionError(error) {
  els.actionError.textContent = error ? error.message : '';
  els.actionError.hidden = !error;
}

async function act(button, busyText, run) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = busyText;
  showActionError(null);
  try {
    await run();
  } finally {
    button.textContent = label;
    button.disabled = false;
    render();
  }
}

els.cancel.addEventListener('click', () => act(els.cancel, 'Cancelling…', async () => {
  const result = await api(config.apiCancel, { method: 'POST' });
  if (result.ok) applySnapshot(result.data); else showActionError(result.error);
}));

async function rerun(only) {
  const result = await api(config.apiRerun, { method: 'POST', body: only ? { only } : {} });
  if (result.ok) window.location.assign(withId(config.batchPage, result.data.id));
  else showActionError(result.error);
}

els.rerunAll.addEventListener('click', () => act(els.rerunAll, 'Starting…', () => rerun(null)));
els.rerunFailed.addEventListener('click', () => act(els.rerunFailed, 'Starting…', () => rerun('failed')));
els.remove.addEventListener('click', () => {
  if (!window.confirm(`Delete batch "${batch.name}" and its ${fmtInt(batch.counts.total)} results? This cannot be undone.`)) return;
  act(els.remove, 'Deleting…', async () => {
    const result = await api(config.apiBatch, { method: 'DELETE' });
    if (result.ok) window.location.assign(config.indexPage); else showActionError(result.error);
  });
});

// ---- live updates ------------------------------------------------------------------------------

function setLiveState(state) {
  liveState = state;
  if (!ended) showLiveMode(...liveModeFor(state));
}

// Fallback when websockets do not get through: read the stored events after the last one applied.
async function poll() {
  setLiveState('polling');
  const snapshot = await api(config.apiBatch);
  if (snapshot.ok) applySnapshot(snapshot.data);
  for (;;) {
    const page = await api(withQuery(config.apiEvents, { after: lastSeq }));
    if (page.status === 404) {
      showActionError({ message: 'This batch was deleted.' });
      return;
    }
    if (!page.ok) {
      await sleep(POLL_MS * 2);
      continue;
    }
    applyEvents(page.data.events);
    if (page.data.more) continue;
    if (FINAL_STATUSES.has(page.data.status)) {
      const final = await api(config.apiBatch);
      if (final.ok) applySnapshot(final.data);
      ended = true;
      changed();
      return;
    }
    await sleep(POLL_MS);
  }
}

const socket = new LiveSocket({
  url: config.wsUrl,
  after: () => lastSeq,
  onMessage(message) {
    if (message.type === 'snapshot') applySnapshot(message.batch);
    else if (message.type === 'events') applyEvents(message.events);
    else if (message.type === 'end') {
      applySnapshot(message.batch);
      ended = true;
      changed();
    }
  },
  onState: setLiveState,
  onUnavailable: poll,
  onRefused(code) {
    showLiveMode('Live updates: stopped', 'warn');
    showActionError({ message: code === 4404 ? 'This batch no longer exists: it was deleted.' : `The live stream refused this page (close ${code}); reload to try again.` });
  },
});

invalidateTable();
changed();
socket.start();
