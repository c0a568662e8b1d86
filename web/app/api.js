// Every call the dashboard makes goes through here: same-origin fetch (the session cookie rides
// along), JSON in and out, the API's {statusCode, error, message} envelope turned into an Error,
// and a 401 turned into "signed out" so the shell can send the user to the sign-in page.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export const UNREACHABLE =
  'cannot reach the Tessera server (stopped, restarting, or the network is down): lists refresh by themselves once it is back; try the action again then';

const listeners = new Set();
/** Called with no arguments when the server says the session is gone. */
export function onSignedOut(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * api('/api/campaigns') → parsed JSON. opts: method, body (object → JSON; FormData/string/Blob
 * sent as is), headers, text (return the body as text).
 */
export async function api(path, opts = {}) {
  const headers = { accept: 'application/json', ...opts.headers };
  let body = opts.body;
  if (
    body !== undefined &&
    !(body instanceof FormData) &&
    !(body instanceof Blob) &&
    typeof body !== 'string'
  ) {
    body = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(path, {
    method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body,
    credentials: 'same-origin',
  }).catch((err) => {
    // The browser's own words ("Failed to fetch") said nothing of what happened or what to do.
    throw new ApiError(0, `${UNREACHABLE} (${err.message})`);
  });
  const type = res.headers.get('content-type') ?? '';
  const data = opts.text ? await res.text() : type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) {
    if (res.status === 401 && !opts.allow401) for (const fn of listeners) fn();
    const message =
      (data && typeof data === 'object' && (data.message || data.error)) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message, data);
  }
  return data;
}

export const post = (path, body, opts = {}) => api(path, { ...opts, method: 'POST', body: body ?? {} });
export const put = (path, body, opts = {}) => api(path, { ...opts, method: 'PUT', body: body ?? {} });
export const del = (path, opts = {}) => api(path, { ...opts, method: 'DELETE' });
