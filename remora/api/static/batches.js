// Batches: the list of recent fan-outs and one batch's view (counts, progress, a virtualised host matrix, actions).
import { get, post } from './api.js';
import { setParams } from './app.js';
import { followChanges } from './feed.js';
import { closeTop, confirmDialog } from './overlay.js';
import { h, setChildren, setText, timeEl, formatDuration, statusBadge, emptyState, poll, toast, debounce } from './util.js';

const HOST_STATES = ['queued', 'running', 'completed', 'failed', 'canceled'];
const POLL_MS = 2000; // without the change feed (stream down)
const LIST_POLL_MS = 5000;
const FALLBACK_MS = 30000; // with the feed up: a slow safety refresh
const TILE_W = 132; // px: tile width plus gap (a fixed grid, so rows can be computed from scrollTop)
const TILE_H = 40;
const OVERSCAN = 2; // rows rendered above and below the visible ones
const byName = new Intl.Collator(undefined, { numeric: true });

/** "concurrency 50% (2 hosts), max failures 1"; a percentage shows what it came to for this batch. */
function rolloutText(batch) {
  const rollout = batch.rollout || {};
  const parts = [];
  for (const [key, label] of [['concurrency', 'concurrency'], ['max_failures', 'max failures']]) {
    const value = rollout[key];
    if (value === undefined || value === null) continue;
    const resolved = batch[key];
    const hosts = typeof value === 'string' && value.includes('%') && typeof resolved === 'number' ? ` (${resolved} host${resolved === 1 ? '' : 's'})` : '';
    parts.push(`${label} ${value}${hosts}`);
  }
  return parts.join(', ') || 'all at once';
}

function countsText(batch) {
  const c = batch.counts || {};
  return HOST_STATES.filter((s) => c[s]).map((s) => `${c[s]} ${s}`).join(', ') || 'no hosts';
}

function tileLabel(host) {
  const bits = [`${host.server_name}: ${host.status}`];
  if (host.exit_code !== null && host.exit_code !== undefined) bits.push(`exit ${host.exit_code}`);
  if (host.duration !== null && host.duration !== undefined) bits.push(formatDuration(host.duration));
  if (host.error) bits.push(host.error);
  return bits.join(' · ');
}

/**
 * A grid of host tiles that renders only the rows in view: the scroll container holds one sized
 * spacer and at most (visible rows + overscan) rows of absolutely placed tiles, whatever the host count.
 */
export class HostMatrix {
  constructor({ onOpen, label = 'Hosts' } = {}) {
    this.hosts = [];
    this.onOpen = onOpen;
    this.focusIdx = -1;
    this.spacer = h('div.hm-spacer');
    this.el = h('div.hm', { id: 'host-matrix', role: 'group', 'aria-label': label, tabindex: '-1' }, this.spacer);
    this.el.addEventListener('scroll', () => this.render());
    this.el.addEventListener('click', (e) => {
      const tile = e.target.closest('.hm-tile');
      if (tile) { this.focusIdx = Number(tile.dataset.idx); this.onOpen?.(this.hosts[this.focusIdx]); }
    });
    this.el.addEventListener('keydown', (e) => this.onKey(e));
    this.resize = new ResizeObserver(() => this.render());
    this.resize.observe(this.el);
    this.lastRenderMs = 0;
  }

  /** Show these hosts; top=true starts at the first row (a new filter), otherwise the scroll position stays (a refresh). */
  setHosts(hosts, { top = false } = {}) {
    this.hosts = hosts;
    if (top) this.el.scrollTop = 0;
    this.el.dataset.count = String(hosts.length);
    if (this.focusIdx >= hosts.length) this.focusIdx = hosts.length - 1;
    this.render(true);
  }

  columns() {
    return Math.max(1, Math.floor((this.el.clientWidth - 8) / TILE_W));
  }

