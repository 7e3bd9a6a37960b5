// The batch page: live progress, throughput and latency charts, breakdowns, and the results table.
//
// The page never replays a batch: it opens on the server's snapshot (counts and stats as of a seq) and on
// one page of results read from the results API for the view in the address (filter, search, sort, offset),
// then follows the batch's events from there (websocket, or polling when websockets fail); the throughput
// chart's history is the batch's progress reports alone. The ok, failed and cancelled counts are the
// server's figures as of a seq plus the results applied since, and never go back. A live result joins the
// page shown when it belongs there (index order, within the page's range of indexes, matching the view);
// any other view offers "N new results — refresh". The counters and the table are drawn only once the
// events applied reach both the counts' seq and the page's, so the two always describe the same results.
// Rendering is batched per animation frame; charts are redrawn at most four times a second.
import {
  FINAL_STATUSES, LiveSocket, api, atMostEvery, badgeClass, byId, doneOf, fmtBytes, fmtClock, fmtDuration,
  fmtInt, fmtMs, fmtRate, h, liveModeFor, paintBar, perFrame, setText, showLiveMode, sleep, svg, withId,
  withQuery,
} from './common.js';
import { capturedFacts } from './capture.js';
import {
  OUTCOMES, outcomeOf, reasonWords, reasonsBeyondError, resultWords, ruleName, statusWords, thresholdValue, thresholdWords,
  warningName, warningWords,
} from './outcome.js';

const config = byId('page').dataset;
const PAGE_SIZE = 100;
const POLL_MS = 1000;
const ANSWER_TIMEOUT_MS = 5000; // a stopped server accepts connections and never answers: give up on a call after this
const MIN_RATE_SECONDS = 1; // under a second of run time, a rate is noise
const BLOCKED_ENTRIES_SHOWN = 3;
const BLOCKED_READ = 1000; // blocked results read for the hosts the banner names
const HISTORY_PAGES = 20; // pages of 5,000 progress reports at most for the throughput chart's history
const HELD_MAX = 20000; // live results kept while a page is read, to apply to it when it comes
const SEARCH_PAUSE_MS = 250; // typing pauses this long before a search is sent
// Results of these error kinds never reached the network: they have no latency (app/core/stats.py, _NO_LATENCY).
const NO_LATENCY = new Set(['cancelled', 'blocked', 'invalid_url']);

// ---- state -------------------------------------------------------------------------------------

let batch = JSON.parse(config.batch);
let lastSeq = null; // the newest event applied (null until the first page is read); the feed asks for what follows
let ended = false;
let liveState = 'connecting';
// The counts: the server's figures as of `base.seq`, plus the results applied since; `shownBest` keeps them from going back.
let base = baseOf(batch, batch.last_seq || 0);
const since = { ok: 0, warn: 0, failed: 0, cancelled: 0, blocked: 0 };
const shownBest = { ok: 0, warn: 0, failed: 0, cancelled: 0 };
let expectationsSeen = false; // a result with expectations came: the counters say matched / mismatched
let drawnCounts = null; // the counts last drawn (kept while the events applied catch up with a newer snapshot)
let stoppedSeen = 0; // results cancelled in flight seen live: what the page says until the server's count comes
let stoppedTotal = null; // the server's count of them, read once the batch is cancelled
const blocked = { entries: [], readFor: -1, reading: false }; // allow-list entries of the blocked results read
const progressPoints = []; // {t (ms since epoch), fetched (ok + failed)} from progress events, in time order
let running = null; // the last GET .../running answer while the Running filter shows: {list, count, at}

const SORTS = ['index', 'status', 'latency', 'size'];
const FILTERS = ['all', 'ok', 'warn', 'failed', 'cancelled', 'running'];
const FACETS = ['status', 'error', 'reason']; // the breakdowns' filters, one at a time
// Latency and size read best slowest/largest first; index and status ascending.
const defaultDir = (sort) => (sort === 'latency' || sort === 'size' ? -1 : 1);
const view = {
  filter: 'all', status: null, error: null, reason: null, q: '', sort: 'index', dir: 1, offset: 0, fromIndex: null, expanded: new Set(),
};
// The page of results shown: as the results API answered (as of its last_seq), plus the live results that belong on it.
const table = {
  rows: [], total: 0, exact: true, seq: 0, loaded: false, error: null,
  pending: 0, // results that match the view but could not be placed on this page: "N new results — refresh"
  held: null, // while a page is read: the live results that arrive meanwhile, {data, seq}
};
// Page turns read the results as of the view's first page (the results API's until_seq: its last_seq), so a
// result that lands between two pages moves no row from one page to the next; those since are placed on each.
const pin = { seq: null, since: [] };
let tableDirty = true;
let focusAfterRender = null; // a URL index whose row takes the focus once the table is drawn

// ---- applying what the server says -------------------------------------------------------------

// The counts' starting point from a snapshot or an event's data as of `seq`.
function baseOf(source, seq) {
  const byError = (source.stats && source.stats.by_error) || {};
  return { seq, counts: source.counts || { total: 0 }, blocked: byError.blocked || 0 };
}

function rebase(source, seq) {
  base = baseOf(source, seq);
  for (const key of Object.keys(since)) since[key] = 0;
}

function applySnapshot(snapshot) {
  if (!snapshot) return;
  const seq = snapshot.last_seq ?? 0;
  if (seq >= base.seq) {
    batch = { ...batch, ...snapshot };
    // Its counts hold every result up to its seq: they replace ours only if that covers every result applied.
    if (lastSeq === null || seq >= lastSeq) rebase(snapshot, seq);
  }
  changed();
}

function applyEvent(event) {
  if (lastSeq !== null && event.seq <= lastSeq) return; // seen already (a replay after a reconnect)
  lastSeq = event.seq;
  const data = event.data || {};
  if (event.type === 'result') {
    if (event.seq > base.seq) count(data);
    if (outcomeOf(data) === 'cancelled' && data.timings && data.timings.total > 0) stoppedSeen += 1;
    liveResult(data, event.seq);
  } else if (event.type === 'progress') {
    noteProgress(event.at, data.counts);
    if (event.seq > base.seq) {
      batch.counts = data.counts;
      batch.stats = data.stats;
      rebase(data, event.seq);
    }
  } else if (event.type === 'batch') {
    if (data.counts) noteProgress(data.finished_at || event.at, data.counts);
    if (event.seq > base.seq) {
      // The final event carries the verdict: the banner shows PASS or FAIL with the status, nothing read apart.
      for (const key of ['status', 'started_at', 'finished_at', 'counts', 'stats', 'verdict']) {
        if (data[key] !== undefined) batch[key] = data[key];
      }
      if (data.counts) rebase(data, event.seq);
    }
  }
}

function applyEvents(events) {
  for (const event of events || []) applyEvent(event);
  changed();
  // The comparison (compare.js) reads its counts again as rows land.
  if ((events || []).some((event) => event.type !== 'progress')) document.dispatchEvent(new CustomEvent('batch-events'));
}

