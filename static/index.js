// The index page: the submit form (URLs, file upload, options, inline errors) and the live batch list.
import {
  FINAL_STATUSES, LiveSocket, api, badgeClass, byId, doneOf, fmtClock, fmtInt, fmtMs, fmtRate, h,
  liveModeFor, paintBar, perFrame, setText, showLiveMode, sleep, withId, withQuery,
} from './common.js';

const config = byId('page').dataset;

// ---- URL editor: line numbers, error marks ----------------------------------------------------

const textarea = byId('urls');
const gutter = byId('gutter');
const marks = byId('marks');
const errorList = byId('url-errors');
const errorSummary = byId('url-summary');
const urlCount = byId('url-count');

// Problems the server found, by the line they were on: {line, url, message}.
let urlErrors = [];

// The URLs of the textarea as the server will count them, each with its 1-based line number.
function parseLines(text) {
  const entries = [];
  text.split('\n').forEach((raw, i) => {
    const url = raw.trim();
    if (url && !url.startsWith('#')) entries.push({ url, line: i + 1 });
  });
  return entries;
}

function lineHeight() {
  return parseFloat(getComputedStyle(textarea).lineHeight) || 20;
}

// Where each error's URL is now: its line if unchanged, else the first line holding it, else gone.
function locateErrors() {
  const lines = textarea.value.split('\n');
  return urlErrors.map((err) => {
    if ((lines[err.line - 1] || '').trim() === err.url) return { ...err, at: err.line };
    const found = lines.findIndex((l) => l.trim() === err.url);
    return { ...err, at: found >= 0 ? found + 1 : null };
  });
}

const renderEditor = perFrame(() => {
  const text = textarea.value;
  const lineCount = text.split('\n').length;
  const located = locateErrors();
  const bad = new Set(located.filter((e) => e.at !== null).map((e) => e.at));

  // Gutter: plain numbers, error lines in a span so they can be coloured.
  const parts = [];
  let run = [];
  for (let n = 1; n <= lineCount; n += 1) {
    if (bad.has(n)) {
      if (run.length) parts.push(run.join('\n') + '\n');
      run = [];
      parts.push(h('span', { class: 'bad' }, String(n)), n < lineCount ? '\n' : '');
    } else {
      run.push(String(n));
    }
  }
  if (run.length) parts.push(run.join('\n'));
  gutter.replaceChildren(...parts);

  const lh = lineHeight();
  const padTop = parseFloat(getComputedStyle(textarea).paddingTop) || 0;
  marks.replaceChildren(...[...bad].map((n) => {
    const mark = h('div', { class: 'mark' });
    mark.style.top = `${padTop + (n - 1) * lh}px`;
    mark.style.height = `${lh}px`;
    return mark;
  }));
  syncScroll();

  located.forEach((err, i) => {
    const item = errorList.children[i];
    if (!item) return;
    item.classList.toggle('resolved', err.at === null);
    setText(item.querySelector('.line'), err.at === null ? 'fixed' : `line ${err.at}`);
    item.dataset.line = err.at === null ? '' : String(err.at);
  });

  const count = parseLines(text).length;
  setText(urlCount, `${fmtInt(count)} URL${count === 1 ? '' : 's'}`);
  urlCount.classList.toggle('over', count > Number(config.maxUrls));
});

function syncScroll() {
  gutter.scrollTop = textarea.scrollTop;
  marks.style.transform = `translate(${-textarea.scrollLeft}px, ${-textarea.scrollTop}px)`;
}

// Put the caret on a line and scroll it into the middle of the editor.
function goToLine(line) {
  const lines = textarea.value.split('\n');
  let start = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) start += lines[i].length + 1;
  const end = start + (lines[line - 1] || '').length;
  textarea.focus();
  textarea.setSelectionRange(start, end);
  textarea.scrollTop = Math.max(0, (line - 1) * lineHeight() - textarea.clientHeight / 2);
  syncScroll();
}

