// The REST client: bearer token, JSON error envelope, conditional GETs (ETag).

const TOKEN_KEY = 'remora.token';
const BASE = 'api/v1';

export const session = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  readOnly: false,
  role: null,
  name: null,
};

export function setToken(token) {
  session.token = token || '';
  Object.assign(session, { readOnly: false, role: null, name: null }); // learned again for this token
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An HTTP error carrying the API's {error, code, details} envelope. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.error) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = (body && body.code) || '';
    this.details = (body && body.details) || {};
    this.body = body || {};
  }
}

const cache = new Map(); // url -> {etag, data}
const MAX_CACHE = 200;

function buildUrl(path, query) {
  const url = new URL(path.startsWith('/') ? path.slice(1) : `${BASE}/${path}`, document.baseURI);
  if (query) {
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
    }
  }
  return url.toString();
}

function headers(extra) {
  const out = { Accept: 'application/json', ...extra };
  if (session.token) out.Authorization = `Bearer ${session.token}`;
  return out;
}

async function parseBody(res) {
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) {
    try { return await res.json(); } catch { return null; }
  }
  const text = await res.text();
  return text ? { error: text.slice(0, 300) } : null;
}

function onUnauthorized() {
  window.dispatchEvent(new CustomEvent('remora:unauthorized'));
}

/**
 * Call the API.  GETs send If-None-Match when an earlier answer had an ETag
 * and return the cached body on 304.  Throws ApiError on any non-2xx.
 */
export async function api(method, path, { body, query, form, signal } = {}) {
  const url = buildUrl(path, query);
  const pre = window.__prefetch;
  if (pre && method === 'GET') {
    window.__prefetch = null; // only the very first request may use it
    if (pre.url === url) {
      const got = await pre.answer;
      if (got) {
        if (got.etag) cache.set(url, { etag: got.etag, data: got.data });
        return got.data;
      }
    }
  }
  const init = { method, headers: headers(), signal, cache: 'no-store' };
  const cached = method === 'GET' ? cache.get(url) : null;
  if (cached) init.headers['If-None-Match'] = cached.etag;
  if (form) init.body = form;
  else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { error: 'Cannot reach the Remora API — is it running?', code: 'NETWORK' });
  }
  if (res.status === 304 && cached) return cached.data;
  const data = res.status === 204 ? null : await parseBody(res);
  if (res.status === 401) { onUnauthorized(); throw new ApiError(401, data); }
  if (res.status === 403) window.dispatchEvent(new CustomEvent('remora:forbidden'));
  if (!res.ok) throw new ApiError(res.status, data);
  const etag = res.headers.get('etag');
  if (method === 'GET' && etag) {
    if (cache.size >= MAX_CACHE) cache.delete(cache.keys().next().value);
    cache.set(url, { etag, data });
  }
  return data;
}

export const get = (path, query, opts) => api('GET', path, { ...opts, query });
export const post = (path, body, opts) => api('POST', path, { ...opts, body });
export const put = (path, body) => api('PUT', path, { body });
export const del = (path, query) => api('DELETE', path, { query });

/** Fetch a raw text resource (stdout/stderr download) as a Blob. */
export async function getBlob(path) {
  const res = await fetch(buildUrl(path), { headers: headers({ Accept: 'text/plain' }) });
  if (res.status === 401) onUnauthorized();
  if (!res.ok) throw new ApiError(res.status, await parseBody(res));
  return res.blob();
}

/**
 * Follow a Server-Sent Events stream with fetch() (not EventSource: that cannot send the Bearer token).
 * onEvent(kind, data) gets each event's name and parsed JSON data; resolves when the stream ends,
 * throws ApiError when it cannot be opened (or AbortError once `signal` aborts).
 */
export async function streamEvents(path, onEvent, { signal } = {}) {
  let res;
  try {
    res = await fetch(buildUrl(path), { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, { error: 'Cannot reach the Remora API — is it running?', code: 'NETWORK' });
  }
  if (res.status === 401) onUnauthorized();
  if (!res.ok || !res.body) throw new ApiError(res.status, await parseBody(res));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) kind = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (!data.length) continue;
      let parsed = null;
      try { parsed = JSON.parse(data.join('\n')); } catch { continue; }
      onEvent(kind, parsed);
    }
  }
}

/** Checks the token: null when it works; 'unauthorized' or an error message otherwise. */
export async function checkToken() {
  try {
    await get('system/info');
    return null;
  } catch (err) {
    return err.status === 401 ? 'unauthorized' : err.message;
  }
}

/**
 * Learn the token's name and role (GET auth/whoami); a viewer gets read-only controls.
 * When the answer is unavailable nothing changes: any later 403 still switches to read-only.
 */
export async function detectRole() {
  try {
    const me = await get('auth/whoami');
    session.role = me?.role || null;
    session.name = me?.name || null;
    session.readOnly = session.readOnly || session.role === 'viewer' || session.role === 'runner'; // a 403 seen meanwhile still counts
  } catch (err) {
    if (err.status === 403) session.readOnly = true;
  }
}
