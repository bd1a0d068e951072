// Talking to Parley from the browser: Bearer headers, the one error envelope, and
// secrets kept in sessionStorage only (gone when the browser session ends).

/** A response that was not 2xx, with the server's error envelope as it wrote it. */
export class ServerError extends Error {
  /**
   * @param {number} status
   * @param {{message?: string, type?: string, code?: string, param?: string | null}} error
   * @param {string | null} requestId
   */
  constructor(status, error, requestId) {
    super(error.message ?? `HTTP ${status}`);
    this.name = "ServerError";
    this.status = status;
    this.type = error.type ?? null;
    this.code = error.code ?? null;
    this.param = error.param ?? null;
    this.requestId = requestId;
  }
}

/** Reads a failed response's `{"error": {...}}`; anything else becomes its text or status line. */
export async function readServerError(response) {
  const requestId = response.headers.get("x-request-id");
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body !== null && typeof body === "object" && body.error !== null && typeof body.error === "object") {
      return new ServerError(response.status, body.error, requestId);
    }
  } catch {
    // not JSON: fall through to the raw text
  }
  return new ServerError(response.status, { message: text.trim() || `${response.status} ${response.statusText}` }, requestId);
}

/** @param {string} secret */
export function bearer(secret) {
  return secret === "" ? {} : { authorization: `Bearer ${secret}` };
}

/** GETs JSON with a Bearer secret; throws a ServerError for a non-2xx answer. */
export async function getJson(url, secret, signal) {
  const response = await fetch(url, { headers: { accept: "application/json", ...bearer(secret) }, signal });
  if (!response.ok) throw await readServerError(response);
  return response.json();
}

/** sessionStorage, tolerant of browsers that refuse it (private modes): then nothing is kept. */
export const sessionSecret = {
  get(name) {
    try {
      return sessionStorage.getItem(name) ?? "";
    } catch {
      return "";
    }
  },
  set(name, value) {
    try {
      if (value === "") sessionStorage.removeItem(name);
      else sessionStorage.setItem(name, value);
    } catch {
      // not kept: the field still holds it for this page
    }
  },
};

/**
 * Renders a ServerError (or any error) into `box` as the server wrote it: message,
 * then status, type, code, param and request id. Text only, never HTML.
 */
export function renderError(box, error) {
  box.replaceChildren();
  const message = document.createElement("p");
  message.className = "error-message";
  message.textContent = error instanceof Error ? error.message : String(error);
  const details = document.createElement("dl");
  details.className = "error-details";
  const fields =
    error instanceof ServerError
      ? [
          ["status", String(error.status)],
          ["type", error.type],
          ["code", error.code],
          ["param", error.param],
          ["request id", error.requestId],
        ]
      : [["error", error instanceof Error ? error.name : "error"]];
  for (const [name, value] of fields) {
    if (value === null || value === undefined) continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const definition = document.createElement("dd");
    definition.textContent = value;
    details.append(term, definition);
  }
  box.append(message, details);
  box.hidden = false;
}