// Count one result that arrived after the counts' seq.
function count(r) {
  const outcome = outcomeOf(r);
  since[outcome] += 1;
  if (outcome === 'warn') since.ok += 1; // the counts' ok includes warn, as `ok` is true for it
  if (r.expect) expectationsSeen = true;
  if (outcome === 'failed' && r.error && r.error.kind === 'blocked') since.blocked += 1;
}

// Whether the events applied reach the counts' seq and the page's: then counters and rows describe the same results.
function caughtUp() {
  return lastSeq !== null && lastSeq >= base.seq && (!table.loaded || lastSeq >= table.seq);
}

// The counts shown: the server's as of its seq plus the results since, never lower than shown before.
// Running and pending are the server's.
function shownCounts() {
  if (drawnCounts && !caughtUp()) return drawnCounts;
  const server = batch.counts || { total: 0 };
  const counts = { total: server.total || 0 };
  for (const key of OUTCOMES) {
    shownBest[key] = Math.max(shownBest[key], (base.counts[key] || 0) + since[key]);
    counts[key] = shownBest[key];
  }
  const open = Math.max(0, counts.total - doneOf(counts));
  counts.running = FINAL_STATUSES.has(batch.status) ? 0 : Math.min(server.running || 0, open);
  counts.waiting = FINAL_STATUSES.has(batch.status) ? 0 : Math.min(server.waiting || 0, open - counts.running);
  counts.pending = open - counts.running - counts.waiting;
  drawnCounts = counts;
  return counts;
}

// A point for the throughput chart: how many URLs had been fetched (ok or failed) at a time. Points are
// kept in time order, one per time, whether they come from the history or live.
function noteProgress(at, counts) {
  if (!at || !counts) return;
  const t = Date.parse(at);
  if (Number.isNaN(t)) return;
  let i = progressPoints.length;
  while (i > 0 && progressPoints[i - 1].t > t) i -= 1;
  if (i > 0 && progressPoints[i - 1].t === t) return;
  progressPoints.splice(i, 0, { t, fetched: (counts.ok || 0) + (counts.failed || 0) });
}

// The batch's progress reports so far, for the throughput chart (read once, a few pages at most).
async function readHistory() {
  let after = 0;
  for (let pages = 0; pages < HISTORY_PAGES; pages += 1) {
    const answer = await api(withQuery(config.apiEvents, { after, limit: 5000, type: 'progress,batch' }), { timeout: ANSWER_TIMEOUT_MS });
    if (!answer.ok) return;
    for (const event of answer.data.events) {
      const data = event.data || {};
      noteProgress(event.type === 'batch' ? data.finished_at || event.at : event.at, data.counts);
    }
    drawCharts();
    if (!answer.data.more) return;
    after = answer.data.last_seq;
  }
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
  lostContact: byId('lost-contact'),
  blocked: byId('blocked-banner'),
};

function renderSummary() {
  const counts = shownCounts();
  const stats = batch.stats || {};
  const final = FINAL_STATUSES.has(batch.status);
  els.status.className = badgeClass(batch.status);
  setText(els.status, batch.status);
  const pct = paintBar(els.bar, counts);
  const fetched = counts.ok + counts.failed;
  if (batch.status === 'cancelled') {
    // "100 %" would say the work was done; say what was done and what never ran.
    const stopped = Math.min(stoppedTotal ?? stoppedSeen, counts.cancelled);
    if (stoppedTotal === null) readStopped();
    const parts = [`${fmtInt(fetched)} fetched`];
    if (stopped) parts.push(`${fmtInt(stopped)} stopped in flight`);
    parts.push(`${fmtInt(counts.cancelled - stopped)} never ran`);
    setText(els.pct, '');
    setText(els.progressText, `Cancelled: ${parts.join(', ')}`);
  } else {
    setText(els.pct, `${pct}%`);
    const paused = counts.waiting && hostsView.list ? hostsView.list.map((x) => pauseText(x)).find(Boolean) : '';
    const waiting = paused ? ` · ${fmtInt(counts.waiting)} ${paused}` : '';
    setText(els.progressText, `${fmtInt(doneOf(counts))} of ${fmtInt(counts.total)} URLs done${waiting}`);
  }
  // The counters add up to the total, as the bar does: OK (Matched) is ok less the warned, which Warn counts.
  setText(byId('count-ok'), fmtInt(counts.ok - (counts.warn || 0)));
  for (const key of ['warn', 'failed', 'cancelled', 'running', 'pending', 'waiting']) setText(byId(`count-${key}`), fmtInt(counts[key]));
  byId('stat-waiting').hidden = !counts.waiting;
  renderExpectations(counts);
  setText(byId('stat-rate'), fmtRate(rateOf(fetched)));
  setText(byId('stat-p50'), fmtMs(stats.p50_ms));
  setText(byId('stat-p90'), fmtMs(stats.p90_ms));
  setText(byId('stat-p99'), fmtMs(stats.p99_ms));
  setText(byId('stat-max'), fmtMs(stats.max_ms));
  setText(byId('stat-bytes'), stats.bytes === undefined ? '–' : fmtBytes(stats.bytes));
  setText(els.times, timesText());
  setText(els.options, optionsText(batch.options || {}));
  renderSegments(counts);
  renderBlocked();
  renderVerdict(counts);

  els.cancel.hidden = final;
  const unfinished = counts.failed + counts.cancelled;
  els.rerunFailed.disabled = !final || unfinished === 0;
  els.rerunFailed.title = !final ? 'Available once the batch ends' : unfinished === 0 ? 'Every URL ended ok' : `Run the ${unfinished} URLs that did not end ok again`;
  els.remove.disabled = !final;
  els.remove.title = final ? 'Delete this batch and its results' : 'Cancel the batch before deleting it';
  document.title = `${batch.status === 'cancelled' ? 'Cancelled' : `${pct}%`} ${batch.name} · greenbatch`;
  if (ended) showLiveMode(...finishedMode());
}

// Whether the batch checks expectations or checks: its own options say so, or its reasons, or a result seen.
function hasExpectations() {
  const o = batch.options || {};
  if ((o.expect && Object.keys(o.expect).length) || (o.checks && o.checks.length)) return true;
  const reasons = Object.keys((batch.stats && batch.stats.by_reason) || {});
  return expectationsSeen || reasons.some((rule) => rule.startsWith('expect.') || rule.startsWith('check['));
}

// With expectations, ok and failed read "matched" and "mismatched"; Warn shows when the batch has any.
function renderExpectations(counts) {
  const expecting = hasExpectations();
  setText(byId('label-ok'), expecting ? 'Matched' : 'OK');
  setText(byId('label-failed'), expecting ? 'Mismatched' : 'Failed');
  byId('stat-warn').hidden = !expecting && !counts.warn;
}

