"""The ``agegender`` command line: the parser and :func:`main`; one module per command (``predict``:
:mod:`.predict`, ``info``: :mod:`.info`, ``check``: :mod:`.check`, ``batch``: :mod:`.batch`, ``evaluate``:
:mod:`agegender.evaluation.cli_args`)."""

from __future__ import annotations

import argparse
import sys

from agegender import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agegender", description="Face detection with age and gender estimation.")
    parser.add_argument("--version", action="version", version=f"agegender {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from agegender.cli.predict import register_cli as register_predict

    register_predict(sub)
    from agegender.cli.info import register_cli as register_info

    register_info(sub)
    from agegender.cli.check import register_cli as register_check
    from agegender.cli.batch import register_cli as register_batch

    register_check(sub)
    register_batch(sub)

    try:
        from agegender.evaluation.cli_args import register_cli
    except ImportError:  # evaluation extras missing: predict and info still work
        pass
    else:
        register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
