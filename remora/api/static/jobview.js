// Live job view (side panel): status, timings, logs in three tabs. A running job's output comes from the
// change feed (one stream, output events in the order the job wrote them); a finished job's, or an API's
// without live output, from the incremental logs endpoint.
import { get, getBlob, post, streamEvents } from './api.js';
import { clearPanelParam, showJob } from './app.js';
import { jobAction, rowActions } from './jobs.js';
import { LogView, utf8Length } from './logview.js';
import { openPanel } from './overlay.js';
import {
  h, setText, setChildren, timeEl, jobDuration, formatDuration, formatBytes, jobCommandText, statusBadge, FINISHED, saveBlob, toast,
  priorityLabel,
} from './util.js';

const INITIAL_TAIL_BYTES = 512 * 1024;
const LOG_POLL_MS = 500;
const META_POLL_MS = 1000;

function metaRow(label, value, id) {
  return h('div.meta-item', null, h('dt', null, label), h('dd', { id }, value));
}

export function openJobView(id) {
  const title = h('h2.panel-title', { id: 'jv-title' }, 'Job');
  const badge = h('span', { id: 'jv-status' });
  const meta = h('dl.meta', { id: 'jv-meta' });
  const actions = h('div.panel-actions');
  // Re-prioritise a queued job: it moves in the queue at once (kept outside the meta, which re-renders every second).
  const prioSel = h('select', { id: 'jv-priority', 'aria-label': 'Priority of this queued job', dataset: { write: '' } },
    Array.from({ length: 10 }, (_, i) => h('option', { value: String(i + 1) }, priorityLabel(i + 1))));
  const prioBox = h('div.panel-actions', { id: 'jv-priority-box', hidden: true },
    h('label.muted.small', { for: 'jv-priority' }, 'Queued: change its priority'), prioSel);
  const errorBox = h('div.banner.error', { id: 'jv-error', hidden: true });
  const closeBtn = h('button.icon-btn', { type: 'button', 'aria-label': 'Close job view (Esc)' }, '✕');
  const tabs = ['combined', 'stdout', 'stderr'];
  const tabBtns = Object.fromEntries(tabs.map((t) => [t, h('button.tab', { type: 'button', role: 'tab', id: `tab-${t}`, dataset: { tab: t }, 'aria-controls': 'log-box' }, t === 'combined' ? 'Combined' : t)]));
  const tablist = h('div.tabs', { role: 'tablist', 'aria-label': 'Output streams' }, Object.values(tabBtns));
  const pres = Object.fromEntries(tabs.map((t) => [t, h('pre.log', { dataset: { stream: t }, hidden: t !== 'combined' })]));
  const logBox = h('div.log-box', { id: 'log-box', role: 'tabpanel', tabindex: '0', 'aria-live': 'off', 'aria-label': 'Job output' }, Object.values(pres));
  const jumpBtn = h('button.btn.jump', { type: 'button', id: 'jump-end', hidden: true }, '↓ Jump to end');
  const logNote = h('p.muted.small', { id: 'jv-lognote' });
  const placeholder = h('p.muted.log-empty', { id: 'jv-nooutput' }, 'No output yet.');

  const content = h('div.panel-inner', null,
    h('div.panel-head', null, badge, title, closeBtn),
    errorBox, meta, prioBox, actions,
    h('div.log-head', null, tablist, h('span.spacer'), h('span.muted.small', { id: 'jv-bytes' })),
    h('div.log-wrap', null, logBox, placeholder, jumpBtn),
    logNote);

  let active = 'combined';
  let stopped = false;
  let job = null;
  let offsets = { stdout: 0, stderr: 0 };
  let logTimer = null;
  let feed = null; // AbortController of the output stream while it runs
  let metaTimer = null;
  let tickTimer = null;
  const trimmedNote = () => setText(logNote, 'Older lines were dropped from this view to keep it fast; use Download for the full output.');
  const views = Object.fromEntries(tabs.map((t) => [t, new LogView(pres[t], { onTrim: trimmedNote })]));
  for (const v of Object.values(views)) v.scroller = logBox;

  const panel = openPanel({
    id: 'job-view',
    label: 'Job details and output',
    content,
    onClose: () => {
      stopped = true;
      feed?.abort();
      clearTimeout(logTimer);
      clearTimeout(metaTimer);
      clearInterval(tickTimer);
      clearPanelParam();
    },
  });
  closeBtn.addEventListener('click', panel.close);
  prioSel.addEventListener('change', async () => {
    const priority = Number(prioSel.value);
    try {
      job = await post(`jobs/${id}/priority`, { priority });
      toast(`Priority ${priority}: the job took its new place in the queue`);
      renderMeta();
    } catch (err) {
      toast(`Priority not changed: ${err.message}`, 'error');
      if (job) prioSel.value = String(job.priority);
    }
  });

  function selectTab(t) {
    active = t;
    for (const [name, btn] of Object.entries(tabBtns)) {
      btn.setAttribute('aria-selected', String(name === t));
      btn.tabIndex = name === t ? 0 : -1;
      pres[name].hidden = name !== t;
    }
    placeholder.hidden = !views[t].isEmpty;
    const v = views[t];
    v.follow = true;
    jumpBtn.hidden = true;
    logBox.scrollTop = logBox.scrollHeight;
  }
  tablist.addEventListener('click', (e) => { const b = e.target.closest('[data-tab]'); if (b) selectTab(b.dataset.tab); });
  tablist.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const i = tabs.indexOf(active);
    const next = tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
    selectTab(next);
    tabBtns[next].focus();
  });
  selectTab('combined');

  logBox.addEventListener('scroll', () => {
    const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 24;
    for (const v of Object.values(views)) v.follow = atBottom;
    jumpBtn.hidden = atBottom;
  });
  jumpBtn.addEventListener('click', () => {
    for (const v of Object.values(views)) v.follow = true;
    logBox.scrollTop = logBox.scrollHeight;
    jumpBtn.hidden = true;
  });

  function renderMeta() {
    setText(title, jobCommandText(job) || 'Job');
    title.title = job.script || jobCommandText(job);
    setChildren(badge, statusBadge(job.status));
    const exit = job.exit_code ?? '—';
    setChildren(meta,
      metaRow('Server', job.server ? `${job.server.name} (${job.server.hostname})` : job.server_id),
      metaRow('Exit code', exit, 'jv-exit'),
      metaRow('Attempts', `${job.attempts ?? 0}${job.retries ? ` (retries allowed: ${job.retries})` : ''}`),
      metaRow('Priority', `${job.priority} ${job.priority === 1 ? '(highest)' : job.priority === 10 ? '(lowest)' : ''}`),
      metaRow('Created', timeEl(job.created_at)),
      job.run_at ? metaRow('Run at', timeEl(job.run_at), 'jv-run-at') : null,
      metaRow('Started', timeEl(job.started_at)),
      metaRow('Finished', timeEl(job.finished_at)),
      metaRow('Duration', formatDuration(jobDuration(job)), 'jv-duration'),
      metaRow('Timeout', `${job.timeout} s`),
      metaRow('Worker', job.worker || '—'),
      job.batch_id ? metaRow('Batch', h('a', { href: `#/batches?id=${job.batch_id}` }, job.batch_id.slice(0, 8))) : null,
      metaRow('Job id', h('code.small', null, job.id)),
      job.script ? h('div.meta-item.full', null, h('dt', null, 'Script'), h('dd', null, h('pre.script', null, job.script))) : null,
      job.script_hidden ? metaRow('Script', 'hidden: operators and admins see script bodies', 'jv-script') : null,
      // secret-looking values arrive as *** (stored encrypted; the job gets the real value)
      job.env && Object.keys(job.env).length
        ? h('div.meta-item.full', null, h('dt', null, 'Environment'),
          h('dd', null, h('pre.script', { id: 'jv-env' }, Object.entries(job.env).map(([k, v]) => `${k}=${v}`).join('\n'))))
        : null);
    prioBox.hidden = job.status !== 'queued';
    if (document.activeElement !== prioSel) prioSel.value = String(job.priority);
    errorBox.hidden = !job.error;
    setText(errorBox, job.error ? `Error: ${job.error}` : '');
    setText(content.querySelector('#jv-bytes'), `stdout ${formatBytes(job.stdout_bytes)} · stderr ${formatBytes(job.stderr_bytes)}`);
    setChildren(actions,
      rowActions(job).map(([action, label, tip]) => h('button.btn.small', {
        type: 'button', title: tip, dataset: { write: '' },
        onclick: async () => { const res = await jobAction(action, job); if (res?.new_job) showJob(res.new_job.id); else if (res) refreshMeta(); },
      }, label)),
      h('button.btn.small', { type: 'button', onclick: () => download('stdout') }, '⤓ stdout'),
      h('button.btn.small', { type: 'button', onclick: () => download('stderr') }, '⤓ stderr'));
  }

  async function download(stream) {
    try {
      const blob = await getBlob(`jobs/${id}/${stream}`);
      saveBlob(blob, `job-${id.slice(0, 8)}.${stream}.txt`);
    } catch (err) { toast(`Download failed: ${err.message}`, 'error'); }
  }

  async function refreshMeta() {
    if (stopped) return;
    try {
      job = await get(`jobs/${id}`, { output: 'false' }); // output comes from the incremental logs endpoint
      renderMeta();
    } catch (err) {
      if (err.status === 404) { setChildren(content, h('div.empty', null, h('h3', null, 'Job not found'), h('p', null, 'It may have been deleted with its server.'), closeBtn)); stopped = true; return; }
      errorBox.hidden = false;
      setText(errorBox, `Cannot refresh: ${err.message}`);
    }
    if (!stopped && !FINISHED.has(job?.status)) metaTimer = setTimeout(refreshMeta, document.hidden ? 5000 : META_POLL_MS);
  }

  function addOutput(stream, text, combined = true) {
    if (!text) return;
    views[stream].append(text);
    if (combined) views.combined.append(text, stream === 'stderr' ? 'err' : '');
    placeholder.hidden = !views[active].isEmpty;
  }

  // The combined view follows the order the job wrote (the API's pieces), not stdout then stderr.
  function addCombined(pieces) {
    for (const p of pieces) if (p.text) views.combined.append(p.text, p.stream === 'stderr' ? 'err' : '');
    placeholder.hidden = !views[active].isEmpty;
  }

  async function pollLogs() {
    if (stopped) return;
    let complete = false;
    let behind = false;
    try {
      const data = await get(`jobs/${id}/logs`, { stdout_offset: offsets.stdout, stderr_offset: offsets.stderr });
      const ordered = Array.isArray(data.pieces);
      if (ordered) addCombined(data.pieces);
      for (const stream of ['stdout', 'stderr']) {
        const text = data[stream] || '';
        addOutput(stream, text, !ordered);
        const next = data[`next_${stream}_offset`];
        offsets[stream] = typeof next === 'number' ? next : offsets[stream] + utf8Length(text);
      }
      complete = data.complete === true || (FINISHED.has(data.status) && !data.stdout && !data.stderr);
      const m = data.metadata || {};
      behind = offsets.stdout < (m.stdout_length || 0) || offsets.stderr < (m.stderr_length || 0);
    } catch (err) {
      if (err.status === 404 || err.status === 401) return;
    }
    if (complete) {
      if (FINISHED.has(job?.status) === false) refreshMeta();
      if (views[active].isEmpty) setText(placeholder, 'This job printed nothing.');
      return;
    }
    // Still behind (a slice limit or a fast job): fetch the rest at once.
    if (!stopped) logTimer = setTimeout(pollLogs, behind ? 0 : document.hidden ? 3000 : LOG_POLL_MS);
  }

  function outputText(event, decoders) {
    if (event.encoding !== 'base64') return event.data;
    const bytes = Uint8Array.from(atob(event.data), (c) => c.charCodeAt(0));
    return decoders[event.stream].decode(bytes, { stream: true });
  }

  // Follow the job's output on the change feed from `offsets` (the cursor names the job's place in each
  // stream: change 0, then the first 12 hex digits of its id and the two offsets). Its final status comes
  // after all its output. An API without live output, or a stream that breaks, falls back to pollLogs.
  async function followOutput() {
    const stop = new AbortController();
    feed = stop;
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    let cursor = `0~${id.replace(/-/g, '').slice(0, 12)}:${offsets.stdout}:${offsets.stderr}`;
    let supported = false;
    let ended = false;
    while (!stopped && !ended) {
      try {
        await streamEvents(`events?${new URLSearchParams({ job_id: id, output: 'true', cursor })}`, (kind, data) => {
          if (kind === 'ready') { supported = data?.output === true; if (!supported) stop.abort(); return; }
          if (kind === 'end') { if (data?.cursor) cursor = data.cursor; return; }
          if (kind !== 'events' || !data) return;
          cursor = data.cursor;
          for (const event of data.events || []) {
            if (event.kind === 'output' && event.offset === offsets[event.stream]) {
              addOutput(event.stream, outputText(event, decoders));
              offsets[event.stream] += event.length;
            } else if (event.kind === 'job' && FINISHED.has(event.status)) {
              ended = true;
            }
          }
          if (ended) stop.abort();
        }, { signal: stop.signal });
      } catch (err) {
        if (!ended && !stopped) break;
      }
      if (!supported) break;
    }
    feed = null;
    if (stopped) return;
    if (!ended) { pollLogs(); return; }
    refreshMeta();
    if (views[active].isEmpty) setText(placeholder, 'This job printed nothing.');
  }

  tickTimer = setInterval(() => { if (job?.status === 'running') setText(content.querySelector('#jv-duration'), formatDuration(jobDuration(job))); }, 1000);

  (async () => {
    await refreshMeta();
    if (!job || stopped) return;
    // Very long logs: start near the end; the full text is one download away.
    for (const stream of ['stdout', 'stderr']) {
      const size = job[`${stream}_bytes`] || 0;
      if (size > INITIAL_TAIL_BYTES) {
        offsets[stream] = size - INITIAL_TAIL_BYTES;
        setText(logNote, `Showing the last ${formatBytes(INITIAL_TAIL_BYTES)} of each stream; use Download for the full output.`);
      }
    }
    if (FINISHED.has(job.status)) pollLogs();
    else followOutput();
  })();
  return panel;
}
