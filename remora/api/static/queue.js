// Queue & workers: depth per priority, rates, wait, workers' heartbeats and resource usage, dead letters.
// Stats and workers arrive live (GET queue/monitor, Server-Sent Events read with fetch so the Bearer token
// goes along); when the stream cannot be had they are polled like the rest.
import { get, post, streamEvents } from './api.js';
import { confirmDialog } from './overlay.js';
import { h, setChildren, poll, toast, emptyState, formatDuration, formatBytes } from './util.js';
import { showJob } from './app.js';

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return '—';
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function stat(label, value, hint) {
  return h('div.stat', { title: hint || '' }, h('div.stat-value', null, value), h('div.stat-label', null, label));
}

/** Depth per priority as horizontal CSS bars (1 = highest at the top). */
export function priorityBars(dist) {
  const entries = Array.from({ length: 10 }, (_, i) => [i + 1, Number(dist?.[String(i + 1)] ?? dist?.[i + 1] ?? 0)]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  return h('div.bars', { role: 'list', 'aria-label': 'Waiting jobs per priority' }, entries.map(([p, n]) =>
    h('div.bar-row', { role: 'listitem', 'aria-label': `priority ${p}: ${n} waiting` },
      h('span.bar-label', null, p === 1 ? '1 high' : p === 10 ? '10 low' : String(p)),
      h('span.bar-track', null, h('span.bar-fill', { style: `width:${(n / max) * 100}%`, dataset: { p } })),
      h('span.bar-value', null, num(n)))));
}

export function mount(main) {
  const statsBox = h('div.stats', { id: 'queue-stats' });
  const barsBox = h('section.card', { 'aria-labelledby': 'bars-title' });
  const queuesBox = h('section.card', { 'aria-labelledby': 'queues-title' });
  const workersBox = h('section.card', { id: 'workers', 'aria-labelledby': 'workers-title' });
  const dlqBox = h('section.card', { id: 'dlq', 'aria-labelledby': 'dlq-title' });
  const procBox = h('section.card', { id: 'processes', 'aria-labelledby': 'processes-title' });
  const banner = h('div.banner.error', { role: 'alert', hidden: true });
  const liveBadge = h('span.badge', { id: 'queue-live', title: '' }, 'polling');
  main.append(h('div.page-head', null, h('h1', null, 'Queue & workers'), h('span.spacer'), liveBadge), banner, statsBox, h('div.grid-2.cards', null, barsBox, queuesBox), workersBox, procBox, dlqBox);
  let lastInfo = null;
  let live = false;

  function setLive(on, why) {
    live = on;
    liveBadge.textContent = on ? 'live' : 'polling';
    liveBadge.title = on ? 'Updated every second' : `Refreshed every few seconds${why ? ` (live view unavailable: ${why})` : ''}`;
  }

  const cpu = (r) => (r ? formatDuration(Number(r.cpu_seconds || 0)) : '—');
  const mem = (r) => (r ? formatBytes(Number(r.rss_bytes || 0)) : '—');
  const count = (r, k) => (r && r[k] !== undefined ? num(r[k]) : '—');

  function renderProcesses(queueProc, apiProc) {
    const rows = [['queue server', queueProc], ['API (this one)', apiProc]].filter(([, r]) => r);
    setChildren(procBox, h('h2', { id: 'processes-title' }, 'Processes'),
      rows.length ? h('table.mini', { 'aria-label': 'Resource usage of the queue and the API' },
        h('thead', null, h('tr', null, ['process', 'CPU time', 'memory', 'threads', 'open files'].map((c, i) => h(`th${i ? '.num' : ''}`, { scope: 'col' }, c)))),
        h('tbody', null, rows.map(([name, r]) => h('tr', null, h('td', null, name), h('td.num', null, cpu(r)), h('td.num', null, mem(r)), h('td.num', null, count(r, 'threads')), h('td.num', null, count(r, 'open_files'))))))
        : h('p.muted', null, 'Not reported.'));
  }

  // running: jobs running now (the API's count); totals.* are lifetime event counters, never a current state
  function renderStats(s, info) {
    const running = info && typeof info.running_jobs === 'number' ? info.running_jobs : s.reserved;
    setChildren(statsBox,
      stat('waiting', num(s.queue_depth), 'Jobs ready or delayed in the queue'),
      stat('running', num(running), `Jobs running now (held by workers in the queue: ${num(s.reserved)})`),
      stat('workers', num(s.active_workers)),
      stat('jobs / min', num((s.processing_rate || 0) * 60, 1), 'Finished per minute, recent average'),
      stat('avg wait', formatDuration(s.average_wait_time), 'Average time from queued to started'),
      stat('dead letters', num(s.totals?.dead ?? s.dead ?? s.buried ?? 0)));
    setChildren(barsBox, h('h2', { id: 'bars-title' }, 'Waiting by priority'), priorityBars(s.priority_distribution || {}));
    const queues = s.queues && typeof s.queues === 'object' ? Object.entries(s.queues) : [];
    setChildren(queuesBox, h('h2', { id: 'queues-title' }, 'Queues'),
      queues.length ? h('table.mini', null, h('thead', null, h('tr', null, ['queue', 'ready', 'delayed', 'reserved', 'dead'].map((c, i) => h(`th${i ? '.num' : ''}`, { scope: 'col' }, c)))),
        h('tbody', null, queues.map(([name, q]) => h('tr', null, h('td', null, h('code', null, name)), ['ready', 'delayed', 'reserved', 'dead'].map((k) => h('td.num', null, num(q?.[k] ?? 0)))))))
        : h('p.muted', null, 'No queue has held a job yet.'));
  }

  function renderWorkers(workers) {
    setChildren(workersBox, h('h2', { id: 'workers-title' }, `Workers (${workers.length})`),
      workers.length ? h('div.table-wrap', null, h('table.mini', { 'aria-label': 'Workers' }, h('thead', null, h('tr', null, ['worker', 'host', 'heartbeat', 'running', 'CPU time', 'memory', 'threads', 'SSH', 'done', 'failed'].map((c, i) => h(`th${i > 3 ? '.num' : ''}`, { scope: 'col' }, c)))),
        h('tbody', null, workers.map((w) => {
          const age = Number(w.heartbeat_age ?? (w.last_heartbeat ? Date.now() / 1000 - w.last_heartbeat : NaN));
          const jobs = w.jobs || w.running_jobs || [];
          const running = Array.isArray(jobs) ? jobs : [];
          const res = w.resources || null;
          const active = typeof w.active === 'boolean' ? w.active : age <= 30;
          return h('tr', null, h('td', null, h('code', null, w.id)), h('td', null, w.host || '—'),
            h('td', null, h(`span.${active ? 'ok' : 'err'}`, { title: w.last_heartbeat ? new Date(w.last_heartbeat * 1000).toLocaleString() : '' }, Number.isNaN(age) ? '—' : `${formatDuration(age)} ago`)),
            h('td', null, `${running.length || w.running || 0} / ${w.concurrency ?? '?'}`, running.length ? h('div.small', null, running.slice(0, 5).map((id) => h('a', { href: `#/jobs?job=${id}`, onclick: (e) => { e.preventDefault(); showJob(id); } }, id.slice(0, 8))).flatMap((a, i) => (i ? [' ', a] : [a]))) : null),
            h('td.num', null, cpu(res)), h('td.num', null, mem(res)), h('td.num', null, count(res, 'threads')), h('td.num', null, count(res, 'ssh_connections')),
            h('td.num', null, num(w.done ?? w.jobs_done ?? 0)), h('td.num', null, num(w.failed ?? w.jobs_failed ?? 0)));
        }))))
        : emptyState('No workers connected', 'Jobs wait in the queue until a worker takes them. Start one with `remora worker` (or run everything with `remora up`).'));
  }

  function renderDlq(items) {
    const kickAll = h('button.btn.small', { type: 'button', dataset: { write: '' }, onclick: () => kick(null) }, 'Kick all');
    setChildren(dlqBox, h('div.card-head', null, h('h2', { id: 'dlq-title' }, `Dead letters (${items.length})`), h('span.spacer'), items.length ? kickAll : null),
      items.length ? h('div.table-wrap', null, h('table.mini', { 'aria-label': 'Dead-letter queue' }, h('thead', null, h('tr', null, ['job', 'queue', 'priority', 'attempts', 'reason', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, items.map((d) => h('tr', null,
          h('td', null, h('a', { href: `#/jobs?job=${d.id}` }, h('code', null, d.id.slice(0, 8)))), h('td', null, d.queue), h('td.num', null, d.priority), h('td.num', null, d.attempt ?? d.attempts ?? '—'),
          h('td', null, d.reason || '—'),
          h('td', null, h('button.btn.small', { type: 'button', dataset: { write: '' }, onclick: () => kick(d.id), 'aria-label': `Kick job ${d.id} back into the queue` }, 'Kick')))))))
        : emptyState('No dead letters', 'A job lands here when its retries ran out or the workers holding it died too many times; kick it to queue a fresh attempt.'));
  }

  async function kick(id) {
    if (!id && !(await confirmDialog('Kick every dead letter?', 'All of them go back into their queues.', { confirmLabel: 'Kick all' }))) return;
    try {
      if (id) await post(`queue/dlq/${id}/kick`);
      else {
        const items = (await get('queue/dlq')).jobs || [];
        for (const d of items) await post(`queue/dlq/${d.id}/kick`);
      }
      toast('Requeued.', 'ok');
    } catch (err) { toast(err.message, 'error'); }
    refresher.now();
  }

  // the live stream: queue stats, workers and process figures every second
  function onMonitor(data) {
    if (data.queue_error) {
      banner.hidden = false;
      banner.textContent = `The queue is unavailable: ${data.queue_error}`;
      return;
    }
    banner.hidden = true;
    renderStats(data.stats || {}, lastInfo);
    renderWorkers(Array.isArray(data.workers) ? data.workers : []);
    renderProcesses(data.stats?.process, data.api?.process);
  }

  const stop = new AbortController();
  async function follow() {
    while (!stop.signal.aborted) {
      try {
        await streamEvents('queue/monitor', (kind, data) => {
          if (kind !== 'monitor') return;
          if (!live) setLive(true);
          onMonitor(data);
        }, { signal: stop.signal });
        setLive(false); // ended (the API closes a stream after a few minutes): open a new one at once
      } catch (err) {
        if (stop.signal.aborted || err.name === 'AbortError') return;
        setLive(false, err.message);
        await new Promise((resolve) => { setTimeout(resolve, 5000); });
        continue;
      }
      await new Promise((resolve) => { setTimeout(resolve, 200); });
    }
  }

  async function load() {
    const wanted = live ? [get('queue/dlq'), get('system/info')] : [get('queue/dlq'), get('system/info'), get('queue/stats'), get('workers/stats')];
    const [dlq, info, stats, workers] = await Promise.allSettled(wanted);
    const failed = [dlq, info, stats, workers].find((r) => r && r.status === 'rejected');
    if (info.status === 'fulfilled') lastInfo = info.value;
    if (!live) {
      banner.hidden = !failed;
      if (failed) banner.textContent = `Some queue data is unavailable: ${failed.reason.message}`;
      if (stats.status === 'fulfilled') {
        renderStats(stats.value || {}, lastInfo);
        renderProcesses(stats.value?.process, null);
      }
      if (workers.status === 'fulfilled') renderWorkers(Array.isArray(workers.value) ? workers.value : workers.value.workers || []);
    }
    if (dlq.status === 'fulfilled') renderDlq(Array.isArray(dlq.value) ? dlq.value : dlq.value.jobs || dlq.value.items || []);
  }
  const refresher = poll(load, 3000);
  follow();
  return { unmount() { stop.abort(); refresher.stop(); } };
}
