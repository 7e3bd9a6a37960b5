// What a result's outcome means, in words: the reasons, warnings and thresholds the server sends, as a
// person reads them ("302 where 301 was expected"). The server decides; this module only says it.
// Every value in these words may come from the target (a URL, a header): callers show them as text.
import { fmtInt, fmtMs } from './common.js';

export const OUTCOMES = ['ok', 'warn', 'failed', 'cancelled'];
const SHOWN_MAX = 120; // characters of one value shown in a sentence; the whole value goes in a title

// A result's outcome: the server's, or (a result stored before outcomes existed) from `ok` and the error.
export function outcomeOf(r) {
  if (OUTCOMES.includes(r.outcome)) return r.outcome;
  if (r.ok) return 'ok';
  return r.error && r.error.kind === 'cancelled' ? 'cancelled' : 'failed';
}

// A value in a sentence: text as it is, cut past SHOWN_MAX characters.
function shown(value) {
  if (value === null || value === undefined || value === '') return 'nothing';
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX - 1)}…` : text;
}

const quoted = (value) => `'${shown(value)}'`;

// A status spec ("301,308", "200-299", 301) in words: "301 or 308", "200–299".
export function statusWords(spec) {
  if (spec === null || spec === undefined) return 'nothing';
  const parts = String(spec).split(',').map((p) => p.trim().replace('-', '–')).filter(Boolean);
  if (parts.length <= 1) return parts[0] || String(spec);
  return `${parts.slice(0, -1).join(', ')} or ${parts[parts.length - 1]}`;
}

const plural = (n, one, many) => `${fmtInt(n)} ${Number(n) === 1 ? one : many}`;

// The check a reason "check[N]" names, from the batch's checks then the row's own (they add to the batch's).
export function checkOf(rule, batchChecks, rowChecks) {
  const match = /^check\[(\d+)\]$/.exec(rule || '');
  if (!match) return null;
  const all = [...(batchChecks || []), ...(rowChecks || [])];
  return all[Number(match[1])] || null;
}

// A failed check in words, from its definition and what the response had (app/core/checks.py: `actual` is the
// value found, or why none was: "the body is not JSON", "no match", "the header is missing", ...).
export function checkWords(check, actual, expected) {
  if (!check) return `${shown(actual)} (expected ${shown(expected)})`;
  const { source, op, value } = check;
  const found = String(actual ?? '');
  const subject = source === 'json' ? (check.path || '$') : source === 'header' ? `${check.name} header` : source === 'content_type' ? 'content type' : source;
  if (/^the pattern took/.test(found)) return `${subject} /${shown(value)}/: ${found}`;
  if (op === 'matches') return `${subject} does not match /${shown(value)}/`;
  if (source === 'body') return op === 'contains' ? `body does not contain ${quoted(value)}` : `body contains ${quoted(value)}`;
  if (source === 'json') {
    if (found === 'no match') return `${subject} matches nothing in the body`;
    if (found === 'the body is not JSON' || / is not a number$/.test(found)) return `${subject}: ${found}`;
    if (op === 'exists') return `${subject} does not exist`;
    const want = JSON.stringify(value);
    if (op === '==') return `${subject} is ${shown(actual)}, not ${want}`;
    if (op === '!=') return `${subject} is ${want}`;
    return `${subject} is ${shown(actual)}, not ${op === '<' ? 'under' : 'over'} ${want}`;
  }
  if (source === 'header') {
    if (op === 'present' || found === 'the header is missing') return `no ${check.name} header`;
    if (op === 'absent') return `${subject} is present (${shown(found.replace(/^present: /, ''))})`;
    return `${subject} is ${quoted(actual)}, not ${quoted(value)}`;
  }
  if (source.startsWith('time.')) {
    if (/^not measured/.test(found)) return `${source} ${found}`;
    const ms = parseFloat(found);
    return `${source} ${Number.isFinite(ms) ? fmtMs(ms) : shown(found)}, not ${op === '<=' ? 'at most' : 'under'} ${fmtMs(Number(value))}`;
  }
  if (source === 'size') {
    const bytes = parseFloat(found);
    return `size ${Number.isFinite(bytes) ? `${fmtInt(bytes)} B` : shown(found)}, not ${op === '>' ? 'over' : 'under'} ${fmtInt(Number(value))} B`;
  }
  if (source === 'content_type') {
    if (found === 'no content type') return 'no content type';
    return `content type ${quoted(actual)}, not ${quoted(value)}`;
  }
  return `${shown(actual)} (expected ${shown(expected)})`;
}

const WARNINGS = {
  bot_challenge: 'bot challenge',
  rate_limited: 'rate limited',
  temporary_redirect: 'temporary redirect',
  long_chain: 'long redirect chain',
  https_downgrade: 'https downgraded to http',
  redirect_to_root: "lands on the site's root",
  partial_check: 'body searched in part',
};

// A warning kind in words ("bot challenge"); an unknown kind as it is.
export function warningName(kind) {
  return WARNINGS[kind] || String(kind);
}

// A warning in words, with the evidence that raised it: "bot challenge (cf-mitigated: challenge)".
export function warningWords(warning) {
  const evidence = warning.evidence === null || warning.evidence === undefined || warning.evidence === '' ? '' : ` (${shown(warning.evidence)})`;
  return `${warningName(warning.kind)}${evidence}`;
}

// A reason in words. `checks` are the checks the batch and the row ran, for a reason "check[N]".
export function reasonWords(reason, { batchChecks, rowChecks } = {}) {
  const { rule, expected, actual } = reason;
  switch (rule) {
    case 'expect.final_url':
      return `lands on ${shown(actual)} instead of ${shown(expected)}`;
    case 'expect.status':
      return actual === null || actual === undefined ? `no response where ${statusWords(expected)} was expected` : `${shown(actual)} where ${statusWords(expected)} was expected`;
    case 'expect.final_status':
      return actual === null || actual === undefined ? `no final response where ${statusWords(expected)} was expected` : `ends on ${shown(actual)} where ${statusWords(expected)} was expected`;
    case 'expect.max_hops':
      return `${plural(actual, 'hop', 'hops')}, at most ${fmtInt(expected)} expected`;
    case 'error':
      return `no response (${shown(actual)})`;
    case 'accept_status':
      return actual === null || actual === undefined ? `no response (ok = ${statusWords(expected)})` : `${shown(actual)} is not ${statusWords(expected)} (accept_status)`;
    default:
      break;
  }
  if (WARNINGS[rule]) return warningWords({ kind: rule, evidence: actual });
  if (/^check\[\d+\]$/.test(rule)) return `${rule}: ${checkWords(checkOf(rule, batchChecks, rowChecks), actual, expected)}`;
  return `${rule}: ${shown(actual)} where ${shown(expected)} was expected`;
}

// The reasons a result's error does not already say: an error's own kind and message say "no response" and
// "not an accepted status" (a "mismatch" error only points at the reasons).
export function reasonsBeyondError(r) {
  const reasons = r.reasons || [];
  if (!r.error || r.error.kind === 'mismatch') return reasons;
  return reasons.filter((reason) => reason.rule !== 'error' && reason.rule !== 'accept_status');
}

// What decided a result, in words: its reasons, else its warnings (a warn row), joined with "; ".
export function resultWords(r, batchChecks) {
  const context = { batchChecks, rowChecks: r.checks };
  const reasons = reasonsBeyondError(r);
  if (reasons.length) return reasons.map((reason) => reasonWords(reason, context)).join('; ');
  if (outcomeOf(r) === 'warn' && !(r.reasons || []).length) return (r.warnings || []).map(warningWords).join('; ');
  return '';
}

// A rule's name in a breakdown: warning kinds and expectation rules in words, checks by their number.
export function ruleName(rule) {
  if (WARNINGS[rule]) return WARNINGS[rule];
  const names = {
    error: 'no response',
    accept_status: 'status not accepted',
    'expect.status': 'first status',
    'expect.final_url': 'final URL',
    'expect.final_status': 'final status',
    'expect.max_hops': 'too many hops',
  };
  return names[rule] || rule;
}

const THRESHOLDS = {
  failed_rate: ['failed', '≤', 'rate'],
  warn_rate: ['warn', '≤', 'rate'],
  p50_ms: ['p50', '≤', 'ms'],
  p90_ms: ['p90', '≤', 'ms'],
  p95_ms: ['p95', '≤', 'ms'],
  p99_ms: ['p99', '≤', 'ms'],
  min_ok: ['ok', '≥', 'count'],
  cancelled: ['cancelled', '≤', 'count'], // not an option: the verdict's violation for a batch with cancelled rows
};

// A threshold's value in its unit: a rate as a percentage, a time in ms, a count.
export function thresholdValue(name, value) {
  if (value === null || value === undefined) return '–';
  const unit = (THRESHOLDS[name] || [])[2];
  if (unit === 'rate') return `${Number((100 * value).toFixed(2))}%`;
  if (unit === 'ms') return fmtMs(value);
  if (unit === 'count') return fmtInt(value);
  return shown(value);
}

// A threshold in words: "failed ≤ 1%", "p95 ≤ 500 ms", "ok ≥ 990".
export function thresholdWords(name, limit) {
  const [label, sign] = THRESHOLDS[name] || [name, '≤'];
  return `${label} ${sign} ${thresholdValue(name, limit)}`;
}
