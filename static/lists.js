// The watch lists' pages: /lists (a form for a new list, and every list with its last verdict, failures per run
// as a small inline SVG, and its next run) and /lists/<id> (its runs, each with what changed from the run before).
import { FINAL_STATUSES, api, badgeClass, byId, fmtClock, fmtInt, h, setText, svg, withId, withQuery } from './common.js';
import { SourcePicker, clearFieldErrors, placeFieldErrors } from './source.js';

const config = byId('page').dataset;
const REFRESH_MS = 5000;
const LIVE_REFRESH_MS = 3000; // while a run is going: its status and counts move (its diff: on its own page)
const KIND_LABELS = {
  newly_failed: 'newly failed', fixed: 'fixed', status_changed: 'status changed', final_url_changed: 'final URL changed',
  slower: 'slower', faster: 'faster', added: 'added', removed: 'removed',
};

function showError(node, error) {
  node.hidden = !error;
  setText(node, error ? error.message : '');
}

function scheduleText(schedule) {
  return schedule.every ? `every ${schedule.every}` : `cron ${schedule.cron} (UTC)`;
}

function verdictBadge(run) {
  if (!run) return h('span', { class: 'hint', text: 'no run yet' });
  if (!run.verdict) return h('span', { class: badgeClass(run.status), text: run.status });
  return h('span', { class: `list-verdict ${run.verdict.pass ? 'pass' : 'fail'}`, text: run.verdict.pass ? 'PASS' : 'FAIL' });
}

// Failed URLs per run, oldest on the left: one bar a run, its height relative to the most in the window.
function sparkline(runs) {
  const width = 96;
  const height = 22;
  const points = runs.slice().reverse();
  const most = Math.max(1, ...points.map((run) => run.counts.failed || 0));
  const step = width / 12; // RECENT_RUNS of the API: the bars keep their width however many runs there are
  const bars = points.map((run, i) => {
    const failed = run.counts.failed || 0;
    const tall = failed ? Math.max(2, (failed / most) * (height - 2)) : 1;
    return svg('rect', {
      x: (i * step + 1).toFixed(1), y: (height - tall).toFixed(1), width: Math.max(step - 2, 1).toFixed(1),
      height: tall.toFixed(1), class: failed ? 'spark-failed' : 'spark-ok',
    }, svg('title', {}, `${run.name}: ${fmtInt(failed)} failed`));
  });
  const label = points.length ? `failures in the last ${points.length} runs: ${points.map((run) => run.counts.failed || 0).join(', ')}` : 'no runs yet';
  return svg('svg', { class: 'sparkline', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label }, ...bars);
}

function urlCount(count) {
  return `${fmtInt(count)} URL${count === 1 ? '' : 's'}`;
}

// What a list watches: its fixed URLs, or the sitemap or page read again at each run.
function watchedText(list) {
  if (!list.source) return urlCount(list.url_count);
  return `${list.source.type === 'sitemap' ? 'sitemap' : 'links on'} ${list.source.url}`;
}

function notifyText(list) {
  if (!list.notify.length) return '–';
  const kinds = list.notify.map((target) => target.type).join(', ');
  return `${kinds} · ${list.notify_on || 'always'}`;
}

// The last notification's delivery: sent, failing (with its error), not sent (and why), or none yet.
function deliveryNote(delivery) {
  if (!delivery) return h('span', { class: 'hint', text: 'none sent yet' });
  const said = delivery.last_error || (delivery.last_status_code ? `HTTP ${delivery.last_status_code}` : '');
  const text = {
    sent: `sent ${fmtClock(delivery.updated_at)}`,
    pending: `sending (try ${delivery.attempts + 1})`,
    failed: `failed: ${said}`,
    skipped: `not sent: ${delivery.note || ''}`,
  }[delivery.status] || delivery.status;
  return h('span', { class: `delivery delivery-${delivery.status}`, title: said || delivery.note || '', text });
}

// ---- /lists ------------------------------------------------------------------------------------

