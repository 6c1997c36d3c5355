"""The ``textgym`` command. Each subcommand lives in its own module, imported only when it runs:
the module gives ``configure(parser)`` (adds its arguments) and ``main(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("agents.demo", "roll out a few episodes of an env with a random or given agent and print them"),
    "train": ("agents.lm.train", "RLHF: train a causal-LM policy with PPO on a textgym task"),
    "compare": ("agents.compare", "train several algorithms x seeds with the same flags; curves, plot, CIs, verdicts"),
    "eval": ("agents.eval", "held-out greedy accuracy, pass@k and fluency of LMs on a task, side by side"),
    "validate-sb3": ("agents.validate", "train our PPO and SB3's PPO on the same env and seeds, and compare"),
    "samples": ("textgym.human.cli_samples", "import or export samples of a rating store (JSONL)"),
    "rate": ("textgym.human.terminal", "rate pending samples in the terminal"),
    "serve": ("textgym.human.server", "serve the web rating page and its JSON API"),
    "train-rm": ("agents.reward_model", "train a reward model on the ratings of a store"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textgym", description="Reinforcement learning on text generation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = build_parser(only="")  # help only: import nothing heavy
        if command is None:
            parser.print_help()
            return 0 if "-h" in argv or "--help" in argv else 2
        parser.error(f"unknown command {command!r}; choose from {', '.join(COMMANDS)}")
    args = build_parser(only=command).parse_args(argv)
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
