// Templates page: saved jobs with typed parameters — list, show, a Run form built from the parameters,
// and (operators, admins) create / edit / delete.  The API enforces the roles; the page only hides what
// a role may not do: viewers read, runners also run, operators and admins also edit.
import { del, detectRole, get, post, session } from './api.js';
import { setParams, showBatch, showJob } from './app.js';
import { confirmDialog } from './overlay.js';
import { emptyState, h, setChildren, setText, timeEl, toast } from './util.js';

const RANK = { viewer: 1, runner: 2, operator: 3, admin: 4 };
const INT = /^\s*[+-]?\d{1,18}\s*$/;

/** The caller's role rank; an unknown role (whoami unavailable) shows everything and lets the API decide. */
async function rank() {
  if (!session.role) await detectRole();
  return RANK[session.role] || RANK.admin;
}

export const mayRun = (r) => r >= RANK.runner;
export const mayEdit = (r) => r >= RANK.operator;

/** A labelled form field with its hint and its error line (ids: `${id}`, `${id}-hint`, `${id}-error`). */
export function field(id, label, control, hint, { required = false } = {}) {
  control.id = id;
  control.setAttribute('aria-describedby', `${id}-error${hint ? ` ${id}-hint` : ''}`);
  if (required) control.setAttribute('aria-required', 'true');
  return h('div.field', { dataset: { field: id } },
    h('label', { for: id }, label, required ? h('span.req', { title: 'required', 'aria-hidden': 'true' }, ' *') : null),
    control, hint ? h('p.hint', { id: `${id}-hint` }, hint) : null, h('p.field-error', { id: `${id}-error`, role: 'alert' }));
}

/** Show `message` under the field `id` (appending to one already there); false when there is no such field. */
export function fieldError(root, id, message) {
  const errEl = id && root.querySelector(`#${id}-error`);
  if (!errEl) return false;
  errEl.textContent = errEl.textContent ? `${errEl.textContent} ${message}` : message;
  root.querySelector(`#${id}`)?.setAttribute('aria-invalid', 'true');
  return true;
}