// The verdict: PASS or FAIL once the batch ends, each threshold with its limit (and its value where it failed);
// while it runs, the thresholds it will be judged by.
function renderVerdict(counts) {
  const node = byId('verdict');
  const thresholds = Object.entries((batch.options && batch.options.thresholds) || {}).filter(([, limit]) => limit !== null && limit !== undefined);
  const verdict = batch.verdict;
  if (!verdict && !thresholds.length) {
    node.hidden = true;
    return;
  }
  node.hidden = false;
  const drawn = JSON.stringify([thresholds, verdict, counts.failed]);
  if (node.dataset.drawn === drawn) return;
  node.dataset.drawn = drawn;
  const state = !verdict ? 'pending' : verdict.pass ? 'pass' : 'fail';
  node.className = `verdict ${state}`;
  const violated = new Map(((verdict && verdict.violations) || []).map((v) => [v.threshold, v]));
  const items = thresholds.map(([name, limit]) => {
    const miss = violated.get(name);
    violated.delete(name);
    const mark = !verdict ? '' : miss ? ` ✗ ${thresholdValue(name, miss.actual)}` : ' ✓';
    return h('li', { class: miss ? 'violated' : verdict ? 'met' : '', dataset: { threshold: name } }, thresholdWords(name, limit), mark);
  });
  for (const [name, miss] of violated) {
    items.push(h('li', { class: 'violated', dataset: { threshold: name } }, thresholdWords(name, miss.limit), ` ✗ ${thresholdValue(name, miss.actual)}`));
  }
  let summary = '';
  if (!verdict) summary = FINAL_STATUSES.has(batch.status) ? '' : 'decided when the batch ends';
  else if (!thresholds.length && !items.length) summary = verdict.pass ? 'no URL failed' : `${fmtInt(counts.failed)} URL${counts.failed === 1 ? '' : 's'} failed`;
  node.replaceChildren(...[
    h('strong', { class: 'verdict-word' }, !verdict ? 'Verdict' : verdict.pass ? 'PASS' : 'FAIL'),
    summary ? h('span', { class: 'verdict-summary' }, summary) : null,
    items.length ? h('ul', { class: 'thresholds' }, items) : null,
  ].filter(Boolean)); // replaceChildren would write a null as the text "null"
}

// URLs fetched (ok or failed) per second of run time; none before anything was fetched or under a second.
function rateOf(fetched) {
  if (!batch.started_at || !fetched) return null;
  const end = batch.finished_at ? Date.parse(batch.finished_at) : Date.now();
  const seconds = (end - Date.parse(batch.started_at)) / 1000;
  return seconds >= MIN_RATE_SECONDS ? fetched / seconds : null;
}

// The filter buttons' counts are the counters' own; Cancelled and Running show only when they hold something.
function renderSegments(counts) {
  const shown = { all: doneOf(counts), ok: counts.ok, warn: counts.warn, failed: counts.failed, cancelled: counts.cancelled, running: counts.running };
  if (running && view.filter === 'running' && !FINAL_STATUSES.has(batch.status)) shown.running = running.count;
  for (const [key, n] of Object.entries(shown)) setText(document.querySelector(`[data-n="${key}"]`), fmtInt(n));
  for (const key of ['warn', 'cancelled', 'running']) {
    const button = document.querySelector(`.segmented [data-filter="${key}"]`);
    button.hidden = view.filter !== key && !(key === 'running' ? !FINAL_STATUSES.has(batch.status) && batch.started_at : counts[key]);
  }
}

// When every failure is `blocked`, say why and what to restart the server with (the hosts of the blocked results read).
function renderBlocked() {
  const failed = (base.counts.failed || 0) + since.failed;
  const count = base.blocked + since.blocked; // from the same figures as `failed`, so the two compare
  const show = failed > 0 && count === failed;
  els.blocked.hidden = !show;
  if (!show) return;
  if (blocked.readFor !== count) readBlocked(count);
  const entries = blocked.entries;
  setText(byId('blocked-command'), `GREENBATCH_ALLOW_TARGETS=${entries.slice(0, BLOCKED_ENTRIES_SHOWN).join(',')}`);
  const more = entries.length - BLOCKED_ENTRIES_SHOWN;
  setText(byId('blocked-more'), more > 0 ? `and ${more} more host${more === 1 ? '' : 's'} of the blocked URLs ` : '');
}

// Read the blocked results (up to BLOCKED_READ) for the hosts to allow; again when their number changed, at most once a second.
async function readBlocked(count) {
  if (blocked.reading) return;
  blocked.reading = true;
  const answer = await api(withQuery(config.apiResults, { error: 'blocked', limit: BLOCKED_READ }), { timeout: ANSWER_TIMEOUT_MS });
  if (answer.ok) {
    blocked.entries = [...new Set(answer.data.results.map(allowEntry))];
    blocked.readFor = count;
    render();
  }
  await sleep(POLL_MS);
  blocked.reading = false;
}

// How many of a cancelled batch's URLs were stopped in flight: the server counts them (once).
let readingStopped = false;
async function readStopped() {
  if (readingStopped) return;
  readingStopped = true;
  const answer = await api(withQuery(config.apiResults, { outcome: 'stopped', limit: 1 }), { timeout: ANSWER_TIMEOUT_MS });
  if (answer.ok && answer.data.total_exact) {
    stoppedTotal = answer.data.total;
    render();
  } else {
    await sleep(POLL_MS);
    readingStopped = false; // asked again on a later frame
  }
}

// The allow-list entry that lets a blocked result through: the one the server's message suggests, else the URL's host:port.
function allowEntry(r) {
  const suggested = /GREENBATCH_ALLOW_TARGETS=([^\s),]+)/.exec(r.error.message || '');
  if (suggested) return suggested[1];
  try {
    const url = new URL(r.url);
    return `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`;
  } catch {
    return r.url;
  }
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
  if (o.capture) {
    const kept = (o.capture.headers || []).length;
    const what = [o.capture.tls ? 'TLS' : null, kept ? `${kept} header${kept === 1 ? '' : 's'}` : null].filter(Boolean);
    parts.push(`captures ${what.join(' and ') || 'server and address'}`);
  }
  if (o.expect && expectWords(o.expect)) parts.push(`expect ${expectWords(o.expect)}`);
  if (o.url_match && o.url_match !== 'exact') parts.push(`final URL match: ${o.url_match.replaceAll('_', ' ')}`);
  if (o.base_url) parts.push(`base ${o.base_url}`);
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
    // On a narrow chart every other bound is labelled, so the labels do not run into each other.
    if (slot >= 28 || i % 2 === 0) nodes.push(svg('text', { x: x + slot / 2, y: CHART_HEIGHT - 6, 'text-anchor': 'middle', class: 'tick' }, bucketLabel(b.le_ms)));
  });
  histogramSvg.replaceChildren(...nodes);
}

function statusClass(code) {
  if (code === null || code === undefined) return 'code none';
  return `code c${String(code)[0]}xx`;
}

const FILL = { status: (key) => `c${key[0]}xx`, error: () => 'error', reason: (key) => (warningName(key) !== key ? 'warn' : 'error') };
const NONE = { status: 'No responses yet', error: 'No errors', reason: 'No reasons' };

// A bar's label: a status code, an error kind, or a rule in words (its name in the title).
function facetLabel(kind, key) {
  if (kind === 'status') return h('span', { class: statusClass(Number(key)) }, key);
  if (kind === 'reason') return h('span', { class: `kind rule ${FILL.reason(key)}` }, ruleName(key));
  return h('span', { class: 'kind' }, key);
}