  render(force = false) {
    const t0 = performance.now();
    const cols = this.columns();
    const rows = Math.ceil(this.hosts.length / cols);
    this.spacer.style.height = `${rows * TILE_H}px`;
    const top = Math.min(this.el.scrollTop, Math.max(0, rows * TILE_H - this.el.clientHeight)); // fewer hosts than a moment ago
    const first = Math.max(0, Math.floor(top / TILE_H) - OVERSCAN);
    const last = Math.min(rows - 1, Math.ceil((top + this.el.clientHeight) / TILE_H) + OVERSCAN);
    const key = `${first}:${last}:${cols}`;
    if (!force && key === this.key) return;
    this.key = key;
    const tiles = [];
    const start = first * cols;
    const end = Math.min(this.hosts.length, (last + 1) * cols);
    for (let i = start; i < end; i += 1) {
      const host = this.hosts[i];
      const label = tileLabel(host);
      const tile = h(`button.hm-tile.hm-${host.status}`, {
        type: 'button', title: label, 'aria-label': label, tabindex: i === this.focusIdx ? '0' : '-1',
        dataset: { idx: String(i), job: host.job_id, status: host.status },
      }, h('span.hm-name', null, host.server_name));
      tile.style.transform = `translate(${(i % cols) * TILE_W}px, ${Math.floor(i / cols) * TILE_H}px)`;
      tiles.push(tile);
    }
    const hadFocus = this.el.contains(document.activeElement) && document.activeElement !== this.el;
    setChildren(this.spacer, tiles);
    if (this.focusIdx < 0 && tiles.length) tiles[0].tabIndex = 0;
    if (hadFocus) this.spacer.querySelector(`[data-idx="${this.focusIdx}"]`)?.focus({ preventScroll: true });
    this.lastRenderMs = performance.now() - t0;
    this.el.dataset.renderMs = this.lastRenderMs.toFixed(1);
  }

  /** Arrow keys, Home/End, PageUp/PageDown move between tiles (scrolling them into view); Enter opens. */
  onKey(e) {
    const tile = e.target.closest?.('.hm-tile');
    if (!tile) return;
    const cols = this.columns();
    const perPage = cols * Math.max(1, Math.floor(this.el.clientHeight / TILE_H));
    const i = Number(tile.dataset.idx);
    const move = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, PageDown: perPage, PageUp: -perPage }[e.key];
    let next = null;
    if (move !== undefined) next = Math.min(this.hosts.length - 1, Math.max(0, i + move));
    else if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = this.hosts.length - 1;
    if (next === null) return;
    e.preventDefault();
    this.focusIdx = next;
    const top = Math.floor(next / cols) * TILE_H;
    if (top < this.el.scrollTop) this.el.scrollTop = top;
    else if (top + TILE_H > this.el.scrollTop + this.el.clientHeight) this.el.scrollTop = top + TILE_H - this.el.clientHeight;
    this.render(true);
    this.spacer.querySelector(`[data-idx="${next}"]`)?.focus({ preventScroll: true });
  }

  destroy() {
    this.resize.disconnect();
  }
}

// ---------- one batch ----------

