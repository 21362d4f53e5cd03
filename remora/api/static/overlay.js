// Modal dialogs and the side panel: one stack, Esc closes the top, focus returns.
import { h } from './util.js';

const stack = [];

export function hasOverlay() {
  return stack.length > 0;
}

function trapFocus(e, root) {
  if (e.key !== 'Tab') return;
  const items = Array.from(root.querySelectorAll('a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])'))
    .filter((el) => el.offsetParent !== null);
  if (!items.length) return;
  const first = items[0];
  const last = items[items.length - 1];
  if (e.shiftKey && document.activeElement === first) { last.focus(); e.preventDefault(); }
  else if (!e.shiftKey && document.activeElement === last) { first.focus(); e.preventDefault(); }
}

function push(entry) {
  stack.push(entry);
  document.getElementById('layer').append(entry.el);
}

/**
 * Open a modal dialog.  Returns {el, body, close}.  onClose runs once, whichever
 * way it closes (button, Esc, backdrop).
 */
export function openModal({ id, title, body, footer, onClose, wide = false }) {
  const opener = document.activeElement;
  const titleId = `${id || 'modal'}-title`;
  const closeBtn = h('button.icon-btn.close', { type: 'button', 'aria-label': 'Close' }, '✕');
  const bodyEl = h('div.modal-body', null, body);
  const dialog = h(`div.modal${wide ? '.wide' : ''}`, { id, role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': titleId },
    h('div.modal-head', null, h('h2', { id: titleId }, title), closeBtn),
    bodyEl,
    footer ? h('div.modal-foot', null, footer) : null);
  const backdrop = h('div.backdrop', null, dialog);
  const entry = { el: backdrop, close: null };
  let closed = false;
  entry.close = () => {
    if (closed) return;
    closed = true;
    const i = stack.indexOf(entry);
    if (i >= 0) stack.splice(i, 1);
    backdrop.remove();
    onClose?.();
    if (opener && opener.isConnected) opener.focus();
  };
  closeBtn.addEventListener('click', entry.close);
  backdrop.addEventListener('mousedown', (e) => { if (e.target === backdrop) entry.close(); });
  dialog.addEventListener('keydown', (e) => trapFocus(e, dialog));
  push(entry);
  const focusable = dialog.querySelector('input:not([type=hidden]), textarea, select, button:not(.close)');
  (focusable || closeBtn).focus();
  return { el: dialog, body: bodyEl, close: entry.close };
}

/** Open the side panel (job view, batch view).  Only one panel at a time. */
export function openPanel({ id, label, content, onClose }) {
  for (const entry of [...stack]) if (entry.panel) entry.close();
  const opener = document.activeElement;
  const panel = h('aside.panel', { id, role: 'dialog', 'aria-label': label, tabindex: '-1' }, content);
  const entry = { el: panel, panel: true, close: null };
  let closed = false;
  entry.close = () => {
    if (closed) return;
    closed = true;
    const i = stack.indexOf(entry);
    if (i >= 0) stack.splice(i, 1);
    panel.remove();
    document.body.classList.remove('panel-open');
    onClose?.();
    if (opener && opener.isConnected && opener !== document.body) opener.focus({ preventScroll: true });
  };
  push(entry);
  document.body.classList.add('panel-open');
  panel.focus({ preventScroll: true });
  return entry;
}

/** Close the top overlay; with all=true close everything.  True when something closed. */
export function closeTop(all = false) {
  if (!stack.length) return false;
  if (all) { while (stack.length) stack[stack.length - 1].close(); return true; }
  stack[stack.length - 1].close();
  return true;
}

export function confirmDialog(title, message, { confirmLabel = 'Confirm', danger = false } = {}) {
  return new Promise((resolve) => {
    let result = false;
    const ok = h(`button.btn${danger ? '.danger' : '.primary'}`, { type: 'button' }, confirmLabel);
    const cancel = h('button.btn', { type: 'button' }, 'Cancel');
    const m = openModal({ id: 'confirm-dialog', title, body: h('p', null, message), footer: [cancel, ok], onClose: () => resolve(result) });
    ok.addEventListener('click', () => { result = true; m.close(); });
    cancel.addEventListener('click', () => m.close());
    ok.focus();
  });
}
