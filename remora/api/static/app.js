// Remora dashboard: boot, sign-in, routing, theme, keyboard shortcuts.
import { session, setToken, checkToken, detectRole } from './api.js';
import { h, $, $$, setChildren, refreshTimes, richText, toast } from './util.js';
import { openModal, closeTop, hasOverlay } from './overlay.js';

const views = {
  overview: () => import('./overview.js'),
  jobs: () => import('./jobs.js'),
  batches: () => import('./batches.js'),
  templates: () => import('./templates.js'),
  schedules: () => import('./schedules.js'),
  servers: () => import('./servers.js'),
  queue: () => import('./queue.js'),
  console: () => import('./console.js'),
  webhooks: () => import('./webhooks.js'),
  debug: () => import('./debug.js'),
};

let current = { name: null, view: null };
let routeSeq = 0;

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  return { name: path.split('/')[0] || 'overview', path, params: new URLSearchParams(query) };
}

/** Change the URL's query for the current view without adding history entries. */
export function setParams(params, { push = false } = {}) {
  const { name } = parseHash();
  const clean = new URLSearchParams();
  for (const [k, v] of params) if (v !== '' && v !== null && v !== undefined) clean.set(k, v);
  const q = clean.toString();
  const hash = `#/${name}${q ? `?${q}` : ''}`;
  if (hash === location.hash) return;
  if (push) history.pushState(null, '', hash);
  else history.replaceState(null, '', hash);
  route();
}

async function route() {
  const { name, params } = parseHash();
  const loader = views[name] ? views[name] : views.overview;
  const key = views[name] ? name : 'overview';
  for (const a of $$('.nav a')) a.toggleAttribute('aria-current', a.dataset.route === key);
  if (current.name === key && current.view) {
    current.view.update?.(params);
    return;
  }
  const seq = ++routeSeq;
  current.view?.unmount?.();
  current = { name: null, view: null };
  const main = $('#main');
  const mod = await loader();
  if (seq !== routeSeq || $('#topbar').hidden) return; // another route or sign-in took over meanwhile
  current = { name: key, view: null };
  setChildren(main);
  current.view = mod.mount(main, params);
  document.title = `${key[0].toUpperCase()}${key.slice(1)} · Remora`;
}

// ---------- sign-in ----------

