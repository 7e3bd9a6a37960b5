// What a batch with notify targets shows in its header: "Notifications: ..." once it ends, from the deliveries
// API (delivered, failing with the receiver's error, pending, or not sent and why), read again while any is
// pending. Everything shown is set as text.
import { FINAL_STATUSES, api, byId, setText } from './common.js';

const config = byId('page').dataset;
const options = JSON.parse(config.batch).options || {};
const line = byId('batch-notify');
const status = byId('batch-status');
const REREAD_MS = 1000;
const MAX_READS = 120; // a pending delivery's tries end within seconds; past this, the page stops asking

function describe(d) {
  const where = `${d.type} ${d.url}`;
  if (d.status === 'sent') return [`delivered to ${where}`, ''];
  if (d.status === 'skipped') return [`not sent to ${where}: ${d.note}`, ''];
  if (d.status === 'failed') return [`failing: ${where} after ${d.attempts} tries: ${d.last_error}`, 'error-text'];
  return [d.attempts ? `retrying ${where} (${d.last_error})` : `sending to ${where}`, 'warn-text'];
}

function render(list) {
  const parts = list.map(describe);
  setText(line, `Notifications: ${parts.map(([text]) => text).join('; ') || 'none'}`);
  line.className = parts.some(([, kind]) => kind === 'error-text') ? 'error-text' : parts.some(([, kind]) => kind) ? 'warn-text' : '';
  line.hidden = false;
}

async function read(left) {
  const answer = await api(config.apiDeliveries, { timeout: 15000 });
  if (!answer.ok) {
    setText(line, `Notifications: could not be read (${answer.error.message})`);
    line.hidden = false;
    return;
  }
  const list = answer.data.deliveries;
  render(list);
  // Deliveries are written as the batch's end is stored: none yet, or one pending, is read again shortly.
  if (left > 0 && (!list.length || list.some((d) => d.status === 'pending'))) setTimeout(() => read(left - 1), REREAD_MS);
}

if ((options.notify || []).length) {
  setText(line, 'Notifications: sent when the batch ends');
  line.hidden = false;
  let ended = FINAL_STATUSES.has(status.textContent.trim());
  if (ended) read(MAX_READS);
  new MutationObserver(() => {
    const now = FINAL_STATUSES.has(status.textContent.trim());
    if (now && !ended) read(MAX_READS);
    ended = now;
  }).observe(status, { childList: true, characterData: true, subtree: true });
}
