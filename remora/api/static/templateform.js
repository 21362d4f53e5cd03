// Create / edit a template (operators and admins): job fields, env, write-only secret variables, parameters.
import { get, post, put } from './api.js';
import { setParams } from './app.js';
import { enableTabIndent } from './execute.js';
import { clearErrors, field, fieldError } from './templates.js';
import { h, setChildren, setText, toast } from './util.js';

const TYPES = ['string', 'int', 'bool', 'choice'];
const MASK = '***';
const FIELD_IDS = {
  name: 'tf-name', description: 'tf-description', command: 'tf-command', args: 'tf-args', script: 'tf-script', shell: 'tf-shell',
  servers: 'tf-servers', server_id: 'tf-servers', priority: 'tf-priority', timeout: 'tf-timeout', retries: 'tf-retries', env: 'tf-env',
  secret_env: 'tf-secret-env', parameters: 'tf-parameters', rollout: 'tf-servers',
};

function lines(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join('\n');
}

/** KEY=value lines as an object; throws naming the first bad line. */
function parseLines(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf('=');
    if (i < 1) throw new Error(`"${line}" is not NAME=value`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

/** A parameter's default as typed into the form, as the API takes it (null when empty). */
function defaultValue(type, raw) {
  const text = raw.trim();
  if (text === '') return null;
  if (type === 'bool' && /^(true|false)$/i.test(text)) return text.toLowerCase() === 'true';
  if (type === 'int' && /^[+-]?\d{1,15}$/.test(text)) return Number(text);
  return type === 'string' || type === 'choice' ? raw : text; // anything else: the server says what is wrong
}

function paramRow(p, onRemove) {
  const cell = (label, control) => h('td', null, (control.setAttribute('aria-label', label), control));
  const name = h('input.pf-name', { type: 'text', value: p?.name || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'name' });
  const type = h('select.pf-type', null, TYPES.map((t) => h('option', { value: t, selected: (p?.type || 'string') === t }, t)));
  const dflt = h('input.pf-default', { type: 'text', value: p?.default === null || p?.default === undefined ? '' : String(p.default), autocomplete: 'off', spellcheck: 'false' });
  const choices = h('input.pf-choices', { type: 'text', value: (p?.choices || []).join(', '), autocomplete: 'off', spellcheck: 'false', placeholder: 'a, b, c' });
  const required = h('input.pf-required', { type: 'checkbox', checked: Boolean(p?.required) });
  const secret = h('input.pf-secret', { type: 'checkbox', checked: Boolean(p?.secret) });
  const description = h('input.pf-description', { type: 'text', value: p?.description || '', autocomplete: 'off' });
  const row = h('tr.param-row', null,
    cell('Parameter name', name), cell('Type', type), cell('Default', dflt), cell('Choices (choice type)', choices),
    cell('Required', required), cell('Secret', secret), cell('Description', description),
    h('td', null, h('button.btn.small.danger-text.pf-remove', { type: 'button', 'aria-label': 'Remove parameter', onclick: () => { row.remove(); onRemove(); } }, '✕')));
  const sync = () => {
    choices.disabled = type.value !== 'choice';
    dflt.disabled = secret.checked;
    dflt.placeholder = secret.checked ? 'none (secret)' : type.value === 'bool' ? 'true / false' : '';
  };
  type.addEventListener('change', sync);
  secret.addEventListener('change', sync);
  sync();
  row.read = () => {
    const out = { name: name.value.trim(), type: type.value, required: required.checked, secret: secret.checked, description: description.value };
    if (!secret.checked) out.default = defaultValue(type.value, dflt.value);
    if (type.value === 'choice') out.choices = choices.value.split(',').map((c) => c.trim()).filter(Boolean);
    return out;
  };
  return row;
}

/** Render the form into `main`: `t` is the template to edit, or null for a new one. */
export async function renderForm(main, t) {
  const editing = Boolean(t);
  const isScript = editing && (t.script !== null && t.script !== undefined);
  const name = h('input', { type: 'text', value: t?.name || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. restart-service' });
  const description = h('textarea', { rows: 2, text: t?.description || '' });
  const modeCommand = h('input', { type: 'radio', name: 'tf-mode', value: 'command', id: 'tf-mode-command', checked: !isScript });
  const modeScript = h('input', { type: 'radio', name: 'tf-mode', value: 'script', id: 'tf-mode-script', checked: isScript });
  const command = h('input', { type: 'text', value: t?.command || '', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. systemctl restart {{ service }}' });
  const args = h('input', { type: 'text', value: t?.args || '', autocomplete: 'off', spellcheck: 'false' });
  const script = h('textarea', { rows: 8, spellcheck: 'false', text: isScript ? t.script : '' });
  enableTabIndent(script);
  const shell = h('select', null, h('option', { value: '' }, 'default'));
  const servers = h('input', { type: 'text', value: (t?.servers || []).join(', '), autocomplete: 'off', spellcheck: 'false', placeholder: 'web-1, tag:prod' });
  const priority = h('input', { type: 'number', min: 1, max: 10, step: 1, value: t?.priority ?? '', placeholder: '5' });
  const timeout = h('input', { type: 'number', min: 1, step: 1, value: t?.timeout ?? '', placeholder: 'default' });
  const retries = h('input', { type: 'number', min: 0, max: 10, step: 1, value: t?.retries ?? '', placeholder: '0' });
  const secretNames = Object.keys(t?.secret_env || {});
  const env = h('textarea', { rows: 3, spellcheck: 'false', text: lines(Object.fromEntries(Object.entries(t?.env || {}).filter(([k]) => !secretNames.includes(k)))), placeholder: 'NAME=value, one per line' });
  const secretEnv = h('textarea', { rows: 2, spellcheck: 'false', text: secretNames.map((k) => `${k}=${MASK}`).join('\n'), placeholder: 'NAME=value, one per line' });
  const paramBody = h('tbody', { id: 'tf-param-rows' });
  const noParams = h('p.muted.small', null, 'No parameters.');
  const syncEmpty = () => { noParams.hidden = paramBody.children.length > 0; };
  const addParam = (p) => { paramBody.append(paramRow(p, syncEmpty)); syncEmpty(); };
  const paramsBox = h('fieldset.tpl-params', { id: 'tf-parameters', tabindex: -1, 'aria-describedby': 'tf-parameters-error' },
    h('legend', null, 'Parameters'),
    h('div.table-wrap', null, h('table.mini', null,
      h('thead', null, h('tr', null, ['Name', 'Type', 'Default', 'Choices', 'Required', 'Secret', 'Description', ''].map((c) => h('th', { scope: 'col' }, c)))), paramBody)),
    noParams,
    h('p.hint', null, 'Used as {{ name }} in the command, arguments or script (inserted shell-quoted) and as $REMORA_PARAM_NAME. A secret parameter is only a masked variable.'),
    h('p.field-error', { id: 'tf-parameters-error', role: 'alert' }),
    h('button.btn.small', { type: 'button', id: 'tf-add-param', onclick: () => { addParam(null); paramBody.lastElementChild.querySelector('.pf-name').focus(); } }, '+ Add parameter'));
  for (const p of t?.parameters || []) addParam(p);
  syncEmpty();

  const banner = h('div.banner.error', { role: 'alert', hidden: true, id: 'tf-error' });
  const save = h('button.btn.primary', { type: 'submit', id: 'tf-save' }, editing ? 'Save' : 'Create template');
  const back = editing ? `#/templates?name=${encodeURIComponent(t.name)}` : '#/templates';
  const commandFields = h('div', null, field('tf-command', 'Command', command));
  const scriptFields = h('div', null, field('tf-script', 'Script', script), field('tf-shell', 'Shell', shell));
  const form = h('form.tpl-form', { id: 'tpl-form', novalidate: true },
    banner,
    h('div.grid-2', null, field('tf-name', 'Name', name, 'Letters, digits, _ . -', { required: true }), field('tf-servers', 'Servers', servers, 'Names or tag:T, separated by commas; a run may give others.')),
    field('tf-description', 'Description', description),
    h('fieldset.mode', null, h('legend.sr-only', null, 'What to run'), h('label.seg', null, modeCommand, 'Command'), h('label.seg', null, modeScript, 'Script')),
    commandFields, scriptFields,
    field('tf-args', 'Arguments', args),
    h('div.grid-3-eq', null, field('tf-priority', 'Priority (1 = highest)', priority), field('tf-timeout', 'Timeout (seconds)', timeout), field('tf-retries', 'Retries', retries)),
    h('div.grid-2', null,
      field('tf-env', 'Environment', env, 'Values of names like *PASSWORD*, *TOKEN* are stored encrypted.'),
      field('tf-secret-env', 'Secret variables', secretEnv, editing ? 'Write-only. NAME=*** keeps the stored value; give a new value to replace it, remove the line to drop it.' : 'Write-only: stored encrypted, masked in output (values of 4 bytes or more).')),
    paramsBox,
    h('div.form-actions', null, h('a.btn', { href: back, id: 'tf-cancel' }, 'Cancel'), save));
  setChildren(main, h('a.back', { href: back }, editing ? `← ${t.name}` : '← Templates'), h('div.page-head', null, h('h1', null, editing ? `Edit ${t.name}` : 'New template')), form);

  const syncMode = () => { commandFields.hidden = !modeCommand.checked; scriptFields.hidden = !modeScript.checked; };
  modeCommand.addEventListener('change', syncMode);
  modeScript.addEventListener('change', syncMode);
  syncMode();
  name.focus();
  try {
    const info = await get('system/info');
    for (const s of info.allowed_shells || []) shell.append(h('option', { value: s, selected: s === t?.shell }, s));
  } catch { /* the default shell still works; the API checks the rest */ }
  if (t?.shell && shell.value !== t.shell) shell.append(h('option', { value: t.shell, selected: true }, t.shell));

  function showServerErrors(details) {
    let placed = false;
    const rows = Array.from(paramBody.children);
    for (const [key, value] of Object.entries(details)) {
      const message = Array.isArray(value) ? value.join(' ') : String(value);
      const m = /^parameters\[(\d+)\]\.?(\w*)/.exec(key);
      if (m) {
        rows[Number(m[1])]?.querySelector(`.pf-${m[2] || 'name'}`)?.setAttribute('aria-invalid', 'true');
        placed = fieldError(form, 'tf-parameters', `Parameter ${Number(m[1]) + 1}${m[2] ? ` ${m[2]}` : ''}: ${message}`) || placed;
        continue;
      }
      if (key === 'parameters') { // the message names the parameter: mark its row
        for (const row of rows) if (message.includes(`'${row.querySelector('.pf-name').value.trim()}'`)) row.querySelector('.pf-name').setAttribute('aria-invalid', 'true');
      }
      placed = fieldError(form, FIELD_IDS[key] || FIELD_IDS[key.split(/[.[]/)[0]], message) || placed;
    }
    return placed;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form, banner);
    let local = false;
    if (!name.value.trim()) local = fieldError(form, 'tf-name', 'Give the template a name.');
    if (modeCommand.checked && !command.value.trim()) local = fieldError(form, 'tf-command', 'Enter the command to run.') || local;
    if (modeScript.checked && !script.value.trim()) local = fieldError(form, 'tf-script', 'Write the script to run.') || local;
    let envObj = {};
    let secretObj = {};
    try { envObj = parseLines(env.value); } catch (err) { local = fieldError(form, 'tf-env', err.message) || local; }
    try { secretObj = parseLines(secretEnv.value); } catch (err) { local = fieldError(form, 'tf-secret-env', err.message) || local; }
    const parameters = Array.from(paramBody.children).map((row) => row.read());
    parameters.forEach((p, i) => { if (!p.name) local = fieldError(form, 'tf-parameters', `Parameter ${i + 1} needs a name.`) || local; });
    if (local) { form.querySelector('[aria-invalid]')?.focus(); return; }
    const body = {
      name: name.value.trim(), description: description.value, args: args.value,
      servers: servers.value.split(/[\s,]+/).filter(Boolean), env: envObj, secret_env: secretObj, parameters,
      rollout: t?.rollout ?? null,
    };
    if (modeScript.checked) { body.script = script.value; body.shell = shell.value || null; } else { body.command = command.value.trim(); body.script = null; body.shell = null; }
    for (const [key, input] of [['priority', priority], ['timeout', timeout], ['retries', retries]]) if (input.value !== '') body[key] = Number(input.value);
    save.disabled = true;
    try {
      const saved = editing ? await put(`templates/${encodeURIComponent(t.name)}`, body) : await post('templates', body);
      toast(editing ? `Saved ${saved.name}.` : `Created template ${saved.name}.`, 'ok');
      setParams(new URLSearchParams({ name: saved.name }), { push: true });
    } catch (err) {
      const placed = showServerErrors(err.details || {});
      if (!placed) { banner.hidden = false; setText(banner, err.message); }
      (form.querySelector('[aria-invalid]') || banner).focus?.();
    } finally {
      save.disabled = false;
    }
  });
}
