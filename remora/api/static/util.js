// Small DOM and formatting helpers shared by every view.

/** Create an element: h('button.primary', {onclick, title}, 'Text', child...). */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'text') el.textContent = value;
      else if (key === 'html') el.innerHTML = value;
      else if (key === 'style') el.style.cssText = String(value); // CSSOM: allowed by the CSP (a style attribute is not)
      else if (key in el && typeof value !== 'string') el[key] = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Replace all children of el. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Set textContent only when it differs (avoids needless layout work). */
export function setText(el, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

export function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

export function relTime(ms, now = Date.now()) {
  const diff = (now - ms) / 1000;
  const abs = Math.abs(diff);
  const fmt = (n, unit) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  let text;
  if (abs < 5) return 'just now';
  if (abs < 60) text = fmt(Math.round(abs), 'second');
  else if (abs < 3600) text = fmt(Math.round(abs / 60), 'minute');
  else if (abs < 86400) text = fmt(Math.round(abs / 3600), 'hour');
  else text = fmt(Math.round(abs / 86400), 'day');
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

export function exactTime(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

/** A <time> element showing a relative time, exact time on hover; refreshed by refreshTimes(). */
export function timeEl(value) {
  const ms = parseTime(value);
  if (ms === null) return h('span.muted', null, '—');
  const el = h('time', { datetime: value, title: exactTime(ms), dataset: { rel: String(ms) } }, relTime(ms));
  return el;
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time[data-rel]')) setText(el, relTime(Number(el.dataset.rel), now));
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.floor(seconds);
  const h_ = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h_ ? `${h_}h ${String(m).padStart(2, '0')}m` : `${m}m ${String(sec).padStart(2, '0')}s`;
}

/** Duration of a job: finished → duration; running → ticking since started_at. */
export function jobDuration(job, now = Date.now()) {
  if (job.duration !== null && job.duration !== undefined) return job.duration;
  const started = parseTime(job.started_at);
  if (started === null) return null;
  if (job.status === 'running') return Math.max(0, (now - started) / 1000);
  const finished = parseTime(job.finished_at);
  return finished === null ? null : Math.max(0, (finished - started) / 1000);
}

export function formatBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function jobCommandText(job) {
  if (job.script_hidden) return (job.name ? `${job.name}: ` : '') + `script (hidden)${job.args ? ' ' + job.args : ''}`;
  if (job.script) return (job.name ? `${job.name}: ` : '') + `script (${job.script.split('\n').length} lines)${job.args ? ' ' + job.args : ''}`;
  const args = Array.isArray(job.args) ? job.args.join(' ') : job.args || '';
  return [job.command, String(args).trim()].filter(Boolean).join(' ');
}

export function statusBadge(status) {
  return h(`span.badge.badge-${status || 'unknown'}`, { title: `Status: ${status}` }, status || '?');
}

export const FINISHED = new Set(['completed', 'failed', 'canceled']);
export const STATUSES = ['queued', 'running', 'completed', 'failed', 'canceled'];

export function priorityLabel(p) {
  if (p === 1) return '1 — highest';
  if (p === 5) return '5 — normal';
  if (p === 10) return '10 — lowest';
  return String(p);
}

/** Transient message at the bottom of the screen (aria-live). */
export function toast(message, kind = 'info', ms = 4000) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h(`div.toast.toast-${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(el);
  setTimeout(() => el.remove(), ms);
}

/** Fire fn every ms while the page is visible; returns a stop function. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  let running = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (document.hidden) return; // resumed by visibilitychange
    running = true;
    try { await fn(); } catch (err) { console.warn('poll', err); }
    running = false;
    if (!stopped && !document.hidden) timer = setTimeout(tick, ms);
  };
  const onVisible = () => { if (!document.hidden && !timer && !running && !stopped) tick(); };
  document.addEventListener('visibilitychange', onVisible);
  tick();
  return {
    stop() { stopped = true; if (timer) clearTimeout(timer); document.removeEventListener('visibilitychange', onVisible); },
    now() { if (timer) { clearTimeout(timer); timer = null; } if (!running) tick(); },
  };
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

/** Save a blob under a file name. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Text with `backticks` rendered as <code>. */
export function richText(text) {
  return text.split('`').map((part, i) => (i % 2 ? h('code', null, part) : part));
}

export function emptyState(title, ...body) {
  return h('div.empty', { role: 'note' }, h('h3', null, title), ...body.map((b) => (typeof b === 'string' ? h('p', null, richText(b)) : b)));
}
