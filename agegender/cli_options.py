"""Command-line options that ``agegender predict`` and ``agegender evaluate`` share, so both spell and map the
test-time augmentation switches the same way as ``Estimator(flip_tta=..., scale_tta=...)``."""

from __future__ import annotations

import argparse
from typing import Any


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="test-time augmentation (default on, as in the app): each face also mirrored; "
                             "--no-tta: one plain pass per face, no scales either")
    parser.add_argument("--scale-tta", action=argparse.BooleanOptionalAction, default=True,
                        help="also crop each face 10%% tighter and looser and average (default on; "
                             "--no-scale-tta: mirror only, a third of the network time)")


def tta_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Estimator`` keyword arguments for the parsed TTA switches (``--no-tta`` turns both off)."""
    return {"flip_tta": bool(args.tta), "scale_tta": bool(args.tta and args.scale_tta)}


def tta_variant(options: dict[str, Any]) -> str:
    """Report-name suffix of a TTA setting: '' for the default (mirror and scales)."""
    if options["flip_tta"]:
        return "" if options["scale_tta"] else "-flip-tta"
    return "-scale-tta" if options["scale_tta"] else "-no-tta"
