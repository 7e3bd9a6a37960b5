// Shared by the page scripts: text-only DOM building, number formats, API calls, frame batching,
// and the live feed (a websocket that reconnects, with a hand-off to polling when websockets fail).

export const FINAL_STATUSES = new Set(['done', 'cancelled', 'failed']);

// ---- DOM ---------------------------------------------------------------------------------------

// Build an element. Strings become text nodes, never markup: target-controlled text is safe here.
export function h(tag, props, ...children) {
  return fill(document.createElement(tag), props, children);
}

// Build an SVG element the same way.
export function svg(tag, props, ...children) {
  return fill(document.createElementNS('http://www.w3.org/2000/svg', tag), props, children);
}

function fill(node, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.setAttribute('class', value);
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Set an element's text only when it changed (cheap to call on every frame).
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

// The element with this id; a missing one is a template bug worth a loud error.
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`page is missing #${id}`);
  return node;
}

// Show which transport keeps the page live ("websocket", "polling (websocket unavailable)", ...).
export function showLiveMode(text, kind) {
  const node = document.getElementById('live-mode');
  if (!node) return;
  setText(node, text);
  node.dataset.kind = kind;
}

// A status badge's class list for a batch status.
export function badgeClass(status) {
  return `badge status-${status}`;
}

// Size the segments of a stacked progress bar from counts; returns the done percentage.
export function paintBar(bar, counts) {
  const total = counts.total || 0;
  const share = (n) => (total ? (100 * (n || 0)) / total : 0);
  // Each segment is named by its class after "seg": ok, warn, failed, cancelled, running. The counts' ok
  // includes warn: a bar with a warn segment draws the two apart.
  const hasWarn = [...bar.children].some((seg) => seg.classList[1] === 'warn');
  for (const seg of bar.children) {
    const key = seg.classList[1];
    const n = key === 'ok' && hasWarn ? (counts.ok || 0) - (counts.warn || 0) : counts[key];
    seg.style.width = `${share(n)}%`;
  }
  const pct = total ? Math.floor((100 * doneOf(counts)) / total) : 0;
  bar.setAttribute('aria-valuenow', String(pct));
  return pct;
}

// ---- numbers -----------------------------------------------------------------------------------

const INT = new Intl.NumberFormat('en-US');

