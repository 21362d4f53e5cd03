// New-job form: command or script, one or many servers (tags select groups), priority, timeout.
import { get, post } from './api.js';
import { showJob, showBatch } from './app.js';
import { openModal } from './overlay.js';
import { h, setChildren, setText, toast } from './util.js';

const DEFAULT_SHELLS = ['/bin/bash', '/bin/sh', '/usr/bin/zsh'];
const LIMIT = /^\s*(\d{1,9})\s*(%?)\s*$/;

/**
 * A rollout limit as the API takes it (N, or "P%" of the hosts), or an error message; the same rules
 * as the API's: concurrency at least 1 (1% to 100%), max failures at least 0 (0% to 100%).
 */
export function parseRolloutLimit(raw, minimum) {
  const text = String(raw ?? '').trim();
  if (!text) return { value: null };
  const m = LIMIT.exec(text);
  if (!m) return { error: 'Enter a number or a percentage like 25%.' };
  const n = Number(m[1]);
  if (m[2]) {
    const low = minimum === 0 ? 0 : 1;
    if (n < low || n > 100) return { error: `Enter a percentage between ${low}% and 100%.` };
    return { value: `${n}%` };
  }
  if (n < minimum) return { error: `Enter at least ${minimum}.` };
  return { value: n };
}
const INDENT = '  ';

function field(id, label, control, hint) {
  const err = h('p.field-error', { id: `${id}-error`, role: 'alert' });
  control.id = id;
  control.setAttribute('aria-describedby', `${id}-error${hint ? ` ${id}-hint` : ''}`);
  return h('div.field', { dataset: { field: id } }, h('label', { for: id }, label), control, hint ? h('p.hint', { id: `${id}-hint` }, hint) : null, err);
}

/** Tab / Shift+Tab indent and dedent lines in a textarea; Ctrl+M lets Tab move focus instead. */
export function enableTabIndent(textarea) {
  let tabMovesFocus = false;
  textarea.addEventListener('keydown', (e) => {
    if (e.key === 'm' && e.ctrlKey) { tabMovesFocus = !tabMovesFocus; toast(tabMovesFocus ? 'Tab now moves focus (Ctrl+M to indent again)' : 'Tab now indents', 'info', 2000); e.preventDefault(); return; }
    if (e.key !== 'Tab' || tabMovesFocus) return;
    e.preventDefault();
    const { value, selectionStart: start, selectionEnd: end } = textarea;
    const lineStart = value.lastIndexOf('\n', start - 1) + 1;
    if (!e.shiftKey && start === end) {
      textarea.setRangeText(INDENT, start, end, 'end');
    } else {
      const block = value.slice(lineStart, end);
      const lines = block.split('\n');
      const changed = lines.map((l) => (e.shiftKey ? l.replace(new RegExp(`^( {1,${INDENT.length}}|\\t)`), '') : INDENT + l)).join('\n');
      textarea.setRangeText(changed, lineStart, end, 'select');
    }
    textarea.dispatchEvent(new Event('input'));
  });
}

let limitsCache = null;
/** What the API accepts: allowed shells and the timeout range (from system/info; cached per page load). */
async function submitLimits() {
  if (limitsCache) return limitsCache;
  try {
    const info = await get('system/info');
    if (Array.isArray(info.allowed_shells) && info.allowed_shells.length) {
      limitsCache = { shells: info.allowed_shells, maxTimeout: Number(info.max_timeout) || null, defaultTimeout: Number(info.default_timeout) || 300 };
    }
  } catch { /* fall back below; the API still validates */ }
  return limitsCache || { shells: DEFAULT_SHELLS, maxTimeout: null, defaultTimeout: 300 };
}