// A breakdown's bars; each is a button that filters the table to its status code, error kind or rule.
function drawBreakdown(list, entries, kind) {
  if (!entries.length) {
    list.replaceChildren(h('li', { class: 'none' }, NONE[kind]));
    return;
  }
  const max = Math.max(...entries.map(([, n]) => n));
  list.replaceChildren(...entries.map(([key, n]) => {
    const fill = h('span', { class: `fill ${FILL[kind](key)}` });
    fill.style.width = `${(100 * n) / max}%`;
    const pressed = view[kind] === key;
    return h('li', null, h('button', {
      type: 'button', class: 'facet', 'aria-pressed': String(pressed), dataset: { facet: kind, value: key },
      title: `${key}: ${fmtInt(n)} · ${pressed ? 'click to show every result' : 'click to show only these'}`,
    },
    facetLabel(kind, key),
    h('span', { class: 'track' }, fill),
    h('span', { class: 'n num' }, fmtInt(n))));
  }));
}

const drawCharts = atMostEvery(250, () => {
  drawThroughput();
  drawHistogram();
  drawBreakdowns();
});

function drawBreakdowns() {
  const stats = batch.stats || {};
  drawBreakdown(byId('by-status'), Object.entries(stats.by_status || {}), 'status');
  drawBreakdown(byId('by-error'), Object.entries(stats.by_error || {}).sort((a, b) => b[1] - a[1]), 'error');
  // The rules that decided rows (warnings among them, unless warn_as made a kind ok: then it decided nothing and
  // its reason= filter would find no row); shown once the batch has any.
  const entries = Object.entries(stats.by_reason || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  byId('reasons').hidden = !entries.length && view.reason === null;
  drawBreakdown(byId('by-reason'), entries, 'reason');
}

new ResizeObserver(drawCharts).observe(throughputSvg.parentElement);

document.querySelector('.breakdowns').addEventListener('click', (event) => {
  const button = event.target.closest('button.facet');
  if (!button) return;
  const { facet, value } = button.dataset;
  const on = view[facet] !== value;
  for (const key of FACETS) view[key] = null;
  if (on) {
    view[facet] = value;
    if (view.filter !== 'all') setFilter('all');
  }
  viewChanged();
  drawBreakdowns();
});

// ---- results table -----------------------------------------------------------------------------

const tbody = byId('result-rows');
const pageInfo = byId('page-info');
const emptyNote = byId('results-empty');
const search = byId('url-search');
const facetChip = byId('facet-chip');
const newResults = byId('new-results');
const goTo = byId('page-go');

function latencyOf(r) {
  if (r.elapsed_ms !== undefined) return r.elapsed_ms; // in flight: the time so far
  if (r.error && NO_LATENCY.has(r.error.kind)) return null;
  return r.timings ? r.timings.total : null;
}

// Sort values as the results API sorts (the Running filter's rows are sorted here).
const SORT_KEYS = {
  index: (r) => r.index,
  latency: latencyOf,
  status: (r) => r.status_code,
  size: (r) => (r.status_code === null || r.status_code === undefined ? null : r.bytes),
};

// Whether a result belongs in the view, as the results API decides (a search ignores the case of ASCII letters).
function matches(r) {
  if (OUTCOMES.includes(view.filter) && !inOutcome(r, view.filter)) return false;
  if (view.status !== null && String(r.status_code) !== view.status) return false;
  if (view.error !== null && !(r.error && r.error.kind === view.error)) return false;
  if (view.reason !== null && !hasRule(r, view.reason)) return false;
  if (view.q) {
    const q = view.q.toLowerCase();
    if (!r.url.toLowerCase().includes(q) && !(r.final_url && r.final_url.toLowerCase().includes(q))) return false;
  }
  return true;
}

// Whether a result is in an outcome filter: OK holds the warn rows too, as the counts' ok does.
function inOutcome(r, filter) {
  const outcome = outcomeOf(r);
  return outcome === filter || (filter === 'ok' && outcome === 'warn');
}

// Whether a rule decided a result, or a warning of that kind was raised on it.
function hasRule(r, rule) {
  return (r.reasons || []).some((reason) => reason.rule === rule) || (r.warnings || []).some((w) => w.kind === rule);
}

// The results API's parameters for the page the view shows.
function pageQuery() {
  const query = { limit: PAGE_SIZE, sort: view.sort, order: view.dir === 1 ? 'asc' : 'desc' };
  if (view.fromIndex !== null) query.from_index = view.fromIndex;
  else query.offset = view.offset;
  if (OUTCOMES.includes(view.filter)) query.outcome = view.filter;
  if (view.status !== null) query.status = view.status;
  if (view.error !== null) query.error = view.error;
  if (view.reason !== null) query.reason = view.reason;
  if (view.q) query.q = view.q;
  return query;
}

// Read the page the view shows (`turning`: another page of the same view, as of the same results); the live
// results that arrive meanwhile are applied to it when it comes.
let pageRead = 0; // the newest read: an older one's answer is dropped
async function readPage(turning = false) {
  tableDirty = true;
  if (view.filter === 'running') {
    render();
    return;
  }
  const mine = ++pageRead;
  table.held = [];
  const query = pageQuery();
  const pinned = turning && pin.seq !== null;
  if (pinned) query.until_seq = pin.seq;
  const answer = await api(withQuery(config.apiResults, query), { timeout: ANSWER_TIMEOUT_MS });
  if (mine !== pageRead) return;
  const held = table.held;
  table.held = null;
  if (!answer.ok) {
    if (answer.status === 400 && (view.offset > 0 || view.fromIndex !== null)) {
      // A position past the end (an old address, or a go-to): show the first page instead.
      view.offset = 0;
      view.fromIndex = null;
      await readPage();
      return;
    }
    table.error = answer.error.message;
    table.loaded = true;
    render();
    return;
  }
  const page = answer.data;
  Object.assign(table, {
    rows: page.results, total: page.total, exact: page.total_exact, seq: page.last_seq, loaded: true, error: null, pending: 0,
  });
  view.offset = page.offset ?? view.fromIndex ?? 0;
  view.fromIndex = null;
  if (!pinned) Object.assign(pin, { seq: page.last_seq, since: (held || []).filter(({ seq }) => seq > page.last_seq) });
  for (const { data } of pin.since) place(data);
  writeAddress();
  tableDirty = true;
  render();
}

// A result event: onto the page if it belongs there (and kept for a page being read).
function liveResult(data, seq) {
  if (table.held && table.held.length < HELD_MAX) table.held.push({ data, seq });
  if (pin.seq !== null && seq > pin.seq) {
    if (pin.since.length < HELD_MAX) pin.since.push({ data, seq });
    else pin.seq = null; // too many to place again on every page: the next page is read as of now
  }
  if (table.loaded && seq > table.seq) place(data);
}

// Place a result the page read did not have: on this page when it falls within its range of indexes (index
// order), else counted as new. A result is final: one the page holds already stays as it is.
function place(r) {
  if (view.filter === 'running' || !matches(r)) return;
  const rows = table.rows;
  if (rows.some((row) => row.index === r.index)) return;
  table.total += 1;
  tableDirty = true;
  if (view.sort !== 'index') {
    table.pending += 1;
    return;
  }
  const ahead = (a, b) => (view.dir === 1 ? a < b : a > b); // index a comes before index b in the view's order
  if (view.offset > 0 && (!rows.length || ahead(r.index, rows[0].index))) {
    table.pending += 1; // an earlier page's: every row of this one moves on by one
    return;
  }
  if (rows.length >= PAGE_SIZE && !ahead(r.index, rows[rows.length - 1].index)) return; // a later page's
  let at = rows.length;
  while (at > 0 && ahead(r.index, rows[at - 1].index)) at -= 1;
  rows.splice(at, 0, r);
  if (rows.length > PAGE_SIZE) rows.pop();
}

// How many results the view holds: the counters' own figure where one says (no search, status or error),
// else the results API's, plus the live results since.
function viewTotal() {
  if (view.status === null && view.error === null && view.reason === null && !view.q) {
    const counts = shownCounts();
    if (view.filter === 'all') return { n: doneOf(counts), exact: true };
    if (OUTCOMES.includes(view.filter)) return { n: counts[view.filter], exact: true };
  }
  return { n: table.total, exact: table.exact };
}

// The URLs in flight as rows, their elapsed time counted on from the answer's.
function runningRows() {
  if (!running) return [];
  const since = performance.now() - running.at;
  return running.list.map((u) => ({ ...u, elapsed_ms: u.elapsed_ms + since }));
}

// The Running filter's rows (at most 500, from the server's list): filtered and sorted here; no value sorts last.
function sortedRunning() {
  const list = runningRows().filter(matches);
  const key = SORT_KEYS[view.sort];
  list.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    const aMissing = ka === null || ka === undefined;
    const bMissing = kb === null || kb === undefined;
    if (aMissing !== bMissing) return aMissing ? 1 : -1;
    if (!aMissing && ka !== kb) return (ka < kb ? -1 : 1) * view.dir;
    return (a.index - b.index) * view.dir;
  });
  return list;
}