function takeTokenFromUrl() {
  const hash = location.hash.replace(/^#/, '');
  const params = new URLSearchParams(hash.includes('token=') && !hash.startsWith('/') ? hash : hash.split('?')[1] || '');
  const token = params.get('token');
  if (!token) return false;
  history.replaceState(null, '', `${location.pathname}${location.search}#/jobs`);
  if (session.token && session.token !== token) {
    // A link must not silently swap the signed-in token (someone else's link would sign you in as them).
    const replace = window.confirm(
      'This link signs in with a different API token than the one this browser has stored.\n\nReplace the stored token with the one from the link?',
    );
    if (!replace) return false;
  }
  setToken(token);
  return true;
}

function showSignIn(message) {
  $('#topbar').hidden = true;
  $('#nav-debug').hidden = true;
  $('#nav-webhooks').hidden = true;
  current.view?.unmount?.();
  current = { name: null, view: null };
  closeTop(true);
  const input = h('input', { id: 'token-input', type: 'password', autocomplete: 'current-password', required: true, spellcheck: 'false', placeholder: 'rmr_…' });
  const error = h('p.field-error', { id: 'token-error', role: 'alert' }, message || '');
  const form = h('form.signin-card', {
    onsubmit: async (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      const problem = await checkToken();
      if (problem) {
        error.textContent = problem === 'unauthorized' ? 'That token was not accepted. Check it and try again.' : problem;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return;
      }
      await start();
    },
  },
  h('div.brand.big', null, h('span.logo', { 'aria-hidden': 'true' }), 'Remora'),
  h('h1', null, 'Sign in'),
  h('p.muted', null, richText('Paste an API token. `remora up` prints a dashboard link that signs you in; `remora token create NAME` makes a new one.')),
  h('label', { for: 'token-input' }, 'API token'),
  input, error,
  h('button.btn.primary', { type: 'submit' }, 'Sign in'));
  setChildren($('#main'), h('div.signin', null, form));
  input.focus();
}

async function start() {
  $('#topbar').hidden = false;
  if (!location.hash || location.hash === '#') history.replaceState(null, '', '#/overview');
  // The first view's requests double as the token check: a 401 brings sign-in back.
  await route();
  // After the first view asked for its data, so that request goes first.
  setTimeout(() => detectRole().then(() => {
    document.body.classList.toggle('read-only', session.readOnly);
    $('#ro-badge').hidden = !session.readOnly;
    $('#nav-debug').hidden = session.role !== 'admin'; // the debug panel is for admin tokens only
    $('#nav-webhooks').hidden = session.role !== 'admin';
    if (session.name) $('#signout-btn').title = `Signed in as ${session.name} (${session.role}). Sign out`;
  }), 150);
}

function signOut() {
  setToken('');
  showSignIn('Signed out.');
}

// ---------- theme ----------

const THEME_KEY = 'remora.theme';

function effectiveTheme() {
  const explicit = document.documentElement.dataset.theme;
  if (explicit) return explicit;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function renderThemeButton() {
  const dark = effectiveTheme() === 'dark';
  const btn = $('#theme-btn');
  btn.innerHTML = dark
    ? '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"><circle cx="12" cy="12" r="4"/><path d="M12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4"/></svg>'
    : '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" stroke-linejoin="round"><path d="M20 14.5A8 8 0 0 1 9.5 4a8 8 0 1 0 10.5 10.5z"/></svg>';
  btn.setAttribute('aria-label', dark ? 'Switch to light theme' : 'Switch to dark theme');
  btn.title = `${dark ? 'Light' : 'Dark'} theme (now following ${localStorage.getItem(THEME_KEY) ? 'your choice' : 'the system'})`;
}

function toggleTheme() {
  const next = effectiveTheme() === 'dark' ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  localStorage.setItem(THEME_KEY, next);
  renderThemeButton();
}

// ---------- keyboard ----------

const SHORTCUTS = [
  ['/', 'Search jobs'],
  ['j / k', 'Move down / up in the jobs list'],
  ['Enter', 'Open the selected job'],
  ['n', 'New job'],
  ['c', 'Cancel the selected (or open) job'],
  ['g o / g j / g b / g s / g q', 'Go to Overview / Jobs / Batches / Servers / Queue'],
  ['?', 'This help'],
  ['Esc', 'Close the panel or dialog'],
];

function showHelp() {
  if ($('#help-dialog')) return;
  openModal({
    id: 'help-dialog',
    title: 'Keyboard shortcuts',
    body: h('dl.shortcuts', null, SHORTCUTS.map(([k, d]) => [h('dt', null, ...k.split(' / ').flatMap((x, i) => [i ? ' / ' : '', h('kbd', null, x)])), h('dd', null, d)])),
  });
}

let pendingG = false;

function onKey(e) {
  if (e.key === 'Escape') {
    if (closeTop()) { e.preventDefault(); return; }
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    return;
  }
  const t = e.target;
  const typing = t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $('#topbar').hidden) return;
  if (pendingG) {
    pendingG = false;
    const to = { o: 'overview', j: 'jobs', b: 'batches', s: 'servers', q: 'queue' }[e.key];
    if (to) { location.hash = `#/${to}`; e.preventDefault(); }
    return;
  }
  if (e.key === 'g') { pendingG = true; setTimeout(() => { pendingG = false; }, 1000); return; }
  if (e.key === '?') { e.preventDefault(); showHelp(); return; }
  if (e.key === 'n') { e.preventDefault(); newJob(); return; }
  if (e.key === '/') {
    e.preventDefault();
    if (current.name !== 'jobs') { location.hash = '#/jobs'; setTimeout(() => $('#job-search')?.focus(), 100); } else $('#job-search')?.focus();
    return;
  }
  if (document.querySelector('#layer .backdrop')) return; // a dialog is open
  if (hasOverlay() && e.key !== 'c') return;
  if (current.view?.onKey?.(e)) e.preventDefault();
}

/** Open the live view of a job (on the jobs page, keeping its filters). */
export function showJob(id, key = 'job') {
  const { name, params } = parseHash();
  if (name === 'jobs') {
    params.delete('job');
    params.delete('batch');
    params.set(key, id);
    setParams(params, { push: true });
  } else location.hash = `#/jobs?${key}=${encodeURIComponent(id)}`;
}

/** Open a batch's page (counts, host matrix, actions). */
export function showBatch(id) {
  location.hash = `#/batches?id=${encodeURIComponent(id)}`;
}

/** Forget the open job/batch panel in the URL (the panel closed). */
export function clearPanelParam() {
  const { name, params } = parseHash();
  if (name !== 'jobs' || (!params.has('job') && !params.has('batch'))) return;
  params.delete('job');
  params.delete('batch');
  setParams(params);
}

export async function newJob(prefill) {
  if (session.readOnly) { toast('This token is read-only: it cannot start jobs.', 'error'); return; }
  const mod = await import('./execute.js');
  mod.openExecute(prefill);
}

// ---------- boot ----------

async function boot() {
  renderThemeButton();
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', renderThemeButton);
  $('#theme-btn').addEventListener('click', toggleTheme);
  $('#help-btn').addEventListener('click', showHelp);
  $('#signout-btn').addEventListener('click', signOut);
  $('#new-job-btn').addEventListener('click', () => newJob());
  document.addEventListener('keydown', onKey);
  window.addEventListener('hashchange', () => { if (!$('#topbar').hidden) route(); });
  window.addEventListener('remora:unauthorized', () => {
    if ($('#token-input')) return;
    showSignIn(session.token ? 'The token was not accepted (expired or revoked?). Sign in again.' : '');
  });
  window.addEventListener('remora:forbidden', () => {
    if (!session.readOnly) { session.readOnly = true; document.body.classList.add('read-only'); $('#ro-badge').hidden = false; }
  });
  setInterval(() => refreshTimes(), 15000);

  takeTokenFromUrl();
  await start();
}

boot();
