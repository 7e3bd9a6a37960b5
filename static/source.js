// Where a form's URLs come from (templates/_source.html): a URL list, a sitemap or the links on a page, with a
// preview of what a source holds before anything runs. The new-batch form and the new-list form share it.
import { api, byId, fmtInt, h, setText } from './common.js';

export const SOURCE_TIMEOUT_MS = 120000; // the server gives up on a source after GREENBATCH_SOURCE_TIMEOUT (60 s by default)

// A field's error shown beside it (the form's [data-error-for] node); false when the form has no place for it.
export function fieldError(form, field, message) {
  const node = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  if (!node) return false;
  node.textContent = message;
  node.hidden = false;
  const section = node.closest('details');
  if (section) section.open = true; // an error in a folded section must not stay folded away
  const input = node.parentElement.querySelector('input, select, textarea');
  if (input) input.setAttribute('aria-invalid', 'true');
  return true;
}

export function clearFieldErrors(form) {
  for (const node of form.querySelectorAll('[data-error-for]')) node.hidden = true;
  for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
}

// An API refusal's details placed beside their fields; those with no field there, as "field: message" texts.
export function placeFieldErrors(form, error) {
  const unplaced = [];
  for (const detail of Array.isArray(error.details) ? error.details : []) {
    if (!detail.field || !fieldError(form, detail.field, detail.message)) {
      unplaced.push(`${detail.field ? `${detail.field}: ` : ''}${detail.message}`);
    }
  }
  return unplaced;
}

function previewLine(data, source, takeFirst) {
  const c = data.counts;
  const read = source.type === 'sitemap'
    ? `${fmtInt(c.sitemaps_read)} sitemap${c.sitemaps_read === 1 ? '' : 's'} read` : 'page read';
  const parts = [read, `${fmtInt(c.found)} URLs found`, `${fmtInt(c.unique)} unique`, `${fmtInt(c.excluded)} excluded`];
  if (c.invalid) parts.push(`${fmtInt(c.invalid)} not fetchable`);
  const take = takeFirst ? Math.min(takeFirst, c.kept) : data.would_take;
  return `${parts.join(' · ')} → ${data.complete || takeFirst ? '' : 'more than '}${fmtInt(take)} to fetch`;
}

// The source tabs and box of `form`: `urlsBox` is shown for a URL list, the source box for the others.
// `onChange()` runs when the type or the preview changes; `onRefused(error)` when the server refuses a preview;
// `clearErrors()` (the form's field errors by default) when the type changes or a preview starts.
export class SourcePicker {
  constructor(form, { urlsBox, previewUrl, onChange = () => {}, onRefused = () => {}, clearErrors = null }) {
    this.form = form;
    this.urlsBox = urlsBox;
    this.previewUrl = previewUrl;
    this.onChange = onChange;
    this.onRefused = onRefused;
    this.clearErrors = clearErrors || (() => clearFieldErrors(form));
    this.type = 'list';
    this.previewedAs = null; // the source (as JSON) the shown preview is of
    this.takeFirst = null; // source.max_urls once the user chose to take the first N of a source over the limit
    this.box = byId('source-box');
    this.url = byId('source-url');
    this.note = byId('preview-note');
    this.preview = byId('preview-box');
    for (const radio of form.querySelectorAll('input[name="source-type"]')) {
      radio.addEventListener('change', () => this.setType(radio.value));
    }
    for (const id of ['source-url', 'source-include', 'source-exclude', 'source-same-origin']) {
      byId(id).addEventListener('input', () => this.reset());
    }
    byId('preview').addEventListener('click', () => this.read());
  }

  // The source the fields give now, as the API takes it.
  current() {
    const source = { type: this.type, url: this.url.value.trim() };
    const include = byId('source-include').value.trim();
    const exclude = byId('source-exclude').value.trim();
    if (include) source.include = include;
    if (exclude) source.exclude = exclude;
    if (this.type === 'page_links') source.same_origin = byId('source-same-origin').checked;
    if (this.takeFirst) source.max_urls = this.takeFirst;
    return source;
  }

  // Whether the preview shown is of the source the fields give now.
  get previewed() {
    return this.previewedAs !== null && this.previewedAs === JSON.stringify(this.current());
  }

  // The source's URL is given, or its field says it is missing.
  hasUrl() {
    if (this.url.value.trim()) return true;
    fieldError(this.form, 'source.url', `Give the URL of ${this.type === 'sitemap' ? 'a sitemap' : 'a page'}.`);
    this.url.focus();
    return false;
  }

  setType(type) {
    this.type = type;
    this.urlsBox.hidden = type !== 'list';
    this.box.hidden = type === 'list';
    byId('same-origin-row').hidden = type !== 'page_links';
    setText(byId('source-url-label'), type === 'sitemap' ? 'Sitemap URL' : 'Page URL');
    this.url.placeholder = type === 'sitemap' ? 'https://example.com/sitemap.xml' : 'https://example.com/';
    this.clearErrors();
    this.reset();
  }

  reset() {
    this.previewedAs = null;
    this.takeFirst = null;
    this.preview.hidden = true;
    setText(this.note, 'Preview reads the source and shows what it found; nothing starts.');
    this.onChange();
  }

  async read() {
    this.clearErrors();
    this.takeFirst = null;
    if (!this.hasUrl()) return;
    const source = this.current();
    const button = byId('preview');
    button.disabled = true;
    this.preview.hidden = true;
    setText(this.note, 'Reading…');
    const result = await api(this.previewUrl, { method: 'POST', body: { source }, timeout: SOURCE_TIMEOUT_MS });
    button.disabled = false;
    if (!result.ok) {
      setText(this.note, '');
      this.previewedAs = null;
      this.onChange();
      this.onRefused(result.error);
      return;
    }
    this.show(result.data, source);
  }

  show(data, source) {
    const counts = byId('preview-counts');
    const limit = byId('preview-limit');
    setText(counts, previewLine(data, source, null));
    byId('preview-urls').replaceChildren(...data.urls.map((u) => h('li', {},
      h('span', { class: 'url' }, u.url),
      u.meta && u.meta.lastmod ? h('span', { class: 'hint' }, ` lastmod ${u.meta.lastmod}`) : null)));
    limit.hidden = !data.over_limit;
    // A preview short of its end for another reason (sitemaps of a big index left unread) says why, as the server
    // put it: a batch of it would be refused with the same words.
    const message = byId('preview-message');
    message.hidden = data.complete || data.over_limit || !data.message;
    setText(message, message.hidden ? '' : data.message);
    if (data.over_limit) {
      const takeFirst = byId('take-first');
      setText(byId('preview-limit-text'),
        `More URLs than a batch may hold: this server takes at most ${fmtInt(data.max_urls)} (GREENBATCH_MAX_URLS).`);
      setText(takeFirst, `Take the first ${fmtInt(data.max_urls)}`);
      takeFirst.onclick = () => {
        this.takeFirst = data.max_urls;
        this.previewedAs = JSON.stringify(this.current());
        limit.hidden = true;
        setText(counts, previewLine(data, this.current(), this.takeFirst));
        this.onChange();
      };
    }
    this.preview.hidden = false;
    const shown = data.urls.length;
    setText(this.note, shown < data.counts.kept ? `The first ${shown} are listed below.` : '');
    this.previewedAs = data.over_limit ? null : JSON.stringify(source);
    this.onChange();
  }
}
