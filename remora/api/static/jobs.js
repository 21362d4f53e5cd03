// Jobs page: filterable, sortable, paginated table kept in the URL; keyed row updates.
import { get, post, session } from './api.js';
import { setParams, newJob, showJob, showBatch } from './app.js';
import { followChanges } from './feed.js';
import { confirmDialog } from './overlay.js';
import {
  h, setText, setChildren, timeEl, jobDuration, formatDuration, jobCommandText, statusBadge, poll, debounce, toast,
  emptyState, STATUSES, FINISHED,
} from './util.js';

const PAGE_SIZES = ['20', '50', '100'];
const SORTABLE = { created_at: 'Created', priority: 'Priority', status: 'Status' };
const FILTER_KEYS = ['status', 'server_id', 'search', 'batch_id'];

/** Cancel / rerun / duplicate, shared with the job view. Returns the API answer or null. */
export async function jobAction(action, job) {
  try {
    if (action === 'cancel') {
      const ok = await confirmDialog('Cancel job?', `Cancel "${jobCommandText(job)}" on ${job.server?.name || 'its server'}?`, { confirmLabel: 'Cancel job', danger: true });
      if (!ok) return null;
      const res = await post(`jobs/${job.id}/cancel`);
      toast('Job canceled.', 'ok');
      return res;
    }
    if (action === 'rerun') {
      const res = await post(`jobs/${job.id}/rerun`);
      toast('Job queued again.', 'ok');
      return res;
    }
    if (action === 'duplicate') { newJob(job); return null; }
  } catch (err) {
    toast(err.message, 'error', 6000);
  }
  return null;
}

export function rowActions(job) {
  const out = [];
  if (job.status === 'queued' || job.status === 'running') out.push(['cancel', 'Cancel', 'Cancel this job (c)']);
  if (FINISHED.has(job.status)) out.push(['rerun', 'Rerun', 'Run the same command on the same server again']);
  out.push(['duplicate', 'Duplicate', 'Open the New job form prefilled with this job']);
  return out;
}

function openJob(id) {
  return import('./jobview.js').then((m) => m.openJobView(id));
}

