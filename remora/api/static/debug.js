// Debug panel (admin tokens): GET /api/v1/debug — version, configuration with sources (secrets masked), database,
// queue, workers, the API's last requests and errors. The same report: `remora debug dump --json`.
import { get, session, detectRole } from './api.js';
import { h, setChildren, formatBytes, formatDuration, emptyState } from './util.js';

function kv(rows) {
  return h('dl.meta', null, rows.map(([k, v, id]) => h('div.meta-item', null, h('dt', null, k), h('dd', { id }, v ?? '—'))));
}

function table(label, headers, rows, id) {
  return h('div.table-wrap', null, h('table.mini', { 'aria-label': label, id },
    h('thead', null, h('tr', null, headers.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, rows.map((r) => h('tr', null, r.map((c) => h('td', null, c ?? '—')))))));
}

function when(at) {
  return at ? new Date(at * 1000).toLocaleTimeString() : '—';
}

export function mount(main) {
  const body = h('div', { id: 'debug-body' }, h('p.muted', null, 'Loading…'));
  const refresh = h('button.btn.small', { type: 'button', id: 'debug-refresh' }, 'Refresh');
  main.append(h('div.page-head', null, h('h1', null, 'Debug'), h('span.spacer'), refresh),
    h('p.muted.small', null, 'For bug reports: the same report is `remora debug dump --json`. Secrets are masked.'), body);
  let stopped = false;

  function render(d) {
    const b = d.build || {};
    const db = d.database || {};
    const q = d.queue || {};
    const cfg = d.config || {};
    const workers = d.workers;
    setChildren(body,
      h('section.card', { id: 'debug-build', 'aria-labelledby': 'dbg-build' }, h('h2', { id: 'dbg-build' }, 'Version and build'),
        kv([['Version', b.version, 'debug-version'], ['Commit', b.commit || 'unknown'], ['Python', b.python], ['Platform', b.platform], ['API process', b.pid]])),
      h('section.card', { id: 'debug-database', 'aria-labelledby': 'dbg-db' }, h('h2', { id: 'dbg-db' }, 'Database'),
        kv([['Kind', db.kind, 'debug-db-kind'], ['Size', db.size_bytes == null ? (db.size_error || '—') : formatBytes(db.size_bytes)],
          ['Schema version', `${db.schema_version ?? '—'} (this release: ${db.schema_version_expected ?? '—'})`]]),
        table('Rows per table', ['table', 'rows'], Object.entries(db.rows || {}), 'debug-rows')),
      h('section.card', { id: 'debug-queue', 'aria-labelledby': 'dbg-q' }, h('h2', { id: 'dbg-q' }, 'Queue'),
        q.available ? [
          kv([['Waiting', q.depth], ['Held by workers', q.reserved], ['Dead letters', q.dead], ['Connections', q.connections, 'debug-connections'],
            ['WAL size', q.wal_bytes == null ? (q.persistence === false ? 'no log (memory only)' : '—') : formatBytes(q.wal_bytes)],
            ['fsync', q.fsync, 'debug-fsync'], ['Uptime', formatDuration(q.uptime_seconds)]]),
          table('Waiting per priority', ['priority', 'waiting'], Object.entries(q.depth_per_priority || {}), 'debug-priorities'),
        ] : h('p.err', null, 'The queue is unavailable.')),
      h('section.card', { id: 'debug-workers', 'aria-labelledby': 'dbg-w' }, h('h2', { id: 'dbg-w' }, `Workers (${workers ? workers.length : '?'})`),
        workers == null ? h('p.err', null, 'Unknown: the queue is unavailable.')
          : workers.length ? table('Workers', ['worker', 'host', 'threads', 'held jobs', 'pool connections', 'heartbeat'],
            workers.map((w) => [h('code', null, w.id), w.host, w.threads, (w.held_jobs || []).length ? (w.held_jobs || []).map((id) => id.slice(0, 8)).join(' ') : '0',
              typeof w.pool_connections === 'number' ? w.pool_connections : h('span.muted', null, w.pool_connections || 'not reported by the worker'),
              w.heartbeat_age == null ? '—' : `${formatDuration(w.heartbeat_age)} ago`]), 'debug-workers-table')
            : emptyState('No workers', 'No worker is registered with the queue.')),
      h('section.card', { id: 'debug-errors', 'aria-labelledby': 'dbg-e' }, h('h2', { id: 'dbg-e' }, `Last errors (${(d.errors || []).length})`),
        (d.errors || []).length ? table('Last errors', ['time', 'status', 'request', 'code', 'message', 'request id'],
          d.errors.map((e) => [when(e.at), e.status, `${e.method} ${e.path}`, e.code, e.error, h('code', null, e.request_id)]), 'debug-errors-table')
          : h('p.muted', null, 'No error answers since the API started.')),
      h('section.card', { id: 'debug-requests', 'aria-labelledby': 'dbg-r' }, h('h2', { id: 'dbg-r' }, `Last ${(d.requests || []).length} API requests`),
        table('Recent requests', ['time', 'method', 'path', 'status', 'ms', 'who', 'request id'],
          (d.requests || []).map((r) => [when(r.at), r.method, r.path, h(`span.${r.status >= 400 ? 'err' : 'ok'}`, null, String(r.status)), r.ms, r.actor, h('code', null, r.request_id)]),
          'debug-requests-table')),
      h('section.card', { id: 'debug-config', 'aria-labelledby': 'dbg-c' }, h('h2', { id: 'dbg-c' }, 'Effective configuration'),
        h('p.muted.small', null, `Config file: ${cfg.config_file || '(none)'}; .env: ${cfg.dotenv_file || '(none)'}`),
        table('Configuration', ['key', 'value', 'source'],
          Object.entries(cfg.keys || {}).map(([k, v]) => [h('code', null, k), h('code', null, JSON.stringify(v.value)), v.source]), 'debug-config-table')));
  }

  async function load() {
    if (!session.role) await detectRole();
    if (stopped) return;
    if (session.role !== 'admin') {
      setChildren(body, emptyState('Admins only', 'The debug panel shows the configuration and recent requests: it needs an admin token.'));
      refresh.hidden = true;
      return;
    }
    try {
      render(await get('debug'));
    } catch (err) {
      setChildren(body, h('div.banner.error', { role: 'alert' }, `Cannot load the debug report: ${err.message}`));
    }
  }
  refresh.addEventListener('click', load);
  load();
  return { unmount() { stopped = true; } };
}
