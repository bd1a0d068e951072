import { Command, InvalidArgumentError, Option, type OutputConfiguration } from "commander";
import { architectures, weightTypes, type WeightType } from "../models/architectures.js";
import { inspectModel, type ModelInspection } from "../models/inspect.js";
import { synthesizeModel } from "../models/synthesize.js";

interface SynthOptions {
  arch: string;
  shape: string;
  type: WeightType;
  vocab?: string;
  out: string;
  seed: number;
  name?: string;
}

/** `parley model synth` and `parley model inspect`. */
export function registerModelCommand(program: Command): void {
  const model = program.command("model").description("write synthetic GGUF models and inspect GGUF files");

  const shapes = [...new Set(Object.values(architectures).flatMap((architecture) => Object.keys(architecture.shapes)))];
  model
    .command("synth")
    .description("write a GGUF with random weights in the exact shape of a real model (its output is gibberish)")
    .addOption(new Option("--arch <architecture>", "architecture to imitate").choices(Object.keys(architectures)).default("qwen2"))
    .addOption(new Option("--shape <shape>", "model size").choices(shapes).makeOptionMandatory())
    .addOption(new Option("--type <type>", "type of the weight matrices").choices(weightTypes).default("q8_0"))
    .option("--vocab <file>", "GGUF whose tokenizer and chat template are copied (default: a small built-in ChatML vocabulary)")
    .requiredOption("--out <file>", "where to write the model")
    .option("--seed <n>", "random seed: the same seed writes the same file", parseSeed, 0)
    .option("--name <name>", "general.name (default: <arch>-<shape>-synthetic)")
    .action(async (options: SynthOptions, command: Command) => {
      const output = outputOf(command);
      await reportErrors(output, async () => {
        const progress = new ProgressLine(output, `writing ${options.arch} ${options.shape} ${options.type} to ${options.out}`);
        const result = await synthesizeModel({
          architecture: options.arch,
          shape: options.shape,
          type: options.type,
          vocabularyPath: options.vocab,
          outputPath: options.out,
          seed: options.seed,
          name: options.name,
          onProgress: (written, total) => progress.update(written, total)
        }).finally(() => progress.end());
        const plan = result.plan;
        output.writeOut(
          `${result.path}\n` +
            `  ${plan.architecture} ${plan.shape} ${plan.type}: ${formatCount(plan.parameterCount)} parameters, ` +
            `${formatBytes(plan.fileSize)}, ${plan.vocabularySize}-token vocabulary, written in ${result.seconds.toFixed(1)} s\n`
        );
      });
    });

  model
    .command("inspect")
    .description("show a GGUF model's architecture, size, quantization, context and chat template")
    .argument("<file>", "GGUF model file")
    .option("--json", "print JSON")
    .action(async (file: string, options: { json?: boolean }, command: Command) => {
      const output = outputOf(command);
      await reportErrors(output, async () => {
        const inspection = await inspectModel(file);
        output.writeOut(options.json === true ? `${JSON.stringify(inspection, null, 2)}\n` : formatInspection(inspection));
      });
    });
}

interface Output {
  writeOut(text: string): void;
  writeErr(text: string): void;
}

/** The command's configured output (commander's, so tests and the main program can redirect it). */
function outputOf(command: Command): Output {
  const configured: OutputConfiguration = command.configureOutput();
  return {
    writeOut: configured.writeOut ?? ((text) => process.stdout.write(text)),
    writeErr: configured.writeErr ?? ((text) => process.stderr.write(text))
  };
}

/** Bad input and I/O failures end as one `error:` line and exit code 1, never a stack trace. */
async function reportErrors(output: Output, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    output.writeErr(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}

function parseSeed(value: string): number {
  const seed = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(seed))
    throw new InvalidArgumentError("expected a non-negative integer");
  return seed;
}

/** One status line on stderr: rewritten in place on a terminal, printed once otherwise. */
class ProgressLine {
  private readonly interactive = process.stderr.isTTY;
  private lastPercent = -1;

  constructor(private readonly output: Output, private readonly label: string) {
    if (!this.interactive)
      output.writeErr(`${label}\n`);
  }

  update(written: number, total: number): void {
    const percent = Math.floor((written / total) * 100);
    if (!this.interactive || percent === this.lastPercent)
      return;
    this.lastPercent = percent;
    this.output.writeErr(`\r${this.label}: ${percent}% (${formatBytes(written)} of ${formatBytes(total)})`);
  }

  end(): void {
    if (this.interactive && this.lastPercent >= 0)
      this.output.writeErr("\n");
  }
}

function formatInspection(inspection: ModelInspection): string {
  const rows: [string, string][] = [
    ["architecture", inspection.architecture],
    ["name", inspection.name ?? "-"],
    ["parameters", `${formatCount(inspection.parameterCount)} (${inspection.parameterCount}, ${inspection.tensorCount} tensors)`],
    ["quantization", inspection.quantization],
    ["context length", inspection.contextLength?.toString() ?? "-"],
    ["chat template", inspection.chatTemplate],
    ["vocabulary", `${inspection.vocabularySize ?? "-"} tokens (${inspection.tokenizerModel ?? "no tokenizer"})`],
    ["file size", `${formatBytes(inspection.fileSize)} (${inspection.fileSize} bytes)`]
  ];
  return `${inspection.path}\n${rows.map(([label, value]) => `  ${label.padEnd(15)}${value}`).join("\n")}\n`;
}

function formatCount(count: number): string {
  const units: [number, string][] = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [size, suffix] of units)
    if (count >= size)
      return `${(count / size).toFixed(count >= size * 100 ? 0 : count >= size * 10 ? 1 : 2)}${suffix}`;
  return String(count);
}

function formatBytes(bytes: number): string {
  const units: [number, string][] = [[1e9, "GB"], [1e6, "MB"], [1e3, "KB"]];
  for (const [size, suffix] of units)
    if (bytes >= size)
      return `${(bytes / size).toFixed(1)} ${suffix}`;
  return `${bytes} B`;
}
