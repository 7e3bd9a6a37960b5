// The batch page's comparison with another batch: counters per kind of change (each a filter) and the changed
// rows as before -> after, from GET .../diff. It opens on the batch this one was rerun from, or for a run of a watch
// list on the list's run before it (or on ?compare=<id>),
// and while either batch runs, its counters are read again as results land (at most once a second).
import { api, atMostEvery, byId, fmtMs, h, setText, withQuery } from './common.js';

const config = byId('page').dataset;
const batch = JSON.parse(config.batch);
const PAGE = 100;
const KIND_LABELS = {
  newly_failed: 'Newly failed', fixed: 'Fixed', status_changed: 'Status changed', final_url_changed: 'Final URL changed',
  slower: 'Slower', faster: 'Faster', added: 'Added', removed: 'Removed', unchanged: 'Unchanged', pending: 'Not yet run',
};
const CHANGED = ['newly_failed', 'fixed', 'status_changed', 'final_url_changed', 'slower', 'faster', 'added', 'removed'];

const els = {
  card: byId('compare'), open: byId('compare-open'), base: byId('compare-base'), key: byId('compare-key'),
  note: byId('compare-note'), csv: byId('compare-csv'), kinds: byId('compare-kinds'), rows: byId('compare-rows'),
  empty: byId('compare-empty'), more: byId('compare-more'), table: byId('compare-rows').closest('table'),
};
const state = { base: '', key: 'url', kind: null, summary: null, changes: [], nextAfter: null, final: true, read: 0 };
const PARENT_NOTE = batch.list_id ? ' (the run before)' : ' (rerun from)';
const listed = new Map(); // id -> batch, of the batches offered to compare with

// Each batch's verdict, shown only where the server gives one (issue 17's `verdict`).
function verdictText() {
  const shown = (verdict) => (verdict ? (verdict.pass ? 'PASS' : 'FAIL') : '–');
  const before = (listed.get(state.base) || {}).verdict;
  const after = batch.verdict;
  if (!before && !after) return '';
  return `verdict ${shown(before)} → ${shown(after)}`;
}

function params(extra) {
  const given = { base: state.base, key: state.key, kind: state.kind || CHANGED.join(','), ...extra };
  return Object.fromEntries(Object.entries(given).filter(([, value]) => value !== undefined && value !== null));
}

// One read of the diff: its counters, and the first page of rows (or the next, with `after`).
async function read(after) {
  if (!state.base) return;
  const serial = ++state.read;
  const answer = await api(withQuery(config.apiDiff, params({ limit: PAGE, after })));
  if (serial !== state.read) return; // a newer read was asked for meanwhile
  if (!answer.ok) {
    state.summary = null;
    state.changes = [];
    state.nextAfter = null; // no page to go on from
    setText(els.empty, answer.error.message);
    els.empty.hidden = false;
    render();
    return;
  }
  const diff = answer.data;
  state.summary = diff.summary;
  state.changes = after === undefined ? diff.changes : state.changes.concat(diff.changes);
  state.nextAfter = diff.next_after;
  state.final = diff.base_final && diff.batch_final;
  render();
}

function side(s, other) {
  if (!s) return h('span', { class: 'muted' }, '—');
  if (s.outcome === null) return h('span', { class: 'muted' }, 'not yet');
  const status = s.status_code === null ? s.outcome : String(s.status_code);
  const parts = [h('span', { class: `side-status ${s.outcome}-text` }, status), h('span', { class: 'num muted' }, fmtMs(s.total_ms))];
  // The final URL where it is what changed: it differs from the other side's.
  if (s.final_url && other && other.outcome !== null && other.final_url !== s.final_url) parts.push(h('span', { class: 'side-url' }, s.final_url));
  return h('span', { class: 'side' }, ...parts);
}

function row(change) {
  return h(
    'tr', { class: `kind-${change.kind}` },
    h('td', { class: 'col-kind' }, h('span', { class: `kind-badge kind-${change.kind}` }, KIND_LABELS[change.kind] || change.kind)),
    h('td', { class: 'col-key' }, h('span', { class: 'key' }, change.key)),
    h('td', { class: 'col-side' }, side(change.before, change.after)),
    h('td', { class: 'col-arrow', 'aria-hidden': 'true' }, '→'),
    h('td', { class: 'col-side' }, side(change.after, change.before)),
  );
}

function render() {
  const summary = state.summary;
  els.kinds.replaceChildren(
    ...(summary ? Object.keys(summary) : []).filter((kind) => kind !== 'pending' || summary.pending).map((kind) => {
      const button = h(
        'button', { type: 'button', class: `kind-count kind-${kind}`, 'data-kind': kind, 'aria-pressed': String(state.kind === kind) },
        h('span', { class: 'label' }, KIND_LABELS[kind] || kind), h('span', { class: 'n num' }, String(summary[kind])),
      );
      button.addEventListener('click', () => {
        state.kind = state.kind === kind ? null : kind;
        read();
      });
      return button;
    }),
  );
  els.rows.replaceChildren(...state.changes.map(row));
  if (summary) {
    const none = state.kind ? `No rows ${KIND_LABELS[state.kind].toLowerCase()}.` : 'Nothing changed.';
    setText(els.empty, none);
    els.empty.hidden = state.changes.length > 0;
  }
  els.table.hidden = state.changes.length === 0;
  els.more.hidden = state.nextAfter === null;
  setText(els.note, [verdictText(), state.final ? '' : 'live: counts move as results land'].filter(Boolean).join(' · '));
  els.csv.href = withQuery(config.apiDiff, params({ format: 'csv' }));
}

// The batches to compare with: the one this was rerun from (a list's run: the run before) first, then the newest others.
async function fillChoices(preferred) {
  const answer = await api(withQuery(config.apiBatches, { limit: 50 }));
  const others = answer.ok ? answer.data.batches.filter((b) => b.id !== batch.id) : [];
  const options = [h('option', { value: '' }, 'Choose a batch…')];
  if (preferred && !others.some((b) => b.id === preferred)) options.push(h('option', { value: preferred }, preferred));
  for (const b of others) {
    listed.set(b.id, b);
    const when = (b.created_at || '').slice(0, 16).replace('T', ' ');
    const label = `${b.name || b.id} · ${when} · ${b.id.slice(0, 8)}${b.id === batch.parent_id ? PARENT_NOTE : ''}`;
    options.push(h('option', { value: b.id }, label));
  }
  els.base.replaceChildren(...options);
  els.base.value = preferred || '';
  render();
}

function open(preferred) {
  els.card.hidden = false;
  els.open.setAttribute('aria-expanded', 'true');
  state.base = preferred || '';
  fillChoices(state.base);
  read();
}

els.open.addEventListener('click', () => {
  if (!els.card.hidden) {
    els.card.scrollIntoView({ block: 'nearest' });
    return;
  }
  open(batch.parent_id);
  els.card.scrollIntoView({ block: 'nearest' });
});
els.base.addEventListener('change', () => {
  state.base = els.base.value;
  state.kind = null;
  read();
});
els.key.addEventListener('change', () => {
  state.key = els.key.value;
  read();
});
els.more.addEventListener('click', () => read(state.nextAfter));
// While a batch runs, its rows land: read the counters (and the first page) again, at most once a second.
const refresh = atMostEvery(1000, () => {
  if (state.base && !els.card.hidden && !state.final) read();
});
document.addEventListener('batch-events', refresh);

const asked = new URLSearchParams(window.location.search).get('compare');
if (asked || batch.parent_id) open(asked || batch.parent_id);
