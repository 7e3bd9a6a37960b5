// The index page: the submit form (URLs, file upload, options, inline errors) and the live batch list.
import {
  FINAL_STATUSES, LiveSocket, api, badgeClass, byId, doneOf, fmtBytes, fmtClock, fmtInt, fmtMs, fmtRate, h,
  liveModeFor, paintBar, perFrame, setText, showLiveMode, sleep, withId, withQuery,
} from './common.js';
import { SOURCE_TIMEOUT_MS, SourcePicker, clearFieldErrors, fieldError as errorBeside } from './source.js';

const config = byId('page').dataset;

// ---- a CSV's header ----------------------------------------------------------------------------

// A CSV column's name (any case, spaces around ignored) -> what the server reads it as (app/core/rowspec.py
// CSV_COLUMNS); any other column is meta, kept with the row and given back in exports.
const CSV_ROLES = {
  url: 'url', source: 'url', old: 'url', from: 'url',
  expected_status: 'expected_status', status: 'expected_status',
  expected_final_url: 'expected_final_url', target: 'expected_final_url', new: 'expected_final_url', to: 'expected_final_url', destination: 'expected_final_url',
  expected_final_status: 'expected_final_status',
  max_hops: 'max_hops',
};

// The cells of one CSV line (quotes understood).
function csvCells(line) {
  const cells = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') { cell += '"'; i += 1; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"' && cell === '') quoted = true;
    else if (c === ',') { cells.push(cell); cell = ''; } else cell += c;
  }
  cells.push(cell);
  return cells;
}

// A text's first line (a byte order mark and a CR dropped): only it is read, however long the text.
function firstLine(text) {
  const end = text.indexOf('\n');
  return (end === -1 ? text : text.slice(0, end)).replace(/^\uFEFF/, '').replace(/\r$/, '');
}

// A CSV's first line as the server reads a header: [{name, role}] (role null: meta), or null when it is not
// a header it recognises (no url column, two, or a column named twice), and the first column holds the URLs.
function csvHeader(line) {
  if (line.length > 64 * 1024) return null; // no header is this long: a URL list's first line
  const columns = csvCells(line).map((raw) => {
    const name = raw.trim();
    return { name, role: CSV_ROLES[name.toLowerCase()] || null };
  });
  const keys = columns.map((c) => c.role || `meta:${c.name}`);
  if (keys.filter((k) => k === 'url').length !== 1 || new Set(keys).size !== keys.length) return null;
  return columns;
}

const csvBox = byId('csv-columns');

// What each column of a recognised header will be read as, shown before the batch is sent.
function showColumns(columns) {
  csvBox.hidden = !columns;
  if (!columns) {
    csvBox.replaceChildren();
    return;
  }
  const drawn = JSON.stringify(columns);
  if (csvBox.dataset.drawn === drawn) return;
  csvBox.dataset.drawn = drawn;
  const known = columns.filter((c) => c.role);
  const meta = columns.filter((c) => !c.role);
  csvBox.replaceChildren(
    h('span', { class: 'csv-title' }, 'CSV header:'),
    h('ul', { class: 'csv-list' }, known.map((c) => h('li', { class: 'known', dataset: { role: c.role } },
      c.name.toLowerCase() === c.role ? c.role : `${c.name} → ${c.role}`))),
  );
  if (meta.length) csvBox.append(h('span', { class: 'csv-meta' }, `meta: ${meta.map((c) => c.name || '(unnamed)').join(', ')}`));
}

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

// Whether a character is one String.prototype.trim removes.
const isSpaceAt = (text, i) => {
  const c = text.charCodeAt(i);
  return c === 32 || (c >= 9 && c <= 13) || (c > 127 && /\s/.test(text[i]));
};

// How many lines, and how many URLs (parseLines' count), a text has: no string or object per line.
function countText(text) {
  let lines = 0;
  let urls = 0;
  for (let start = 0; start <= text.length; lines += 1) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    let i = start;
    while (i < end && isSpaceAt(text, i)) i += 1;
    if (i < end && text[i] !== '#') urls += 1;
    start = end + 1;
  }
  return { lines, urls };
}

function lineHeight() {
  return parseFloat(getComputedStyle(textarea).lineHeight) || 20;
}

