import { GgufValueType, type GgufMetadataValue } from "./gguf-format.js";

// A small byte-level BPE vocabulary in the GPT-2/Qwen2 style, for synthetic models written without
// a vocab GGUF (e.g. a demo model on an offline machine). Every byte has a token, so any text
// tokenizes; a few common English merges keep token counts realistic-ish; the ChatML special
// tokens and the Qwen2 chat template make node-llama-cpp resolve its ChatML chat wrapper.

/** The Qwen2-Instruct chat template (ChatML with a default system prompt). */
export const QWEN2_CHAT_TEMPLATE =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}" +
  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** llama.cpp's token types (`tokenizer.ggml.token_type`). */
export const TokenType = { Normal: 1, Unknown: 2, Control: 3, UserDefined: 4, Unused: 5, Byte: 6 } as const;

/** GPT-2's byte-to-unicode map, in its token order: printable bytes first, then the rest. */
export function gpt2ByteTokens(): string[] {
  const printable: number[] = [];
  const ranges: [number, number][] = [[0x21, 0x7e], [0xa1, 0xac], [0xae, 0xff]];
  for (const [first, last] of ranges)
    for (let byte = first; byte <= last; byte++)
      printable.push(byte);
  const tokens = printable.map((byte) => String.fromCodePoint(byte));
  let extra = 0;
  for (let byte = 0; byte < 256; byte++)
    if (!printable.includes(byte))
      tokens.push(String.fromCodePoint(256 + extra++));
  return tokens;
}

// "Ġ" is a space and "Ċ" a newline in GPT-2's byte alphabet. Each merge joins two earlier tokens.
const MERGES = [
  "Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "Ġ w", "Ġ o", "e n", "Ġ c",
  "i t", "i s", "a n", "o r", "e s", "Ġ b", "e d", "Ġ f", "in g", "Ġ p", "o u", "Ġa n", "a l", "a r",
  "Ġt o", "Ġ m", "Ġo f", "Ġ in", "Ġ d", "Ġ h", "Ġan d", "i c", "a s", "l e", "Ġt h", "i on", "o m",
  "l l", "en t", "Ġ n", "Ġ l", "s t", "Ġ re", "v e", "Ġ e", "r o", "l y", "Ġb e", "Ġ g", "Ġ T", "c t",
  "Ġ S", "i d", "o t", "Ġ I", "u t", "e t", "Ġ A", "Ġ is", "Ġ on", "i m", "a m", "o w", "a y", "a d",
  "s e", "Ġth at", "Ġ C", "i g", "Ġf or", "a c", "Ġ y", "v er", "u r", "Ġ u", "l d", "Ġs t", "Ġ M",
  "' s", "Ġ he", "Ġ it", "at ion", "it h", "i r", "c e", "Ġy ou", "Ċ Ċ", "u s", "us er", "s s",
  "a ss", "is t", "ass ist", "an t", "assist ant", "s y", "sy st", "e m", "syst em", "Ġ H", "Ġ W",
  "Ġw ith", "ll o"
];

const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

export interface BuiltinVocabulary {
  /** The `tokenizer.*` metadata entries, in the order llama.cpp's converter writes them. */
  readonly metadata: [string, GgufMetadataValue][];
  readonly tokenCount: number;
}

export function builtinVocabulary(): BuiltinVocabulary {
  const tokens = gpt2ByteTokens();
  const known = new Set(tokens);
  for (const merge of MERGES) {
    const [left, right] = merge.split(" ");
    if (left === undefined || right === undefined || !known.has(left) || !known.has(right))
      throw new Error(`built-in vocabulary: merge "${merge}" joins an unknown token`);
    const joined = left + right;
    if (!known.has(joined)) {
      known.add(joined);
      tokens.push(joined);
    }
  }
  const tokenTypes: number[] = tokens.map(() => TokenType.Normal);
  const specialId = (token: (typeof SPECIAL_TOKENS)[number]): number => tokens.length + SPECIAL_TOKENS.indexOf(token);
  const endOfText = specialId("<|endoftext|>");
  const imEnd = specialId("<|im_end|>");
  for (const token of SPECIAL_TOKENS) {
    tokens.push(token);
    tokenTypes.push(TokenType.Control);
  }
  const metadata: [string, GgufMetadataValue][] = [
    ["tokenizer.ggml.model", { type: GgufValueType.String, value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: GgufValueType.String, value: "qwen2" }],
    ["tokenizer.ggml.tokens", { type: GgufValueType.Array, itemType: GgufValueType.String, value: tokens }],
    ["tokenizer.ggml.token_type", { type: GgufValueType.Array, itemType: GgufValueType.Int32, value: tokenTypes }],
    ["tokenizer.ggml.merges", { type: GgufValueType.Array, itemType: GgufValueType.String, value: MERGES }],
    ["tokenizer.ggml.eos_token_id", { type: GgufValueType.Uint32, value: imEnd }],
    ["tokenizer.ggml.padding_token_id", { type: GgufValueType.Uint32, value: endOfText }],
    ["tokenizer.ggml.bos_token_id", { type: GgufValueType.Uint32, value: endOfText }],
    ["tokenizer.ggml.add_bos_token", { type: GgufValueType.Bool, value: false }],
    ["tokenizer.chat_template", { type: GgufValueType.String, value: QWEN2_CHAT_TEMPLATE }]
  ];
  return { metadata, tokenCount: tokens.length };
}