export function mount(main, params) {
  const state = {
    params,
    rows: new Map(), // id -> {tr, sig, job, cells}
    order: [],
    selected: null,
    servers: [],
    lastData: null,
  };

  const search = h('input', { id: 'job-search', type: 'search', placeholder: 'Search command, server, name…  ( / )', 'aria-label': 'Search jobs', autocomplete: 'off' });
  const statusSel = h('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    h('option', { value: '' }, 'All statuses'), STATUSES.map((s) => h('option', { value: s }, s)));
  const serverSel = h('select', { id: 'server-filter', 'aria-label': 'Filter by server' }, h('option', { value: '' }, 'All servers'));
  const clearBtn = h('button.btn.link', { type: 'button', id: 'clear-filters' }, 'Clear filters');
  const batchChip = h('span.chip', { hidden: true });
  const tbody = h('tbody');
  const headRow = h('tr', null,
    h('th', { scope: 'col', class: 'col-status' }, sortButton('status')),
    h('th', { scope: 'col', class: 'col-server' }, 'Server'),
    h('th', { scope: 'col', class: 'col-command' }, 'Command'),
    h('th', { scope: 'col', class: 'col-prio' }, sortButton('priority')),
    h('th', { scope: 'col', class: 'col-created' }, sortButton('created_at')),
    h('th', { scope: 'col', class: 'col-duration' }, 'Duration'),
    h('th', { scope: 'col', class: 'col-exit' }, 'Exit'),
    h('th', { scope: 'col', class: 'col-actions' }, h('span.sr-only', null, 'Actions')));
  const table = h('table.jobs-table', { id: 'jobs-table', 'aria-label': 'Jobs' }, h('thead', null, headRow), tbody);
  const empty = h('div', { id: 'jobs-empty' });
  const banner = h('div.banner.error', { role: 'alert', hidden: true });
  const pageInfo = h('span.page-info', { id: 'page-info' });
  const prevBtn = h('button.btn', { type: 'button', id: 'prev-page', 'aria-label': 'Previous page' }, '‹ Prev');
  const nextBtn = h('button.btn', { type: 'button', id: 'next-page', 'aria-label': 'Next page' }, 'Next ›');
  const pager = h('div.pager');
  const limitSel = h('select', { id: 'page-size', 'aria-label': 'Jobs per page' }, PAGE_SIZES.map((n) => h('option', { value: n }, `${n} / page`)));

  main.append(
    h('div.page-head', null, h('h1', null, 'Jobs'), h('span.muted.live-dot', { title: 'Refreshes every 2 seconds while this tab is visible' }, 'live')),
    h('div.toolbar', { role: 'search' }, search, statusSel, serverSel, batchChip, clearBtn),
    banner,
    h('div.table-wrap', null, table, empty),
    pager,
  );
  pager.append(pageInfo, h('span.spacer'), limitSel, prevBtn, nextBtn);

  function sortButton(field) {
    return h('button.sort', { type: 'button', dataset: { sort: field } }, SORTABLE[field], h('span.sort-ind', { 'aria-hidden': 'true' }));
  }

  // ----- URL <-> controls -----
  const p = (key, dflt = '') => state.params.get(key) || dflt;
  function query() {
    return {
      page: p('page', '1'), limit: p('limit', '20'), status: p('status'), server_id: p('server_id'), search: p('search'),
      batch_id: p('batch_id'), sort_by: p('sort_by', 'created_at'), sort_order: p('sort_order', 'desc'),
    };
  }
  function change(updates, { resetPage = true } = {}) {
    const next = new URLSearchParams(state.params);
    for (const [k, v] of Object.entries(updates)) { if (v) next.set(k, v); else next.delete(k); }
    if (resetPage && !('page' in updates)) next.delete('page');
    setParams(next);
  }
  function syncControls() {
    const q = query();
    if (document.activeElement !== search) search.value = q.search;
    statusSel.value = q.status;
    serverSel.value = q.server_id;
    limitSel.value = PAGE_SIZES.includes(q.limit) ? q.limit : '20';
    clearBtn.hidden = !FILTER_KEYS.some((k) => q[k]);
    batchChip.hidden = !q.batch_id;
    if (q.batch_id) setChildren(batchChip, `batch ${q.batch_id.slice(0, 8)}`, h('button.chip-x', { type: 'button', 'aria-label': 'Remove batch filter', onclick: () => change({ batch_id: '' }) }, '✕'));
    for (const btn of headRow.querySelectorAll('button.sort')) {
      const active = btn.dataset.sort === q.sort_by;
      btn.parentElement.setAttribute('aria-sort', active ? (q.sort_order === 'asc' ? 'ascending' : 'descending') : 'none');
      setText(btn.querySelector('.sort-ind'), active ? (q.sort_order === 'asc' ? '▲' : '▼') : '');
    }
  }

  search.addEventListener('input', debounce(() => change({ search: search.value.trim() }), 250));
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { change({ search: search.value.trim() }); } });
  statusSel.addEventListener('change', () => change({ status: statusSel.value }));
  serverSel.addEventListener('change', () => change({ server_id: serverSel.value }));
  limitSel.addEventListener('change', () => change({ limit: limitSel.value }));
  clearBtn.addEventListener('click', () => { search.value = ''; change({ status: '', server_id: '', search: '', batch_id: '' }); });
  prevBtn.addEventListener('click', () => change({ page: String(Math.max(1, Number(query().page) - 1)) }, { resetPage: false }));
  nextBtn.addEventListener('click', () => change({ page: String(Number(query().page) + 1) }, { resetPage: false }));
  headRow.addEventListener('click', (e) => {
    const btn = e.target.closest('button.sort');
    if (!btn) return;
    const q = query();
    const order = q.sort_by === btn.dataset.sort && q.sort_order === 'desc' ? 'asc' : 'desc';
    change({ sort_by: btn.dataset.sort, sort_order: order });
  });

  // ----- rows -----
  function signature(job) {
    return [job.status, job.exit_code, job.priority, job.started_at, job.finished_at, job.server?.name, job.command, job.args, job.script ? job.script.length : 0, job.error].join('\u0001');
  }

  function buildRow(job) {
    const cells = {
      status: h('td.col-status'), server: h('td.col-server'), command: h('td.col-command'), prio: h('td.col-prio'),
      created: h('td.col-created'), duration: h('td.col-duration'), exit: h('td.col-exit'), actions: h('td.col-actions'),
    };
    const tr = h('tr', { dataset: { id: job.id }, tabindex: '-1', 'aria-selected': 'false' }, Object.values(cells));
    return { tr, cells, sig: '', job };
  }

  function fillRow(row, job) {
    const { cells } = row;
    setChildren(cells.status, statusBadge(job.status),
      job.run_at && job.status === 'queued' ? h('span.muted.small.run-at', { title: `Delayed: starts no earlier than ${job.run_at}` }, ' ⏱ ', timeEl(job.run_at)) : null);
    setText(cells.server, job.server?.name || job.server_id?.slice(0, 8) || '—');
    const cmd = jobCommandText(job);
    setChildren(cells.command, h('button.cmd-link', { type: 'button', title: job.script ? `${job.script}${job.args ? `\nargs: ${job.args}` : ''}` : cmd, dataset: { open: job.id } }, h('code', null, cmd || '(empty)')),
      h('span.cmd-meta', null, `${job.server?.name || ''} · `, timeEl(job.created_at)));
    setText(cells.prio, job.priority);
    cells.prio.title = job.priority === 1 ? 'highest priority' : job.priority === 10 ? 'lowest priority' : `priority ${job.priority} (1 = highest)`;
    setChildren(cells.created, timeEl(job.created_at));
    setText(cells.duration, formatDuration(jobDuration(job)));
    setText(cells.exit, job.exit_code ?? (job.status === 'failed' && job.error ? '!' : '—'));
    cells.exit.title = job.error || '';
    cells.exit.classList.toggle('bad', job.exit_code !== null && job.exit_code !== undefined && job.exit_code !== 0);
    setChildren(cells.actions, h('div.row-actions', null, rowActions(job).map(([action, label, title]) =>
      h('button.btn.small', { type: 'button', dataset: { action, write: '' }, title, 'aria-label': `${label} job ${cmd}` }, label))));
    row.tr.className = `status-${job.status}${state.selected === job.id ? ' selected' : ''}`;
    row.job = job;
  }

  function render(data) {
    state.lastData = data;
    const jobs = data.jobs || [];
    const seen = new Set();
    let prev = null;
    for (const job of jobs) {
      seen.add(job.id);
      let row = state.rows.get(job.id);
      if (!row) { row = buildRow(job); state.rows.set(job.id, row); }
      const sig = signature(job);
      if (sig !== row.sig) { fillRow(row, job); row.sig = sig; } else row.job = job;
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [id, row] of state.rows) if (!seen.has(id)) { row.tr.remove(); state.rows.delete(id); }
    state.order = jobs.map((j) => j.id);
    renderPager(data.pagination || {});
    renderEmpty(jobs.length);
  }

  function renderPager(pg) {
    const page = pg.page || 1;
    const limit = pg.limit || 20;
    const total = pg.total || 0;
    const from = total ? (page - 1) * limit + 1 : 0;
    setText(pageInfo, total ? `${from.toLocaleString()}–${Math.min(total, page * limit).toLocaleString()} of ${total.toLocaleString()}` : '');
    pager.hidden = !total && page === 1;
    prevBtn.disabled = !pg.has_prev;
    nextBtn.disabled = !pg.has_next;
  }

  function renderEmpty(count) {
    table.hidden = count === 0;
    if (count) { empty.replaceChildren(); return; }
    const q = query();
    if (FILTER_KEYS.some((k) => q[k])) {
      setChildren(empty, emptyState('No jobs match these filters', h('button.btn', { type: 'button', onclick: () => clearBtn.click() }, 'Clear filters')));
    } else if (Number(q.page) > 1) {
      setChildren(empty, emptyState('This page is empty', h('button.btn', { type: 'button', onclick: () => change({ page: '' }, { resetPage: false }) }, 'Go to the first page')));
    } else {
      setChildren(empty, emptyState('No jobs yet',
        'A job runs one command or script on one or more servers. The built-in "local" server runs on this machine; add SSH servers under Servers.',
        session.readOnly ? h('p.muted', null, 'This token is read-only, so it cannot start jobs.')
          : h('button.btn.primary', { type: 'button', onclick: () => newJob() }, 'Run your first job (n)')));
    }
  }

  // ----- selection & actions -----
  function select(id, { scroll = true } = {}) {
    if (state.selected) state.rows.get(state.selected)?.tr.classList.remove('selected');
    state.rows.get(state.selected)?.tr.setAttribute('aria-selected', 'false');
    state.selected = id;
    const row = state.rows.get(id);
    if (!row) return;
    row.tr.classList.add('selected');
    row.tr.setAttribute('aria-selected', 'true');
    if (scroll) row.tr.scrollIntoView({ block: 'nearest' });
  }

  function open(id) {
    select(id, { scroll: false });
    showJob(id);
  }

  tbody.addEventListener('click', async (e) => {
    const actionBtn = e.target.closest('button[data-action]');
    const tr = e.target.closest('tr');
    if (!tr) return;
    const row = state.rows.get(tr.dataset.id);
    if (actionBtn && row) {
      e.stopPropagation();
      const res = await jobAction(actionBtn.dataset.action, row.job);
      if (res?.new_job) open(res.new_job.id);
      reload();
      return;
    }
    if (window.getSelection()?.toString()) return; // let people select text
    open(tr.dataset.id);
  });

  // ----- loading -----
  async function load() {
    try {
      const data = await get('jobs', query());
      banner.hidden = true;
      render(data);
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401) return;
      if (err.status === 400) {
        banner.textContent = `${err.message}${err.details && Object.keys(err.details).length ? ` (${Object.entries(err.details).map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}`;
      } else banner.textContent = `Cannot refresh the job list: ${err.message}`;
      banner.hidden = false;
    }
  }

  async function loadServers() {
    try {
      const data = await get('servers');
      const current = serverSel.value || query().server_id;
      setChildren(serverSel, h('option', { value: '' }, 'All servers'), (data.servers || []).map((s) => h('option', { value: s.id }, s.name)));
      serverSel.value = current;
    } catch { /* the table shows errors */ }
  }

  const tick = setInterval(() => {
    const now = Date.now();
    for (const row of state.rows.values()) {
      if (row.job.status === 'running') setText(row.cells.duration, formatDuration(jobDuration(row.job, now)));
    }
  }, 1000);

  syncControls();
  let serversLoaded = false;
  let loadedAt = 0;
  let changed = true;
  // Job and batch changes arrive on the change feed and refresh the list (at most once a second); the
  // timed poll loads only while the stream is down, plus a slow safety refresh.
  function reload() { changed = true; refresher.now(); }
  const feed = followChanges({}, reload, {
    coalesceMs: 1000, onLive: (up) => { main.dataset.live = String(up); },
  });
  const refresher = poll(async () => {
    if (!changed && feed.live() && Date.now() - loadedAt < 30000) return;
    changed = false;
    loadedAt = Date.now();
    await load();
    if (!serversLoaded) { serversLoaded = true; loadServers(); } // after the first rows, not competing with them
  }, 2000);
  let panelFor = null;
  function syncPanel() {
    const id = state.params.get('job');
    const batch = state.params.get('batch');
    const key = id ? `job:${id}` : batch ? `batch:${batch}` : null;
    if (key === panelFor) return;
    panelFor = key;
    if (id) openJob(id);
    else if (batch) showBatch(batch); // older links: a batch has its own page now
    else import('./overlay.js').then((m) => { if (document.querySelector('aside.panel')) m.closeTop(); });
  }
  syncPanel();

  return {
    update(params) {
      const before = `${[...state.params].filter(([k]) => k !== 'job' && k !== 'batch')}`;
      state.params = params;
      syncControls();
      syncPanel();
      if (`${[...params].filter(([k]) => k !== 'job' && k !== 'batch')}` !== before) reload();
    },
    unmount() {
      refresher.stop();
      feed.stop();
      clearInterval(tick);
      import('./overlay.js').then((m) => m.closeTop(true));
    },
    onKey(e) {
      const ids = state.order;
      if (e.key === 'j' || e.key === 'k') {
        if (!ids.length) return false;
        const i = ids.indexOf(state.selected);
        const next = i < 0 ? 0 : Math.min(ids.length - 1, Math.max(0, i + (e.key === 'j' ? 1 : -1)));
        select(ids[next]);
        state.rows.get(ids[next])?.tr.focus({ preventScroll: true });
        return true;
      }
      if (e.key === 'Enter' && state.selected && !document.querySelector('aside.panel')) { open(state.selected); return true; }
      if (e.key === 'c') {
        const openId = state.params.get('job');
        const row = state.rows.get(openId || state.selected);
        if (row && (row.job.status === 'queued' || row.job.status === 'running') && !session.readOnly) {
          jobAction('cancel', row.job).then(() => reload());
          return true;
        }
      }
      return false;
    },
  };
}