// Where each error's URL is now: its line if unchanged, else the first line holding it, else gone.
function locateErrors() {
  if (!urlErrors.length) return [];
  const lines = textarea.value.split('\n');
  return urlErrors.map((err) => {
    if ((lines[err.line - 1] || '').trim() === err.url) return { ...err, at: err.line };
    const found = lines.findIndex((l) => l.trim() === err.url);
    return { ...err, at: found >= 0 ? found + 1 : null };
  });
}

// What the text holds, counted once per edit; the gutter and the marks are painted from it on every scroll.
const editorState = { lines: 1, bad: new Set() };

const renderEditor = perFrame(() => {
  const { lines, urls } = countText(textarea.value);
  const located = locateErrors();
  editorState.lines = lines;
  editorState.bad = new Set(located.filter((e) => e.at !== null).map((e) => e.at));
  // As wide as the last line's number, whatever lines are in view: a gutter that changed width while it
  // scrolls would make the browser lay out the whole text again, which takes seconds at 100,000 lines.
  const width = `calc(${Math.max(2, String(lines).length)}ch + 19px)`;
  if (gutter.style.width !== width) gutter.style.width = width;
  paintGutter();

  located.forEach((err, i) => {
    const item = errorList.children[i];
    if (!item) return;
    item.classList.toggle('resolved', err.at === null);
    setText(item.querySelector('.line'), err.at === null ? 'fixed' : `line ${err.at}`);
    item.dataset.line = err.at === null ? '' : String(err.at);
  });

  if (!attached) {
    // A CSV with a recognised header is sent as it is (text/csv): its header is not a URL.
    editorColumns = csvHeader(firstLine(textarea.value));
    showColumns(editorColumns);
    showUrlCount(editorColumns ? Math.max(0, urls - 1) : urls);
  }
});

// The editor text's CSV header when it has one the server recognises, else null.
let editorColumns = null;

function showUrlCount(count) {
  setText(urlCount, `${fmtInt(count)} URL${count === 1 ? '' : 's'}`);
  urlCount.classList.toggle('over', count > Number(config.maxUrls));
}

// The gutter holds the numbers of the lines in view only (and the error marks, at most 100, their lines'
// places), so a pasted million lines costs no more to scroll than ten.
const paintGutter = perFrame(() => {
  // Everything read from the layout is read before anything is changed, so that nothing forces a layout.
  const lh = lineHeight();
  const { scrollTop, scrollLeft, clientHeight } = textarea;
  const padTop = parseFloat(getComputedStyle(textarea).paddingTop) || 0;
  const first = Math.floor(scrollTop / lh);
  const last = Math.min(editorState.lines, first + Math.ceil(clientHeight / lh) + 1);
  const parts = [];
  let run = [];
  for (let n = first + 1; n <= last; n += 1) {
    if (editorState.bad.has(n)) {
      if (run.length) parts.push(run.join('\n') + '\n');
      run = [];
      parts.push(h('span', { class: 'bad' }, String(n)), n < last ? '\n' : '');
    } else {
      run.push(String(n));
    }
  }
  if (run.length) parts.push(run.join('\n'));
  const view = h('div', { class: 'gutter-lines' }, ...parts);
  view.style.transform = `translateY(${first * lh - scrollTop}px)`;
  gutter.replaceChildren(view);

  marks.replaceChildren(...[...editorState.bad].map((n) => {
    const mark = h('div', { class: 'mark' });
    mark.style.top = `${padTop + (n - 1) * lh}px`;
    mark.style.height = `${lh}px`;
    return mark;
  }));
  marks.style.transform = `translate(${-scrollLeft}px, ${-scrollTop}px)`;
});

