// The change feed (GET events, Server-Sent Events read with fetch so the Bearer token goes along):
// views refresh when a job or batch they show changes, instead of on a timer. Changes arriving close
// together are handed over as one list; a view keeps a slow fallback poll for when the stream is down.
import { streamEvents } from './api.js';

const COALESCE_MS = 250; // changes within this window make one refresh
const RETRY_MS = 5000;

/**
 * Follow changes matching `filters` ({batch_id, job_id}). onChanges(list) gets the new changes;
 * onChanges(null) means "reload everything" (a fresh stream: what changed before it is unknown).
 * onLive(bool) says whether the stream is up; coalesceMs: how long changes gather before a call.
 * Returns { stop(), live() }.
 */
export function followChanges(filters, onChanges, { onLive, coalesceMs = COALESCE_MS } = {}) {
  const stop = new AbortController();
  let cursor = null;
  let live = false;
  let pending = [];
  let timer = null;
  const setLive = (value) => { if (value !== live) { live = value; onLive?.(value); } };
  const flush = () => { timer = null; const list = pending; pending = []; if (list.length) onChanges(list); };

  async function run() {
    while (!stop.signal.aborted) {
      const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
      if (cursor) query.set('cursor', cursor);
      try {
        await streamEvents(`events?${query}`, (kind, data) => {
          if (kind === 'ready') {
            const fresh = cursor === null;
            cursor = data.cursor;
            setLive(true);
            if (fresh) onChanges(null);
            return;
          }
          if (kind === 'end') { if (data?.cursor) cursor = data.cursor; return; }
          if (!data || !data.id) return;
          cursor = data.id;
          pending.push(data);
          if (!timer) timer = setTimeout(flush, coalesceMs);
        }, { signal: stop.signal });
      } catch (err) {
        if (stop.signal.aborted || err.name === 'AbortError') return;
        setLive(false);
        if (err.status === 410) { cursor = null; continue; } // too far behind: reload and follow from now
        await new Promise((resolve) => { setTimeout(resolve, RETRY_MS); });
        continue;
      }
      // the API ends a stream after a few minutes: resume from the cursor at once
    }
  }
  run();
  return {
    stop() { stop.abort(); if (timer) clearTimeout(timer); setLive(false); },
    live: () => live,
  };
}