export function clearErrors(root, banner) {
  if (banner) banner.hidden = true;
  for (const el of root.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

const targets = (t) => (t.servers || []).join(', ');

export function mount(main, params) {
  let seq = 0;
  let all = [];
  const state = { filter: '' };

  async function render(p) {
    const mine = ++seq;
    const r = await rank();
    if (mine !== seq) return;
    setChildren(main);
    if (p.has('new') && mayEdit(r)) return editPage(null, mine);
    if (p.get('edit') && mayEdit(r)) return loadOne(p.get('edit'), mine, (t) => editPage(t, mine));
    if (p.get('name')) return loadOne(p.get('name'), mine, (t) => showPage(t, r));
    return listPage(r, mine);
  }

  async function loadOne(name, mine, then) {
    try {
      const t = await get(`templates/${encodeURIComponent(name)}`);
      if (mine === seq) then(t);
    } catch (err) {
      if (mine !== seq || err.status === 401) return;
      main.append(backLink(), h('div.banner.error', { role: 'alert' }, err.status === 404 ? `No template named ${name}.` : `Cannot load the template: ${err.message}`));
    }
  }

  /** The create / edit form (its module is loaded only for operators and admins). */
  async function editPage(t, mine) {
    const mod = await import('./templateform.js');
    if (mine === seq) mod.renderForm(main, t);
  }

  function backLink() {
    return h('a.back', { href: '#/templates', id: 'tpl-back' }, '← Templates');
  }

  // ---------- list ----------

  async function listPage(r, mine) {
    const filter = h('input', { type: 'search', id: 'tpl-filter', placeholder: 'Filter templates…', 'aria-label': 'Filter templates', value: state.filter });
    const count = h('span.muted.small', { id: 'tpl-count' });
    const tbody = h('tbody');
    const table = h('table.templates-table', { id: 'templates-table', 'aria-label': 'Templates' },
      h('thead', null, h('tr', null, ['Name', 'Description', 'Targets', 'Parameters', 'Updated'].map((c) => h('th', { scope: 'col' }, c)))), tbody);
    const empty = h('div');
    const banner = h('div.banner.error', { role: 'alert', hidden: true });
    const newBtn = mayEdit(r) ? h('a.btn.primary', { href: '#/templates?new=1', id: 'tpl-new' }, '+ New template') : null;
    main.append(h('div.page-head', null, h('h1', null, 'Templates'), count, h('span.spacer'), filter, newBtn), banner, h('div.table-wrap', null, table, empty));

    function draw() {
      const q = filter.value.trim().toLowerCase();
      state.filter = filter.value;
      const shown = all.filter((t) => !q || [t.name, t.description, targets(t)].some((s) => (s || '').toLowerCase().includes(q)));
      setText(count, all.length ? (shown.length === all.length ? `${all.length}` : `${shown.length} of ${all.length}`) : '');
      table.hidden = !shown.length;
      if (!all.length) {
        setChildren(empty, emptyState('No templates yet', 'A template is a job saved with typed parameters, run by name: `remora templates push -f job.yaml`.',
          newBtn ? h('a.btn.primary', { href: '#/templates?new=1' }, 'Create a template') : null));
      } else if (!shown.length) setChildren(empty, emptyState('No template matches', `Nothing matches “${filter.value}”.`));
      else empty.replaceChildren();
      setChildren(tbody, shown.map((t) => h('tr', { dataset: { name: t.name } },
        h('td', null, h('a.tpl-link', { href: `#/templates?name=${encodeURIComponent(t.name)}` }, t.name)),
        h('td.muted', null, t.description || ''),
        h('td', null, (t.servers || []).map((s) => h(s.startsWith('tag:') ? 'span.tag' : 'code', null, s)).flatMap((el, i) => (i ? [' ', el] : [el]))),
        h('td.num', null, String((t.parameters || []).length)),
        h('td', null, timeEl(t.updated_at)))));
    }
    filter.addEventListener('input', draw);
    try {
      const data = await get('templates');
      if (mine !== seq) return;
      all = data.templates || [];
      draw();
    } catch (err) {
      if (err.status === 401) return;
      banner.hidden = false;
      setText(banner, `Cannot load templates: ${err.message}`);
    }
    filter.focus();
  }

  // ---------- show ----------

  function showPage(t, r) {
    const actions = mayEdit(r) ? [
      h('a.btn', { href: `#/templates?edit=${encodeURIComponent(t.name)}`, id: 'tpl-edit' }, 'Edit'),
      h('button.btn.danger-text', { type: 'button', id: 'tpl-delete', onclick: () => remove(t) }, 'Delete'),
    ] : [];
    main.append(backLink(), h('div.page-head', null, h('h1', { id: 'tpl-title' }, t.name), h('span.spacer'), actions));
    main.append(h('section.card', { id: 'tpl-definition', 'aria-labelledby': 'tpl-def-title' }, h('h2', { id: 'tpl-def-title' }, 'Definition'), definition(t)));
    if (mayRun(r)) main.append(runForm(t));
  }

  async function remove(t) {
    if (!(await confirmDialog(`Delete template ${t.name}?`, 'Jobs it started stay; schedules that run it will fail until it exists again.', { confirmLabel: 'Delete', danger: true }))) return;
    try {
      await del(`templates/${encodeURIComponent(t.name)}`);
      toast(`Deleted template ${t.name}.`, 'ok');
      setParams(new URLSearchParams(), { push: true });
    } catch (err) {
      toast(err.message, 'error', 8000);
    }
  }

  render(params);
  return { update: render, unmount() { seq += 1; } };
}

function definition(t) {
  const rows = [];
  const row = (label, ...value) => rows.push(h('dt', null, label), h('dd', null, ...value));
  if (t.description) row('Description', t.description);
  if (t.script_hidden) row('Script', h('span.muted', { id: 'tpl-script' }, 'hidden (operators and admins see it)'));
  else if (t.script !== null && t.script !== undefined) row('Script', h('pre.tpl-script', { id: 'tpl-script' }, t.script));
  else row('Command', h('code', { id: 'tpl-command' }, t.command));
  if (t.args) row('Arguments', h('code', null, t.args));
  if (t.shell) row('Shell', h('code', null, t.shell));
  row('Servers', targets(t) || h('span.muted', null, 'none: give servers when running it'));
  row('Priority', t.priority ?? h('span.muted', null, 'default'));
  row('Timeout', t.timeout ? `${t.timeout} s` : h('span.muted', null, 'default'));
  row('Retries', String(t.retries ?? 0));
  const env = Object.entries(t.env || {}).filter(([k]) => !(k in (t.secret_env || {})));
  if (env.length) row('Environment', h('pre.tpl-env', null, env.map(([k, v]) => `${k}=${v}`).join('\n')));
  const secret = Object.keys(t.secret_env || {});
  if (secret.length) row('Secret variables', h('pre.tpl-env', { id: 'tpl-secret-env' }, secret.map((k) => `${k}=***`).join('\n')));
  row('Updated', timeEl(t.updated_at), t.created_by ? h('span.muted', null, ` · created by ${t.created_by}`) : null);
  const params = t.parameters || [];
  return [
    h('dl.tpl-def', null, rows),
    h('h3', null, 'Parameters'),
    params.length ? h('div.table-wrap', null, h('table.mini', { id: 'tpl-params' },
      h('thead', null, h('tr', null, ['Name', 'Type', 'Default', 'Required', 'Secret', 'Choices', 'Description'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, params.map((p) => h('tr', { dataset: { name: p.name } },
        h('td', null, h('code', null, p.name)), h('td', null, p.type),
        h('td', null, p.default === null || p.default === undefined ? h('span.muted', null, '—') : h('code', null, String(p.default))),
        h('td', null, p.required ? 'yes' : ''), h('td', null, p.secret ? 'yes' : ''),
        h('td', null, (p.choices || []).join(', ')), h('td.muted', null, p.description || '')))))) : h('p.muted', null, 'None: it runs as it is.'),
  ];
}

// ---------- run ----------

function paramControl(p) {
  const dflt = p.default === null || p.default === undefined ? null : String(p.default);
  if (p.type === 'choice') {
    return h('select', { name: p.name },
      dflt === null ? h('option', { value: '' }, p.required ? 'Choose…' : '— (leave out)') : null,
      (p.choices || []).map((c) => h('option', { value: c, selected: c === dflt }, c)));
  }
  if (p.type === 'bool') return h('input.switch', { type: 'checkbox', role: 'switch', name: p.name, checked: dflt !== null && dflt.toLowerCase() === 'true' });
  if (p.secret) return h('input', { type: 'password', name: p.name, autocomplete: 'new-password', spellcheck: 'false' });
  if (p.type === 'int') return h('input', { type: 'number', name: p.name, step: 1, inputmode: 'numeric', value: dflt ?? '' });
  return h('input', { type: 'text', name: p.name, autocomplete: 'off', spellcheck: 'false', value: dflt ?? '' });
}

function runForm(t) {
  const params = t.parameters || [];
  const controls = new Map();
  const banner = h('div.banner.error', { role: 'alert', hidden: true, id: 'tpl-run-error' });
  const servers = h('input', { type: 'text', name: 'servers', autocomplete: 'off', spellcheck: 'false', placeholder: targets(t) || 'web-1, tag:prod' });
  const submit = h('button.btn.primary', { type: 'submit', id: 'tpl-run-submit' }, 'Run');
  const fields = params.map((p) => {
    const control = paramControl(p);
    controls.set(p.name, control);
    const hint = [p.description, p.secret ? 'Secret: passed as $REMORA_PARAM_' + p.name.toUpperCase() + ', masked in the output.' : null].filter(Boolean).join(' ') || null;
    if (p.type === 'bool') {
      control.id = `tp-${p.name}`;
      control.setAttribute('aria-describedby', `tp-${p.name}-error`);
      return h('div.field', { dataset: { field: `tp-${p.name}` } },
        h('label.switch-row', { for: control.id }, control, h('span', null, p.name)), hint ? h('p.hint', null, hint) : null,
        h('p.field-error', { id: `tp-${p.name}-error`, role: 'alert' }));
    }
    return field(`tp-${p.name}`, p.name, control, hint, { required: p.required });
  });
  const form = h('form.tpl-run', { id: 'tpl-run-form', novalidate: true },
    banner, fields.length ? fields : h('p.muted', null, 'This template takes no parameters.'),
    field('tp-servers', 'Servers (optional)', servers, `Instead of the template's${targets(t) ? ` (${targets(t)})` : ''}: names or tag:T, separated by commas or spaces.`),
    h('div.form-actions', null, submit));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form, banner);
    const values = {};
    let local = false;
    for (const p of params) {
      const control = controls.get(p.name);
      if (p.type === 'bool') { values[p.name] = control.checked; continue; }
      const v = control.value;
      if (v === '') {
        if (p.required && (p.default === null || p.default === undefined)) local = fieldError(form, `tp-${p.name}`, 'Required.') || local;
        continue; // left out: the server applies the default
      }
      if (p.type === 'int' && !INT.test(v)) { local = fieldError(form, `tp-${p.name}`, 'Enter a whole number.') || local; continue; }
      values[p.name] = p.type === 'int' ? v.trim() : v;
    }
    if (local) { form.querySelector('[aria-invalid]')?.focus(); return; }
    const body = { params: values };
    const picked = servers.value.split(/[\s,]+/).filter(Boolean);
    if (picked.length) body.servers = picked;
    submit.disabled = true;
    try {
      const res = await post(`templates/${encodeURIComponent(t.name)}/run`, body);
      if (res.batch_id && Array.isArray(res.jobs)) { toast(`${t.name}: started on ${res.jobs.length} servers.`, 'ok'); showBatch(res.batch_id); } else showJob(res.id);
    } catch (err) {
      const details = err.details || {};
      let placed = false;
      // the server's 400 names the parameter: its message goes next to that field
      for (const [name, message] of Object.entries(details.params || {})) {
        placed = fieldError(form, controls.has(name) ? `tp-${name}` : null, name === details.parameter ? err.message : `${name} ${message}`) || placed;
      }
      if (details.servers) placed = fieldError(form, 'tp-servers', String(details.servers)) || placed;
      if (!placed) { banner.hidden = false; setText(banner, err.message); }
      (form.querySelector('[aria-invalid]') || banner).focus?.();
    } finally {
      submit.disabled = false;
    }
  });
  return h('section.card', { id: 'tpl-run', 'aria-labelledby': 'tpl-run-title' }, h('h2', { id: 'tpl-run-title' }, 'Run'), form);
}
