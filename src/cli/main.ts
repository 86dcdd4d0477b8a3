// The command line: one `register` per command module.
import { Command } from "commander";
import { register as doctor } from "./doctor.ts";
import { register as bench } from "./bench.ts";
import { register as edit } from "./edit.ts";
import { register as forward } from "./forward.ts";
import { register as small } from "./small_commands.ts";
import { register as train } from "./train.ts";
import { register as pretrain } from "./pretrain.ts";
import { register as evalCmd } from "./eval.ts";
import { register as demo } from "./demo.ts";

export const VERSION = "0.1.0";

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("rl4pix")
    .description("Instruction-based image editing (InstructPix2Pix) fine-tuned with RL (DDPO + LoRA), on WebGPU")
    .version(VERSION)
    // a usage mistake is one line too, with the pointer to the options at its end
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith("error:") ? `rl4pix: ${s.trim().replace(/\s*\n\s*/g, " ")} (rl4pix help COMMAND shows the options)\n` : s) })
    .exitOverride((err) => {
      // commander's own usage errors (unknown option, missing argument) are user mistakes: exit 2
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  for (const reg of [edit, train, pretrain, evalCmd, demo, forward, small, doctor, bench]) reg(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  await buildProgram().parseAsync(argv, { from: "user" });
}
