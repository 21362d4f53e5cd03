// A capped, chunked, tail-following log renderer that keeps up with fast output.

const MAX_LINES = 5000;
const MAX_CHARS = 2_000_000;

function countLines(text) {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n += 1;
  return n;
}

/**
 * Text is queued by append() and written to the DOM once per animation frame
 * as one <span> per flush; the oldest spans are dropped past MAX_LINES so the
 * page stays fast however much a job prints.
 */
export class LogView {
  constructor(pre, { maxLines = MAX_LINES, onTrim } = {}) {
    this.pre = pre;
    this.maxLines = maxLines;
    this.onTrim = onTrim;
    this.pending = [];
    this.spans = []; // {el, lines, chars}
    this.lines = 0;
    this.chars = 0;
    this.trimmed = false;
    this.frame = 0;
    this.follow = true;
    this.scroller = null;
  }

  /** Queue text; cls marks stderr in the combined view. */
  append(text, cls = '') {
    if (!text) return;
    const last = this.pending[this.pending.length - 1];
    if (last && last.cls === cls) last.text += text;
    else this.pending.push({ text, cls });
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (!this.pending.length) return;
    const frag = document.createDocumentFragment();
    for (const { text, cls } of this.pending) {
      const el = document.createElement('span');
      if (cls) el.className = cls;
      el.textContent = text;
      const item = { el, lines: countLines(text), chars: text.length };
      this.spans.push(item);
      this.lines += item.lines;
      this.chars += item.chars;
      frag.append(el);
    }
    this.pending = [];
    this.pre.append(frag);
    this.trim();
    if (this.follow && this.scroller) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  trim() {
    let dropped = false;
    while (this.spans.length > 1 && (this.lines > this.maxLines || this.chars > MAX_CHARS)) {
      const first = this.spans.shift();
      first.el.remove();
      this.lines -= first.lines;
      this.chars -= first.chars;
      dropped = true;
    }
    if (dropped && !this.trimmed) { this.trimmed = true; this.onTrim?.(); }
  }

  clear() {
    this.pending = [];
    this.spans = [];
    this.lines = 0;
    this.chars = 0;
    this.pre.replaceChildren();
  }

  get isEmpty() {
    return this.chars === 0 && !this.pending.length;
  }
}

/** Byte length of a string in UTF-8 (fallback when the API gives no next offset). */
export function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}