// Put the caret on a line and scroll it into the middle of the editor.
function goToLine(line) {
  const text = textarea.value;
  let start = 0;
  for (let i = 1; i < line; i += 1) {
    const next = text.indexOf('\n', start);
    if (next === -1) break;
    start = next + 1;
  }
  const stop = text.indexOf('\n', start);
  const end = stop === -1 ? text.length : stop;
  textarea.focus();
  textarea.setSelectionRange(start, end);
  textarea.scrollTop = Math.max(0, (line - 1) * lineHeight() - textarea.clientHeight / 2);
  paintGutter();
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

// Refusals listed under the editor; those of a file sent whole ({inFile}) name its lines but cannot be edited here.
function showUrlErrors(errors, capped, { inFile = false } = {}) {
  urlErrors = inFile ? [] : errors;
  showErrorSummary(errors);
  errorList.replaceChildren(...errors.map((err) => {
    const where = err.line ? `line ${err.line}` : `URL #${err.index}`;
    const props = inFile ? { class: 'in-file', title: `URL #${err.index} of ${attached ? attached.name : 'the file'}` }
      : { dataset: { line: String(err.line) }, tabindex: '0', title: 'Go to this line' };
    return h('li', props,
      h('span', { class: 'line num' }, where), ': ',
      h('span', { class: 'url' }, err.url), ' — ',
      h('span', { class: 'message' }, err.message));
  }));
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
textarea.addEventListener('scroll', paintGutter);

// ---- file upload -------------------------------------------------------------------------------

const fileInput = byId('file');
const fileNote = byId('file-note');
const MiB = 1024 * 1024;

// A file over either size is sent to the server as it is, not put in the editor: a textarea of a million
// lines freezes the page.
const LARGE_FILE_BYTES = 2 * MiB;
const LARGE_FILE_LINES = 50000;
const SCAN_BYTES = MiB; // read, decoded and counted per task: a few milliseconds each

// The first cell of one CSV line (quotes understood).
function csvCell(line) {
  if (!line.startsWith('"')) return line.split(',')[0];
  let cell = '';
  let i = 1;
  while (i < line.length) {
    if (line[i] === '"' && line[i + 1] === '"') { cell += '"'; i += 2; } else if (line[i] === '"') break; else { cell += line[i]; i += 1; }
  }
  return cell;
}

// The first column of a CSV text (quotes understood), a header row such as "url" dropped.
function csvFirstColumn(text) {
  const urls = text.split(/\r?\n/).map((line) => csvCell(line).trim());
  const firstReal = urls.findIndex((u) => u && !u.startsWith('#'));
  if (firstReal >= 0 && !urls[firstReal].includes('://')) urls.splice(firstReal, 1);
  return urls.filter((u) => u);
}

const SNIFF_BYTES = 8192;

// Why a file is refused, or null: the server takes UTF-8 text, so the CLI and the page refuse the rest.
const notText = (file) => `${file.name} is not a text file (it has NUL bytes); load a .txt or .csv of URLs.`;
const notUtf8 = (file) => `${file.name} is not UTF-8 text; save it as UTF-8, or load a .txt or .csv of URLs.`;

// The first few KB judge most binaries (images, archives) without reading a large file whole: {head, problem}.
async function sniff(file) {
  const head = new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer());
  if (head.includes(0)) return { head, problem: notText(file) };
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(head, { stream: true }); // a character cut at the end is fine
  } catch {
    return { head, problem: notUtf8(file) };
  }
  return { head, problem: null };
}

