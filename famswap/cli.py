"""The `famswap` command line: builds one Settings, then hands off to the bot, the worker or the engine."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.config import Settings
from common.errors import ConfigError, FamswapError
from common.logs import setup_logging
from famswap import __version__

log = logging.getLogger("famswap")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _device_arg(value: str) -> str:
    value = value.strip().lower()
    if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


@dataclass
class PersonArg:
    """One person of `famswap swap`: an enrolled name or the files to enroll, and the face of the clip (from 1)."""

    identity: str | None = None
    identity_from: list[Path] | None = None
    face: int | None = None


class _AddPerson(argparse.Action):
    """--identity NAME / --identity-from PATH...: a new person, in the order given (``const`` says which)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:  # fmt: skip
        cast = list(getattr(namespace, self.dest) or [])
        cast.append(PersonArg(identity=str(values)) if self.const == "name" else PersonArg(identity_from=list(values)))  # type: ignore[call-overload]
        setattr(namespace, self.dest, cast)


class _SetFace(argparse.Action):
    """--face N: the face of the person named just before."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:  # fmt: skip
        cast = list(getattr(namespace, self.dest) or [])
        if not cast or cast[-1].face is not None:
            parser.error(f"--face {values} must follow the --identity or --identity-from it is for")
        if not isinstance(values, int) or values < 1:
            parser.error(f"--face {values}: faces are numbered from 1, as on `famswap tracks`'s contact sheet")
        cast[-1] = replace(cast[-1], face=values)
        setattr(namespace, self.dest, cast)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="famswap",
        description="Put family and friends into movie clips — a self-hosted Discord bot and command line.",
    )
    parser.add_argument("--version", action="version", version=f"famswap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the Discord bot and its worker(s)")
    run.add_argument("--no-worker", action="store_true", help="start only the bot (workers run elsewhere)")
    run.set_defaults(handler=_cmd_run)

    worker = sub.add_parser("worker", help="run a worker that trains and swaps queued jobs")
    worker.add_argument("--device", type=_device_arg, default=None, help="auto, cpu, cuda or cuda:N")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once by this worker (default 1)")
    worker.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # `famswap run` sets it
    worker.set_defaults(handler=_cmd_worker)

    enroll = sub.add_parser("enroll", help="enroll a person from photos, folders of photos or a selfie video")
    enroll.add_argument("name", help="the person's name (how you will refer to them)")
    enroll.add_argument("paths", nargs="+", type=Path, help="photos, folders of photos, or videos of the person")
    enroll.add_argument("--add-anyway", action="store_true",
                        help="add the new faces to an enrolled person even if they do not look like them")
    enroll.set_defaults(handler=_cmd_enroll)

    swap = sub.add_parser(
        "swap", help="put enrolled people (or people given by photos/video) into a clip",
        epilog="Several people at once: --identity A --face 1 --identity B --face 2. Each --face belongs to the "
               "--identity or --identity-from just before it; a person without --face takes the clip's main face "
               "nobody else took (faces are numbered from 1 by screen time x size, as on `famswap tracks`'s sheet).",
    )  # fmt: skip
    swap.add_argument("clip", type=Path, help="the movie clip whose actors' faces are replaced")
    swap.add_argument("--identity", action=_AddPerson, dest="cast", const="name", metavar="NAME",
                      help="name of a person enrolled with `famswap enroll` (repeat for several people)")
    swap.add_argument("--identity-from", nargs="+", type=Path, action=_AddPerson, dest="cast", const="from",
                      metavar="PATH", help="photos, folders or videos of a person (repeat for several people)")
    swap.add_argument("--face", type=int, action=_SetFace, dest="cast", metavar="N",
                      help="which face of the clip the person named just before replaces (see `famswap tracks`)")
    swap.add_argument("--out", type=Path, required=True, help="where to write the finished MP4")
    swap.add_argument("--train-minutes", type=float, default=None, help="training budget (default: by device)")
    swap.add_argument("--train-steps", type=int, default=None,
                      help="train exactly this many steps instead of for a time (for comparisons that a busy CPU "
                           "must not skew)")  # fmt: skip
    swap.add_argument("--track", type=int, default=None,
                      help="older spelling of --face, counting from 0: --track N is --face N+1 (one person only)")
    swap.add_argument("--device", type=_device_arg, default=None, help="auto, cpu, cuda or cuda:N")
    swap.add_argument("--model", choices=("lite", "original", "hires"), default=None, help="model (default by device)")
    swap.add_argument("--max-mb", type=float, default=None, help="size limit of the output (default 10 MB)")
    swap.add_argument("--seed", type=int, default=None, help="seed for repeatable training")
    swap.set_defaults(handler=_cmd_swap)

    tracks = sub.add_parser("tracks", help="list the people of a clip and write a contact sheet numbering their faces")
    tracks.add_argument("clip", type=Path)
    tracks.add_argument("--out", type=Path, default=None, help="contact sheet image (default: CLIP.tracks.jpg)")
    tracks.set_defaults(handler=_cmd_tracks)

    train = sub.add_parser("train", help="warm the face bank now: train it on every enrolled person")
    train.add_argument("--minutes", type=float, default=None,
                       help="how long at most (default: what is left of today's FAMSWAP_WARM_MINUTES_PER_DAY)")
    train.add_argument("--steps", type=int, default=None, help="exactly this many steps (for comparisons)")
    train.add_argument("--device", type=_device_arg, default=None, help="auto, cpu, cuda or cuda:N")
    train.set_defaults(handler=_cmd_train)

    ids = sub.add_parser("identities", help="list enrolled people and how warm each one's decoder is")
    ids.set_defaults(handler=_cmd_identities)

    forget = sub.add_parser("forget", help="erase an enrolled person: photos, face set, decoder and results")
    forget.add_argument("name")
    forget.set_defaults(handler=_cmd_forget)

    doctor = sub.add_parser("doctor", help="check this install: Python, torch/GPU, face model, ffmpeg, data home")
    doctor.set_defaults(handler=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything famswap writes (database, encrypted files, job folders, logs of ffmpeg...) is for this user only:
    # folders 0700 and files 0600, whatever the caller's umask.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = Settings.load()
    except ConfigError as exc:
        print(f"famswap: {exc.user_text()}", file=sys.stderr)
        return EXIT_USAGE
    # Children (the workers of `famswap run`, ffmpeg) inherit the folders as resolved here, not as written.
    os.environ.update(settings.path_environ())
    # Worker lines are prefixed so the mixed output of `famswap run` says which process spoke.
    setup_logging(settings.log_level, process=f"worker {getattr(args, 'device', None) or settings.device}" if args.command == "worker" else None)
    try:
        return int(args.handler(settings, args) or EXIT_OK)
    except ConfigError as exc:
        print(f"famswap: {exc.user_text()}", file=sys.stderr)
        return EXIT_USAGE
    except FamswapError as exc:
        print(f"famswap: {exc.user_text()}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("famswap: interrupted", file=sys.stderr)
        return 130


def _cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.doctor import format_report, run_checks

    checks = run_checks(settings)
    print(format_report(checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    settings.require_token()
    from famswap.supervisor import run_all

    return run_all(settings, with_worker=not args.no_worker)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.loop import run_worker

    if args.parent_pid is not None:
        from worker.supervisor import exit_with_parent

        if not exit_with_parent(args.parent_pid):
            log.warning("famswap run (pid %d) is gone; not starting a worker for it", args.parent_pid)
            return EXIT_FAILED
    return run_worker(settings, device=args.device, concurrency=args.concurrency, once=args.once)


def _cmd_enroll(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import enroll

    return enroll(settings, args.name, args.paths, add_anyway=args.add_anyway)


def _cmd_swap(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import swap

    cast: list[PersonArg] = args.cast or []
    if not cast:
        print("famswap swap: say who goes in: --identity NAME or --identity-from PATH...", file=sys.stderr)
        return EXIT_USAGE
    if args.track is not None:
        if len(cast) > 1 or cast[0].face is not None:
            print("famswap swap: --track is for one person without --face; use --face N (from 1) for each person",
                  file=sys.stderr)
            return EXIT_USAGE
        cast = [replace(cast[0], face=args.track + 1)]
    return swap(settings, args, cast)


def _cmd_tracks(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import tracks

    return tracks(settings, args.clip, args.out)


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import train

    return train(settings, args.minutes, args.steps, args.device)


def _cmd_identities(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import list_identities

    return list_identities(settings)


def _cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    from famswap.local import forget

    return forget(settings, args.name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