function urlCell(r) {
  const cell = h('td', { class: 'col-url' }, h('div', { class: 'url', title: r.url }, r.url));
  if (r.final_url && r.final_url !== r.url) {
    cell.append(h('div', { class: 'final-url', title: r.final_url }, `→ ${r.final_url}`));
  }
  return cell;
}

function resultRow(r) {
  const outcome = outcomeOf(r);
  const expanded = view.expanded.has(r.index);
  const redirects = (r.redirects || []).length;
  const statusCell = h('td', { class: 'col-status' },
    r.status_code === null || r.status_code === undefined ? h('span', { class: 'code none' }, '—') : h('span', { class: statusClass(r.status_code) }, String(r.status_code)),
    redirects ? h('span', { class: 'hops', title: `${redirects} redirect${redirects === 1 ? '' : 's'}` }, `↪${redirects}`) : null);
  const outcomeCell = h('td', { class: 'col-outcome' });
  if (r.error && r.error.kind !== 'mismatch') {
    outcomeCell.append(h('span', { class: `kind ${r.error.kind === 'cancelled' ? 'muted' : ''}` }, r.error.kind), ' ',
      h('span', { class: 'message', title: r.error.message }, r.error.message));
  }
  // What decided the row, in words; the rules by name in the title.
  const words = resultWords(r, checksOf());
  if (words) {
    const reasons = reasonsBeyondError(r);
    const rules = reasons.length ? reasons.map((x) => x.rule) : (r.warnings || []).map((w) => w.kind);
    if (outcome === 'warn') outcomeCell.append(h('span', { class: 'tag warn' }, 'warn'), ' ');
    outcomeCell.append(h('span', { class: 'why', title: `${rules.join(', ')}: ${words}` }, words));
  }
  const size = SORT_KEYS.size(r);
  return h('tr', {
    class: `result-row ${outcome}`, tabindex: '0', 'aria-expanded': String(expanded), dataset: { index: String(r.index) },
  },
  h('td', { class: 'num col-index' }, String(r.index)),
  urlCell(r),
  statusCell,
  latencyOf(r) === null
    ? h('td', { class: 'num col-latency none', title: 'No latency: this URL never reached the network' }, '–')
    : h('td', { class: 'num col-latency' }, fmtMs(latencyOf(r))),
  h('td', { class: `num col-size${size === null ? ' none' : ''}` }, size === null ? '–' : fmtBytes(r.bytes)),
  h('td', { class: 'col-type', title: r.content_type || '' }, r.content_type || ''),
  outcomeCell);
}

