/**
 * Validation of a chat completion request body against the contract (DESIGN §3).
 *
 * Strict on what comes in: a wrong type or a value out of range is a 400 that names the
 * `param`; a known OpenAI field Parley does not implement yet is a 400 that says so;
 * unknown fields are ignored. `null` means "not given" for every optional field, as in
 * OpenAI's API.
 */
import { ApiError } from "./errors.js";
import { MAX_STOP_STRINGS, SEED_DEFAULTS, type ParameterRanges, type Range } from "./parameters.js";

export type ChatRole = "system" | "user" | "assistant";

export interface ChatMessage {
  readonly role: ChatRole;
  readonly content: string;
}

/** A validated request with every default applied. */
export interface ChatRequest {
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly temperature: number;
  readonly topP: number;
  readonly maxTokens: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly stop: readonly string[];
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** A sampling seed below 0xFFFFFFFF (llama.cpp's "random"), or undefined for a fresh one per request. */
  readonly seed: number | undefined;
}

type Json = unknown;

function describeType(value: Json): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return "a number too large to represent";
    return Number.isInteger(value) ? "an integer" : "a number";
  }
  return `a ${typeof value}`;
}

function wrongType(param: string, expected: string, value: Json): ApiError {
  return new ApiError("invalid_type", `Invalid type for '${param}': expected ${expected}, but got ${describeType(value)} instead.`, {
    param,
  });
}

function unsupported(param: string, what: string): ApiError {
  return new ApiError("unsupported_parameter", `${what} is not supported yet by this server.`, { param });
}

function isPlainObject(value: Json): value is Record<string, Json> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readNumber(body: Record<string, Json>, param: string, range: Range, fallback: number, integer = false): number {
  const value = body[param];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number") throw wrongType(param, integer ? "an integer" : "a number", value);
  if (!Number.isFinite(value)) throw wrongType(param, integer ? "a finite integer" : "a finite number", value);
  if (integer && !Number.isInteger(value)) throw wrongType(param, "an integer", value);
  const belowMin = range.minExclusive === true ? value <= range.min : value < range.min;
  if (belowMin) {
    const bound = range.minExclusive === true ? `> ${range.min}` : `>= ${range.min}`;
    throw new ApiError("invalid_value", `Invalid '${param}': expected a value ${bound}, but got ${value} instead.`, { param });
  }
  if (value > range.max) {
    throw new ApiError("invalid_value", `Invalid '${param}': expected a value <= ${range.max}, but got ${value} instead.`, { param });
  }
  return value;
}

function readContent(value: Json, param: string): string {
  if (typeof value === "string") return value;
  if (!Array.isArray(value)) throw wrongType(param, "a string or an array of content parts", value);
  let text = "";
  value.forEach((part: Json, index) => {
    const partParam = `${param}[${index}]`;
    if (!isPlainObject(part)) throw wrongType(partParam, "an object", part);
    if (part.type !== "text") {
      if (typeof part.type !== "string") throw wrongType(`${partParam}.type`, "a string", part.type);
      throw unsupported(`${partParam}.type`, `Content part type '${part.type}'`);
    }
    if (typeof part.text !== "string") throw wrongType(`${partParam}.text`, "a string", part.text);
    text += part.text;
  });
  return text;
}

const ROLES: Record<string, ChatRole> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

function readMessages(value: Json): ChatMessage[] {
  if (value === undefined || value === null) {
    throw new ApiError("missing_required_parameter", "Missing required parameter: 'messages'.", { param: "messages" });
  }
  if (!Array.isArray(value)) throw wrongType("messages", "an array", value);
  if (value.length === 0) {
    throw new ApiError("invalid_value", "Invalid 'messages': expected an array with at least 1 message, but got an empty array.", {
      param: "messages",
    });
  }
  return value.map((message: Json, index): ChatMessage => {
    const param = `messages[${index}]`;
    if (!isPlainObject(message)) throw wrongType(param, "an object", message);
    const role = message.role;
    if (typeof role !== "string") {
      if (role === undefined) throw new ApiError("missing_required_parameter", `Missing required parameter: '${param}.role'.`, { param: `${param}.role` });
      throw wrongType(`${param}.role`, "a string", role);
    }
    const mapped = ROLES[role];
    if (mapped === undefined) {
      if (role === "tool" || role === "function") throw unsupported(`${param}.role`, `The '${role}' message role`);
      throw new ApiError(
        "invalid_value",
        `Invalid value for '${param}.role': expected one of 'system', 'user', 'assistant', but got '${role}' instead.`,
        { param: `${param}.role` },
      );
    }
    for (const field of ["tool_calls", "function_call", "audio"] as const) {
      const present = message[field];
      if (present !== undefined && present !== null && !(Array.isArray(present) && present.length === 0)) {
        throw unsupported(`${param}.${field}`, `'${field}' in messages`);
      }
    }
    if (message.content === undefined) {
      throw new ApiError("missing_required_parameter", `Missing required parameter: '${param}.content'.`, { param: `${param}.content` });
    }
    return { role: mapped, content: readContent(message.content, `${param}.content`) };
  });
}