function listRow(list) {
  const last = list.recent_runs[0];
  const name = h('a', { class: 'batch-link', href: withId(config.listPage, list.id), text: list.name });
  const next = list.paused ? 'paused' : fmtClock(list.next_run_at);
  return h('tr', { class: 'list-row', dataset: { listId: list.id } },
    h('td', { class: 'col-name' }, name, h('span', { class: 'batch-id list-watched', text: watchedText(list), title: watchedText(list) }),
      h('span', { class: 'list-schedule-short', text: scheduleText(list.schedule) })),
    h('td', { class: 'col-schedule', text: scheduleText(list.schedule) }),
    h('td', {}, last ? h('a', { href: withId(config.batchPage, last.id) }, verdictBadge(last)) : verdictBadge(null)),
    h('td', {}, sparkline(list.recent_runs)),
    h('td', { class: 'list-next', text: next }),
    h('td', { class: 'list-notify' }, h('span', { class: 'notify-targets', text: notifyText(list) }),
      list.notify.length ? deliveryNote(list.last_delivery) : null),
  );
}

// The lists shown: the first LISTS_PAGE, and as many more as "Show more" asked for, read a page at a time.
const LISTS_PAGE = 50;
let wanted = LISTS_PAGE;

async function readLists() {
  const found = [];
  let cursor = null;
  do {
    const query = { limit: Math.min(200, wanted - found.length), ...(cursor ? { cursor } : {}) };
    const answer = await api(withQuery(config.apiLists, query));
    if (!answer.ok) return answer;
    found.push(...answer.data.lists);
    cursor = answer.data.next_cursor;
  } while (cursor && found.length < wanted);
  return { ok: true, data: { lists: found, more: Boolean(cursor) } };
}

async function refreshLists() {
  const { ok, data, error } = await readLists();
  const rows = byId('list-rows');
  if (!ok) {
    setText(byId('lists-note'), error.message);
    return;
  }
  const count = `${data.lists.length} list${data.lists.length === 1 ? '' : 's'}`;
  setText(byId('lists-note'), data.more ? `the first ${count}` : count);
  byId('lists-more').hidden = !data.more;
  rows.replaceChildren(...(data.lists.length ? data.lists.map(listRow)
    : [h('tr', { class: 'empty' }, h('td', { colspan: 6, text: 'No watch lists yet: save one above, or from any batch page.' }))]));
}

// The new list's URLs: a URL list, or a sitemap or page read at each run (none when it is saved from a batch).
let sources = null;

// A refused list: each field's problem beside it (a schedule's, beside the schedule); above Save, the whole
// message when some problem has no field on the form, else a pointer to the marked fields.
function showRefusal(form, error) {
  const details = (Array.isArray(error.details) ? error.details : []).map((detail) => ({
    ...detail, field: String(detail.field || '').startsWith('schedule.') ? 'schedule' : detail.field,
  }));
  const unplaced = placeFieldErrors(form, { ...error, details });
  const placed = details.length - unplaced.length;
  showError(byId('list-error'), placed && !unplaced.length
    ? { message: `The watch list was not saved: see the field${placed === 1 ? '' : 's'} marked above.` } : error);
}

async function saveList(event) {
  event.preventDefault();
  const form = byId('list-form');
  clearFieldErrors(form);
  showError(byId('list-error'), null);
  const kind = byId('list-schedule-kind').value;
  const body = {
    schedule: { [kind]: byId('list-schedule').value.trim() },
    keep_runs: Number(byId('list-keep').value),
  };
  const name = byId('list-name').value.trim();
  if (name) body.name = name;
  if (form.dataset.fromBatch) body.from_batch = form.dataset.fromBatch;
  else if (sources.type !== 'list') {
    if (!sources.hasUrl()) return;
    body.source = sources.current();
  } else body.urls = byId('list-urls').value.split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  const button = byId('list-save');
  button.disabled = true;
  const { ok, data, error } = await api(config.apiLists, { method: 'POST', body });
  button.disabled = false;
  if (ok) window.location.assign(withId(config.listPage, data.id));
  else showRefusal(form, error);
}

// ---- /lists/<id> -------------------------------------------------------------------------------

function changedText(summary, run) {
  if (!summary && !FINAL_STATUSES.has(run.status)) return h('a', { class: 'hint', href: withId(config.batchPage, run.id), text: 'live on its page' });
  if (!summary) return h('span', { class: 'hint', text: run.parent_id ? '–' : 'first run' });
  const parts = Object.entries(KIND_LABELS).filter(([kind]) => summary[kind]).map(([kind, label]) => h('span', {
    class: `change-chip change-${kind}`, text: `${fmtInt(summary[kind])} ${label}`,
  }));
  if (summary.pending) parts.push(h('span', { class: 'hint', text: `${fmtInt(summary.pending)} not yet run` }));
  return parts.length ? h('span', { class: 'change-chips' }, ...parts) : h('span', { class: 'hint', text: 'nothing changed' });
}

