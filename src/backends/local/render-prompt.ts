/**
 * Renders chat messages into the model's prompt with its chat template (via the chat
 * wrapper node-llama-cpp resolves from the GGUF), and collects the template's own stop
 * texts (e.g. "### Human" for a plain-text template) that end a turn like an EOS does.
 */
import type { ChatHistoryItem, ChatWrapper, LlamaText } from "node-llama-cpp";
import type { ChatMessage } from "../../protocol/chat-request.js";

export interface RenderedPrompt {
  readonly text: LlamaText;
  /** Plain-text turn terminators of the template; special tokens end generation as EOG. */
  readonly templateStops: readonly string[];
}

export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((message): ChatHistoryItem => {
    if (message.role === "assistant") return { type: "model", response: [message.content] };
    return { type: message.role, text: message.content };
  });
  // The empty model turn at the end makes the template open the assistant's reply.
  history.push({ type: "model", response: [] });
  return history;
}

export function renderPrompt(chatWrapper: ChatWrapper, messages: readonly ChatMessage[]): RenderedPrompt {
  const state = chatWrapper.generateContextState({ chatHistory: toChatHistory(messages) });
  const templateStops = state.stopGenerationTriggers
    .map((trigger) => trigger.values)
    .filter((values) => values.length > 0 && values.every((value) => typeof value === "string"))
    .map((values) => values.join(""));
  return { text: state.contextText, templateStops };
}
