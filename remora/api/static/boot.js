// Runs before first paint, as a classic script (the Content-Security-Policy allows no inline script).
// Apply the saved theme before first paint (no flash).
try { const t = localStorage.getItem('remora.theme'); if (t === 'light' || t === 'dark') document.documentElement.dataset.theme = t; } catch (e) {}
// Ask for the first page of jobs while the modules load (api.js picks the answer up; same URL as jobs.js builds).
try {
  const tok = localStorage.getItem('remora.token');
  const m = location.hash.match(/^#\/jobs(?:\?(.*))?$/);
  if (m && !/token=/.test(location.hash)) {
    const p = new URLSearchParams(m[1] || '');
    const q = new URLSearchParams();
    const d = { page: '1', limit: '20', sort_by: 'created_at', sort_order: 'desc' };
    for (const k of ['page', 'limit', 'status', 'server_id', 'search', 'batch_id', 'sort_by', 'sort_order']) { const v = p.get(k) || d[k]; if (v) q.set(k, v); }
    const url = new URL('api/v1/jobs?' + q, document.baseURI).toString();
    const headers = { Accept: 'application/json' };
    if (tok) headers.Authorization = 'Bearer ' + tok;
    window.__prefetch = { url, answer: fetch(url, { headers, cache: 'no-store' }).then((r) => (r.ok ? r.json().then((data) => ({ data, etag: r.headers.get('etag') })) : null)).catch(() => null) };
  }
} catch (e) {}