// The GREENBATCH_ALLOW_TARGETS value a refusal's message asks for ("restart with ..."), or null.
function allowHint(message) {
  const match = /GREENBATCH_ALLOW_TARGETS=(\S+)/.exec(message || '');
  return match ? match[1].replace(/[.,;:)'"]+$/, '') : null;
}

// One line over the list when every refusal has the same fix: the allow-list entries they ask for, together.
function showErrorSummary(errors) {
  const hints = errors.map((err) => allowHint(err.message));
  if (!errors.length || hints.includes(null)) {
    errorSummary.hidden = true;
    return;
  }
  const entries = [...new Set(hints.flatMap((hint) => hint.split(',')).filter((entry) => entry))];
  errorSummary.replaceChildren(
    'This server does not fetch local or private addresses. Restart it with ',
    h('code', null, `GREENBATCH_ALLOW_TARGETS=${entries.join(',')}`),
    ' to allow them.',
  );
  errorSummary.hidden = false;
}

function showUrlErrors(errors, capped) {
  urlErrors = errors;
  showErrorSummary(errors);
  errorList.replaceChildren(...errors.map((err) => h('li', { dataset: { line: String(err.line) }, tabindex: '0', title: 'Go to this line' },
    h('span', { class: 'line num' }, `line ${err.line}`), ': ',
    h('span', { class: 'url' }, err.url), ' — ',
    h('span', { class: 'message' }, err.message))));
  if (capped) errorList.append(h('li', { class: 'more' }, 'The server lists the first 100 problems; fix these and submit again to see the rest.'));
  errorList.hidden = errors.length === 0;
  renderEditor();
}

errorList.addEventListener('click', (event) => {
  const item = event.target.closest('li[data-line]');
  if (item && item.dataset.line) goToLine(Number(item.dataset.line));
});
errorList.addEventListener('keydown', (event) => {
  const item = event.target.closest('li[data-line]');
  if (event.key === 'Enter' && item && item.dataset.line) goToLine(Number(item.dataset.line));
});
textarea.addEventListener('input', renderEditor);
textarea.addEventListener('scroll', syncScroll);

// ---- file upload -------------------------------------------------------------------------------

const fileInput = byId('file');
const fileNote = byId('file-note');

// The first column of a CSV text (quotes understood), a header row such as "url" dropped.
function csvFirstColumn(text) {
  const urls = [];
  for (const line of text.split(/\r?\n/)) {
    let cell = '';
    if (line.startsWith('"')) {
      let i = 1;
      while (i < line.length) {
        if (line[i] === '"' && line[i + 1] === '"') { cell += '"'; i += 2; } else if (line[i] === '"') break; else { cell += line[i]; i += 1; }
      }
    } else {
      cell = line.split(',')[0];
    }
    urls.push(cell.trim());
  }
  const firstReal = urls.findIndex((u) => u && !u.startsWith('#'));
  if (firstReal >= 0 && !urls[firstReal].includes('://')) urls.splice(firstReal, 1);
  return urls.filter((u) => u);
}

const SNIFF_BYTES = 8192;

// The file's text, or why it is refused: the server takes UTF-8 text, so the CLI and the page refuse the rest.
async function fileText(file) {
  const notText = { problem: `${file.name} is not a text file (it has NUL bytes); load a .txt or .csv of URLs.` };
  const notUtf8 = { problem: `${file.name} is not UTF-8 text; save it as UTF-8, or load a .txt or .csv of URLs.` };
  // The first few KB judge most binaries (images, archives) without reading a large file whole.
  const head = new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer());
  if (head.includes(0)) return notText;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(head, { stream: true }); // a character cut at the end is fine
    const text = new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer());
    return text.includes('\0') ? notText : { text };
  } catch {
    return notUtf8;
  }
}

// The file a batch is named after when the name field is empty, and the editor text it loaded.
let loaded = null; // {name, text}
const nameInput = byId('name');
const namePlaceholder = nameInput.placeholder;

function showFileNote(text, isError) {
  fileNote.textContent = text;
  fileNote.classList.toggle('error-text', Boolean(isError));
}

// Text the user typed (not what a file loaded and nobody changed) is only replaced when they say so.
function mayReplace(file) {
  const current = textarea.value;
  if (!current.trim() || (loaded && current === loaded.text)) return true;
  const lines = current.split('\n').filter((line) => line.trim()).length;
  return window.confirm(`Replace the ${fmtInt(lines)} line${lines === 1 ? '' : 's'} in the editor with ${file.name}? Cancel keeps them.`);
}

async function loadFile(file) {
  const { text: raw, problem } = await fileText(file);
  if (problem) {
    showFileNote(problem, true);
    return;
  }
  if (!mayReplace(file)) {
    showFileNote(`${file.name} not loaded; the editor keeps its text.`, false);
    return;
  }
  const text = raw.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  const isCsv = /\.csv$/i.test(file.name) || file.type === 'text/csv';
  textarea.value = isCsv ? csvFirstColumn(text).join('\n') : text.replace(/\n+$/, '');
  loaded = { name: file.name.slice(0, Number(nameInput.maxLength) || 200), text: textarea.value };
  nameInput.placeholder = `${loaded.name} (the file's name)`;
  const count = parseLines(textarea.value).length;
  showFileNote(`Loaded ${fmtInt(count)} URL${count === 1 ? '' : 's'} from ${file.name}`, false);
  showUrlErrors([], false);
  clearErrors();
}

