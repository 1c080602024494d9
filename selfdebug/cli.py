"""`selfdebug <command> ...`: each command lives in its stage's package."""

from __future__ import annotations

import importlib
import sys

# command -> module with main(argv) -> int; only commands that run (tests import each one)
COMMANDS = {
    "execute": ("selfdebug.sandbox.cli", "judge samples against a benchmark's tests"),
    "tiny-model": ("selfdebug.llm.tiny_model", "build the small local model (CPU default)"),
    "synth": ("selfdebug.synth.cli", "synthesize the self-debugging dataset"),
    "sft": ("selfdebug.train.cli", "supervised fine-tuning (Ray Train + DeepSpeed)"),
    "rl": ("selfdebug.rl.cli", "reinforcement learning with LeDex's rewards (PPO, GRPO, RLOO)"),
    "eval": ("selfdebug.evaluate.cli", "pass@k for init / refine / explain+refine"),
    "serve": ("selfdebug.serve.cli", "serve the debugger: OpenAI API + /v1/debug (Ray Serve)"),
    "world": ("selfdebug.world.cli", "write the demo's procedural problem world (JSONL)"),
    "demo": ("selfdebug.demo.cli", "CPU-scale LeDex reproduction: self-bootstrap rounds"),
    "pipeline": ("selfdebug.pipeline.cli", "synth → sft → rl → eval → one report, resumable"),
}


def _usage() -> str:
    lines = ["usage: selfdebug <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"selfdebug: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from selfdebug.errors import run_command

    # Expected failures print one or two lines and a documented exit code; only bugs
    # print a traceback (selfdebug/errors.py).
    return run_command(f"selfdebug {name}",
                       lambda a: importlib.import_module(COMMANDS[name][0]).main(a), rest)


if __name__ == "__main__":
    sys.exit(main())
