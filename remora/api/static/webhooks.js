// Webhooks page (admin tokens): where job, batch and schedule events are announced — list, add, delete,
// "send test", and each webhook's deliveries (status, attempts, HTTP status, error). CLI: `remora webhooks`.
import { get, post, del, session, detectRole } from './api.js';
import { h, setChildren, emptyState, timeEl, toast } from './util.js';
import { confirmDialog } from './overlay.js';

const EVENTS = ['job.completed', 'job.failed', 'job.canceled', 'batch.finished', 'schedule.missed'];

function field(id, label, control, hint) {
  control.id = id;
  return h('div.field', { dataset: { field: id } }, h('label', { for: id }, label), control, hint ? h('p.hint', null, hint) : null);
}

export function mount(main) {
  const listBody = h('div', { id: 'webhooks-list' }, h('p.muted', null, 'Loading…'));
  const deliveriesCard = h('section.card', { id: 'webhook-deliveries', hidden: true, 'aria-labelledby': 'wh-deliveries-title' });
  const formError = h('p.field-error', { id: 'wh-form-error', role: 'alert' });
  const name = h('input', { type: 'text', required: true, pattern: '[A-Za-z0-9_.\\-]{1,128}', autocomplete: 'off' });
  const url = h('input', { type: 'text', required: true, placeholder: 'https://example.com/hook or mailto:ops@example.com', autocomplete: 'off' });
  const format = h('select', null, ['json', 'slack', 'email'].map((f) => h('option', { value: f }, f)));
  const secret = h('input', { type: 'password', autocomplete: 'new-password', placeholder: 'optional' });
  const tag = h('input', { type: 'text', placeholder: 'optional', autocomplete: 'off' });
  const template = h('input', { type: 'text', placeholder: 'optional', autocomplete: 'off' });
  const boxes = EVENTS.map((ev) => h('input', { type: 'checkbox', value: ev, checked: ev === 'job.failed', id: `wh-ev-${ev.replace('.', '-')}` }));
  const form = h('form', { id: 'webhook-form', novalidate: true },
    formError,
    h('div.form-grid', null,
      field('wh-name', 'Name', name),
      field('wh-url', 'URL', url, 'POSTed as JSON (signed with the secret) or Slack text; mailto: sends email.'),
      field('wh-format', 'Format', format),
      field('wh-secret', 'Secret', secret, 'Signs each body (X-Remora-Signature); never shown again.'),
      field('wh-tag', 'Only servers tagged', tag),
      field('wh-template', 'Only template', template)),
    h('fieldset.events', null, h('legend', null, 'Events'),
      boxes.map((box) => h('label.check', { for: box.id }, box, ` ${box.value}`))),
    h('button.btn.primary', { type: 'submit', id: 'webhook-add' }, 'Add webhook'));
  url.addEventListener('input', () => { if (url.value.startsWith('mailto:')) format.value = 'email'; else if (format.value === 'email') format.value = 'json'; });

  main.append(
    h('div.page-head', null, h('h1', null, 'Webhooks')),
    h('p.muted.small', null, 'Get a message when a job fails: events are sent by the API, retried until answered with a 2xx (24 h), in order per job.'),
    h('section.card', { id: 'webhooks-card', 'aria-labelledby': 'wh-list-title' }, h('h2', { id: 'wh-list-title' }, 'Configured'), listBody),
    h('section.card', { id: 'webhook-new', 'aria-labelledby': 'wh-new-title' }, h('h2', { id: 'wh-new-title' }, 'Add a webhook'), form),
    deliveriesCard);
  let stopped = false;
  let shown = null;

  async function showDeliveries(hookName) {
    shown = hookName;
    deliveriesCard.hidden = false;
    let rows;
    try {
      rows = (await get(`webhooks/${encodeURIComponent(hookName)}/deliveries`, { limit: 50 })).deliveries;
    } catch (err) {
      setChildren(deliveriesCard, h('div.banner.error', { role: 'alert' }, `Cannot load deliveries: ${err.message}`));
      return;
    }
    if (stopped || shown !== hookName) return;
    setChildren(deliveriesCard,
      h('div.page-head', null, h('h2', { id: 'wh-deliveries-title' }, `Deliveries of ${hookName}`), h('span.spacer'),
        h('button.btn.small', { type: 'button', id: 'wh-deliveries-refresh', onclick: () => showDeliveries(hookName) }, 'Refresh')),
      rows.length ? h('div.table-wrap', null, h('table.mini', { id: 'deliveries-table', 'aria-label': `Deliveries of ${hookName}` },
        h('thead', null, h('tr', null, ['created', 'event', 'status', 'attempts', 'HTTP', 'error', 'delivered'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, rows.map((d) => h('tr', { dataset: { delivery: d.id } },
          h('td', null, timeEl(d.created_at)), h('td', null, d.event),
          h('td', null, h(`span.badge.${d.status === 'delivered' ? 'completed' : d.status === 'failed' ? 'failed' : 'queued'}`, null, d.status)),
          h('td.num', null, String(d.attempts)), h('td.num', { dataset: { col: 'status_code' } }, d.status_code == null ? '—' : String(d.status_code)),
          h('td', null, d.error || (d.next_attempt_at ? 'retrying' : '')), h('td', null, d.delivered_at ? timeEl(d.delivered_at) : '—'))))))
        : emptyState('No deliveries yet', 'Events this webhook subscribes to appear here, and so does "Send test".'));
  }

  async function sendTest(hookName, button) {
    button.disabled = true;
    try {
      const d = await post(`webhooks/${encodeURIComponent(hookName)}/test`);
      if (d.status === 'delivered') toast(`Test delivered to ${hookName} (HTTP ${d.status_code})`, 'success');
      else toast(`Test not delivered to ${hookName}: ${d.error || d.status}`, 'error', 8000);
      await showDeliveries(hookName);
    } catch (err) {
      toast(`Test failed: ${err.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  }

  async function remove(hookName) {
    if (!(await confirmDialog(`Delete webhook ${hookName}?`, 'Its delivery log goes too; pending deliveries are dropped.', { confirmLabel: 'Delete', danger: true }))) return;
    try {
      await del(`webhooks/${encodeURIComponent(hookName)}`);
      toast(`Webhook ${hookName} deleted`, 'success');
      if (shown === hookName) { deliveriesCard.hidden = true; shown = null; }
      await load();
    } catch (err) {
      toast(`Cannot delete ${hookName}: ${err.message}`, 'error');
    }
  }

  function render(hooks) {
    if (!hooks.length) {
      setChildren(listBody, emptyState('No webhooks', 'Add one below to get a message when a job fails.'));
      return;
    }
    setChildren(listBody, h('div.table-wrap', null, h('table.mini', { id: 'webhooks-table', 'aria-label': 'Webhooks' },
      h('thead', null, h('tr', null, ['name', 'URL', 'format', 'events', 'filter', 'signed', 'enabled', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, hooks.map((w) => {
        const test = h('button.btn.small', { type: 'button', 'aria-label': `Send a test to ${w.name}` }, 'Send test');
        test.addEventListener('click', () => sendTest(w.name, test));
        return h('tr', { dataset: { webhook: w.name } },
          h('td', null, h('code', null, w.name)), h('td.wrap', null, w.url), h('td', null, w.format), h('td', null, w.events.join(', ')),
          h('td', null, Object.entries(w.filter || {}).map(([k, v]) => `${k}=${v}`).join(' ') || '—'),
          h('td', null, w.has_secret ? 'yes' : 'no'), h('td', null, w.enabled ? 'yes' : 'no'),
          h('td.actions', null, test,
            h('button.btn.small', { type: 'button', 'aria-label': `Deliveries of ${w.name}`, onclick: () => showDeliveries(w.name) }, 'Deliveries'),
            h('button.btn.small.danger-text', { type: 'button', 'aria-label': `Delete ${w.name}`, onclick: () => remove(w.name) }, 'Delete')));
      })))));
  }

  async function load() {
    if (!session.role) await detectRole();
    if (stopped) return;
    if (session.role !== 'admin') {
      setChildren(main, h('div.page-head', null, h('h1', null, 'Webhooks')),
        emptyState('Admins only', 'Webhooks send job results to other systems: managing them needs an admin token.'));
      return;
    }
    try {
      render((await get('webhooks')).webhooks);
    } catch (err) {
      setChildren(listBody, h('div.banner.error', { role: 'alert' }, `Cannot load webhooks: ${err.message}`));
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formError.textContent = '';
    const body = { name: name.value.trim(), url: url.value.trim(), format: format.value, events: boxes.filter((b) => b.checked).map((b) => b.value) };
    if (secret.value) body.secret = secret.value;
    const filter = {};
    if (tag.value.trim()) filter.tag = tag.value.trim();
    if (template.value.trim()) filter.template = template.value.trim();
    if (Object.keys(filter).length) body.filter = filter;
    try {
      await post('webhooks', body);
      toast(`Webhook ${body.name} added`, 'success');
      form.reset();
      boxes.forEach((b) => { b.checked = b.value === 'job.failed'; });
      await load();
    } catch (err) {
      formError.textContent = err.message;
    }
  });

  load();
  return { unmount() { stopped = true; } };
}
