"""The `bert4k` command. Each subcommand is a module-level `add_<name>(subparsers)` that registers its parser and
sets `func`; add a new one to `SUBCOMMANDS`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _masks(args: argparse.Namespace) -> int:
    from bert4k.plotting import application_masks, example_tokens, plot_application_masks

    text = args.tokens if args.tokens is not None else args.text
    if args.plot:
        path = plot_application_masks(text, args.plot, target=args.target, num_pad=args.pad, seed=args.seed)
        print(f"wrote {path}")
        return 0
    tokens, segments = example_tokens(text, args.target, args.pad)
    found = application_masks(tokens, segments, args.seed)
    print("tokens:", " ".join(tokens))
    print("unilm segments:", " ".join(map(str, segments)))
    print("plm ranks:", " ".join(map(str, found["ranks"])))
    for app in ("encoder", "mlm", "lm", "unilm", "plm"):
        print(f"\n{app} (row = query i, column = key j; # = may attend)")
        for row in found[app]:
            print(" ".join("#" if v else "." for v in row))
    return 0


def add_masks(subparsers) -> None:
    p = subparsers.add_parser("masks", help="show or plot the attention mask of each application",
                              description="Print the masks of encoder, mlm, lm, unilm and plm for an example "
                                          "input, or draw them into a PNG with --plot.")
    p.add_argument("--plot", metavar="PNG", help="write a picture of the masks to this file")
    p.add_argument("--text", default="北京欢迎你", help="example text, one token per character (default: %(default)s)")
    p.add_argument("--target", help="unilm target text (default: the second half of the tokens is the target)")
    p.add_argument("--tokens", type=int, help="use N numbered tokens instead of --text")
    p.add_argument("--pad", type=int, default=1, help="padding tokens appended (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the plm factorisation order")
    p.set_defaults(func=_masks)


SUBCOMMANDS = (add_masks,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert4k", description="bert4k command-line tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
