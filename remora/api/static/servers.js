// Servers page: reachability, connection tests, add/edit/delete, uploaded PEM keys.
import { api, del, get, post, put, session } from './api.js';
import { confirmDialog, openModal } from './overlay.js';
import { h, setChildren, setText, timeEl, toast, emptyState, poll } from './util.js';

const AUTH_LABELS = { password: 'Password', key: 'Private key (paste)', pem: 'PEM file (upload)', local: 'Local (this machine)' };

export function mount(main) {
  const reach = new Map(); // id -> 'connected' | 'disconnected' | 'checking'
  const tests = new Map(); // id -> {ok, text}
  let servers = [];
  const tbody = h('tbody');
  const table = h('table.servers-table', { id: 'servers-table', 'aria-label': 'Servers' },
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, h('span.sr-only', null, 'Reachable')), h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'col-addr' }, 'Address'),
      h('th', { scope: 'col', class: 'col-auth' }, 'Auth'), h('th', { scope: 'col', class: 'col-test' }, 'Last test'), h('th', { scope: 'col' }, h('span.sr-only', null, 'Actions')))),
    tbody);
  const empty = h('div');
  const banner = h('div.banner.error', { role: 'alert', hidden: true });
  const checkAll = h('button.btn', { type: 'button', id: 'check-all' }, 'Check all');
  const addBtn = h('button.btn.primary', { type: 'button', id: 'add-server', dataset: { write: '' } }, '+ Add server');
  const checkedAt = h('span.muted.small', { id: 'checked-at' });
  const pemSection = h('section.card', { id: 'pem-section', 'aria-labelledby': 'pem-title' });

  main.append(
    h('div.page-head', null, h('h1', null, 'Servers'), checkedAt, h('span.spacer'), checkAll, addBtn),
    banner, h('div.table-wrap', null, table, empty), pemSection);

  function dot(id) {
    const state = reach.get(id) || 'unknown';
    const label = { connected: 'reachable', disconnected: 'unreachable', checking: 'checking…', unknown: 'not checked yet' }[state];
    return h(`span.dot.dot-${state}`, { role: 'img', 'aria-label': label, title: label });
  }

  function testCell(s) {
    const t = tests.get(s.id);
    if (t) return h(`span.${t.ok ? 'ok' : 'err'}`, { title: t.title || '' }, t.text);
    if (s.last_test_at) {
      return h('span', { title: s.last_test_message || '' }, h(`span.${s.last_test_ok ? 'ok' : 'err'}`, null, s.last_test_ok ? '✓ ' : '✗ '),
        s.last_latency_ms ? `${Math.round(s.last_latency_ms)} ms · ` : '', timeEl(s.last_test_at));
    }
    return h('span.muted', null, 'never');
  }

  function render() {
    table.hidden = !servers.length;
    if (!servers.length) {
      setChildren(empty, emptyState('No servers yet', 'Add the machines Remora should run commands on: a name, the SSH host and user, and a password, private key or uploaded PEM file.',
        session.readOnly ? null : h('button.btn.primary', { type: 'button', onclick: () => editServer(null) }, 'Add your first server')));
    } else empty.replaceChildren();
    setChildren(tbody, servers.map((s) => h('tr', { dataset: { id: s.id, name: s.name }, class: s.is_active === false ? 'inactive' : '' },
      h('td.col-dot', null, dot(s.id)),
      h('td', null, h('strong', null, s.name), s.is_active === false ? h('span.muted.small', null, ' inactive') : null, h('div', null, (s.tags || []).map((t) => h('span.tag', null, t)))),
      h('td.col-addr', null, h('code', null, s.auth_type === 'local' ? 'this machine' : `${s.user ? `${s.user}@` : ''}${s.hostname}:${s.port}`)),
      h('td.col-auth', null, s.auth_type, s.pem_file ? h('span.muted.small', null, ` (${s.pem_file})`) : null),
      h('td.col-test', null, testCell(s), s.host_key_fingerprint ? h('div.small.muted.fp', { title: 'Host key fingerprint' }, s.host_key_fingerprint) : null),
      h('td.col-actions', null, h('div.row-actions', null,
        h('button.btn.small', { type: 'button', dataset: { act: 'test' }, 'aria-label': `Test connection to ${s.name}` }, 'Test'),
        h('button.btn.small', { type: 'button', dataset: { act: 'edit', write: '' }, 'aria-label': `Edit ${s.name}` }, 'Edit'),
        h('button.btn.small.danger-text', { type: 'button', dataset: { act: 'delete', write: '' }, 'aria-label': `Delete ${s.name}` }, 'Delete'))))));
  }

  async function load() {
    try {
      const data = await get('servers');
      servers = data.servers || [];
      for (const s of servers) if (!reach.has(s.id) && s.last_status) reach.set(s.id, s.last_status);
      banner.hidden = true;
      render();
    } catch (err) {
      if (err.status === 401) return;
      banner.hidden = false;
      setText(banner, `Cannot load servers: ${err.message}`);
    }
  }

  async function checkReachability() {
    for (const s of servers) reach.set(s.id, 'checking');
    render();
    try {
      const data = await post('servers/bulk/status');
      for (const r of data.servers || []) reach.set(r.server_id || r.id, r.status);
      setChildren(checkedAt, `${data.connected ?? 0} of ${data.total_servers ?? servers.length} reachable · checked `, timeEl(new Date().toISOString()));
    } catch (err) {
      for (const s of servers) reach.delete(s.id);
      if (err.status !== 401) toast(`Reachability check failed: ${err.message}`, 'error');
    }
    render();
  }

  async function testServer(s) {
    tests.set(s.id, { ok: true, text: 'testing…' });
    render();
    try {
      const r = await post(`servers/${s.id}/test`);
      tests.set(s.id, { ok: true, text: `✓ connected in ${Math.round(r.latency_ms)} ms`, title: r.host_key_fingerprint });
      reach.set(s.id, 'connected');
      toast(`${s.name}: connected in ${Math.round(r.latency_ms)} ms${r.host_key_fingerprint ? ` — host key ${r.host_key_fingerprint}` : ''}`, 'ok', 6000);
    } catch (err) {
      const msg = err.body?.error || err.message;
      tests.set(s.id, { ok: false, text: `✗ ${msg}` });
      toast(`${s.name}: ${msg}`, 'error', 8000);
    }
    await load();
  }

  async function deleteServer(s) {
    if (!(await confirmDialog(`Delete ${s.name}?`, 'The server and its stored credentials will be removed.', { confirmLabel: 'Delete', danger: true }))) return;
    try {
      await del(`servers/${s.id}`);
      toast(`Deleted ${s.name}.`, 'ok');
    } catch (err) {
      if (err.status === 409 && /histor|force/i.test(err.message)) {
        if (await confirmDialog('Delete its job history too?', `${err.message} Delete the server together with its finished jobs?`, { confirmLabel: 'Delete with history', danger: true })) {
          try { const r = await del(`servers/${s.id}`, { force: 'true' }); toast(r?.message || `Deleted ${s.name}.`, 'ok'); } catch (e2) { toast(e2.message, 'error', 8000); }
        }
      } else toast(err.message, 'error', 8000);
    }
    await load();
  }

  tbody.addEventListener('click', (e) => {
    const btn = e.target.closest('button[data-act]');
    if (!btn) return;
    const s = servers.find((x) => x.id === btn.closest('tr').dataset.id);
    if (!s) return;
    if (btn.dataset.act === 'test') testServer(s);
    else if (btn.dataset.act === 'edit') editServer(s);
    else if (btn.dataset.act === 'delete') deleteServer(s);
  });
  checkAll.addEventListener('click', checkReachability);
  addBtn.addEventListener('click', () => editServer(null));

  function editServer(server) {
    openServerForm(server, async () => { await load(); renderPems(); });
  }

  async function renderPems() {
    let files = [];
    try { files = (await get('files/pem')).files || []; } catch { /* shown elsewhere */ }
    setChildren(pemSection, h('h2', { id: 'pem-title' }, 'Uploaded PEM keys'),
      files.length ? h('ul.pem-list', null, files.map((f) => h('li', null, h('code', null, f.filename), h('span.muted.small', null, ` ${f.fingerprint || ''} · uploaded `), timeEl(f.uploaded_at),
        h('button.btn.small.danger-text', { type: 'button', dataset: { write: '' }, 'aria-label': `Delete key ${f.filename}`, onclick: async () => {
          if (!(await confirmDialog(`Delete ${f.filename}?`, 'Servers using it must be switched to another key first.', { confirmLabel: 'Delete', danger: true }))) return;
          try { await del(`files/pem/${encodeURIComponent(f.filename)}`); toast('Key deleted.', 'ok'); } catch (err) { toast(err.message, 'error', 8000); }
          renderPems();
        } }, 'Delete'))))
        : h('p.muted', null, 'No PEM keys uploaded. Drop one into the server form (auth: PEM file) to use it; key contents are stored encrypted and never shown again.'));
  }

  const refresher = poll(async () => { await load(); }, 10000);
  const reachTimer = setInterval(() => { if (!document.hidden) checkReachability(); }, 30000);
  load().then(checkReachability);
  renderPems();
  return { unmount() { refresher.stop(); clearInterval(reachTimer); } };
}

