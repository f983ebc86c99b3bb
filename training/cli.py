"""`mnist-gan`: one console script, one subcommand per job; each is a thin call into the library.

Invalid parameters exit with code 2 and a one-line message, before any heavy import.
"""

from __future__ import annotations

import argparse
import sys

from training.config import ConfigError, TrainConfig, parameter_fields

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage plus a traceback-like dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _convert(field, raw: str):
    """Turn a flag's text into the field's type; the message names the parameter and the type."""
    try:
        if field.type == "bool":
            if raw.lower() not in TRUE + FALSE:
                raise ValueError
            return raw.lower() in TRUE
        return {"int": int, "float": float, "str": str}[field.type](raw)
    except ValueError:
        raise ConfigError(f"{field.name} must be {KINDS[field.type]} (got {raw!r})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-gan", description="Train, evaluate and ship the seed's MNIST GAN.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = commands.add_parser("train", help="train a GAN, tracked in MLflow")
    for field in parameter_fields():
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            train.add_argument(flag, nargs="?", const="true", default=None, help=field.metadata["help"])
        else:
            train.add_argument(flag, default=None, metavar=field.type.upper(),
                               help=f"{field.metadata['help']} (default: {field.default})")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: _convert(f, getattr(args, f.name)) for f in parameter_fields()
              if getattr(args, f.name) is not None}
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        from training.job import preflight

        preflight(config)
    except (ConfigError, ValueError) as err:
        print(f"mnist-gan {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return _run_train(config)


def _run_train(config: TrainConfig) -> int:
    from training.checkpoint import CheckpointError
    from training.data import DataError
    from training.job import run_training
    from training.loop import NonFiniteLoss, Preempted

    try:
        run_training(config)
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"mnist-gan train: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLoss as err:
        print(f"mnist-gan train: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except Preempted as err:
        print(f"mnist-gan train: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