function runningRow(u) {
  return h('tr', { class: 'result-row in-flight', dataset: { index: String(u.index) } },
    h('td', { class: 'num col-index' }, String(u.index)),
    urlCell(u),
    h('td', { class: 'col-status' }, h('span', { class: 'code running' }, 'running')),
    h('td', { class: 'num col-latency', title: `in flight since ${fmtClock(u.started_at)}` }, fmtMs(u.elapsed_ms)),
    h('td', { class: 'num col-size none' }, '–'),
    h('td', { class: 'col-type' }),
    h('td', { class: 'col-outcome' }));
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

// The checks a reason "check[N]" may name: the batch's (a row's own follow them).
function checksOf() {
  return (batch.options && batch.options.checks) || [];
}

// Where each reason with a hop diverged: hop index -> the words of the reasons there. A hop past the
// redirects is the last response.
function divergences(r) {
  const at = new Map();
  const last = (r.redirects || []).length;
  for (const reason of r.reasons || []) {
    if (typeof reason.hop !== 'number') continue;
    const hop = Math.min(reason.hop, last);
    at.set(hop, [...(at.get(hop) || []), reasonWords(reason, { batchChecks: checksOf(), rowChecks: r.checks })]);
  }
  return at;
}

// A hop of the chain; the one where the row diverged from its expectations is marked, with why.
function hopItem(className, status, url, diverged) {
  const item = h('li', { class: [className, diverged ? 'diverged' : ''].filter(Boolean).join(' ') || null },
    h('span', { class: status === null || status === undefined ? 'code none' : statusClass(status) }, String(status ?? '—')), ' ', h('span', { class: 'url' }, url));
  if (diverged) item.append(h('span', { class: 'diverged-note' }, `diverged here: ${diverged.join('; ')}`));
  return item;
}

// What the row was expected to do, in words: "status 301 · final URL https://… · at most 3 hops".
function expectWords(expect) {
  const parts = [];
  if (expect.status !== undefined && expect.status !== null) parts.push(`status ${statusWords(expect.status)}`);
  if (expect.final_url) parts.push(`final URL ${expect.final_url}`);
  if (expect.final_status !== undefined && expect.final_status !== null) parts.push(`final status ${statusWords(expect.final_status)}`);
  if (expect.max_hops !== undefined && expect.max_hops !== null) parts.push(`at most ${fmtInt(expect.max_hops)} hops`);
  return parts.join(' · ');
}

function detailRow(r) {
  const chain = h('ol', { class: 'chain' });
  const diverged = divergences(r);
  (r.redirects || []).forEach((hop, i) => chain.append(hopItem('', hop.status, hop.url, diverged.get(i))));
  const last = diverged.get((r.redirects || []).length);
  chain.append(hopItem('final', r.final_url ? r.status_code : null, r.final_url || r.url, last));
  const outcome = outcomeOf(r);
  const facts = h('dl', { class: 'facts' },
    h('dt', null, 'Outcome'), h('dd', { class: `${outcome}-text` }, outcome));
  for (const reason of reasonsBeyondError(r)) {
    facts.append(h('dt', { class: 'rule' }, reason.rule), h('dd', { class: 'why' }, reasonWords(reason, { batchChecks: checksOf(), rowChecks: r.checks })));
  }
  for (const warning of r.warnings || []) {
    if ((r.reasons || []).some((reason) => reason.rule === warning.kind)) continue; // said above
    facts.append(h('dt', { class: 'rule' }, warning.kind), h('dd', { class: 'why' }, warningWords(warning)));
  }
  if (r.expect && expectWords(r.expect)) facts.append(h('dt', null, 'Expected'), h('dd', null, expectWords(r.expect)));
  for (const [key, value] of Object.entries(r.meta || {})) facts.append(h('dt', { class: 'meta' }, key), h('dd', null, String(value ?? '')));
  facts.append(
    h('dt', null, 'Content type'), h('dd', null, r.content_type || '–'),
    h('dt', null, 'Size'), h('dd', { class: 'num' }, `${fmtBytes(r.bytes)}${r.bytes >= 1024 ? ` (${fmtInt(r.bytes)} B)` : ''}`),
    h('dt', null, 'Attempts'), h('dd', { class: 'num' }, String(r.attempts ?? '–')),
    h('dt', null, 'Started'), h('dd', { class: 'num' }, r.started_at || '–'),
    h('dt', null, 'Finished'), h('dd', { class: 'num' }, r.finished_at || '–'));
  if (r.error && r.error.kind !== 'mismatch') facts.append(h('dt', null, 'Error'), h('dd', { class: 'error-text' }, `${r.error.kind}: ${r.error.message}`));
  facts.append(...capturedFacts(r));
  return h('tr', { class: 'detail', dataset: { detailFor: String(r.index) } },
    h('td', { colspan: '7' },
      h('h3', { class: 'drawer-title' }, `URL #${r.index}`, h('span', { class: 'hint' }, 'Esc closes')),
      h('div', { class: 'detail-grid' },
        h('section', null, h('h4', null, (r.redirects || []).length ? `Redirect chain (${r.redirects.length})` : 'Request'), chain, facts),
        h('section', null, h('h4', null, 'Timing'), waterfall(r)))));
}

// The breakdown filter in force, in words ('' for none).
function facetWords() {
  if (view.status !== null) return `status ${view.status}`;
  if (view.error !== null) return `error ${view.error}`;
  if (view.reason !== null) return `reason ${view.reason}`;
  return '';
}

function filterWords() {
  const words = [];
  if (view.filter !== 'all') words.push(view.filter);
  if (facetWords()) words.push(facetWords());
  if (view.q) words.push(`URLs containing “${view.q}”`);
  return words.join(' · ');
}

function renderTable() {
  if (view.filter !== 'running' && !(table.loaded && caughtUp())) return; // drawn once the counters can agree
  tableDirty = false;
  let rows;
  let first;
  let total;
  if (view.filter === 'running') {
    const list = sortedRunning();
    view.offset = Math.max(0, Math.min(view.offset, (Math.ceil(list.length / PAGE_SIZE) - 1) * PAGE_SIZE));
    first = view.offset;
    rows = list.slice(first, first + PAGE_SIZE);
    total = { n: list.length, exact: true };
  } else {
    rows = table.rows;
    first = view.offset;
    total = viewTotal();
    total.n = Math.max(total.n, first + rows.length);
  }
  const nodes = [];
  for (const r of rows) {
    if (view.filter === 'running') {
      nodes.push(runningRow(r));
      continue;
    }
    nodes.push(resultRow(r));
    if (view.expanded.has(r.index)) nodes.push(detailRow(r));
  }
  tbody.replaceChildren(...nodes);
  const of = `${total.exact ? '' : 'at least '}${fmtInt(total.n)}`;
  let info = rows.length ? `${fmtInt(first + 1)}–${fmtInt(first + rows.length)} of ${of}` : `${of} results`;
  if (view.filter === 'running' && running && running.count > running.list.length) info += ` (the ${fmtInt(running.list.length)} oldest of ${fmtInt(running.count)} in flight)`;
  setText(pageInfo, info);
  byId('page-prev').disabled = first === 0;
  byId('page-next').disabled = total.exact ? first + PAGE_SIZE >= total.n : rows.length < PAGE_SIZE;
  const fresh = view.filter === 'running' ? 0 : table.pending;
  newResults.hidden = fresh === 0;
  setText(newResults, `${fmtInt(fresh)} new result${fresh === 1 ? '' : 's'} — refresh`);
  document.querySelector('.toolbar-hint').hidden = view.filter === 'running'; // in-flight rows have no drawer yet
  emptyNote.hidden = rows.length > 0;
  if (!rows.length) setText(emptyNote, emptyText(total.n));
  facetChip.hidden = FACETS.every((key) => view[key] === null);
  setText(facetChip, `${facetWords()} ✕`);
  for (const th of document.querySelectorAll('#results th')) th.removeAttribute('aria-sort');
  const active = document.querySelector(`#results button[data-sort="${view.sort}"]`);
  active.parentElement.setAttribute('aria-sort', view.dir === 1 ? 'ascending' : 'descending');
  if (focusAfterRender !== null) {
    const row = tbody.querySelector(`tr.result-row[data-index="${focusAfterRender}"]`);
    focusAfterRender = null;
    if (row) row.focus();
  }
}

function emptyText(total) {
  if (view.filter === 'running') {
    if (FINAL_STATUSES.has(batch.status)) return `Nothing in flight: the batch is ${batch.status}.`;
    return running ? 'Nothing in flight right now.' : 'Asking the server what is in flight…';
  }
  if (table.error) return `The results could not be read: ${table.error}`;
  if (!doneOf(shownCounts())) return 'No results yet: rows appear as URLs finish.';
  if (total > 0) return 'No results on this page.';
  return `No results match: ${filterWords()}.`;
}

// Draw the table again from what the page holds (a drawer opened or closed, the running list's clock).
function invalidateTable() {
  tableDirty = true;
  render();
}

// Open or close a row's drawer (its redirect chain and timing).
function toggleDrawer(index) {
  if (view.expanded.has(index)) view.expanded.delete(index); else view.expanded.add(index);
  invalidateTable();
}

tbody.addEventListener('click', (event) => {
  if (window.getSelection().toString()) return; // selecting text to copy, not toggling
  const row = event.target.closest('tr.result-row:not(.in-flight)');
  if (row) toggleDrawer(Number(row.dataset.index));
});
tbody.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') {
    const row = event.target.closest('tr.result-row:not(.in-flight)');
    if (!row) return;
    event.preventDefault();
    row.click();
  }
});
// Escape closes the drawer the focus is in (or the last one opened) and gives the focus back to its row.
document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape' || !view.expanded.size || event.defaultPrevented) return;
  if (event.target.closest && event.target.closest('input, textarea, select')) return; // Escape clears a field there
  const inside = document.activeElement && document.activeElement.closest('tr.result-row, tr.detail');
  const own = inside ? Number(inside.dataset.index ?? inside.dataset.detailFor) : null;
  const index = own !== null && view.expanded.has(own) ? own : [...view.expanded].pop();
  view.expanded.delete(index);
  focusAfterRender = index;
  invalidateTable();
});