// The whole text of a small file, or why it is refused.
async function fileText(file) {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer());
    return text.includes('\0') ? { problem: notText(file) } : { text };
  } catch {
    return { problem: notUtf8(file) };
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

const isCsvFile = (file) => /\.csv$/i.test(file.name) || file.type === 'text/csv';

function nameAfter(file) {
  const name = file.name.slice(0, Number(nameInput.maxLength) || 200);
  nameInput.placeholder = `${name} (the file's name)`;
  return name;
}

async function loadFile(file) {
  const { head, problem } = await sniff(file);
  if (problem) {
    showFileNote(problem, true);
    return;
  }
  if (file.size > LARGE_FILE_BYTES) {
    if (mayReplace(file)) attach(file, head);
    else showFileNote(`${file.name} not loaded; the editor keeps its text.`, false);
    return;
  }
  const { text: raw, problem: unreadable } = await fileText(file);
  if (unreadable) {
    showFileNote(unreadable, true);
    return;
  }
  if (!mayReplace(file)) {
    showFileNote(`${file.name} not loaded; the editor keeps its text.`, false);
    return;
  }
  const text = raw.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  if (countText(text).lines > LARGE_FILE_LINES) {
    attach(file, head);
    return;
  }
  detach();
  const keepCsv = isCsvFile(file) && csvHeader(firstLine(text));
  textarea.value = isCsvFile(file) && !keepCsv ? csvFirstColumn(text).join('\n') : text.replace(/\n+$/, '');
  loaded = { name: nameAfter(file), text: textarea.value };
  const count = parseLines(textarea.value).length - (keepCsv ? 1 : 0);
  showFileNote(`Loaded ${fmtInt(count)} URL${count === 1 ? '' : 's'} from ${file.name}`, false);
  showUrlErrors([], false);
  clearErrors();
}

fileInput.addEventListener('change', async () => {
  const file = fileInput.files[0];
  fileInput.value = ''; // picking the same file again reloads it
  if (file) await loadFile(file);
});

// ---- a large file, sent as it is ---------------------------------------------------------------

const editor = byId('editor');
const fileBox = byId('file-box');
const fileSummary = byId('file-summary');

// The file the next batch is sent as: {file, name, body, type, size, lines, urls, lineOf, scanned, problem}.
let attached = null;

// Line ends as the server splits a text/plain body (Python's str.splitlines), and a text/csv one.
const TEXT_BREAKS = /\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/;
const CSV_BREAKS = /\r\n|[\n\r]/;

// Count a file's lines and URLs a chunk at a time, noting each URL's line (what a refusal's index is mapped
// to); every chunk is one short task, and the page paints and answers between them.
async function scan(entry) {
  const { file } = entry;
  const breaks = entry.type === 'text/csv' ? CSV_BREAKS : TEXT_BREAKS;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let lineOf = new Uint32Array(1024);
  let carry = '';
  let lines = 0;
  let urls = 0;
  let header = entry.type === 'text/csv'; // a CSV's first URL-like value may be its header row
  const take = (line) => {
    lines += 1;
    const value = (entry.type === 'text/csv' ? csvCell(line) : line).trim();
    if (!value || value.startsWith('#')) return;
    if (header) {
      header = false;
      if (!value.includes('://')) return; // the server skips it the same way
    }
    if (urls === lineOf.length) {
      const grown = new Uint32Array(lineOf.length * 2);
      grown.set(lineOf);
      lineOf = grown;
    }
    lineOf[urls] = lines;
    urls += 1;
  };
  for (let offset = 0; offset < file.size; offset += SCAN_BYTES) {
    const bytes = new Uint8Array(await file.slice(offset, offset + SCAN_BYTES).arrayBuffer());
    if (attached !== entry) return; // cleared or replaced meanwhile
    let text;
    try {
      text = carry + decoder.decode(bytes, { stream: offset + SCAN_BYTES < file.size });
    } catch {
      return refuse(notUtf8(file));
    }
    if (text.includes('\0')) return refuse(notText(file));
    // Whole lines end at the last break; a CR at the very end waits with its line, as it may be half of a CRLF.
    let cut = text.length;
    while (cut > 0 && !breaks.test(text[cut - 1])) cut -= 1;
    const heldCr = cut === text.length && text.endsWith('\r') && offset + SCAN_BYTES < file.size;
    const parts = text.slice(0, heldCr ? cut - 1 : cut).split(breaks);
    carry = parts.pop() + (heldCr ? '\r' : '') + text.slice(cut); // the line that has not ended yet
    parts.forEach(take);
    entry.progress = Math.min(1, (offset + SCAN_BYTES) / file.size);
    showAttached();
  }
  if (carry) take(carry);
  Object.assign(entry, { lines, urls, lineOf: lineOf.subarray(0, urls), progress: 1 });
  showAttached();
}

function refuse(problem) {
  showFileNote(problem, true);
  detach();
}

function attach(file, head) {
  detach();
  // A byte order mark is not part of the first URL: the body starts after it.
  const bom = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf;
  const entry = {
    file, name: nameAfter(file), body: bom ? file.slice(3) : file, type: isCsvFile(file) ? 'text/csv' : 'text/plain',
    size: file.size, lines: null, urls: null, lineOf: null, progress: 0, columns: null,
  };
  if (entry.type === 'text/csv') entry.columns = csvHeader(firstLine(new TextDecoder('utf-8').decode(head)));
  attached = entry;
  showColumns(entry.columns);
  loaded = null;
  textarea.value = '';
  showUrlErrors([], false);
  clearErrors();
  showFileNote(`${file.name} is sent to the server as it is; remove it to type URLs again.`, false);
  editor.hidden = true;
  fileBox.hidden = false;
  showAttached();
  entry.scanned = scan(entry);
}

function detach() {
  if (!attached) return;
  attached = null;
  editor.hidden = false;
  fileBox.hidden = true;
  showColumns(null);
  nameInput.placeholder = namePlaceholder;
  showUrlErrors([], false);
  renderEditor();
}

// Over a limit the server would refuse the upload for: the message, or null.
function overLimit(entry) {
  const limit = Number(config.maxRequestBytes);
  if (entry.body.size > limit) {
    return `${entry.name} is ${fmtBytes(entry.body.size)}; this server takes bodies up to ${fmtBytes(limit)} (GREENBATCH_MAX_REQUEST_BYTES).`;
  }
  if (entry.urls !== null && entry.urls > Number(config.maxUrls)) {
    return `${entry.name} has ${fmtInt(entry.urls)} URLs; this server takes at most ${fmtInt(Number(config.maxUrls))} in one batch (GREENBATCH_MAX_URLS).`;
  }
  return null;
}

function showAttached() {
  const entry = attached;
  if (!entry) return;
  const size = fmtBytes(entry.size);
  if (entry.lines === null) {
    setText(fileSummary, `${entry.name}: ${size}, counting lines… ${Math.floor(entry.progress * 100)}%`);
    setText(urlCount, 'counting…');
    urlCount.classList.remove('over');
    return;
  }
  setText(fileSummary, `${entry.name}: ${fmtInt(entry.lines)} line${entry.lines === 1 ? '' : 's'}, ${size} — sent as a file; not shown here`);
  showUrlCount(entry.urls);
  const over = overLimit(entry);
  if (over) showFileNote(over, true);
}

byId('file-clear').addEventListener('click', () => {
  detach();
  showFileNote('', false);
  textarea.focus();
});

// ---- dropping files ----------------------------------------------------------------------------

// A file dropped on the editor (or on a large file's summary) loads as if picked; dropped text goes into the text as usual.
const dropZones = [editor, fileBox];
const carriesFiles = (event) => Boolean(event.dataTransfer) && [...event.dataTransfer.types].includes('Files');
const inDropZone = (node) => dropZones.some((zone) => zone.contains(node));
for (const zone of dropZones) {
  zone.addEventListener('dragover', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dropping');
  });
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('dropping');
  });
  zone.addEventListener('drop', (event) => {
    zone.classList.remove('dropping');
    if (!carriesFiles(event)) return;
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) loadFile(file);
  });
}