// ---------- add / edit form ----------

function field(id, label, control, hint) {
  control.id = id;
  control.setAttribute('aria-describedby', `${id}-error`);
  return h('div.field', { dataset: { field: id } }, h('label', { for: id }, label), control, hint ? h('p.hint', null, hint) : null, h('p.field-error', { id: `${id}-error`, role: 'alert' }));
}

export function openServerForm(server, onSaved) {
  const editing = Boolean(server);
  const s = server || { port: 22, auth_type: 'key', tags: [], is_active: true, max_concurrent_jobs: 0 };
  const name = h('input', { type: 'text', value: s.name || '', required: true, autocomplete: 'off', placeholder: 'web-1' });
  const hostname = h('input', { type: 'text', value: s.hostname || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'web-1.example.com or 10.0.0.5' });
  const port = h('input', { type: 'number', value: s.port || 22, min: 1, max: 65535, inputmode: 'numeric' });
  const user = h('input', { type: 'text', value: s.user || '', autocomplete: 'off', placeholder: 'deploy' });
  const authType = h('select', null, Object.entries(AUTH_LABELS).map(([v, l]) => h('option', { value: v, selected: v === s.auth_type }, l)));
  const password = h('input', { type: 'password', autocomplete: 'new-password', placeholder: s.has_password ? 'stored — leave blank to keep' : '' });
  const privateKey = h('textarea', { rows: 5, spellcheck: 'false', placeholder: s.has_private_key ? 'stored — paste a new key to replace it' : '-----BEGIN OPENSSH PRIVATE KEY-----' });
  const pemName = h('select', null, h('option', { value: '' }, '— choose an uploaded key —'));
  const pemInput = h('input', { type: 'file', accept: '.pem,.key', id: 'pem-input', class: 'sr-only' });
  const drop = h('label.dropzone', { for: 'pem-input', id: 'pem-drop', tabindex: '0' }, 'Drop a .pem/.key file here, or click to choose one');
  const policy = h('select', null, [['', 'server default'], ['accept-new', 'accept-new (trust on first use)'], ['strict', 'strict (known hosts only)'], ['off', 'off (do not check — unsafe)']]
    .map(([v, l]) => h('option', { value: v, selected: (s.host_key_policy || '') === v }, l)));
  const tags = h('input', { type: 'text', value: (s.tags || []).join(', '), placeholder: 'web, prod', autocomplete: 'off' });
  const maxConc = h('input', { type: 'number', min: 0, value: s.max_concurrent_jobs || 0, inputmode: 'numeric' });
  const active = h('input', { type: 'checkbox', checked: s.is_active !== false, id: 'sf-active' });
  const formError = h('div.banner.error', { role: 'alert', hidden: true });
  const submit = h('button.btn.primary', { type: 'submit', form: 'server-form', id: 'server-save' }, editing ? 'Save' : 'Add server');
  const close = h('button.btn', { type: 'button' }, 'Cancel');

  const secretGroups = {
    password: field('sf-password', 'Password', password, 'Stored encrypted; never shown again.'),
    key: field('sf-private_key', 'Private key', privateKey, 'Paste the whole key. Stored encrypted; never shown again.'),
    pem: h('div.field', { dataset: { field: 'sf-pem_file' } }, h('label', { for: 'sf-pem_file' }, 'PEM file'), drop, pemInput, (pemName.id = 'sf-pem_file', pemName), h('p.field-error', { id: 'sf-pem_file-error', role: 'alert' })),
  };
  const sshOnly = h('div', null,
    h('div.grid-3', null, field('sf-hostname', 'Hostname', hostname), field('sf-port', 'Port', port), field('sf-user', 'User', user)),
    Object.values(secretGroups), field('sf-host_key_policy', 'Host key check', policy));
  const form = h('form', { id: 'server-form', novalidate: true }, formError,
    h('div.grid-2', null, field('sf-name', 'Name', name), field('sf-auth_type', 'Authentication', authType)),
    sshOnly,
    h('div.grid-2', null, field('sf-tags', 'Tags (comma separated)', tags), field('sf-max_concurrent_jobs', 'Max parallel jobs (0 = no limit)', maxConc)),
    h('label.check', null, active, ' Active (jobs may run here)'));
  const modal = openModal({ id: 'server-dialog', title: editing ? `Edit ${s.name}` : 'Add server', body: form, footer: [close, submit], wide: true });
  close.addEventListener('click', modal.close);

  function syncAuth() {
    const t = authType.value;
    for (const [k, el] of Object.entries(secretGroups)) el.hidden = k !== t;
    sshOnly.hidden = t === 'local';
  }
  authType.addEventListener('change', syncAuth);
  syncAuth();

  async function loadPems(selectName) {
    try {
      const files = (await get('files/pem')).files || [];
      setChildren(pemName, h('option', { value: '' }, files.length ? '— choose an uploaded key —' : 'no keys uploaded yet'), files.map((f) => h('option', { value: f.filename }, `${f.filename}${f.fingerprint ? ` (${f.fingerprint.slice(0, 24)}…)` : ''}`)));
      pemName.value = selectName || s.pem_file || '';
    } catch { /* the save will report */ }
  }
  loadPems();

  async function upload(file) {
    const fd = new FormData();
    fd.append('pem_file', file, file.name);
    setText(drop, `Uploading ${file.name}…`);
    try {
      const r = await api('POST', 'upload/pem', { form: fd });
      setText(drop, `✓ ${r.filename} uploaded`);
      await loadPems(r.filename);
    } catch (err) {
      setText(drop, 'Drop a .pem/.key file here, or click to choose one');
      const e = form.querySelector('#sf-pem_file-error');
      e.textContent = err.details?.pem_file || err.message;
    }
  }
  pemInput.addEventListener('change', () => { if (pemInput.files[0]) upload(pemInput.files[0]); });
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pemInput.click(); } });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formError.hidden = true;
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const t = authType.value;
    const body = {
      name: name.value.trim(), auth_type: t, tags: tags.value.split(',').map((x) => x.trim()).filter(Boolean),
      max_concurrent_jobs: Number(maxConc.value || 0), is_active: active.checked,
    };
    if (t !== 'local') {
      Object.assign(body, { hostname: hostname.value.trim(), port: Number(port.value || 22), user: user.value.trim() });
      body.host_key_policy = policy.value || null;
      if (!editing && !policy.value) delete body.host_key_policy;
    }
    if (t === 'password' && password.value) body.password = password.value;
    if (t === 'key' && privateKey.value.trim()) body.private_key = privateKey.value;
    if (t === 'pem') body.pem_file = pemName.value || null;
    submit.disabled = true;
    try {
      const saved = editing ? await put(`servers/${s.id}`, body) : await post('servers', body);
      modal.close();
      toast(`${editing ? 'Saved' : 'Added'} ${saved?.name || body.name}.`, 'ok');
      onSaved?.(saved);
    } catch (err) {
      let placed = false;
      for (const [key, v] of Object.entries(err.details || {})) {
        const k = key === 'private_key' && authType.value === 'pem' ? 'pem_file' : key;
        const el = form.querySelector(`#sf-${k}-error`);
        if (el && el.closest('[hidden]')) continue;
        if (el) { el.textContent = Array.isArray(v) ? v.join(' ') : String(v); form.querySelector(`#sf-${k}`)?.setAttribute('aria-invalid', 'true'); placed = true; }
      }
      if (!placed) { formError.hidden = false; setText(formError, err.message); }
      form.querySelector('[aria-invalid]')?.focus();
    } finally {
      submit.disabled = false;
    }
  });
}