function setFilter(filter) {
  view.filter = filter;
  for (const b of document.querySelectorAll('.segmented button')) b.setAttribute('aria-pressed', String(b.dataset.filter === filter));
  if (filter === 'running') watchRunning(); else running = null;
}

document.querySelector('.segmented').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-filter]');
  if (!button) return;
  setFilter(button.dataset.filter);
  viewChanged();
});
document.querySelector('#results thead').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-sort]');
  if (!button) return;
  const key = button.dataset.sort;
  if (view.sort === key) view.dir = -view.dir; else { view.sort = key; view.dir = defaultDir(key); }
  viewChanged();
});
let searchTimer = null;
search.addEventListener('input', () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    if (view.q === search.value.trim()) return;
    view.q = search.value.trim();
    viewChanged();
  }, SEARCH_PAUSE_MS);
});
facetChip.addEventListener('click', () => {
  for (const key of FACETS) view[key] = null;
  viewChanged();
  drawBreakdowns();
});
newResults.addEventListener('click', () => readPage());

// Move to another page of the view: by offset, or (fromIndex) to the page that starts at a URL index.
function turnTo(offset, fromIndex = null) {
  view.offset = Math.max(0, offset);
  view.fromIndex = fromIndex;
  writeAddress();
  if (view.filter === 'running') invalidateTable(); else readPage(true);
}

byId('page-prev').addEventListener('click', () => turnTo(view.offset - PAGE_SIZE));
byId('page-next').addEventListener('click', () => turnTo(view.offset + PAGE_SIZE));
// "Go to": a page number, or #index (in index order) for the page that starts at that URL.
goTo.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter') return;
  event.preventDefault();
  const text = goTo.value.trim();
  const match = /^(#?)(\d{1,10})$/.exec(text);
  const byIndex = match && match[1] === '#';
  const problem = !match ? 'Type a page number, or # and a URL index'
    : byIndex && (view.sort !== 'index' || view.filter === 'running') ? 'A URL index (#) takes index order: sort by #'
      : !byIndex && Number(match[2]) < 1 ? 'Pages start at 1' : '';
  goTo.setAttribute('aria-invalid', String(Boolean(problem)));
  goTo.title = problem || 'Go to a page, or # and a URL index';
  if (problem) return;
  const n = Number(match[2]);
  if (byIndex) turnTo(0, n); else turnTo(Math.min((n - 1) * PAGE_SIZE, lastPageOffset()));
  goTo.value = '';
});

// Where the last page of the view starts.
function lastPageOffset() {
  const total = view.filter === 'running' ? sortedRunning().length : viewTotal().n;
  return Math.max(0, Math.ceil(total / PAGE_SIZE) - 1) * PAGE_SIZE;
}

// ---- the view in the address: ?outcome=failed&status=404&error=dns&reason=expect.status&q=api&sort=latency&order=asc&offset=200 ----

function readAddress() {
  const params = new URLSearchParams(window.location.search);
  const filter = params.get('outcome');
  if (FILTERS.includes(filter)) setFilter(filter);
  view.status = /^\d{3}$/.test(params.get('status') || '') ? params.get('status') : null;
  view.error = /^[a-z_]{1,40}$/.test(params.get('error') || '') ? params.get('error') : null;
  view.reason = /^[a-z_.]{1,40}$|^check\[\d{1,4}\]$/.test(params.get('reason') || '') ? params.get('reason') : null;
  view.q = (params.get('q') || '').trim();
  search.value = view.q;
  const sort = params.get('sort');
  if (SORTS.includes(sort)) view.sort = sort;
  const order = params.get('order');
  view.dir = order === 'asc' ? 1 : order === 'desc' ? -1 : defaultDir(view.sort);
  view.offset = /^\d{1,10}$/.test(params.get('offset') || '') ? Number(params.get('offset')) : 0;
}

// Keep the view in the address (no history entry per click), so a reload or a shared link shows the same rows.
function writeAddress() {
  const params = new URLSearchParams();
  if (view.filter !== 'all') params.set('outcome', view.filter);
  if (view.status !== null) params.set('status', view.status);
  if (view.error !== null) params.set('error', view.error);
  if (view.reason !== null) params.set('reason', view.reason);
  if (view.q) params.set('q', view.q);
  if (view.sort !== 'index') params.set('sort', view.sort);
  if (view.dir !== defaultDir(view.sort)) params.set('order', view.dir === 1 ? 'asc' : 'desc');
  if (view.offset > 0) params.set('offset', String(view.offset));
  const query = params.toString();
  window.history.replaceState(window.history.state, '', `${withId(config.batchPage, config.batchId)}${query ? `?${query}` : ''}`);
}

// The view changed (a filter, a sort, a search): its first page.
function viewChanged() {
  view.offset = 0;
  view.fromIndex = null;
  writeAddress();
  readPage();
  render();
}

// While the Running filter shows, ask the server what is in flight about once a second.
let runningWatch = 0;
function watchRunning() {
  const watch = ++runningWatch;
  (async () => {
    while (watch === runningWatch && view.filter === 'running') {
      const answer = await api(config.apiRunning, { timeout: ANSWER_TIMEOUT_MS });
      if (watch !== runningWatch || view.filter !== 'running') return;
      if (answer.ok) {
        running = { list: answer.data.running, count: answer.data.count, at: performance.now() };
        invalidateTable();
      }
      if (FINAL_STATUSES.has(batch.status)) return;
      await sleep(POLL_MS);
    }
  })();
}

// ---- the hosts panel ----------------------------------------------------------------------------

// Per host: in flight, done, ok %, median, 429/503 answers and any pause. The server sends the most refused
// first, then the slowest; a header sorts by its column (again: the other way). Read every HOSTS_POLL_MS
// while the batch runs (a ms more per HOSTS_URLS_PER_MS URLs: the server reads every stored result for
// it), once more when it ends.
const HOSTS_POLL_MS = 2000;
const HOSTS_URLS_PER_MS = 50;
const HOSTS_SHOWN = 50;
const hostsView = { list: null, at: 0, sort: null, dir: -1 };

const hostValue = {
  host: (x) => x.host,
  in_flight: (x) => x.in_flight,
  done: (x) => x.done,
  ok_pct: (x) => (x.done ? x.ok / x.done : -1),
  p50_ms: (x) => x.p50_ms ?? -1,
  refused: (x) => x.refused,
};