function mountBatch(root, id) {
  const title = h('h1.bv-title', { id: 'bv-title' }, `Batch ${id.slice(0, 8)}`);
  const badge = h('span', { id: 'bv-status' });
  const actions = h('div.panel-actions', { id: 'bv-actions' });
  const meta = h('dl.meta', { id: 'bv-meta' });
  const errorBox = h('div.banner.error', { id: 'bv-error', role: 'alert', hidden: true });
  const bar = h('div.bv-progress', { id: 'bv-progress', role: 'progressbar', 'aria-label': 'Hosts finished', 'aria-valuemin': '0' });
  const barText = h('span.muted.small', { id: 'bv-progress-text' });
  const filterBar = h('div.bv-filters', { id: 'bv-filters', role: 'group', 'aria-label': 'Show hosts by state' });
  const search = h('input', { type: 'search', id: 'bv-search', placeholder: 'Filter hosts by name…', 'aria-label': 'Filter hosts by name' });
  const shown = h('span.muted.small', { id: 'bv-shown', 'aria-live': 'polite' });
  const matrix = new HostMatrix({ label: 'Hosts of this batch', onOpen: (host) => openHost(host) });
  const content = h('div.bv', { id: 'batch-view' },
    h('p.small', null, h('a', { href: '#/batches' }, '← Batches')),
    h('div.page-head', null, badge, title, h('span.spacer'), actions),
    errorBox, meta,
    h('div.bv-bar-row', null, bar, barText),
    h('div.toolbar', null, filterBar, search, shown),
    matrix.el,
    h('p.muted.small', null, 'Click a host (or press Enter on it) for its live log. Arrow keys move between hosts.'));
  setChildren(root, content);

  let batch = null;
  let filter = 'all';
  let poller = null;
  let feed = null;
  let loadedAt = 0;

  function filtered() {
    const q = search.value.trim().toLowerCase();
    return batch.hosts.filter((host) => (filter === 'all' || host.status === filter) && (!q || host.server_name.toLowerCase().includes(q)));
  }

  function renderFilters() {
    const counts = batch.counts || {};
    const focused = filterBar.contains(document.activeElement) ? document.activeElement.dataset.filter : null;
    setChildren(filterBar, ['all', ...HOST_STATES].map((s) => {
      const n = s === 'all' ? batch.hosts.length : counts[s] || 0;
      return h(`button.chip.bv-filter${s === 'all' ? '' : `.hm-key.hm-${s}`}`, {
        type: 'button', 'aria-pressed': String(filter === s), dataset: { filter: s, count: String(n) },
        onclick: () => { filter = s; renderFilters(); applyFilter(true); },
      }, `${s} `, h('span.bv-count', null, String(n)));
    }));
    if (focused) filterBar.querySelector(`[data-filter="${focused}"]`)?.focus();
  }

  function applyFilter(top = false) {
    const t0 = performance.now();
    const hosts = filtered();
    matrix.setHosts(hosts, { top });
    const ms = performance.now() - t0;
    matrix.el.dataset.filterMs = ms.toFixed(1);
    setText(shown, `${hosts.length} of ${batch.hosts.length} hosts shown`);
  }

  function renderHead() {
    setText(title, batch.name ? `${batch.name}: ${batch.command}` : batch.command);
    title.title = batch.command;
    document.title = `Batch ${batch.id.slice(0, 8)} · Remora`;
    setChildren(badge, statusBadge(batch.status));
    setChildren(meta,
      metaRow('Hosts', String(batch.total ?? batch.hosts.length)),
      metaRow('Counts', countsText(batch), 'bv-counts'),
      metaRow('Rollout', rolloutText(batch), 'bv-rollout'),
      metaRow('Created by', batch.created_by || '—'),
      metaRow('Created', timeEl(batch.created_at)),
      metaRow('Started', timeEl(batch.started_at)),
      metaRow('Finished', timeEl(batch.finished_at)),
      batch.parent_id ? metaRow('Rerun of', h('a', { href: `#/batches?id=${batch.parent_id}`, id: 'bv-parent' }, batch.parent_id.slice(0, 8))) : null,
      metaRow('Jobs', h('a', { href: `#/jobs?batch_id=${batch.id}` }, 'in the jobs table')),
      metaRow('Batch id', h('code.small', null, batch.id)));
    errorBox.hidden = !batch.error;
    setText(errorBox, batch.error ? `Stopped: ${batch.error}` : '');
    const counts = batch.counts || {};
    const total = batch.hosts.length || 1;
    const segs = ['completed', 'failed', 'canceled', 'running'].map((s) => {
      const seg = h(`span.bv-seg.hm-${s}`, { title: `${counts[s] || 0} ${s}` });
      seg.style.width = `${((counts[s] || 0) * 100) / total}%`;
      return seg;
    });
    setChildren(bar, segs);
    const done = (counts.completed || 0) + (counts.failed || 0) + (counts.canceled || 0);
    bar.setAttribute('aria-valuemax', String(batch.hosts.length));
    bar.setAttribute('aria-valuenow', String(done));
    setText(barText, `${done} of ${batch.hosts.length} finished`);
    const running = batch.status === 'running';
    const failedOrCanceled = (counts.failed || 0) + (counts.canceled || 0);
    setChildren(actions,
      running ? h('button.btn.small', { type: 'button', id: 'bv-cancel', dataset: { write: '' }, onclick: cancel }, 'Cancel batch') : null,
      !running ? h('button.btn.small', { type: 'button', id: 'bv-rerun-failed', dataset: { write: '' }, disabled: !failedOrCanceled,
        title: failedOrCanceled ? `A new batch on the ${failedOrCanceled} failed and canceled hosts` : 'No failed or canceled hosts', onclick: () => rerun('failed') }, 'Rerun failed') : null,
      !running ? h('button.btn.small', { type: 'button', id: 'bv-rerun-all', dataset: { write: '' }, title: 'A new batch on every host', onclick: () => rerun('all') }, 'Rerun all') : null);
  }

  async function cancel() {
    if (!(await confirmDialog('Cancel batch', 'Cancel every queued and running job of this batch?', { confirmLabel: 'Cancel batch', danger: true }))) return;
    try {
      await post(`batches/${id}/cancel`);
      toast('Batch canceled.');
      poller?.now();
    } catch (err) { toast(`Not canceled: ${err.message}`, 'error'); }
  }

  async function rerun(only) {
    try {
      const fresh = await post(`batches/${id}/rerun`, { only });
      toast(`Rerun started on ${fresh.total ?? fresh.hosts?.length} hosts.`, 'ok');
      location.hash = `#/batches?id=${fresh.id}`;
    } catch (err) { toast(`Not rerun: ${err.message}`, 'error'); }
  }

  async function openHost(host) {
    if (!host) return;
    const mod = await import('./jobview.js');
    mod.openJobView(host.job_id);
  }

  async function load() {
    loadedAt = Date.now();
    try {
      const data = await get(`batches/${id}`);
      const first = !batch;
      const changed = first || data !== batch; // a 304 returns the cached object
      if (changed) data.hosts = [...(data.hosts || [])].sort((a, b) => byName.compare(a.server_name, b.server_name));
      batch = data;
      if (changed) {
        renderHead();
        renderFilters();
        applyFilter();
        if (first) matrix.el.dataset.firstRenderMs = matrix.el.dataset.renderMs || '0';
      }
      content.dataset.loads = String(Number(content.dataset.loads || 0) + 1);
      if (batch.status !== 'running') { poller?.stop(); feed?.stop(); }
    } catch (err) {
      if (err.status === 401) return;
      if (err.status === 404) { poller?.stop(); feed?.stop(); setChildren(root, emptyState('Batch not found', h('a', { href: '#/batches' }, 'All batches'))); return; }
      errorBox.hidden = false;
      setText(errorBox, `Cannot load the batch: ${err.message}`);
    }
  }

  search.addEventListener('input', debounce(() => { if (batch) applyFilter(true); }, 120));
  // Changes of this batch's jobs (and of the batch) arrive on the change feed and refresh the view; the
  // timed poll runs only while the stream is down, plus a slow safety refresh.
  feed = followChanges({ batch_id: id }, () => { if (!batch || batch.status === 'running') load(); }, {
    coalesceMs: 300, onLive: (up) => { content.dataset.live = String(up); },
  });
  poller = poll(async () => { if (!feed?.live() || Date.now() - loadedAt >= FALLBACK_MS) await load(); }, POLL_MS);
  // leaving the batch closes a host's log panel opened from it
  return { unmount() { poller?.stop(); feed?.stop(); matrix.destroy(); closeTop(true); } };
}

