// Overview: totals by status, success rate, jobs per minute (SVG), recent failures.
import { get } from './api.js';
import { showJob, newJob } from './app.js';
import { h, setChildren, poll, timeEl, jobCommandText, parseTime, emptyState, STATUSES } from './util.js';
import { stat } from './queue.js';

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

/** Bars per minute for the last hour, stacked by outcome; drawn with plain SVG. */
export function minuteChart(buckets) {
  const W = 1000;
  const H = 150;
  const pad = { l: 30, b: 18, t: 6 };
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const bw = (W - pad.l) / Math.max(1, buckets.length);
  const y = (n) => ((H - pad.b - pad.t) * n) / max;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `Jobs finished per minute over the last hour; peak ${max} per minute` });
  for (const frac of [0, 0.5, 1]) {
    const yy = H - pad.b - (H - pad.b - pad.t) * frac;
    root.append(svg('line', { x1: pad.l, x2: W, y1: yy, y2: yy, class: 'grid' }));
    root.append(svg('text', { x: pad.l - 4, y: yy + 3, class: 'axis', 'text-anchor': 'end' }, document.createTextNode(String(Math.round(max * frac)))));
  }
  buckets.forEach((b, i) => {
    let base = H - pad.b;
    const x = pad.l + i * bw + 1;
    for (const [key, cls] of [['completed', 'c-ok'], ['failed', 'c-bad'], ['other', 'c-other']]) {
      const hh = y(b[key]);
      if (!hh) continue;
      base -= hh;
      const rect = svg('rect', { x, y: base, width: Math.max(1, bw - 2), height: hh, class: cls });
      rect.append(svg('title', null, document.createTextNode(`${b.label}: ${b.total} finished (${b.completed} completed, ${b.failed} failed, ${b.other} canceled)`)));
      root.append(rect);
    }
  });
  const n = buckets.length;
  const half = Math.floor(n / 2);
  for (const [i, label] of [[0, `-${n} min`], [half, `-${n - half} min`], [n - 1, 'now']]) {
    root.append(svg('text', { x: pad.l + i * bw + bw / 2, y: H - 4, class: 'axis', 'text-anchor': i === n - 1 ? 'end' : i ? 'middle' : 'start' }, document.createTextNode(label)));
  }
  return root;
}

/** The API's per-minute counts (oldest first) as chart buckets. */
export function toBuckets(minutes) {
  return minutes.map((m) => {
    const completed = Number(m.completed || 0);
    const failed = Number(m.failed || 0);
    const other = Number(m.canceled || 0);
    const at = parseTime(m.t);
    return {
      completed, failed, other, total: completed + failed + other,
      label: at === null ? m.t : new Date(at).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' }),
    };
  });
}

export function mount(main) {
  const stats = h('div.stats', { id: 'overview-stats' });
  const chartBox = h('section.card', { 'aria-labelledby': 'chart-title' });
  const failBox = h('section.card', { id: 'recent-failures', 'aria-labelledby': 'fail-title' });
  const banner = h('div.banner.error', { role: 'alert', hidden: true });
  main.append(h('div.page-head', null, h('h1', null, 'Overview')), banner, stats, chartBox, failBox);

  async function load() {
    let info;
    try {
      info = await get('system/info');
      banner.hidden = true;
    } catch (err) {
      if (err.status === 401) return;
      banner.hidden = false;
      banner.textContent = `Cannot load: ${err.message}`;
      return;
    }
    const rate = Number(info.success_rate || 0);
    setChildren(stats,
      stat('total jobs', Number(info.total_jobs || 0).toLocaleString()),
      STATUSES.map((s) => h('a.stat-link', { href: `#/jobs?status=${s}`, 'aria-label': `${info[`${s}_jobs`] || 0} ${s} jobs` }, stat(s, Number(info[`${s}_jobs`] || 0).toLocaleString()))),
      stat('success rate', `${rate.toFixed(1)}%`, 'completed / (completed + failed)'),
      stat('servers', Number(info.total_servers || 0).toLocaleString()));
    if (!info.total_jobs) {
      setChildren(chartBox, emptyState('Welcome to Remora',
        '1. Add a server under Servers (or use the built-in "local" one).',
        '2. Press n (or "+ New job") to run a command on it.',
        '3. Watch its output live; everything shows up here.',
        h('button.btn.primary', { type: 'button', onclick: () => newJob() }, 'Run a command')));
      failBox.hidden = true;
      return;
    }
    failBox.hidden = false;
    try {
      const [timeline, failed] = await Promise.all([get('system/timeline', { minutes: 60 }), get('jobs', { status: 'failed', limit: 5, sort_by: 'created_at', sort_order: 'desc' })]);
      const buckets = toBuckets(timeline.minutes || []);
      const total = buckets.reduce((n, b) => n + b.total, 0);
      setChildren(chartBox, h('div.card-head', null, h('h2', { id: 'chart-title' }, 'Jobs finished per minute, last hour'), h('span.spacer'),
        h('span.muted.small', { id: 'chart-total' }, `${total.toLocaleString()} jobs`)),
      minuteChart(buckets),
      h('div.legend', null, h('span.key.c-ok', null, 'completed'), h('span.key.c-bad', null, 'failed'), h('span.key.c-other', null, 'canceled')));
      const items = failed.jobs || [];
      setChildren(failBox, h('h2', { id: 'fail-title' }, 'Recent failures'),
        items.length ? h('ul.fail-list', null, items.map((j) => h('li', null,
          h('button.cmd-link', { type: 'button', onclick: () => showJob(j.id) }, h('code', null, jobCommandText(j))),
          h('span.muted', null, ` on ${j.server?.name || '?'} · `), timeEl(j.finished_at || j.created_at),
          h('div.small.err', null, j.error || (j.exit_code !== null && j.exit_code !== undefined ? `exit code ${j.exit_code}` : '')))))
          : h('p.muted', null, 'No failed jobs. 🎉'),
        items.length ? h('a', { href: '#/jobs?status=failed' }, 'All failed jobs →') : null);
    } catch (err) {
      if (err.status !== 401) { banner.hidden = false; banner.textContent = `Cannot load recent jobs: ${err.message}`; }
    }
  }
  const refresher = poll(load, 10000);
  return { unmount() { refresher.stop(); } };
}
