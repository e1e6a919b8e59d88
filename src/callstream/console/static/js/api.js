// The console's only way to callstream: fetch() with the user's Basic credentials.
// Credentials live in this tab's sessionStorage, checked at login; nothing is cached.

const KEY = "callstream.console.session";

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function saveSession(value) {
  sessionStorage.setItem(KEY, JSON.stringify(value));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

function basic(username, password) {
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

let onUnauthorized = () => {};

/** What to do when stored credentials stop working (the token was rotated, say). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) search.append(name, String(one));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** The path and query of a URL callstream returned (its meta URLs are absolute on
 * PUBLIC_URL, which need not be the origin this page was loaded from). */
export function relative(url) {
  const parsed = new URL(url, location.origin);
  return parsed.pathname + parsed.search;
}

export async function request(method, path, options = {}) {
  const creds = options.credentials || session();
  if (!creds) throw new ApiError(401, {message: "Not logged in"});
  const headers = {Authorization: basic(creds.username, creds.password), Accept: "application/json"};
  let body;
  if (options.form) {
    body = new URLSearchParams();
    for (const [name, value] of Object.entries(options.form)) {
      if (value === null || value === undefined) continue;
      for (const one of Array.isArray(value) ? value : [value]) body.append(name, String(one));
    }
  }
  // credentials: "omit" keeps the browser from offering its own Basic-auth dialog on a 401;
  // the Authorization header set here is sent all the same.
  const response = await fetch(path + query(options.params), {
    method, headers, body, credentials: "omit", cache: "no-store", signal: options.signal,
  });
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = {message: text.slice(0, 200)};
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && !options.credentials) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, params, options) => request("GET", path, {...options, params});
export const post = (path, form, options) => request("POST", path, {...options, form});
export const del = (path, options) => request("DELETE", path, options);

/** Every record of a Twilio-style list, following meta.next_page_url (at most maxPages). */
export async function getAll(path, params, key, options = {}) {
  const maxPages = options.maxPages || 20;
  let data = await get(path, {PageSize: 1000, ...params}, options);
  const records = [...data[key]];
  for (let page = 1; page < maxPages && data.meta && data.meta.next_page_url; page++) {
    data = await get(relative(data.meta.next_page_url), null, options);
    records.push(...data[key]);
  }
  return records;
}

/**
 * Follows GET /callstream/v1/Events/Stream (Server-Sent Events over fetch, which unlike
 * EventSource can send the Authorization header). Calls onMessage with each "events"
 * message and onState with "live" / "reconnecting"; reconnects from the last id it saw.
 * Returns {close()}.
 */
export function openStream(params, onMessage, onState = () => {}) {
  const controller = new AbortController();
  let lastId = params.After;
  let closed = false;
  let delay = 500;

  async function once() {
    const creds = session();
    if (!creds) return;
    const response = await fetch(
      "/callstream/v1/Events/Stream" + query({...params, After: lastId}),
      {
        headers: {Authorization: basic(creds.username, creds.password), Accept: "text/event-stream"},
        credentials: "omit", cache: "no-store", signal: controller.signal,
      },
    );
    if (response.status === 401) {
      onUnauthorized(new ApiError(401, null));
      closed = true;
      return;
    }
    if (!response.ok || !response.body) throw new ApiError(response.status, null);
    onState("live");
    delay = 500;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(block);
      }
    }
  }

  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") lastId = value;
    }
    if (event === "events" && data.length) onMessage(JSON.parse(data.join("\n")));
  }

  (async () => {
    while (!closed) {
      try {
        await once();
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (closed) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();

  return {
    close() {
      closed = true;
      controller.abort();
    },
  };
}