function metaRow(label, value, id) {
  return h('div.meta-item', null, h('dt', null, label), h('dd', { id }, value));
}

// ---------- the list ----------

function mountList(root, params) {
  const status = params.get('status') || '';
  const statusSel = h('select', { id: 'batch-status-filter', 'aria-label': 'Batch status' },
    h('option', { value: '' }, 'Any status'),
    ['running', 'completed', 'failed', 'aborted', 'canceled'].map((s) => h('option', { value: s, selected: s === status }, s)));
  statusSel.addEventListener('change', () => setParams(new URLSearchParams(statusSel.value ? { status: statusSel.value } : {})));
  const body = h('tbody');
  const table = h('div.table-wrap', null, h('table.batches-table', { id: 'batches-table' },
    h('thead', null, h('tr', null, ['Status', 'Command', 'Hosts', 'Counts', 'Rollout', 'By', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
    body));
  const empty = h('div', { hidden: true }, emptyState('No batches yet', 'Run a command on several servers (New job, pick more than one) and it shows up here.'));
  setChildren(root, h('div.page-head', null, h('h1', null, 'Batches'), h('span.live-dot.muted.small', null, 'live')),
    h('div.toolbar', null, statusSel), table, empty);

  async function load() {
    const data = await get('batches', { limit: 100, status });
    const rows = data.batches || [];
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    setChildren(body, rows.map((b) => h('tr', { dataset: { id: b.id } },
      h('td', null, statusBadge(b.status)),
      h('td.col-command', null, h('a.cmd-link', { href: `#/batches?id=${b.id}`, title: b.command }, h('code', null, b.name ? `${b.name}: ${b.command}` : b.command))),
      h('td.num', null, String(b.total)),
      h('td', null, countsText(b)),
      h('td.muted', null, rolloutText(b)),
      h('td', null, b.created_by || '—'),
      h('td.col-created', null, timeEl(b.created_at)))));
  }
  const poller = poll(load, LIST_POLL_MS);
  return { unmount() { poller.stop(); } };
}

export function mount(root, params) {
  let view = null;
  let shownId = null;
  function show(p) {
    const id = p.get('id');
    if (view && id === shownId && id) return;
    view?.unmount();
    shownId = id;
    view = id ? mountBatch(root, id) : mountList(root, p);
  }
  show(params);
  return {
    update(p) {
      if (p.get('id')) { show(p); return; }
      view?.unmount();
      shownId = null;
      view = mountList(root, p);
    },
    unmount() { view?.unmount(); },
  };
}