// A file dropped beside the editor is ignored: the browser would otherwise open it and lose the page's text.
const besideEditor = (event) => carriesFiles(event) && !inDropZone(event.target);
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
const uploadBox = byId('upload');
const uploadBar = byId('upload-bar');
const uploadNote = byId('upload-note');

function fieldError(field, message) {
  return errorBeside(form, field, message);
}

function clearErrors() {
  clearFieldErrors(form);
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

const fmtMiB = (bytes) => String(Math.round((bytes / MiB) * 1000) / 1000);

// A number input as a number, its raw text when it is not one (the server names the problem), or nothing.
function numberOption(id) {
  const raw = byId(id).value.trim();
  if (raw === '') return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

// The options of the form as the API takes them, or null once a field's error is shown.
function formOptions() {
  const { headers, problem } = parseHeaders(byId('headers').value);
  if (problem) {
    fieldError('options.headers', problem);
    return null;
  }
  const options = {
    method: byId('method').value, accept_status: byId('accept_status').value.trim(), headers, client: byId('client').value,
  };
  for (const id of ['concurrency', 'timeout', 'max_redirects', 'retries', 'max_bytes', 'connect_timeout', 'per_host', 'per_host_interval']) {
    if (byId(id).validity.badInput) {
      fieldError(`options.${id}`, 'must be a number');
      return null;
    }
    const value = numberOption(id);
    if (value !== undefined) options[id] = value;
  }
  const url_match = byId('url_match').value;
  if (url_match !== 'exact') options.url_match = url_match;
  const base = byId('base_url').value.trim();
  if (base) options.base_url = base;
  const thresholds = thresholdOptions();
  if (thresholds === null) return null;
  if (Object.keys(thresholds).length) options.thresholds = thresholds;
  if (typeof options.max_bytes === 'number') {
    // The field is in MiB, the API in bytes: the server's limit is said here in the field's unit.
    const limit = Number(config.maxBodyBytes);
    options.max_bytes = Math.round(options.max_bytes * MiB);
    if (options.max_bytes > limit) {
      fieldError('options.max_bytes', `must be at most ${fmtMiB(limit)} MiB (server limit)`);
      return null;
    }
  }
  return options;
}

// The thresholds filled in, as the API takes them (rates as fractions), or null once a field's error is shown.
function thresholdOptions() {
  const thresholds = {};
  for (const [id, scale] of [['failed_rate', 100], ['warn_rate', 100], ['p95_ms', 1], ['min_ok', 1]]) {
    if (byId(id).validity.badInput) {
      fieldError('options.thresholds', `${byId(id).labels[0].textContent.trim()}: must be a number`);
      return null;
    }
    const value = numberOption(id);
    if (value !== undefined) thresholds[id] = typeof value === 'number' ? value / scale : value;
  }
  return thresholds;
}

function busy(label) {
  submitButton.disabled = true;
  submitButton.textContent = label;
}

function idle() {
  submitButton.disabled = false;
  submitButton.textContent = 'Start batch';
  uploadBox.hidden = true;
  updateStart();
}

// ---- sources: a sitemap or the links on a page, previewed before anything starts -------------------

const sources = new SourcePicker(form, {
  urlsBox: byId('list-box'),
  previewUrl: config.apiPreview,
  onChange: () => updateStart(),
  onRefused: (error) => showSubmitErrors(error, () => null),
  clearErrors: () => clearErrors(),
});

// Start waits for a preview of what the fields say now (a source can hold a million URLs).
function updateStart() {
  if (submitButton.textContent === 'Start batch') submitButton.disabled = sources.type !== 'list' && !sources.previewed;
}

async function submitSource() {
  const source = sources.current();
  if (!sources.previewed) {
    showFormError('Preview the source first: the batch takes what the preview shows.');
    return;
  }
  const options = formOptions();
  if (!options) return;
  busy('Reading the source…');
  const body = { source, name: nameInput.value.trim(), options };
  const result = await api(config.apiBatches, { method: 'POST', body, timeout: SOURCE_TIMEOUT_MS });
  if (result.ok) {
    window.location.assign(withId(config.batchPage, result.data.id));
    return;
  }
  idle();
  showSubmitErrors(result.error, () => null);
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearErrors();
  if (sources.type !== 'list') {
    await submitSource();
    return;
  }
  if (attached) {
    await submitFile(attached);
    return;
  }
  const entries = parseLines(textarea.value);
  if (editorColumns) {
    await submitCsv(entries);
    return;
  }
  if (entries.length === 0) {
    fieldError('urls', 'Add at least one URL, one per line.');
    textarea.focus();
    return;
  }
  const options = formOptions();
  if (!options) return;
  const body = { urls: entries.map((e) => e.url), name: nameInput.value.trim() || (loaded ? loaded.name : ''), options };

  busy('Starting…');
  const result = await api(config.apiBatches, { method: 'POST', body });
  if (result.ok) {
    window.location.assign(withId(config.batchPage, result.data.id));
    return;
  }
  idle();
  showSubmitErrors(result.error, (index) => entries[index]);
});

// The editor's CSV (its header recognised) sent as it is, as text/csv; a refused row is shown on its line.
async function submitCsv(entries) {
  if (entries.length <= 1) {
    fieldError('urls', 'Add at least one row under the CSV header.');
    textarea.focus();
    return;
  }
  const rows = entries.slice(1); // the header is not a URL
  const entry = {
    name: loaded ? loaded.name : 'the CSV', batchName: loaded ? loaded.name : '', body: new Blob([textarea.value], { type: 'text/csv' }), type: 'text/csv',
    urls: rows.length, lineOf: rows.map((e) => e.line),
  };
  await submitFile(entry, { placeOf: (index) => rows[index] || null });
}

// A file (or the editor's CSV) as the body of a text/plain or text/csv batch, its options in the query string,
// with progress. `placeOf` finds a refused URL's line in the editor; a file's lines are only named.
async function submitFile(entry, { placeOf = null } = {}) {
  const options = formOptions();
  if (!options) return;
  busy('Counting…');
  await entry.scanned;
  if (!placeOf && attached !== entry) {
    idle();
    return;
  }
  const over = overLimit(entry);
  if (over || entry.urls === 0) {
    idle();
    if (over) showFormError(over);
    else fieldError('urls', `${entry.name} has no URLs.`);
    return;
  }
  const params = [['name', nameInput.value.trim() || (entry.batchName ?? entry.name)]];
  for (const [key, value] of Object.entries(options)) {
    if (key === 'headers') Object.entries(value).forEach(([name, text]) => params.push(['header', `${name}: ${text}`]));
    else if (typeof value === 'object') params.push([key, JSON.stringify(value)]); // thresholds: JSON in the query
    else params.push([key, String(value)]);
  }
  busy('Uploading…');
  uploadBox.hidden = false;
  const result = await upload(withQuery(config.apiBatches, params), entry.body, entry.type, (sent, total) => {
    const done = sent >= total;
    uploadBar.querySelector('.seg').style.width = `${total ? Math.floor((sent / total) * 100) : 0}%`;
    uploadBar.setAttribute('aria-valuenow', String(total ? Math.floor((sent / total) * 100) : 0));
    setText(uploadNote, done ? `Sent; the server checks ${fmtInt(entry.urls)} URLs…`
      : `Uploading ${entry.name}: ${fmtBytes(sent)} of ${fmtBytes(total)}`);
  });
  if (result.ok) {
    window.location.assign(withId(config.batchPage, result.data.id));
    return;
  }
  idle();
  if (placeOf) showSubmitErrors(result.error, placeOf);
  else showSubmitErrors(result.error, (index) => (index < entry.urls ? { line: entry.lineOf[index], index } : null), { inFile: true });
}

// POST a file with XMLHttpRequest (fetch cannot report upload progress); never throws: the shape api() returns.
function upload(url, body, type, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('Content-Type', type);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('X-Requested-With', 'greenbatch'); // what the server asks of cookie-signed requests
    xhr.upload.addEventListener('progress', (event) => onProgress(event.loaded, event.lengthComputable ? event.total : body.size));
    xhr.upload.addEventListener('load', () => onProgress(body.size, body.size));
    xhr.addEventListener('load', () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      const ok = xhr.status >= 200 && xhr.status < 300;
      const error = ok ? null : (data && data.error) || { code: 'http', message: `The server answered HTTP ${xhr.status}.`, details: [] };
      resolve({ ok, status: xhr.status, data, error });
    });
    xhr.addEventListener('error', () => resolve({
      ok: false, status: 0, data: null,
      error: { code: 'network', message: 'The upload stopped: the server did not answer. Is it running?', details: [] },
    }));
    xhr.send(body);
  });
}

