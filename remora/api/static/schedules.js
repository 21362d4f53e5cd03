// Schedules: templates on a cron calendar — next run, last result, pause/resume, run now, recent slots.
import { get, post, put } from './api.js';
import { showBatch, showJob } from './app.js';
import { h, setChildren, timeEl, statusBadge, emptyState, poll, toast } from './util.js';

const POLL_MS = 3000;
const RUNS = 8;

function targetLink(item) {
  if (item.job_id) {
    return h('a.run-link', { href: `#/jobs?job=${item.job_id}`, onclick: (e) => { e.preventDefault(); showJob(item.job_id); } }, `job ${item.job_id.slice(0, 8)}`);
  }
  if (item.batch_id) {
    return h('a.run-link', { href: `#/batches?id=${item.batch_id}`, onclick: (e) => { e.preventDefault(); showBatch(item.batch_id); } }, `batch ${item.batch_id.slice(0, 8)}`);
  }
  return null;
}

function lastResult(s) {
  const last = s.last_run;
  if (!last) return h('span.muted', null, 'never run');
  return h('span.last-run', null, statusBadge(last.status), ' ', targetLink(last), ' ', timeEl(last.at));
}

function runRow(run) {
  const outcome = run.status === 'fired' && run.job_status ? statusBadge(run.job_status) : h(`span.badge.badge-slot-${run.status}`, null, run.status);
  return h('li.sched-run', { dataset: { status: run.status } },
    timeEl(run.slot), ' ', h('span.small', null, run.manual ? 'run now' : run.status), ' ', outcome, ' ', targetLink(run),
    run.reason ? h('span.muted.small', null, ` — ${run.reason}`) : null);
}

function mountList(root) {
  const body = h('tbody');
  const table = h('div.table-wrap', null, h('table.schedules-table', { id: 'schedules-table' },
    h('thead', null, h('tr', null, ['Name', 'Template', 'Calendar', 'State', 'Next run', 'Last result', 'Recent slots', ''].map((c) => h('th', { scope: 'col' }, c)))),
    body));
  const empty = h('div', { hidden: true }, emptyState('No schedules yet',
    'Run a template on a calendar: `remora schedules add --name nightly --template backup --cron "30 2 * * *" --tz Europe/Berlin`.'));
  setChildren(root, h('div.page-head', null, h('h1', null, 'Schedules'), h('span.live-dot.muted.small', null, 'live')), table, empty);

  async function act(s, what) {
    try {
      if (what === 'run') {
        const res = await post(`schedules/${encodeURIComponent(s.name)}/run`);
        if (res.batch_id) showBatch(res.batch_id);
        else showJob(res.id);
        toast(`${s.name}: started`, 'success');
        return;
      }
      await put(`schedules/${encodeURIComponent(s.name)}`, { enabled: what === 'resume' });
      toast(`${s.name}: ${what === 'resume' ? 'resumed' : 'paused'}`, 'success');
      poller.now();
    } catch (err) {
      toast(`${s.name}: ${err.message}`, 'error');
    }
  }

  async function load() {
    const rows = (await get('schedules')).schedules || [];
    const runs = await Promise.all(rows.map((s) => get(`schedules/${encodeURIComponent(s.name)}/runs`, { limit: RUNS }).then((r) => r.runs || []).catch(() => [])));
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    setChildren(body, rows.map((s, i) => h('tr', { dataset: { name: s.name, enabled: String(s.enabled) } },
      h('td', null, h('strong', null, s.name)),
      h('td', null, h('code', null, s.template), Object.keys(s.params || {}).length
        ? h('div.muted.small', null, Object.entries(s.params).map(([k, v]) => `${k}=${v}`).join(' ')) : null),
      h('td', null, h('code', null, s.cron), h('div.muted.small', null, `${s.timezone} · overlap ${s.overlap} · catch-up ${s.catch_up}`)),
      h('td.sched-state', null, s.enabled ? h('span.badge.badge-completed', null, 'enabled') : h('span.badge.badge-canceled', null, 'paused')),
      h('td.sched-next', null, s.next_runs && s.next_runs.length ? timeEl(s.next_runs[0]) : h('span.muted', null, '—')),
      h('td.sched-last', null, lastResult(s)),
      h('td', null, runs[i].length ? h('ul.sched-runs', null, runs[i].map(runRow)) : h('span.muted', null, '—')),
      h('td.actions', null,
        h('button.btn.small.sched-toggle', { type: 'button', dataset: { write: '' }, onclick: () => act(s, s.enabled ? 'pause' : 'resume') }, s.enabled ? 'Pause' : 'Resume'),
        ' ',
        h('button.btn.small.sched-run-now', { type: 'button', dataset: { write: '' }, onclick: () => act(s, 'run') }, 'Run now')))));
  }
  const poller = poll(load, POLL_MS);
  return { unmount() { poller.stop(); } };
}

export function mount(root) {
  const view = mountList(root);
  return { unmount() { view.unmount(); } };
}