fileInput.addEventListener('change', async () => {
  const file = fileInput.files[0];
  fileInput.value = ''; // picking the same file again reloads it
  if (file) await loadFile(file);
});

// A file dropped on the editor loads as if picked; dropped text still goes into the text as usual.
const editor = byId('editor');
const carriesFiles = (event) => Boolean(event.dataTransfer) && [...event.dataTransfer.types].includes('Files');
editor.addEventListener('dragover', (event) => {
  if (!carriesFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = 'copy';
  editor.classList.add('dropping');
});
editor.addEventListener('dragleave', (event) => {
  if (!editor.contains(event.relatedTarget)) editor.classList.remove('dropping');
});
editor.addEventListener('drop', (event) => {
  editor.classList.remove('dropping');
  if (!carriesFiles(event)) return;
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) loadFile(file);
});

// A file dropped beside the editor is ignored: the browser would otherwise open it and lose the page's text.
const besideEditor = (event) => carriesFiles(event) && !editor.contains(event.target);
window.addEventListener('dragover', (event) => {
  if (!besideEditor(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = 'none';
});
window.addEventListener('drop', (event) => { if (besideEditor(event)) event.preventDefault(); });

// An emptied editor no longer holds the file: the batch is not named after it.
textarea.addEventListener('input', () => {
  if (loaded && !textarea.value.trim()) {
    loaded = null;
    nameInput.placeholder = namePlaceholder;
  }
});

// ---- submit ------------------------------------------------------------------------------------

const form = byId('submit-form');
const submitButton = byId('submit');
const formError = byId('form-error');

function fieldError(field, message) {
  const node = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  if (!node) return false;
  node.textContent = message;
  node.hidden = false;
  const section = node.closest('details');
  if (section) section.open = true; // an error in the Advanced section must not stay folded away
  const input = node.parentElement.querySelector('input, select, textarea');
  if (input) input.setAttribute('aria-invalid', 'true');
  return true;
}

function clearErrors() {
  for (const node of form.querySelectorAll('[data-error-for]')) node.hidden = true;
  for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
  formError.hidden = true;
}

function showFormError(message) {
  formError.textContent = message;
  formError.hidden = false;
}

// Header lines "Name: value" as an object, or the problem with the first bad line.
function parseHeaders(text) {
  const headers = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i].trim();
    if (!line) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) return { problem: `line ${i + 1}: expected "Name: value", got "${line.slice(0, 60)}"` };
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return { headers };
}

const MiB = 1024 * 1024;
const fmtMiB = (bytes) => String(Math.round((bytes / MiB) * 1000) / 1000);

// A number input as a number, its raw text when it is not one (the server names the problem), or nothing.
function numberOption(id) {
  const raw = byId(id).value.trim();
  if (raw === '') return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearErrors();
  const entries = parseLines(textarea.value);
  if (entries.length === 0) {
    fieldError('urls', 'Add at least one URL, one per line.');
    textarea.focus();
    return;
  }
  const { headers, problem } = parseHeaders(byId('headers').value);
  if (problem) {
    fieldError('options.headers', problem);
    return;
  }
  const options = {
    method: byId('method').value, accept_status: byId('accept_status').value.trim(), headers, client: byId('client').value,
  };
  for (const id of ['concurrency', 'timeout', 'max_redirects', 'retries', 'max_bytes', 'connect_timeout', 'per_host']) {
    if (byId(id).validity.badInput) {
      fieldError(`options.${id}`, 'must be a number');
      return;
    }
    const value = numberOption(id);
    if (value !== undefined) options[id] = value;
  }
  if (typeof options.max_bytes === 'number') {
    // The field is in MiB, the API in bytes: the server's limit is said here in the field's unit.
    const limit = Number(config.maxBodyBytes);
    options.max_bytes = Math.round(options.max_bytes * MiB);
    if (options.max_bytes > limit) {
      fieldError('options.max_bytes', `must be at most ${fmtMiB(limit)} MiB (server limit)`);
      return;
    }
  }
  const body = { urls: entries.map((e) => e.url), name: nameInput.value.trim() || (loaded ? loaded.name : ''), options };

  submitButton.disabled = true;
  submitButton.textContent = 'Starting…';
  const result = await api(config.apiBatches, { method: 'POST', body });
  if (result.ok) {
    window.location.assign(withId(config.batchPage, result.data.id));
    return;
  }
  submitButton.disabled = false;
  submitButton.textContent = 'Start batch';
  showSubmitErrors(result.error, entries);
});