// The server's refusal shown where it belongs: URLs on their lines (`placeOf(index)` finds a URL's line), options at their fields.
function showSubmitErrors(error, placeOf, { inFile = false } = {}) {
  const details = Array.isArray(error.details) ? error.details : [];
  const urlProblems = [];
  const unplaced = [];
  for (const detail of details) {
    const place = Number.isInteger(detail.index) ? placeOf(detail.index) : null;
    if (place) {
      urlProblems.push({ line: place.line, index: detail.index, url: place.url || detail.url, message: detail.message });
    } else if (!detail.field || !fieldError(detail.field, detail.message)) {
      unplaced.push(`${detail.field ? `${detail.field}: ` : ''}${detail.message}`);
    }
  }
  showUrlErrors(urlProblems, urlProblems.length >= 100, { inFile });
  if (urlProblems.length) {
    const n = urlProblems.length >= 100 ? 'At least 100' : String(urlProblems.length);
    const where = inFile ? `the lines of ${attached ? attached.name : 'the file'} listed below` : 'the marked lines';
    showFormError(`${n} URL${urlProblems.length === 1 ? '' : 's'} cannot be fetched: see ${where}.`);
    if (!inFile) goToLine(urlProblems[0].line);
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
    for (const key of ['status', 'started_at', 'finished_at', 'counts', 'stats', 'verdict']) {
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
      h('span', { class: 'seg ok' }), h('span', { class: 'seg warn' }), h('span', { class: 'seg failed' }), h('span', { class: 'seg cancelled' }),
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