// "waiting: rate limited, 30 s (Retry-After)" for a host a Retry-After pauses now, "waiting: rate limited, one
// request every 2.4 s (paced)" for a host its refusals slowed down; '' otherwise.
function pauseText(host, now = Date.now()) {
  if (!host.paused_until) return '';
  const status = (host.pause_reason.match(/^(\d{3})/) || [])[1];
  const why = status === '503' ? 'unavailable' : 'rate limited';
  const pace = host.pause_reason.match(/paced at (one request every [\d.]+ s)/);
  if (pace) return `waiting: ${why}, ${pace[1]} (paced)`;
  const left = Math.max(0, Math.ceil((Date.parse(host.paused_until) - now) / 1000));
  if (!left) return '';
  return `waiting: ${why}, ${fmtInt(left)} s (Retry-After)`;
}

function renderHosts() {
  const panel = byId('hosts-panel');
  const list = hostsView.list;
  panel.hidden = !list || !list.length;
  if (panel.hidden) return;
  let rows = list;
  if (hostsView.sort) {
    const value = hostValue[hostsView.sort];
    rows = [...list].sort((a, b) => {
      const x = value(a);
      const y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * hostsView.dir || (a.host < b.host ? -1 : 1);
    });
  }
  const now = Date.now();
  const body = byId('host-rows');
  body.replaceChildren(...rows.slice(0, HOSTS_SHOWN).map((x) => {
    const pause = pauseText(x, now);
    return h('tr', { class: `host-row${pause ? ' paused' : ''}` },
      h('td', { class: 'col-host', title: x.host }, x.host),
      h('td', { class: 'num', 'data-label': 'in flight' }, fmtInt(x.in_flight)),
      h('td', { class: 'num', 'data-label': 'done' }, fmtInt(x.done)),
      h('td', { class: 'num', 'data-label': 'ok' }, x.done ? `${Math.floor((100 * x.ok) / x.done)}%` : '–'),
      h('td', { class: 'num', 'data-label': 'median' }, fmtMs(x.p50_ms)),
      h('td', { class: `num${x.refused ? ' refused' : ''}`, 'data-label': '429/503' }, fmtInt(x.refused)),
      h('td', { class: 'col-pause' }, pause));
  }));
  setText(byId('hosts-note'), list.length > HOSTS_SHOWN ? `the first ${HOSTS_SHOWN} of ${fmtInt(list.length)} hosts` : `${fmtInt(list.length)} host${list.length === 1 ? '' : 's'}`);
  for (const th of document.querySelectorAll('#hosts th')) {
    const key = th.querySelector('button')?.dataset.hostSort;
    if (key === hostsView.sort) th.setAttribute('aria-sort', hostsView.dir > 0 ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
}

for (const button of document.querySelectorAll('[data-host-sort]')) {
  button.addEventListener('click', () => {
    const key = button.dataset.hostSort;
    hostsView.dir = hostsView.sort === key ? -hostsView.dir : key === 'host' ? 1 : -1;
    hostsView.sort = key;
    renderHosts();
  });
}

async function watchHosts() {
  for (;;) {
    const final = FINAL_STATUSES.has(batch.status);
    const answer = await api(config.apiHosts, { timeout: ANSWER_TIMEOUT_MS });
    if (answer.ok) {
      hostsView.list = answer.data.hosts;
      renderHosts();
    }
    if (final && answer.ok) return;
    await sleep(Math.max(HOSTS_POLL_MS, (batch.counts?.total || 0) / HOSTS_URLS_PER_MS));
  }
}

// The pause countdowns tick between reads.
setInterval(() => { if (hostsView.list && hostsView.list.some((x) => x.paused_until)) renderHosts(); }, 1000);

// ---- rendering ---------------------------------------------------------------------------------

const render = perFrame(() => {
  renderSummary();
  if (tableDirty) renderTable();
});

function changed() {
  render();
  drawCharts();
}

// The elapsed time and the rate tick while the batch runs.
setInterval(() => { if (batch.started_at && !batch.finished_at) render(); }, 1000);

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
  if (state === 'live') showLostContact(false);
  if (state === 'reconnecting') checkContact();
  if (!ended) showLiveMode(...liveModeFor(state));
}

function showLostContact(lost) {
  els.lostContact.hidden = !lost;
}

// A dropped websocket may be the network or the server: ask the server, and say so when it does not answer.
let checkingContact = false;
async function checkContact() {
  if (checkingContact) return;
  checkingContact = true;
  const answer = await api(config.apiBatch, { timeout: ANSWER_TIMEOUT_MS });
  checkingContact = false;
  if (answer.ok) showLostContact(false);
  else if (answer.status === 0 && liveState !== 'live' && !ended) showLostContact(true);
}

// Fallback when websockets do not get through: read the stored events after the last one applied.
// When the server stops answering, say so; once it answers again, go back to the websocket (the
// websocket may have failed only because the server was away).
async function poll() {
  setLiveState('polling');
  let lost = false;
  const snapshot = await api(config.apiBatch, { timeout: ANSWER_TIMEOUT_MS });
  if (snapshot.ok) applySnapshot(snapshot.data);
  else if (snapshot.status === 0) lost = true;
  for (;;) {
    const page = await api(withQuery(config.apiEvents, { after: lastSeq }), { timeout: ANSWER_TIMEOUT_MS });
    if (page.status === 404) {
      showActionError({ message: 'This batch was deleted.' });
      return;
    }
    if (page.status === 0) lost = true;
    showLostContact(lost);
    if (!page.ok) {
      await sleep(POLL_MS * 2);
      continue;
    }
    applyEvents(page.data.events);
    if (page.data.more) continue;
    if (FINAL_STATUSES.has(page.data.status)) {
      const final = await api(config.apiBatch, { timeout: ANSWER_TIMEOUT_MS });
      if (final.ok) applySnapshot(final.data);
      showLostContact(false);
      ended = true;
      changed();
      document.dispatchEvent(new CustomEvent('batch-events'));
      return;
    }
    if (lost) {
      showLostContact(false);
      socket.restart();
      return;
    }
    await sleep(POLL_MS);
  }
}

const heartbeat = Number(config.wsHeartbeat) || 20;
const socket = new LiveSocket({
  url: config.wsUrl,
  after: () => lastSeq,
  // The server speaks at least once a heartbeat: a longer silence is a connection gone dead (a stopped server).
  idleMs: (2 * heartbeat + 5) * 1000,
  onMessage(message) {
    if (message.type === 'snapshot') applySnapshot(message.batch);
    else if (message.type === 'events') applyEvents(message.events);
    else if (message.type === 'end') {
      applySnapshot(message.batch);
      ended = true;
      if (table.pending) readPage(); // the batch's last results, for a view that could not place them live
      changed();
      document.dispatchEvent(new CustomEvent('batch-events'));
    }
  },
  onState: setLiveState,
  onUnavailable: poll,
  onRefused(code) {
    showLiveMode('Live updates: stopped', 'warn');
    showActionError({ message: code === 4404 ? 'This batch no longer exists: it was deleted.' : `The live stream refused this page (close ${code}); reload to try again.` });
  },
});

// Open on the snapshot and the view's first page, then follow the events from the older of their two seqs:
// the events between them change the page, or the counts, never both twice.
async function open() {
  readAddress();
  changed();
  await readPage();
  lastSeq = table.loaded && !table.error ? Math.min(base.seq, table.seq) : base.seq;
  socket.start();
  readHistory();
  watchHosts();
}

open();
