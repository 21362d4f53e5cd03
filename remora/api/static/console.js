// API console: every operation of /api/v1/openapi.json with its parameters and body schema; Send with the
// signed-in token; the answer's status, headers, timing and the equivalent curl line (token masked unless revealed).
import { get, session, detectRole } from './api.js';
import { h, setChildren, setText, formatBytes } from './util.js';

const RANK = { public: 0, viewer: 1, runner: 2, operator: 3, admin: 4 };
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** A single-quoted shell word. */
export function shellQuote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

/** The curl command for a request; the token reads *** unless reveal is set. */
export function curlLine({ method, url, body, contentType, token, reveal }) {
  const parts = ['curl', '-sS', '-i'];
  if (method !== 'GET') parts.push('-X', method);
  parts.push(shellQuote(url));
  if (token) parts.push('-H', shellQuote(`Authorization: Bearer ${reveal ? token : '***'}`));
  if (body !== undefined && body !== null && body !== '') {
    parts.push('-H', shellQuote(`Content-Type: ${contentType || 'application/json'}`), '--data-raw', shellQuote(body));
  }
  return parts.join(' ');
}

/** A starting body from a JSON schema: required fields with example values. */
function example(schema, depth = 0) {
  if (!schema || depth > 4) return null;
  if (schema.example !== undefined) return schema.example;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  if (schema.enum) return schema.enum.find((v) => v !== null) ?? null;
  if (type === 'object' || schema.properties) {
    const out = {};
    const required = schema.required || [];
    for (const [k, v] of Object.entries(schema.properties || {})) if (required.includes(k)) out[k] = example(v, depth + 1);
    return out;
  }
  if (type === 'array') return [];
  if (type === 'integer' || type === 'number') return schema.minimum ?? 0;
  if (type === 'boolean') return false;
  if (type === 'string') return schema.format === 'uuid' ? '00000000-0000-0000-0000-000000000000' : '';
  return null;
}

function operations(doc) {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op || op.operationId === 'dashboard') continue;
      ops.push({ path, method: method.toUpperCase(), op, role: op['x-remora-role'] || 'viewer', tag: (op.tags || ['other'])[0] });
    }
  }
  return ops;
}