function readStop(value: Json): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value === "string") {
    if (value.length === 0) throw new ApiError("invalid_value", "Invalid 'stop': a stop string must not be empty.", { param: "stop" });
    return [value];
  }
  if (!Array.isArray(value)) throw wrongType("stop", "a string or an array of strings", value);
  if (value.length > MAX_STOP_STRINGS) {
    throw new ApiError("invalid_value", `Invalid 'stop': expected at most ${MAX_STOP_STRINGS} strings, but got ${value.length}.`, {
      param: "stop",
    });
  }
  return value.map((item: Json, index) => {
    if (typeof item !== "string") throw wrongType(`stop[${index}]`, "a string", item);
    if (item.length === 0) throw new ApiError("invalid_value", `Invalid 'stop[${index}]': a stop string must not be empty.`, { param: `stop[${index}]` });
    return item;
  });
}

function readBoolean(body: Record<string, Json>, field: string, fallback: boolean, param = field): boolean {
  const value = body[field];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "boolean") throw wrongType(param, "a boolean", value);
  return value;
}

/** How many seeds sample deterministically: every uint32 but llama.cpp's "random" 0xFFFFFFFF. */
const SEED_VALUES = 2 ** 32 - 1;

function readSeed(value: Json): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw wrongType("seed", "an integer", value);
  // llama.cpp takes a uint32 seed and reads 0xFFFFFFFF as "pick a random one" (as do
  // node-llama-cpp and llama-server, where -1 means random), so any safe integer is folded
  // into 0 … 2^32 - 2: every seed a client sends, -1 included, samples the same way each time.
  return ((value % SEED_VALUES) + SEED_VALUES) % SEED_VALUES;
}

/** Fields OpenAI defines that Parley does not implement yet, with the values that mean "off". */
function rejectUnsupported(body: Record<string, Json>): void {
  const isOff = (value: Json): boolean =>
    value === undefined || value === null || value === false || (Array.isArray(value) && value.length === 0);
  if (body.n !== undefined && body.n !== null && body.n !== 1) {
    if (typeof body.n !== "number" || !Number.isInteger(body.n)) throw wrongType("n", "an integer", body.n);
    throw unsupported("n", "'n' other than 1");
  }
  for (const field of ["tools", "functions", "logprobs", "top_logprobs", "audio", "prediction"]) {
    if (!isOff(body[field])) throw unsupported(field, `'${field}'`);
  }
  if (!isOff(body.tool_choice) && body.tool_choice !== "none") throw unsupported("tool_choice", "'tool_choice'");
  if (!isOff(body.function_call) && body.function_call !== "none") throw unsupported("function_call", "'function_call'");
  const format = body.response_format;
  if (!isOff(format) && !(isPlainObject(format) && format.type === "text")) {
    throw unsupported("response_format", "'response_format' other than {\"type\": \"text\"}");
  }
  const bias = body.logit_bias;
  if (!isOff(bias) && !(isPlainObject(bias) && Object.keys(bias).length === 0)) throw unsupported("logit_bias", "'logit_bias'");
  const modalities = body.modalities;
  if (!isOff(modalities) && !(Array.isArray(modalities) && modalities.every((m) => m === "text"))) {
    throw unsupported("modalities", "Output modalities other than 'text'");
  }
}

function readMaxTokens(body: Record<string, Json>, ranges: ParameterRanges): number {
  const maxTokens = readNumber(body, "max_tokens", ranges.max_tokens, SEED_DEFAULTS.max_tokens, true);
  const newer = body.max_completion_tokens;
  if (newer === undefined || newer === null) return maxTokens;
  // OpenAI's newer name for the same limit; it wins when both are given.
  return readNumber(body, "max_completion_tokens", ranges.max_tokens, maxTokens, true);
}

export function parseChatRequest(body: Json, ranges: ParameterRanges): ChatRequest {
  if (!isPlainObject(body)) throw new ApiError("invalid_type", `The request body must be a JSON object, but got ${describeType(body)}.`);
  if (typeof body.model !== "string" || body.model.length === 0) {
    if (body.model === undefined || body.model === null) {
      throw new ApiError("missing_required_parameter", "Missing required parameter: 'model'.", { param: "model" });
    }
    throw typeof body.model === "string"
      ? new ApiError("invalid_value", "Invalid 'model': expected a non-empty string.", { param: "model" })
      : wrongType("model", "a string", body.model);
  }
  const messages = readMessages(body.messages);
  rejectUnsupported(body);
  const streamOptions = body.stream_options;
  let includeUsage = false;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (!isPlainObject(streamOptions)) throw wrongType("stream_options", "an object", streamOptions);
    includeUsage = readBoolean(streamOptions, "include_usage", false, "stream_options.include_usage");
  }
  return {
    model: body.model,
    messages,
    temperature: readNumber(body, "temperature", ranges.temperature, SEED_DEFAULTS.temperature),
    topP: readNumber(body, "top_p", ranges.top_p, SEED_DEFAULTS.top_p),
    maxTokens: readMaxTokens(body, ranges),
    presencePenalty: readNumber(body, "presence_penalty", ranges.presence_penalty, SEED_DEFAULTS.presence_penalty),
    frequencyPenalty: readNumber(body, "frequency_penalty", ranges.frequency_penalty, SEED_DEFAULTS.frequency_penalty),
    stop: readStop(body.stop),
    stream: readBoolean(body, "stream", SEED_DEFAULTS.stream),
    includeUsage,
    seed: readSeed(body.seed),
  };
}