export function fmtInt(n) {
  return n === null || n === undefined ? '–' : INT.format(n);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 1000).toFixed(1)} s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return '–';
  return perSecond < 10 ? perSecond.toFixed(1) : INT.format(Math.round(perSecond));
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} m`;
}

// A timestamp as local wall-clock time, with the date when it is not today.
export function fmtClock(iso) {
  if (!iso) return '–';
  const when = new Date(iso);
  const time = when.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (when.toDateString() === new Date().toDateString()) return time;
  return `${when.toLocaleDateString('en-GB', { day: 'numeric', month: 'short' })} ${time}`;
}

// Counts that have ended (ok, warn among them, failed or cancelled).
export function doneOf(counts) {
  return (counts.ok || 0) + (counts.failed || 0) + (counts.cancelled || 0);
}

// ---- server ------------------------------------------------------------------------------------

// A server URL (from a data-* attribute) with a batch id in place of the template's placeholder.
export function withId(template, id) {
  return template.replace('__id__', encodeURIComponent(id));
}

// A server URL with query parameters added.
export function withQuery(url, params) {
  const query = new URLSearchParams(params).toString();
  return query ? `${url}${url.includes('?') ? '&' : '?'}${query}` : url;
}

// Call the JSON API; never throws. Returns {ok, status, data, error} where error is the API's envelope.
// With `timeout` (ms), a server that does not answer in time counts as one that did not answer: status 0.
export async function api(url, { method = 'GET', body, timeout } = {}) {
  // X-Requested-With: what the server asks of cookie-signed requests that change something (CSRF guard).
  const init = { method, headers: { Accept: 'application/json', 'X-Requested-With': 'greenbatch' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (timeout) init.signal = AbortSignal.timeout(timeout);
  const unanswered = (err) => ({
    ok: false, status: 0, data: null,
    error: { code: 'network', message: `The server did not answer (${err.name === 'TimeoutError' ? `nothing within ${timeout / 1000} s` : err.message}). Is it running?`, details: [] },
  });
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    return unanswered(err);
  }
  let data = null;
  try {
    data = response.status === 204 ? null : await response.json();
  } catch (err) {
    if (err.name === 'TimeoutError') return unanswered(err); // the body stopped coming
    // A 2xx whose body broke off (the connection closed mid-answer) is no answer: callers read data's fields.
    if (response.ok) return unanswered(err);
    data = null;
  }
  const error = response.ok ? null : (data && data.error) || { code: 'http', message: `The server answered HTTP ${response.status}.`, details: [] };
  return { ok: response.ok, status: response.status, data, error };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- scheduling --------------------------------------------------------------------------------

// fn runs at most once per animation frame, however often the returned function is called.
export function perFrame(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

// fn runs at most once per `ms` (in an animation frame), and always once after the last call.
export function atMostEvery(ms, fn) {
  let timer = null;
  let last = -Infinity;
  return () => {
    if (timer !== null) return;
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(() => {
      requestAnimationFrame(() => {
        timer = null;
        last = performance.now();
        fn();
      });
    }, wait);
  };
}

// ---- live feed ---------------------------------------------------------------------------------

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const CONNECT_TIMEOUT_MS = 5000;
const SILENT_CONNECTS_BEFORE_POLLING = 2; // connects that brought no message: a proxy eats websockets

// A websocket that keeps a page live: it reconnects on a drop with backoff, straight away on
// close code 4000 ("resync"), each time with ?after=<last seq the page processed> when `after`
// gives one; after two connects in a row without a single message it calls onUnavailable and stops
// (restart() tries again). With `idleMs`, a connection that brings nothing for that long counts as
// dropped (a server that stopped without closing it). A 44xx close (the server's 4xx: 4404 batch
// gone, 4400 bad request) ends it: onRefused(code, reason).
export class LiveSocket {
  constructor({ url, after = () => null, onMessage, onState = () => {}, onUnavailable, onRefused = () => {}, idleMs = null }) {
    this.url = url;
    this.after = after;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onUnavailable = onUnavailable;
    this.onRefused = onRefused;
    this.idleMs = idleMs;
    this.silentConnects = 0;
    this.backoff = BACKOFF_FIRST_MS;
    this.ended = false;
    this.stopped = false;
    this.ws = null;
  }

  start() {
    if (!this.url) {
      this.giveUp();
      return;
    }
    this.onState('connecting');
    this.connect();
  }

  // Start again after giving up (the server is back, say): a fresh count of silent connects.
  restart() {
    if (this.ended || this.ws) return;
    this.stopped = false;
    this.silentConnects = 0;
    this.backoff = BACKOFF_FIRST_MS;
    this.start();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
  }

  giveUp() {
    this.stopped = true;
    this.onUnavailable();
  }

  connect() {
    const after = this.after();
    const url = after === null || after === undefined ? this.url : withQuery(this.url, { after });
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.giveUp(); // a URL the browser refuses outright will not get better
      return;
    }
    this.ws = ws;
    let heard = false;
    // A proxy may hold the upgrade open forever: a connect that brings nothing in time counts as failed.
    const timer = setTimeout(() => { if (!heard) ws.close(); }, CONNECT_TIMEOUT_MS);
    let idle = null;
    const watch = () => {
      if (!this.idleMs) return;
      clearTimeout(idle);
      // A dead connection may take minutes to report its close: stop waiting for it and connect again.
      idle = setTimeout(() => { if (this.ws === ws) { ws.close(); this.closed(ws, { code: 1006 }, heard); } }, this.idleMs);
    };
    ws.addEventListener('message', (event) => {
      watch();
      if (!heard) {
        heard = true;
        clearTimeout(timer);
        this.silentConnects = 0;
        this.backoff = BACKOFF_FIRST_MS;
        this.onState('live');
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not ours
      }
      if (message.type === 'ping') return;
      if (message.type === 'end') this.ended = true;
      this.onMessage(message);
    });
    ws.addEventListener('close', (event) => {
      clearTimeout(timer);
      clearTimeout(idle);
      this.closed(ws, event, heard);
    });
  }

  // What follows a connection's end: stop, resync, reconnect with backoff, or give up on websockets.
  closed(ws, event, heard) {
    if (this.ws !== ws) return;
    this.ws = null;
    if (this.stopped || this.ended) return;
    if (event.code >= 4400 && event.code < 4500) {
      this.stopped = true;
      this.onRefused(event.code, event.reason);
      return;
    }
    if (event.code === 4000) {
      setTimeout(() => this.connect(), 50); // resync: the server wants a fresh start after our last seq
      return;
    }
    if (!heard) {
      this.silentConnects += 1;
      if (this.silentConnects >= SILENT_CONNECTS_BEFORE_POLLING) {
        this.giveUp();
        return;
      }
    }
    this.onState('reconnecting');
    const delay = this.backoff * (0.8 + Math.random() * 0.4);
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
    setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
  }
}

// The live-mode line for a LiveSocket state.
export function liveModeFor(state) {
  switch (state) {
    case 'connecting': return ['Live updates: connecting…', 'pending'];
    case 'live': return ['Live updates: websocket', 'live'];
    case 'reconnecting': return ['Live updates: reconnecting…', 'warn'];
    case 'polling': return ['Live updates: polling (websocket unavailable)', 'warn'];
    default: return ['', 'pending'];
  }
}