function showSubmitErrors(error, entries) {
  const details = Array.isArray(error.details) ? error.details : [];
  const urlProblems = [];
  const unplaced = [];
  for (const detail of details) {
    if (Number.isInteger(detail.index) && entries[detail.index]) {
      const entry = entries[detail.index];
      urlProblems.push({ line: entry.line, url: entry.url, message: detail.message });
    } else if (!detail.field || !fieldError(detail.field, detail.message)) {
      unplaced.push(`${detail.field ? `${detail.field}: ` : ''}${detail.message}`);
    }
  }
  showUrlErrors(urlProblems, urlProblems.length >= 100);
  if (urlProblems.length) {
    const n = urlProblems.length >= 100 ? 'At least 100' : String(urlProblems.length);
    showFormError(`${n} URL${urlProblems.length === 1 ? '' : 's'} cannot be fetched: see the marked lines.`);
    goToLine(urlProblems[0].line);
  } else if (unplaced.length) {
    showFormError(`${error.message} (${unplaced.join('; ')})`);
  } else {
    showFormError(error.message || 'The batch was not accepted.');
  }
}

// ---- batch list --------------------------------------------------------------------------------

const listBody = byId('batch-rows');
const listNote = byId('list-note');
const batches = new Map(); // id -> batch (the shape of the API's batch JSON)
const seenSeq = new Map(); // id -> newest event seq applied, so a late or repeated event never rolls a row back
const rowsById = new Map(); // id -> {tr, cells}
let listLoaded = false;

// The live list holds the newest LIST_PAGE batches; "Show older batches" pages back through the API.
const LIST_PAGE = 50;
const older = new Map(); // id -> batch loaded with the button: kept when the live list is replaced
let olderCursor; // the API's cursor of the next older page; undefined until asked, null when none is left
const moreBox = byId('list-more');
const olderButton = byId('older');
const olderNote = byId('older-note');

function takeBatch(batch) {
  batches.set(batch.id, batch);
  seenSeq.set(batch.id, Math.max(seenSeq.get(batch.id) || 0, batch.last_seq || 0));
}

function replaceList(list) {
  batches.clear();
  seenSeq.clear();
  older.forEach(takeBatch);
  list.forEach(takeBatch);
  listLoaded = true;
  // A full page of the newest may have older ones behind it; the API tells once asked.
  moreBox.hidden = olderCursor === null || (olderCursor === undefined && list.length < LIST_PAGE);
  renderList();
}

async function listPage(cursor) {
  const params = cursor === undefined ? { limit: LIST_PAGE } : { limit: LIST_PAGE, cursor };
  return api(withQuery(config.apiBatches, params));
}

async function loadOlder() {
  olderButton.disabled = true;
  setText(olderNote, 'Loading…');
  let page;
  let cursor = olderCursor;
  if (cursor === undefined) {
    // The live list carries no cursor: ask for the newest page once, only for the cursor behind it.
    const newest = await listPage();
    page = newest.ok ? { ok: true, data: { batches: [], next_cursor: null } } : newest;
    cursor = newest.ok ? newest.data.next_cursor : undefined;
  }
  if (cursor !== undefined && cursor !== null) page = await listPage(cursor);
  olderButton.disabled = false;
  if (!page.ok) {
    setText(olderNote, page.error.message);
    return;
  }
  page.data.batches.forEach((batch) => {
    older.set(batch.id, batch);
    if (!batches.has(batch.id)) takeBatch(batch);
  });
  olderCursor = page.data.next_cursor;
  setText(olderNote, '');
  moreBox.hidden = olderCursor === null;
  renderList();
}

olderButton.addEventListener('click', loadOlder);

async function fetchBatch(id) {
  const result = await api(withId(config.apiBatch, id));
  if (result.ok) {
    takeBatch(result.data);
    renderList();
  }
}

