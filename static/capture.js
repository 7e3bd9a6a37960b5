// What a batch with the `capture` option shows on its page: the Certificates tab (the batch's certificate
// inventory from the certificates API), "expiring within 30 days: N" in the header, and the captured fields of
// a result in its drawer. Everything captured is the target's text: it is only ever set as text (h, setText).
import { FINAL_STATUSES, api, byId, fmtInt, h, setText, withQuery } from './common.js';

const config = byId('page').dataset;
const options = JSON.parse(config.batch).options || {};
const capture = options.capture || null;

// The captured fields of a result (or a redirect hop) as facts for its drawer: nothing when it captured none.
export function capturedFacts(r) {
  if (!capture || r.remote_ip === undefined) return [];
  const facts = [
    h('dt', null, 'Address'), h('dd', { class: 'num' }, r.remote_ip || '–'),
    h('dt', null, 'Protocol'), h('dd', null, r.http_version || '–'),
    h('dt', null, 'Server'), h('dd', null, r.server ?? '–'),
  ];
  for (const [name, value] of Object.entries(r.headers || {})) {
    facts.push(h('dt', { class: 'header-name', title: name }, name), h('dd', { class: 'header-value' }, value));
  }
  const t = r.tls;
  if (t) {
    facts.push(h('dt', null, 'TLS'), h('dd', null, [t.version, t.cipher].filter(Boolean).join(' · ')));
    if (t.not_after) {
      facts.push(
        h('dt', null, 'Certificate'), h('dd', null, t.subject || '–', h('span', { class: 'hint' }, ` issued by ${t.issuer || '–'}`)),
        h('dt', null, 'Expires'), h('dd', { class: expiryClass(t.days_left) }, `${t.not_after} (${daysText(t.days_left)})`),
        h('dt', null, 'Names'), h('dd', null, (t.sans || []).join(', ') || '–'));
    }
    if ((t.problems || []).length) facts.push(h('dt', null, 'Problems'), h('dd', { class: 'error-text' }, t.problems.join('; ')));
  }
  return facts;
}

function daysText(days) {
  if (days < 0) return `expired ${fmtInt(-days)} day${days === -1 ? '' : 's'} ago`;
  return `${fmtInt(days)} day${days === 1 ? '' : 's'} left`;
}

function expiryClass(days) {
  if (days < 0) return 'error-text';
  return days <= 30 ? 'warn-text' : null;
}

// ---- the Certificates tab ----------------------------------------------------------------------

const tabs = byId('view-tabs');
const resultsTab = byId('tab-results');
const certsTab = byId('tab-certificates');
const resultsPanel = byId('results-panel');
const certsPanel = byId('certificates-panel');
const rows = byId('cert-rows');
const empty = byId('certs-empty');
const expiringNote = byId('cert-expiring');
const count = byId('cert-count');
const more = byId('certs-more');
const CERTS_PAGE = 100; // rows the tab reads at a time; "Show more" reads the next page
let reading = null;
let nextCursor = null; // where the rows shown end: the next page's cursor, null when they are all shown

function show(which) {
  const certs = which === 'certificates';
  resultsTab.setAttribute('aria-selected', String(!certs));
  certsTab.setAttribute('aria-selected', String(certs));
  resultsPanel.hidden = certs;
  certsPanel.hidden = !certs;
  if (certs) read();
}

function certRow(c) {
  const checks = [];
  if (c.name_match === false) checks.push('name does not match');
  if (c.chain_valid === false) checks.push('chain not valid');
  if (c.days_left < 0) checks.push('expired');
  const more = c.urls - c.url_examples.length;
  return h('tr', { class: `cert-row${c.days_left <= 30 ? ' expiring' : ''}${checks.length ? ' problem' : ''}` },
    h('td', { class: 'col-host', 'data-label': 'Host' }, h('span', { class: 'host' }, c.host)),
    h('td', { class: 'col-expires num', 'data-label': 'Expires', title: c.not_after }, c.not_after.slice(0, 10)),
    h('td', { class: `col-days num ${expiryClass(c.days_left) || ''}`, 'data-label': 'Days left' }, fmtInt(c.days_left)),
    h('td', { class: 'col-issuer', 'data-label': 'Issuer', title: c.issuer || '' }, c.issuer || '–'),
    h('td', { class: 'col-subject', 'data-label': 'Subject', title: c.subject || '' }, c.subject || '–'),
    h('td', { class: 'col-urls num', 'data-label': 'URLs', title: c.url_examples.join('\n') + (more > 0 ? `\n… and ${fmtInt(more)} more` : '') }, fmtInt(c.urls)),
    h('td', { class: `col-problems${checks.length ? ' error-text' : ''}`, 'data-label': 'Checks' }, checks.join(', ') || 'ok'));
}

// Draw a page of the inventory: the first replaces the rows shown, a later one (`more`) adds to them.
function render(answer, adding) {
  const list = answer.certificates;
  if (adding) rows.append(...list.map(certRow)); else rows.replaceChildren(...list.map(certRow));
  nextCursor = answer.next_cursor;
  more.hidden = !nextCursor;
  setText(count, fmtInt(answer.count));
  empty.hidden = rows.childElementCount > 0;
  setText(empty, 'No certificate captured yet.');
  setText(expiringNote, `expiring within ${answer.expiring_within_days} days: ${fmtInt(answer.expiring)}`);
  expiringNote.className = answer.expiring ? 'warn-text' : '';
  expiringNote.hidden = false;
}

// Read the first page of the inventory again, or (adding) the page after the rows shown.
async function read(adding = false) {
  if (reading) return reading;
  reading = (async () => {
    const query = { limit: CERTS_PAGE };
    if (adding && nextCursor) query.cursor = nextCursor;
    const answer = await api(withQuery(config.apiCertificates, query), { timeout: 15000 });
    reading = null;
    if (answer.ok) {
      render(answer.data, adding && Boolean(query.cursor));
    } else {
      empty.hidden = false;
      setText(empty, `Could not read the certificates: ${answer.error.message}`);
    }
  })();
  return reading;
}

if (capture && capture.tls) {
  tabs.hidden = false;
  resultsTab.addEventListener('click', () => show('results'));
  certsTab.addEventListener('click', () => show('certificates'));
  more.addEventListener('click', () => read(true));
  read();
  // Read once more when the batch ends: its last results bring their certificates.
  const status = byId('batch-status');
  let ended = FINAL_STATUSES.has(status.textContent.trim());
  new MutationObserver(() => {
    const now = FINAL_STATUSES.has(status.textContent.trim());
    if (now && !ended) read();
    ended = now;
  }).observe(status, { childList: true, characterData: true, subtree: true });
}
