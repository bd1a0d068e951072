#!/usr/bin/env node
/** The `parley` command: this file only registers commands; each lives in its own module. */
import { Command } from "commander";
import { registerKeysCommand } from "./keys.js";
import { registerModelCommand } from "./model.js";
import { registerServeCommand } from "./serve.js";
import { registerUsageCommand } from "./usage.js";

const program = new Command("parley")
  .description("A self-hosted, OpenAI-compatible Chat Completions API server for GGUF models.")
  .version("0.1.0")
  .showHelpAfterError();

registerServeCommand(program);
registerKeysCommand(program);
registerUsageCommand(program);
registerModelCommand(program);

await program.parseAsync(process.argv);
