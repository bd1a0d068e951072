// The playground page: choose a model, write a conversation, set the seed's parameters,
// send to this server's /model/api/v1/chat/completions and watch the reply stream in.

import { bearer, getJson, readServerError, renderError, ServerError, sessionSecret } from "./api.js";
import { createConversation } from "./conversation.js";
import { readParameters, resetParameters, showParameterInfo } from "./parameters.js";
import { ReplyView, tokensPerSecond } from "./reply.js";
import { curlCommand, openaiCode } from "./snippets.js";
import { readServerSentEvents } from "./sse.js";

const KEY_STORAGE = "parley.apiKey";
const API_BASE = `${location.origin}/model/api/v1`;
const CHAT_URL = `${API_BASE}/chat/completions`;

const element = (id) => document.getElementById(id);
const keyInput = element("api-key");
const modelSelect = element("model");
const sendButton = element("send");
const stopButton = element("stop-generation");
const conversation = createConversation(element("messages"));
const reply = new ReplyView();

let parameterInfo = null;
/** The request in flight, if any. */
let inFlight = null;
let lastReply = "";

function apiKey() {
  return keyInput.value.trim();
}

function setStatus(id, text) {
  element(id).textContent = text;
}

async function loadModels() {
  const previous = modelSelect.value;
  setStatus("model-status", "Loading models…");
  try {
    const list = await getJson(`${API_BASE}/models`, apiKey());
    const ids = list.data.map((model) => model.id);
    modelSelect.replaceChildren(
      ...ids.map((id) => {
        const option = document.createElement("option");
        option.value = id;
        option.textContent = id;
        return option;
      }),
    );
    if (ids.includes(previous)) modelSelect.value = previous;
    setStatus("model-status", ids.length === 1 ? "1 model served." : `${ids.length} models served.`);
  } catch (error) {
    const hint = error instanceof ServerError && error.status === 401 ? " Enter your API key above." : "";
    setStatus("model-status", `Could not list models: ${error.message}${hint}`);
  }
}

/** The key the model list was last loaded with: a `change` and a submit for one edit load it once. */
let keyInUse = null;

function useKey(force = false) {
  if (!force && apiKey() === keyInUse) return;
  keyInUse = apiKey();
  sessionSecret.set(KEY_STORAGE, apiKey());
  setStatus("key-status", apiKey() === "" ? "No key: requests are sent without one." : "Key kept for this browser session.");
  void loadModels();
}

/** The request body, exactly as sent and as the snippets show it (the seed's field order). */
function requestBody() {
  const system = element("system-prompt").value;
  const messages = [...(system.trim() === "" ? [] : [{ role: "system", content: system }]), ...conversation.turns()];
  return { model: modelSelect.value, messages, ...readParameters() };
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  element("append-reply").hidden = busy || lastReply === "";
}

async function send() {
  if (inFlight !== null) return;
  const body = requestBody();
  const controller = new AbortController();
  const startedAt = performance.now();
  const result = { streamed: body.stream === true, finishReason: null, stopReason: null, usage: null, requestId: null };
  let firstAt = null;
  let state = "done";
  inFlight = controller;
  lastReply = "";
  reply.start();
  setBusy(true);
  sessionSecret.set(KEY_STORAGE, apiKey());
  const received = (text) => {
    if (text === "") return;
    firstAt ??= performance.now();
    lastReply += text;
    reply.append(text);
  };
  try {
    const response = await fetch(CHAT_URL, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(apiKey()) },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    result.requestId = response.headers.get("x-request-id");
    if (!response.ok) throw await readServerError(response);
    if (result.streamed) {
      for await (const { data } of readServerSentEvents(response.body)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error !== undefined) throw new ServerError(200, chunk.error, result.requestId);
        const choice = chunk.choices?.[0];
        if (typeof choice?.delta?.content === "string") received(choice.delta.content);
        if (choice?.finish_reason !== null && choice?.finish_reason !== undefined) {
          result.finishReason = choice.finish_reason;
          result.stopReason = choice.stop_reason ?? null;
        }
        if (chunk.usage !== undefined && chunk.usage !== null) result.usage = chunk.usage;
      }
    } else {
      const completion = await response.json();
      const choice = completion.choices?.[0];
      firstAt = performance.now();
      received(choice?.message?.content ?? "");
      result.finishReason = choice?.finish_reason ?? null;
      result.stopReason = choice?.stop_reason ?? null;
      result.usage = completion.usage ?? null;
    }
  } catch (error) {
    if (controller.signal.aborted) state = "stopped";
    else {
      state = "error";
      reply.error(error);
    }
  } finally {
    const endedAt = performance.now();
    inFlight = null;
    result.totalMs = endedAt - startedAt;
    result.ttftMs = firstAt === null ? null : firstAt - startedAt;
    result.tokensPerSecond = tokensPerSecond(result.usage?.completion_tokens, firstAt, endedAt, startedAt, result.streamed);
    reply.finish(state, result);
    setBusy(false);
  }
}

/** Aborting the fetch closes the connection; Parley stops generating when it sees that. */
function stop() {
  inFlight?.abort();
}

async function showSnippet(kind) {
  const body = requestBody();
  const text = kind === "curl" ? curlCommand(CHAT_URL, body) : openaiCode(API_BASE, body);
  element("snippet-title").textContent = kind === "curl" ? "Request as curl" : "Request as code (openai SDK for Node.js)";
  const code = element("snippet");
  code.textContent = text;
  setStatus("copy-status", "");
  element("snippet-panel").hidden = false;
  try {
    await navigator.clipboard.writeText(text);
    setStatus("copy-status", "Copied to the clipboard. It reads your key from $YOUR_API_KEY.");
  } catch {
    getSelection()?.selectAllChildren(code);
    setStatus("copy-status", "The clipboard is not available here: the text is selected, copy it with Ctrl+C.");
  }
}

function appendReply() {
  if (lastReply === "") return;
  conversation.add("assistant", lastReply);
  conversation.add("user", "", true);
  lastReply = "";
  element("append-reply").hidden = true;
}

async function loadParameterInfo() {
  try {
    const response = await fetch("/web/parameters.json");
    if (!response.ok) throw await readServerError(response);
    parameterInfo = await response.json();
    showParameterInfo(parameterInfo);
  } catch (error) {
    renderError(element("error"), error);
  }
}

element("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useKey(true);
});
keyInput.addEventListener("change", () => useKey());
element("forget-key").addEventListener("click", () => {
  keyInput.value = "";
  useKey();
  keyInput.focus();
});
sendButton.addEventListener("click", () => void send());
stopButton.addEventListener("click", stop);
element("add-user").addEventListener("click", () => conversation.add("user", "", true));
element("add-assistant").addEventListener("click", () => conversation.add("assistant", "", true));
element("copy-curl").addEventListener("click", () => void showSnippet("curl"));
element("copy-code").addEventListener("click", () => void showSnippet("code"));
element("append-reply").addEventListener("click", appendReply);
element("reset-parameters").addEventListener("click", () => {
  if (parameterInfo !== null) resetParameters(parameterInfo.defaults);
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    void send();
  } else if (event.key === "Escape" && inFlight !== null) {
    event.preventDefault();
    stop();
  }
});

keyInput.value = sessionSecret.get(KEY_STORAGE);
keyInUse = apiKey();
conversation.add("user", "Hello!");
void loadParameterInfo();
void loadModels();
