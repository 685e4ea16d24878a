"""`python -m training <command> ...`: one dispatcher for the offline tools.

Each command lives in its own module with `main(argv: list[str]) -> int`; modules are imported only
when their command runs, so a broken or missing one fails alone.
"""

import importlib
import sys

from training.errors import Terminated, UserError

# command -> module that holds its `main(argv)`
COMMANDS: dict[str, str] = {
    "train": "training.loop",
    "export": "training.export",
    "evaluate": "training.evaluate",
    "sweep": "training.sweep",
}

USAGE = "usage: python -m training {" + ",".join(COMMANDS) + "} [options]  (add --help after a command)"


def main(argv: list[str] | None = None) -> int:
    """Dispatch `argv[0]` to its module; return the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; {USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as exc:
        if exc.name != COMMANDS[command]:
            raise  # a real missing dependency inside the module: keep the traceback
        print(f"error: command {command!r} is not available in this checkout", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
