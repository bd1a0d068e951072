#!/usr/bin/env node
/** The `parley` command: this file only registers commands; each lives in its own module. */
import { Command } from "commander";
import { registerModelCommand } from "./model.js";
import { registerServeCommand } from "./serve.js";

const program = new Command("parley")
  .description("A self-hosted, OpenAI-compatible Chat Completions API server for GGUF models.")
  .version("0.1.0")
  .showHelpAfterError();

registerServeCommand(program);
registerModelCommand(program);

await program.parseAsync(process.argv);
