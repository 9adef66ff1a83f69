"""The ``cnnkit`` command. Each verb is a small module with ``add_parser`` and ``run``; ``run``
calls one function of the Python API and prints its answer.

Only argparse and the config module are imported here, so ``cnnkit --help`` is instant; the verbs
import Keras when they run. Messages are the ``cnnkit`` logger's, shown as ``cnnkit: ...`` lines
(:func:`cnnkit.log.show`). Bad input ends in a one-line error and exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

# The verbs, in the order --help lists them, and the function(s) of the Python API each one
# wraps (cnnkit.<name>). The parser, the command-line reference and the tests read this table,
# so a new verb is one module in cnnkit/cli/ and one line here.
VERBS: dict[str, tuple[str, ...]] = {
    "train": ("train", "resume"),
    "launch": ("launch",),
    "tune": ("tune", "describe_study"),
    "evaluate": ("evaluate",),
    "report": ("report",),
    "compare": ("compare",),
    "predict": ("predict", "Predictor"),
    "serve": ("serve",),
    "export": ("export",),
    "data": ("inspect_folder",),
    "models": ("list_models",),
    "config": ("load_config",),
    "env": ("describe_environment",),
}


# Failures of the machine that the user can remedy: one line and status 2, like bad input.
_USER_ERRNOS = {
    errno.ENOSPC: "free some space and run it again (what was saved before is intact)",
    errno.EDQUOT: "free some space within your quota and run it again",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
}


def build_parser() -> argparse.ArgumentParser:
    from cnnkit.env import cnnkit_version

    parser = argparse.ArgumentParser(
        prog="cnnkit",
        description="Build, train, evaluate and use image classifiers with Keras 3.",
        epilog="Run 'cnnkit VERB --help' for a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {cnnkit_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and framework logs")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        module = importlib.import_module(f"cnnkit.cli.{verb}")
        sub = module.add_parser(verbs)
        sub.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks and framework logs",
        )
        sub.set_defaults(handler=module.run, extras_dest=getattr(module, "EXTRAS", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # argparse stops collecting a verb's positionals at the first option, so that
    # `cnnkit train a=1 --runs-dir r b=2` would lose b=2: give such strays to the verb's list.
    if extras:
        if args.extras_dest is None or any(e.startswith("-") for e in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        getattr(args, args.extras_dest).extend(extras)
    from cnnkit import log
    from cnnkit.env import set_verbose
    from cnnkit.errors import CnnkitError
    from cnnkit.log import printable

    set_verbose(args.debug)
    log.show(debug=args.debug)
    try:
        return int(args.handler(args) or 0)
    except CnnkitError as exc:
        if args.debug:
            raise
        print(f"cnnkit: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # TrainingInterrupted says how to resume
        print(f"cnnkit: {printable(exc)}" if str(exc) else "cnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cnnkit evaluate RUN | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if args.debug or exc.errno not in _USER_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"cnnkit: error: {exc.strerror}{printable(where)}: {_USER_ERRNOS[exc.errno]}",
              file=sys.stderr)  # fmt: skip
        return 2
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"cnnkit: internal error: {type(exc).__name__}: {message} "
            f"(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