function runRow(run) {
  return h('tr', { class: 'run-row', dataset: { batchId: run.id } },
    h('td', { class: 'col-name' }, h('a', { class: 'batch-link', href: withId(config.batchPage, run.id), text: run.name })),
    h('td', { class: 'run-extra' }, h('span', { class: badgeClass(run.status), text: run.status })),
    h('td', {}, run.verdict ? verdictBadge(run) : h('span', { class: 'hint', text: '–' })),
    h('td', { class: 'num run-extra run-urls', text: fmtInt(run.counts.total || 0) }), // a source's: read at each run
    h('td', { class: 'num run-extra', text: fmtInt(run.counts.failed || 0) }),
    h('td', {}, changedText(run.diff_summary, run)),
    h('td', { class: 'num run-extra', text: fmtClock(run.created_at) }),
  );
}

let list = null;

function showList() {
  setText(byId('list-title'), list.name);
  const state = byId('list-state');
  state.className = list.paused ? 'badge status-cancelled' : 'badge status-running';
  setText(state, list.paused ? 'paused' : 'scheduled');
  setText(byId('pause'), list.paused ? 'Resume' : 'Pause');
  const next = list.paused ? 'paused' : `next run ${fmtClock(list.next_run_at)}`;
  setText(byId('list-meta'), `${scheduleText(list.schedule)} · ${next} · ${watchedText(list)} · keeps ${list.keep_runs} runs`);
  // Runs that did not start, and why the last one did not (the run before still going, its source unreadable).
  const skipped = byId('list-skipped');
  skipped.hidden = !list.skipped.count;
  const when = list.skipped.last_at ? ` at ${fmtClock(list.skipped.last_at)}` : '';
  setText(skipped, list.skipped.count
    ? `${fmtInt(list.skipped.count)} run${list.skipped.count === 1 ? '' : 's'} not started; the last${when}: ${list.skipped.last_reason || 'the run before was still going'}`
    : '');
}

let timer = null;

async function refreshList() {
  clearTimeout(timer);
  const [one, runs] = await Promise.all([api(config.apiList), api(config.apiRuns)]);
  if (one.ok) {
    list = one.data;
    showList();
  }
  showError(byId('list-error'), (one.ok ? null : one.error) || (runs.ok ? null : runs.error) || actionError);
  const going = runs.ok && runs.data.runs.some((run) => !FINAL_STATUSES.has(run.status));
  timer = setTimeout(refreshList, going ? LIVE_REFRESH_MS : REFRESH_MS);
  if (!runs.ok) return;
  byId('run-rows').replaceChildren(...(runs.data.runs.length ? runs.data.runs.map(runRow)
    : [h('tr', { class: 'empty' }, h('td', { colspan: 7, text: 'No runs yet: the first comes at its schedule, or run it now.' }))]));
}

// The last action's refusal (a run not started, and why) stays shown until the next action.
let actionError = null;

async function act(request) {
  const { ok, error } = await request;
  actionError = ok ? null : error;
  await refreshList();
  return ok;
}

// ---- start -------------------------------------------------------------------------------------

if (config.page === 'lists') {
  const form = byId('list-form');
  form.addEventListener('submit', saveList);
  if (!form.dataset.fromBatch) {
    sources = new SourcePicker(form, {
      urlsBox: byId('list-urls-box'),
      previewUrl: config.apiPreview,
      onRefused: (error) => showRefusal(form, error),
      clearErrors: () => {
        clearFieldErrors(form);
        showError(byId('list-error'), null);
      },
    });
  }
  byId('lists-more').addEventListener('click', () => {
    wanted += LISTS_PAGE;
    refreshLists();
  });
  refreshLists();
  setInterval(refreshLists, REFRESH_MS);
} else {
  byId('run-now').addEventListener('click', () => act(api(config.apiRun, { method: 'POST' })));
  byId('pause').addEventListener('click', () => list && act(api(config.apiList, { method: 'PATCH', body: { paused: !list.paused } })));
  byId('delete-list').addEventListener('click', async () => {
    if (!window.confirm('Delete this watch list? Its runs stay, as batches.')) return;
    const { ok, error } = await api(config.apiList, { method: 'DELETE' });
    if (ok) window.location.assign(config.listsPage);
    else showError(byId('list-error'), error);
  });
  refreshList();
}