export function mount(main) {
  const list = h('nav.console-list', { id: 'console-ops', 'aria-label': 'API operations' });
  const detail = h('section.card.console-detail', { id: 'console-detail', 'aria-live': 'polite' },
    h('p.muted', null, 'Pick an operation on the left.'));
  const filter = h('input', { type: 'search', id: 'console-filter', placeholder: 'Filter operations…', 'aria-label': 'Filter operations' });
  const banner = h('div.banner.error', { role: 'alert', hidden: true });
  main.append(
    h('div.page-head', null, h('h1', null, 'API console'), h('span.spacer'),
      h('span.muted.small', { id: 'console-role' }, '')),
    h('p.muted.small', null, 'Every operation of ', h('a', { href: 'api/v1/openapi.json', target: '_blank', rel: 'noopener' }, 'openapi.json'),
      '. Send uses your signed-in token; operations your role may not call are listed but not sendable.'),
    banner,
    h('div.console', null, h('div.console-side', null, filter, list), detail));

  let ops = [];
  let role = session.role;
  let stopped = false;

  function mayCall(o) {
    return (RANK[role] ?? 0) >= (RANK[o.role] ?? 4);
  }

  function renderList() {
    const q = filter.value.trim().toLowerCase();
    const shown = ops.filter((o) => !q || `${o.method} ${o.path} ${o.op.summary || ''}`.toLowerCase().includes(q));
    const groups = new Map();
    for (const o of shown) { if (!groups.has(o.tag)) groups.set(o.tag, []); groups.get(o.tag).push(o); }
    setChildren(list, [...groups].map(([tag, items]) => h('div.console-group', null,
      h('h2.small', null, tag),
      h('ul', null, items.map((o) => h('li', null, h('button.console-op', {
        type: 'button',
        dataset: { op: o.op.operationId, method: o.method },
        title: o.op.summary || '',
        onclick: () => select(o),
      }, h(`span.method.m-${o.method.toLowerCase()}`, null, o.method), h('code', null, o.path),
      mayCall(o) ? null : h('span.role-need', { title: `needs the ${o.role} role` }, o.role))))))));
  }

  function field(name, schema, where, description, required) {
    const id = `cp-${where}-${name}`;
    return h('div.field', null,
      h('label', { for: id }, name, required ? ' *' : '', h('span.muted.small', null, ` (${where}${schema?.type ? `, ${[].concat(schema.type).join('|')}` : ''})`)),
      h('input', { id, name, dataset: { where, param: name }, placeholder: schema?.enum ? schema.enum.filter((v) => v !== null).join(' | ') : '', required }),
      description ? h('div.hint', null, description) : null);
  }

  function select(o) {
    for (const b of list.querySelectorAll('.console-op')) b.setAttribute('aria-current', String(b.dataset.op === o.op.operationId && b.dataset.method === o.method));
    const params = o.op.parameters || [];
    const jsonBody = o.op.requestBody?.content?.['application/json'];
    const multipart = o.op.requestBody?.content?.['multipart/form-data'];
    const bodyBox = jsonBody
      ? h('textarea.console-body', { id: 'console-body', rows: 8, spellcheck: 'false', 'aria-label': 'Request body (JSON)' },
        JSON.stringify(example(jsonBody.schema), null, 2))
      : null;
    const allowed = mayCall(o) && !multipart;
    const sendBtn = h('button.btn.primary', { type: 'submit', id: 'console-send', disabled: !allowed,
      title: allowed ? 'Send with your token' : multipart ? 'File uploads are not sent from the console: use curl' : `Your role (${role}) may not call this: it needs ${o.role}` }, 'Send');
    const reveal = h('input', { type: 'checkbox', id: 'console-reveal' });
    const curl = h('pre.script.console-curl', { id: 'console-curl' });
    const result = h('div.console-result', { id: 'console-result' });
    const form = h('form.console-form', { id: 'console-form', novalidate: true },
      params.map((p) => field(p.name, p.schema, p.in, p.description, p.required)),
      bodyBox ? h('div.field', null, h('label', { for: 'console-body' }, 'Body (JSON)'), bodyBox,
        h('details.more', null, h('summary', null, 'Body schema'), h('pre.script', { id: 'console-schema' }, JSON.stringify(jsonBody.schema, null, 2)))) : null,
      multipart ? h('p.muted.small', null, 'This operation takes a multipart upload; the curl line below shows its URL.') : null,
      h('div.panel-actions', null, sendBtn,
        h('label.check.small', { for: 'console-reveal' }, reveal, ' Reveal token in curl')));
    setChildren(detail,
      h('div.card-head', null, h(`span.method.m-${o.method.toLowerCase()}`, null, o.method), h('h2', { id: 'console-title' }, h('code', null, o.path)),
        h('span.spacer'), h('span.badge', { id: 'console-op-role', title: 'Least role that may call it' }, o.role)),
      h('p', null, o.op.summary || ''),
      form,
      h('h3', null, 'curl'), curl,
      result);

    function request() {
      let path = o.path;
      const query = new URLSearchParams();
      for (const input of form.querySelectorAll('input[data-param]')) {
        const value = input.value.trim();
        if (input.dataset.where === 'path') path = path.replace(`{${input.dataset.param}}`, encodeURIComponent(value));
        else if (input.dataset.where === 'query' && value !== '') query.set(input.dataset.param, value);
      }
      const url = new URL(path.replace(/^\//, '') + (query.toString() ? `?${query}` : ''), document.baseURI).toString();
      const body = bodyBox ? bodyBox.value : undefined;
      return { method: o.method, url, body, contentType: 'application/json' };
    }
    const updateCurl = () => setText(curl, curlLine({ ...request(), token: o.role === 'public' ? '' : session.token, reveal: reveal.checked }));
    form.addEventListener('input', updateCurl);
    reveal.addEventListener('change', updateCurl);
    updateCurl();

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!allowed) return;
      const req = request();
      const headers = { Accept: 'application/json, text/plain' };
      if (session.token) headers.Authorization = `Bearer ${session.token}`;
      if (req.body !== undefined) headers['Content-Type'] = req.contentType;
      sendBtn.disabled = true;
      setChildren(result, h('p.muted', null, 'Sending…'));
      const t0 = performance.now();
      try {
        const res = await fetch(req.url, { method: req.method, headers, body: req.body, cache: 'no-store' });
        const text = await res.text();
        const ms = performance.now() - t0;
        let shown = text;
        if ((res.headers.get('content-type') || '').includes('json')) { try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* as sent */ } }
        const heads = [...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n');
        setChildren(result,
          h('h3', null, 'Response'),
          h('p', { id: 'console-status' }, h(`span.${res.ok ? 'ok' : 'err'}`, null, `${res.status} ${res.statusText}`),
            h('span.muted', { id: 'console-timing' }, ` · ${ms.toFixed(1)} ms · ${formatBytes(new TextEncoder().encode(text).length)}`)),
          h('details.more', null, h('summary', null, 'Headers'), h('pre.script', { id: 'console-headers' }, heads)),
          h('pre.script.console-response', { id: 'console-response' }, shown.length > 200000 ? `${shown.slice(0, 200000)}\n… (cut)` : shown));
      } catch (err) {
        setChildren(result, h('p.err', null, `Request failed: ${err.message}`));
      } finally {
        sendBtn.disabled = !allowed;
      }
    });
  }

  filter.addEventListener('input', renderList);

  (async () => {
    try {
      if (!role) { await detectRole(); role = session.role; }
      const doc = await get('openapi.json');
      if (stopped) return;
      ops = operations(doc);
      setText(main.querySelector('#console-role'), `Your role: ${role || 'unknown'}`);
      renderList();
    } catch (err) {
      banner.hidden = false;
      setText(banner, `Cannot load the API description: ${err.message}`);
    }
  })();
  return { unmount() { stopped = true; } };
}