function applyListEvent(event) {
  const batch = batches.get(event.batch_id);
  if (!batch) {
    if (event.type === 'batch') fetchBatch(event.batch_id); // a batch someone just submitted
    return;
  }
  if (event.seq <= (seenSeq.get(event.batch_id) || 0)) return;
  seenSeq.set(event.batch_id, event.seq);
  const data = event.data || {};
  if (event.type === 'batch') {
    for (const key of ['status', 'started_at', 'finished_at', 'counts', 'stats']) {
      if (data[key] !== undefined) batch[key] = data[key];
    }
  } else if (event.type === 'progress') {
    if (data.counts) batch.counts = data.counts;
    if (data.stats) batch.stats = data.stats;
  }
  renderList();
}

function newRow() {
  const cells = {
    name: h('a', { class: 'batch-link' }),
    id: h('span', { class: 'batch-id' }),
    status: h('span'),
    bar: h('div', { class: 'progress small', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' },
      h('span', { class: 'seg ok' }), h('span', { class: 'seg failed' }), h('span', { class: 'seg cancelled' }),
      h('span', { class: 'seg running' })),
    // data-label: the column's name, shown on each cell when the list is laid out as cards.
    done: h('td', { class: 'num col-done', dataset: { label: 'Done' } }),
    ok: h('td', { class: 'num col-ok ok-text', dataset: { label: 'OK' } }),
    failed: h('td', { class: 'num col-failed failed-text', dataset: { label: 'Failed' } }),
    p50: h('td', { class: 'num col-p50', dataset: { label: 'p50' } }),
    rate: h('td', { class: 'num col-rate', dataset: { label: 'URLs/s' } }),
    created: h('td', { class: 'num col-created muted', dataset: { label: 'Created' } }),
  };
  const tr = h('tr', { class: 'batch-row' },
    h('td', { class: 'col-name' }, cells.name, cells.id),
    h('td', { class: 'col-status' }, cells.status),
    h('td', { class: 'col-progress' }, cells.bar),
    cells.done, cells.ok, cells.failed, cells.p50, cells.rate, cells.created);
  return { tr, cells };
}

const renderList = perFrame(() => {
  const ordered = [...batches.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  if (!ordered.length) {
    listBody.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: '9' }, listLoaded ? 'No batches yet. Paste some URLs above and start one.' : 'Loading…')));
    rowsById.clear();
    return;
  }
  const rows = ordered.map((batch) => {
    let row = rowsById.get(batch.id);
    if (!row) {
      row = newRow();
      rowsById.set(batch.id, row);
    }
    const { cells, tr } = row;
    const counts = batch.counts || { total: 0 };
    tr.dataset.id = batch.id;
    tr.dataset.status = batch.status;
    cells.name.href = withId(config.batchPage, batch.id);
    setText(cells.name, batch.name || batch.id);
    setText(cells.id, batch.id);
    cells.status.className = badgeClass(batch.status);
    setText(cells.status, batch.status);
    const pct = paintBar(cells.bar, counts);
    cells.bar.title = `${pct}% done`;
    setText(cells.done, `${fmtInt(doneOf(counts))} / ${fmtInt(counts.total)}`);
    setText(cells.ok, fmtInt(counts.ok));
    setText(cells.failed, fmtInt(counts.failed));
    setText(cells.p50, fmtMs(batch.stats && batch.stats.p50_ms));
    setText(cells.rate, fmtRate(batch.stats && batch.stats.urls_per_s));
    setText(cells.created, fmtClock(batch.created_at));
    cells.created.title = batch.created_at || '';
    return tr;
  });
  for (const id of [...rowsById.keys()]) if (!batches.has(id)) rowsById.delete(id);
  // Re-append only when the order changed, so rows are not rebuilt on every update.
  const current = [...listBody.children];
  if (current.length !== rows.length || rows.some((tr, i) => current[i] !== tr)) listBody.replaceChildren(...rows);
  const live = ordered.filter((b) => !FINAL_STATUSES.has(b.status)).length;
  setText(listNote, `${fmtInt(ordered.length)} shown${live ? ` · ${live} running or queued` : ''}`);
});

async function pollList() {
  for (;;) {
    const result = await listPage();
    if (result.ok) replaceList(result.data.batches);
    const live = [...batches.values()].some((b) => !FINAL_STATUSES.has(b.status));
    await sleep(live ? 1000 : 3000);
  }
}

const socket = new LiveSocket({
  url: config.wsUrl,
  onMessage(message) {
    if (message.type === 'snapshot') replaceList(message.batches || []);
    else if (message.type === 'events') (message.events || []).forEach(applyListEvent);
  },
  onState(state) { showLiveMode(...liveModeFor(state)); },
  onUnavailable() {
    showLiveMode(...liveModeFor('polling'));
    pollList();
  },
});

renderEditor();
socket.start();
