// The service's HTTP API as the playground uses it: the optional bearer key (kept per tab in
// sessionStorage), the error shape {"error": {"code", "message", "field"}}, and images in JSON answers.

const KEY_STORAGE = "aeserve.apiKey";
const unauthorizedListeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage blocked (private mode, sandboxed frame): work without a key
  }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage blocked: the key lives only until the page is reloaded */
  }
}

/** Call `fn(error)` whenever the service answers 401. */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  let field = null;
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) {
      ({ code = code, message = message, field = null } = body.error);
    } else if (body && typeof body.error === "string") {
      message = body.error;
    } else if (body && body.detail) {
      // FastAPI's own validation errors: [{loc, msg}] or a string
      message = Array.isArray(body.detail)
        ? body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
        : String(body.detail);
    }
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, code, message, field);
}

/**
 * One request. `body` is FormData (multipart), a plain object (sent as JSON) or undefined.
 * Answers the parsed JSON, or {blob, contentType} for binary answers. Throws ApiError.
 */
export async function request(path, { method = "GET", body, query } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, "network", "The service did not answer. Is it still running?");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401) unauthorizedListeners.forEach((fn) => fn(error));
    throw error;
  }
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return { blob: await response.blob(), contentType: type };
}

const modelPath = (name) => `/v1/models/${encodeURIComponent(name)}`;

export function listModels() {
  return request("/v1/models");
}

export function getCodebook(name) {
  return request(`${modelPath(name)}/codebook`, { query: { format: "json" } });
}

/** POST /v1/models/{name}/{operation}; JSON answers (`format=json`). */
export function operate(name, operation, body, query = {}) {
  return request(`${modelPath(name)}/${operation}`, {
    method: "POST",
    body,
    query: { format: "json", ...query },
  });
}

/** A browser-displayable URL for an image value of a JSON answer (base64 PNG or a data: URL). */
export function imageUrl(value, mediaType = "image/png") {
  if (typeof value !== "string") return null;
  if (value.startsWith("data:") || value.startsWith("blob:")) return value;
  return `data:${mediaType};base64,${value}`;
}