export async function openExecute(prefill = null) {
  const modeCommand = h('input', { type: 'radio', name: 'mode', value: 'command', id: 'mode-command', checked: true });
  const modeScript = h('input', { type: 'radio', name: 'mode', value: 'script', id: 'mode-script' });
  const command = h('input', { type: 'text', name: 'command', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. uptime, df -h, systemctl status nginx' });
  const args = h('input', { type: 'text', name: 'args', autocomplete: 'off', spellcheck: 'false', placeholder: 'optional, e.g. -la /var/log' });
  const script = h('textarea', { name: 'script', rows: 8, spellcheck: 'false', placeholder: '#!/bin/bash\nset -e\necho "hello from $(hostname)"' });
  enableTabIndent(script);
  const shell = h('select', { name: 'shell' });
  const priority = h('select', { name: 'priority' }, Array.from({ length: 10 }, (_, i) => i + 1).map((p) =>
    h('option', { value: p, selected: p === 5 }, p === 1 ? '1 — highest' : p === 5 ? '5 — normal' : p === 10 ? '10 — lowest' : String(p))));
  const timeout = h('input', { type: 'number', name: 'timeout', min: 1, step: 1, value: 300, inputmode: 'numeric' });
  const retries = h('input', { type: 'number', name: 'retries', min: 0, max: 10, step: 1, value: 0, inputmode: 'numeric' });
  const name = h('input', { type: 'text', name: 'name', autocomplete: 'off', placeholder: 'optional label' });
  const env = h('textarea', { name: 'env', rows: 2, spellcheck: 'false', placeholder: 'KEY=value, one per line' });
  const concurrency = h('input', { type: 'text', name: 'concurrency', autocomplete: 'off', inputmode: 'numeric', placeholder: 'all at once' });
  const maxFailures = h('input', { type: 'text', name: 'max_failures', autocomplete: 'off', inputmode: 'numeric', placeholder: 'no limit' });
  const rolloutErr = h('p.field-error', { id: 'f-rollout-error', role: 'alert' });
  const rolloutBox = h('fieldset.rollout', { id: 'f-rollout', hidden: true, 'aria-describedby': 'f-rollout-error' },
    h('legend', null, 'Rollout ', h('span.muted.small', null, 'for several servers')),
    h('div.grid-2', null,
      field('f-concurrency', 'Concurrency', concurrency, 'Hosts running at once: a number or a percentage (25%). Empty: all at once.'),
      field('f-max-failures', 'Max failures', maxFailures, 'Failed hosts before the rest are canceled: a number or a percentage. Empty: no limit.')),
    rolloutErr);
  const serverFilter = h('input', { type: 'search', placeholder: 'Filter servers…', 'aria-label': 'Filter servers' });
  const serverList = h('div.server-pick', { id: 'f-servers', role: 'group', 'aria-label': 'Servers', 'aria-describedby': 'f-servers-error' });
  const tagBar = h('div.tag-bar', { 'aria-label': 'Select servers by tag' });
  const serversErr = h('p.field-error', { id: 'f-servers-error', role: 'alert' });
  const formError = h('div.banner.error', { role: 'alert', hidden: true });
  const submit = h('button.btn.primary', { type: 'submit', form: 'execute-form', id: 'execute-submit' }, 'Run');
  const cancel = h('button.btn', { type: 'button' }, 'Close');

  const commandFields = h('div', { id: 'command-fields' }, field('f-command', 'Command', command));
  const scriptFields = h('div', { id: 'script-fields', hidden: true },
    field('f-script', 'Script', script, 'Tab indents, Shift+Tab dedents (Ctrl+M makes Tab move focus). Ctrl+Enter runs.'),
    field('f-shell', 'Shell', shell));
  const form = h('form.execute-form', { id: 'execute-form', novalidate: true },
    formError,
    h('fieldset.mode', null, h('legend.sr-only', null, 'What to run'),
      h('label.seg', null, modeCommand, 'Command'), h('label.seg', null, modeScript, 'Script')),
    commandFields, scriptFields,
    field('f-args', 'Arguments', args),
    h('fieldset.servers', null, h('legend', null, 'Servers ', h('span.muted.small', { id: 'server-count' })), tagBar, serverFilter, serverList, serversErr),
    rolloutBox,
    h('div.grid-2', null,
      field('f-priority', 'Priority (1 = highest)', priority),
      field('f-timeout', 'Timeout (seconds)', timeout, 'Seconds before the job is stopped.')),
    h('details.more', null, h('summary', null, 'More options'),
      h('div.grid-2', null, field('f-name', 'Name', name), field('f-retries', 'Retries', retries)),
      field('f-env', 'Environment', env, 'Values of names like *PASSWORD*, *TOKEN*, *SECRET*, *KEY* are stored encrypted and shown as ***.')));

  const modal = openModal({ id: 'execute-dialog', title: prefill ? 'Duplicate job' : 'New job', body: form, footer: [cancel, submit], wide: true });
  cancel.addEventListener('click', modal.close);

  const mode = () => (modeScript.checked ? 'script' : 'command');
  function syncMode() {
    commandFields.hidden = mode() !== 'command';
    scriptFields.hidden = mode() !== 'script';
  }
  modeCommand.addEventListener('change', syncMode);
  modeScript.addEventListener('change', syncMode);
  form.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); } });

  // ----- servers -----
  let servers = [];
  const checks = new Map();
  function selected() { return servers.filter((s) => checks.get(s.id)?.checked); }
  function updateCount() {
    const n = selected().length;
    setText(form.querySelector('#server-count'), n ? `${n} selected` : '');
    setText(submit, n > 1 ? `Run on ${n} servers` : 'Run');
    rolloutBox.hidden = n < 2;
  }
  function renderServers() {
    if (!servers.length) {
      setChildren(serverList, h('p.muted', null, 'No servers yet. ', h('a', { href: '#/servers', onclick: () => modal.close() }, 'Add one under Servers'), ' first.'));
      return;
    }
    setChildren(serverList, servers.map((s) => {
      const cb = checks.get(s.id) || h('input', { type: 'checkbox', value: s.id, name: 'server', onchange: updateCount });
      checks.set(s.id, cb);
      return h('label.pick', { dataset: { name: s.name.toLowerCase(), tags: (s.tags || []).join(' ').toLowerCase() }, title: `${s.user ? `${s.user}@` : ''}${s.hostname}:${s.port}` },
        cb, h('span', null, s.name), (s.tags || []).map((t) => h('span.tag', null, t)), s.is_active === false ? h('span.muted.small', null, ' (inactive)') : null);
    }));
    const tags = [...new Set(servers.flatMap((s) => s.tags || []))].sort();
    setChildren(tagBar, tags.length ? h('span.muted.small', null, 'Tags: ') : null, tags.map((t) => h('button.chip', {
      type: 'button', title: `Select every server tagged ${t}`,
      onclick: () => {
        const tagged = servers.filter((s) => (s.tags || []).includes(t));
        const all = tagged.every((s) => checks.get(s.id).checked);
        for (const s of tagged) checks.get(s.id).checked = !all;
        updateCount();
      },
    }, `#${t}`)), servers.length > 1 ? h('button.chip', { type: 'button', onclick: () => { const all = servers.every((s) => checks.get(s.id).checked); for (const c of checks.values()) c.checked = !all; updateCount(); } }, 'all') : null);
    updateCount();
  }
  serverFilter.addEventListener('input', () => {
    const q = serverFilter.value.trim().toLowerCase();
    for (const el of serverList.querySelectorAll('label.pick')) el.hidden = q && !el.dataset.name.includes(q) && !el.dataset.tags.includes(q);
  });

  const [serverData, limits] = await Promise.all([get('servers').catch((err) => { formError.hidden = false; setText(formError, err.message); return { servers: [] }; }), submitLimits()]);
  servers = (serverData.servers || []).filter((s) => s.is_active !== false || prefill?.server_id === s.id);
  setChildren(shell, limits.shells.map((s) => h('option', { value: s }, s)));
  timeout.value = String(limits.defaultTimeout);
  if (limits.maxTimeout) {
    timeout.max = String(limits.maxTimeout);
    setText(form.querySelector('#f-timeout-hint'), `1 to ${limits.maxTimeout.toLocaleString()} seconds`);
  }
  renderServers();
  if (servers.length === 1) { checks.get(servers[0].id).checked = true; updateCount(); }

  if (prefill) {
    if (prefill.script) { modeScript.checked = true; script.value = prefill.script; if (prefill.shell) shell.value = prefill.shell; }
    command.value = prefill.command || '';
    args.value = Array.isArray(prefill.args) ? prefill.args.join(' ') : prefill.args || '';
    priority.value = String(prefill.priority || 5);
    timeout.value = String(prefill.timeout || limits.defaultTimeout);
    retries.value = String(prefill.retries || 0);
    name.value = prefill.name || '';
    // a secret-looking value comes back as ***: leave it empty so it is typed again, never resubmitted as "***"
    if (prefill.env && typeof prefill.env === 'object') env.value = Object.entries(prefill.env).map(([k, v]) => `${k}=${v === '***' ? '' : v}`).join('\n');
    for (const c of checks.values()) c.checked = c.value === prefill.server_id;
    updateCount();
    syncMode();
  }
  (mode() === 'script' ? script : command).focus();

  // ----- submit -----
  const fieldFor = {
    command: 'f-command', args: 'f-args', script: 'f-script', shell: 'f-shell', priority: 'f-priority', timeout: 'f-timeout',
    retries: 'f-retries', name: 'f-name', env: 'f-env', server_id: 'f-servers', server_ids: 'f-servers', servers: 'f-servers',
    rollout: 'f-rollout', 'rollout.concurrency': 'f-concurrency', 'rollout.max_failures': 'f-max-failures',
  };
  function clearErrors() {
    formError.hidden = true;
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }
  function showError(key, message) {
    const id = fieldFor[key] || fieldFor[key.split(/[.[]/)[0]];
    const errEl = id && form.querySelector(`#${id}-error`);
    if (!errEl) return false;
    errEl.textContent = errEl.textContent ? `${errEl.textContent} ${message}` : message;
    form.querySelector(`#${id}`)?.setAttribute('aria-invalid', 'true');
    return true;
  }
  function parseEnv() {
    const out = {};
    for (const line of env.value.split('\n')) {
      if (!line.trim()) continue;
      const i = line.indexOf('=');
      if (i < 1) throw new Error(`"${line}" is not KEY=value`);
      out[line.slice(0, i).trim()] = line.slice(i + 1);
    }
    return out;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const picked = selected();
    let local = false;
    if (!picked.length) local = showError('server_ids', 'Pick at least one server.');
    if (mode() === 'command' && !command.value.trim()) local = showError('command', 'Enter a command to run.') || local;
    if (mode() === 'script' && !script.value.trim()) local = showError('script', 'Write the script to run.') || local;
    let envObj = {};
    try { envObj = parseEnv(); } catch (err) { local = showError('env', err.message) || local; }
    const rollout = {};
    if (picked.length > 1) {
      for (const [key, input, minimum] of [['concurrency', concurrency, 1], ['max_failures', maxFailures, 0]]) {
        const got = parseRolloutLimit(input.value, minimum);
        if (got.error) local = showError(`rollout.${key}`, got.error) || local;
        else if (got.value !== null) rollout[key] = got.value;
      }
    }
    if (local) { form.querySelector('[aria-invalid]')?.focus(); return; }
    const body = { priority: Number(priority.value), timeout: Number(timeout.value), args: args.value };
    if (retries.value && Number(retries.value)) body.retries = Number(retries.value);
    if (name.value.trim()) body.name = name.value.trim();
    if (Object.keys(envObj).length) body.env = envObj;
    if (picked.length === 1) body.server_id = picked[0].id; else body.server_ids = picked.map((s) => s.id);
    if (Object.keys(rollout).length) body.rollout = rollout;
    if (timeout.value === '') delete body.timeout;
    let path = 'jobs';
    if (mode() === 'script') { path = 'jobs/script'; body.script = script.value; body.shell = shell.value; } else body.command = command.value.trim();
    submit.disabled = true;
    try {
      const res = await post(path, body);
      modal.close();
      if (res.batch_id && Array.isArray(res.jobs)) { toast(`Started on ${res.jobs.length} servers.`, 'ok'); showBatch(res.batch_id); } else showJob(res.id);
    } catch (err) {
      const details = err.details || {};
      let placed = false;
      for (const [k, v] of Object.entries(details)) placed = showError(k, Array.isArray(v) ? v.join(' ') : String(v)) || placed;
      if (!placed || !Object.keys(details).length) { formError.hidden = false; setText(formError, err.message); }
      (form.querySelector('[aria-invalid]') || formError).focus?.();
    } finally {
      submit.disabled = false;
    }
  });
}
