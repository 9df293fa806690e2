"""The ``nowcast`` command line (Typer).

Each command parses its options and calls one library function. Library errors (``NowcastError``)
become one line on stderr and exit code 2; anything unexpected exits 1, with the traceback only under
``--verbose``. Heavy modules (torch, matplotlib, xarray) are imported inside the commands so that
``nowcast --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from typer.core import TyperGroup
import typer.core

from nowcast import __version__
from nowcast.errors import NowcastError, first_line
from nowcast.nowcasts import (
    DEFAULT_INITIAL_PERTURBATION,
    DEFAULT_MOTION_PERTURBATION,
    DEFAULT_NOISE_ADJUSTMENT,
    MOTION_PERTURBATIONS,
    initial_perturbation_problem,
    noise_adjustment_problem,
)

_click_errors = sys.modules[typer.BadParameter.__module__]  # click.exceptions, or the copy newer Typer vendors
_NoArgsIsHelp: type[BaseException] = getattr(_click_errors, "NoArgsIsHelpError", ())  # type: ignore[assignment]


class _OneLineErrors(TyperGroup):
    """The command group, with usage errors (bad option value, unknown option, missing argument) as one
    stderr line and exit 2, instead of Click's usage line and box (DESIGN section 2)."""

    def main(self, *args: object, standalone_mode: bool = True, **extra: object) -> object:  # type: ignore[override]
        try:
            rv = super().main(*args, standalone_mode=False, **extra)  # type: ignore[arg-type]
        except _NoArgsIsHelp as exc:  # `nowcast` (or `nowcast config`) alone: the help on stdout, exit 0
            if not standalone_mode:
                raise
            typer.echo(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        except _click_errors.UsageError as exc:
            if not standalone_mode:
                raise
            typer.echo(f"nowcast: error: {_usage_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:
            if not standalone_mode:
                raise
            typer.echo(f"nowcast: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("nowcast: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_message(exc: Exception) -> str:
    """Click's usage error as one line, with the value it refused and where to look for help."""
    message = " ".join(exc.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    errors = getattr(exc.__cause__, "errors", None)  # Typer's pydantic coercion does not quote the value
    if callable(errors):
        try:
            message += f", found {errors()[0]['input']!r}"
        except (LookupError, TypeError, ValueError):
            pass
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see '{ctx.command_path if ctx is not None else 'nowcast'} --help')"


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")
"""Global options also accepted after the command name (``nowcast predict x.nc -v``)."""


class _Group(_OneLineErrors):
    """The top-level group: global flags given after the command are moved before it, and every
    command's help ends with a note on them."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = set(self.commands)
        at = next((i for i, a in enumerate(args) if a in names), None)
        if at is not None:
            end = args.index("--") if "--" in args[at:] else len(args)
            moved = [a for a in args[at + 1 : end] if a in GLOBAL_FLAGS]
            if moved:
                rest = [a for a in args[at + 1 : end] if a not in GLOBAL_FLAGS]
                args = moved + args[: at + 1] + rest + args[end:]
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, name: str) -> Any:
        cmd = super().get_command(ctx, name)
        if cmd is not None and not cmd.epilog:
            cmd.epilog = "Global options -v/--verbose and -q/--quiet may also follow the command."
        return cmd


_CONTEXT = {"help_option_names": ["-h", "--help"]}
"""Click context settings of every command: -h is --help (subcommands inherit it)."""

app = typer.Typer(
    name="nowcast",
    cls=_Group,
    help="Precipitation nowcasting from weather-radar sequences with a ConvLSTM encoder-forecaster.",
    no_args_is_help=True,
    context_settings=_CONTEXT,
    add_completion=True,
    rich_markup_mode=None,  # plain help like git's or pip's: no boxes, no <bool> after flags
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(
    help="List the shipped configs, or print one resolved with every key's type and meaning.",
    no_args_is_help=True,
    context_settings=_CONTEXT,
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")

_state = {"verbose": False}
log = logging.getLogger("nowcast")


class _TqdmHandler(logging.StreamHandler):
    """Log records written through ``tqdm.write``: an open progress bar is cleared, the line printed and
    the bar redrawn below it, so log lines never land on the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


ThreadsOption = Annotated[
    int,
    typer.Option(
        "--threads",
        metavar="N",
        help="CPU threads for torch; 0: automatic (predict, evaluate: $OMP_NUM_THREADS, else the free cores; "
        "train: train.threads, else all cores).",
    ),
]

DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="Where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N.",
    ),
]

MotionPerturbationOption = Annotated[
    str,
    typer.Option(
        "--motion-perturbation",
        metavar="METHOD",
        help="Ensemble members' motion: bps (pySTEPS': each member along its own perturbed motion, growing "
        "with lead time; needs the pixel size: x/y in m or km, or lat/lon in degrees), none (all along the "
        "same motion) or auto (bps where the grid gives a pixel size, else none).",
        show_default=True,
    ),
]

NoiseAdjustmentOption = Annotated[
    str,
    typer.Option(
        "--noise-adjustment",
        metavar="METHOD",
        help="Per-level multipliers of the ensemble's noise (pySTEPS' noise_stddev_adj, for the steps "
        "baseline too): none (1), auto (each level's spread in the last frame's wet area over that of "
        "masked noise, 20 noise fields), fixed (1 / (0.75 + 0.09 k) for level k) or a number G (G on every "
        "level; ours only, not the steps baseline).",
        show_default=True,
    ),
]

InitialPerturbationOption = Annotated[
    str,
    typer.Option(
        "--initial-perturbation",
        metavar="METHOD",
        help="How each ensemble member starts: none (from the last observation, as pySTEPS' STEPS) or "
        "innovation (from it plus one AR(2) innovation of its own: the observation's own uncertainty; ours "
        "only, not the steps baseline).",
        show_default=True,
    ),
]

MembersOption = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="Write an ensemble of N members (STEPS-like; the model runs only with --centre model), its "
        "exceedance probabilities and mean instead of the model's forecast; 0: no ensemble.",
    ),
]

SeedOption = Annotated[int, typer.Option(metavar="S", help="Seed of the ensemble: the same seed, the same members.")]

ProbabilitiesOption = Annotated[
    str, typer.Option(metavar="LIST", help="Comma-separated thresholds (mm/h) of the ensemble's probabilities.")
]

CentreOption = Annotated[
    str,
    typer.Option(
        metavar="WHAT",
        help="What the members spread around: sprog (STEPS) or model (each member: the model's forecast plus "
        "that member's perturbation; a Lagrangian model on an S-PROG base).",
    ),
]

ModelOption = Annotated[
    Optional[Path], typer.Option(metavar="CKPT", help="Checkpoint (default: the model shipped with nowcast).")
]

StepsOption = Annotated[
    Optional[int],
    typer.Option(metavar="N", help="Lead times to forecast, counted in frames (not with --lead; default: see --lead)."),
]

LeadOption = Annotated[
    Optional[str],
    typer.Option(
        metavar="DURATION",
        help="Forecast horizon as a duration, e.g. 60min, 1h, 90m: the fewest steps reaching it (not with --steps; "
        "default 60min, or the model's trained frames for frame-numbered input and minmax image models).",
    ),
]


def _lead_seconds(lead: str | None) -> int | None:
    """``--lead`` in seconds (None when not given); a bad duration is exit 2."""
    if lead is None:
        return None
    from nowcast.leads import parse_duration

    return parse_duration(lead)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nowcast {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Forecast the next hour or two of rain from a sequence of radar frames."""
    _state["verbose"] = verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("nowcast")
    root.handlers.clear()
    handler = _TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into one stderr line and an exit code (2 expected, 1 unexpected)."""
    try:
        yield
    except NowcastError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        message = first_line(exc)
        typer.echo(f"nowcast: error: {message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("nowcast: interrupted", err=True)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: Typer reports them, exit 2
        raise
    except BrokenPipeError:  # e.g. `nowcast info f.nc | head`
        sys.stderr.close()
        raise typer.Exit(0) from None
    except Exception as exc:  # noqa: BLE001 - the edge of the program
        if _state["verbose"]:
            traceback.print_exc()
        first = " ".join(str(exc).split()) or type(exc).__name__
        typer.echo(
            f"nowcast: unexpected error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
            err=True,
        )
        raise typer.Exit(1) from None


def _command_line() -> str:
    return "nowcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(metavar="OUT.nc", help="NetCDF file to write.")],
    frames: Annotated[int, typer.Option(metavar="N", help="Number of frames.")] = 36,
    size: Annotated[tuple[int, int], typer.Option(metavar="H W", help="Frame height and width in pixels.")] = (
        256,
        256,
    ),
    step: Annotated[int, typer.Option(metavar="SECONDS", help="Time step in seconds.")] = 300,
    seed: Annotated[int, typer.Option(metavar="S", help="Random seed; the same seed gives the same file.")] = 0,
    growth: Annotated[
        str,
        typer.Option(
            metavar="KIND",
            help="Predictable growth and decay that extrapolation cannot forecast: none; orographic "
            "(rain enhanced up to x5 over fixed hills); or trend (every cell strengthens or weakens steadily, "
            "by a factor 1.8-3.3 per hour).",
        ),
    ] = "none",
    wind_scale: Annotated[
        float, typer.Option(metavar="X", help="Factor on the wind speed (1: 1.2-3 pixels per 5 minutes).")
    ] = 1.0,
) -> None:
    """Write a synthetic radar sequence of moving, growing and decaying rain cells."""
    with _errors():
        from nowcast.synth import write_synthetic

        path = write_synthetic(
            out, frames=frames, size=size, step_s=step, seed=seed, growth=growth, wind_scale=wind_scale
        )
        log.info("wrote %s (%d frames of %dx%d, step %d s)", path, frames, size[0], size[1], step)


@app.command()
def info(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="A radar NetCDF file (or several, as one archive), or a checkpoint .pt."),
    ],
    variable: Annotated[Optional[str], typer.Option(metavar="NAME", help="Data variable to describe.")] = None,
) -> None:
    """Describe a radar file, an archive of several files, or a checkpoint."""
    with _errors():
        from nowcast.models.checkpoint import CHECKPOINT_SUFFIXES

        if len(files) == 1 and files[0].suffix in CHECKPOINT_SUFFIXES:
            from nowcast.models.checkpoint import describe_checkpoint

            lines = describe_checkpoint(files[0])
        else:
            from nowcast.io.info import describe_radar

            lines = describe_radar([str(f) for f in files], variable=variable)
        for line in lines:
            typer.echo(line)


_SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value: section.key=value (repeatable; keys: nowcast config show).",
    ),
]
"""``--set`` of ``train`` and ``config show``."""


@app.command()
def train(
    config: Annotated[
        Optional[str],
        typer.Option(
            "--config", "-c", metavar="NAME|FILE", help="A shipped config (nowcast config list) or a YAML file."
        ),
    ] = None,
    set_: _SetOption = None,
    resume: Annotated[
        Optional[Path], typer.Option(metavar="RUN_DIR", help="Continue the run in this directory exactly.")
    ] = None,
    run_dir: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="Run directory (default: runs/<config>-<time>).")
    ] = None,
    threads: ThreadsOption = 0,
) -> None:
    """Train a ConvLSTM encoder-forecaster (CPU, one GPU, or several through torchrun)."""
    with _errors():
        from nowcast.config import load_config, resolve_config
        from nowcast.training.loop import run_training

        if resume is not None:
            base = resolve_config(config) if config is not None else resume / "config.yaml"
        elif config is None:
            raise typer.BadParameter("expected --config NAME|FILE (or --resume RUN_DIR)", param_hint="--config")
        else:
            base = resolve_config(config)
        overrides = list(set_ or []) + ([f"train.threads={threads}"] if threads > 0 else [])
        cfg = load_config(base, overrides)
        run_training(cfg, config_name=Path(base).stem, run_dir=run_dir, resume=resume)


def _predict_settings(
    model: Optional[Path],
    steps: Optional[int],
    lead: Optional[str],
    output: Any,
    plot: Any,
    max_age: Optional[float],
    variable: Optional[str],
    lock_timeout: float,
    threads: int,
    device: str,
) -> Any:
    """The ``PredictSettings`` that ``predict`` and ``watch`` share, from their options."""
    from nowcast.predict import PredictSettings

    return PredictSettings(
        model=model,
        steps=steps,
        lead_s=_lead_seconds(lead),
        output=output,
        plot=plot,
        max_age_min=max_age,
        variable=variable,
        lock_timeout_s=lock_timeout,
        history=_command_line(),
        threads=threads,
        device=device,
    )


@app.command()
def predict(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUT.nc", help="Radar NetCDF file(s) holding the latest frames.")
    ],
    model: ModelOption = None,
    steps: StepsOption = None,
    lead: LeadOption = None,
    at: Annotated[
        Optional[str], typer.Option(metavar="ISO_TIME", help="Reference time (ISO 8601); default: the last frame.")
    ] = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output", "-o", metavar="OUT.nc", help="Output NetCDF; may use {reference_time:%Y%m%d%H%M} and {stem}."
        ),
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            metavar="OUT.png",
            help="Also write a PNG: the last observed frame and four lead times; same templates as -o.",
        ),
    ] = None,
    max_age: Annotated[
        Optional[float],
        typer.Option(metavar="MINUTES", help="Fail (exit 2) if the newest frame is older than this many minutes."),
    ] = None,
    variable: Annotated[Optional[str], typer.Option(metavar="NAME", help="Input data variable.")] = None,
    lock_timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds to wait for another run writing the same output.")
    ] = 60.0,
    threads: ThreadsOption = 0,
    device: DeviceOption = "auto",
    members: MembersOption = 0,
    seed: SeedOption = 0,
    probabilities: ProbabilitiesOption = "1,10,30",
    motion_perturbation: MotionPerturbationOption = DEFAULT_MOTION_PERTURBATION,
    noise_adjustment: NoiseAdjustmentOption = DEFAULT_NOISE_ADJUSTMENT,
    initial_perturbation: InitialPerturbationOption = DEFAULT_INITIAL_PERTURBATION,
    centre: CentreOption = "sprog",
) -> None:
    """Forecast from the latest frames and write a CF-conventions NetCDF on the input's grid.

    Written atomically under a lock (.nowcast.lock, one per output directory): overlapping cron runs
    never interleave.
    """
    ensemble = _ensemble_product(
        members, seed, probabilities, motion_perturbation, noise_adjustment, centre, initial_perturbation
    )
    with _errors():
        from nowcast.predict import predict_to_file

        settings = _predict_settings(model, steps, lead, output, plot, max_age, variable, lock_timeout, threads, device)
        predict_to_file([str(p) for p in inputs], dataclasses.replace(settings, ensemble=ensemble), at=at)
    _done_and_closed()


@app.command()
def watch(
    pattern: Annotated[
        str,
        typer.Argument(metavar="'INCOMING/*.nc'", help="Radar files to watch: a glob pattern (quote it) or one file."),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT.nc",
            help="Output NetCDF template: {reference_time:%Y%m%d%H%M} and {stem} (the file of the newest frame).",
        ),
    ],
    plot: Annotated[
        Optional[str], typer.Option(metavar="OUT.png", help="Also write a PNG per forecast; same templates as -o.")
    ] = None,
    model: ModelOption = None,
    steps: StepsOption = None,
    lead: LeadOption = None,
    max_age: Annotated[
        Optional[float],
        typer.Option(metavar="MINUTES", help="Skip (one log line) a newest frame older than this many minutes."),
    ] = None,
    variable: Annotated[Optional[str], typer.Option(metavar="NAME", help="Input data variable.")] = None,
    poll: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds between looks at the files.")] = 0.25,
    settle: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="A new file is read at once; one that fails to read while younger than this (mtime) is taken "
            "as still being written and looked at again.",
        ),
    ] = 1.0,
    state: Annotated[
        Optional[Path],
        typer.Option(
            metavar="FILE",
            help="JSON file keeping the last reference time forecast, across restarts "
            "(default: .nowcast-watch-HASH.json in the output directory).",
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Look once, forecast the newest new frame if any, and exit.")
    ] = False,
    max_forecasts: Annotated[int, typer.Option(metavar="N", help="Exit after N forecasts (0: run until stopped).")] = 0,
    lock_timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds to wait for another run writing into the same directory.")
    ] = 60.0,
    threads: ThreadsOption = 0,
    device: DeviceOption = "auto",
    members: MembersOption = 0,
    seed: SeedOption = 0,
    probabilities: ProbabilitiesOption = "1,10,30",
    motion_perturbation: MotionPerturbationOption = DEFAULT_MOTION_PERTURBATION,
    noise_adjustment: NoiseAdjustmentOption = DEFAULT_NOISE_ADJUSTMENT,
    initial_perturbation: InitialPerturbationOption = DEFAULT_INITIAL_PERTURBATION,
    centre: CentreOption = "sprog",
) -> None:
    """Stay resident: forecast each new radar frame as it arrives, with the model loaded once.

    Each forecast has the checks, lock and atomic write of predict. A bad file is logged in one line
    and skipped; SIGTERM or Ctrl-C stops after the forecast under way (exit 0). With --members each
    forecast is an ensemble with its probabilities, as predict --members writes it.
    """
    ensemble = _ensemble_product(
        members, seed, probabilities, motion_perturbation, noise_adjustment, centre, initial_perturbation
    )
    with _errors():
        from nowcast.watch import watch as run_watch

        settings = _predict_settings(model, steps, lead, output, plot, max_age, variable, lock_timeout, threads, device)
        run_watch(
            pattern,
            dataclasses.replace(settings, ensemble=ensemble),
            poll_s=poll,
            settle_s=settle,
            state_path=state,
            once=once,
            max_forecasts=max_forecasts,
        )


@app.command()
def evaluate(
    inputs: Annotated[list[Path], typer.Argument(metavar="DATA.nc", help="Radar NetCDF file(s) to verify on.")],
    model: Annotated[
        Optional[list[Path]],
        typer.Option(
            metavar="CKPT",
            help="Checkpoint (default: the model shipped with nowcast); repeat to score several side by side, "
            "each named after its run directory.",
        ),
    ] = None,
    name: Annotated[
        Optional[list[str]],
        typer.Option(metavar="NAME", help="Method name of each --model in the reports (one per --model, in order)."),
    ] = None,
    baselines: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="Comma-separated baselines: persistence, extrapolation, sprog (pySTEPS S-PROG), "
            "steps (pySTEPS STEPS, with --members).",
        ),
    ] = "persistence,extrapolation",
    thresholds: Annotated[
        Optional[str],
        typer.Option(metavar="LIST", help="Comma-separated thresholds in mm/h (default: the model's eval.thresholds)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Events are value > threshold (pySTEPS) instead of >=.")
    ] = False,
    stride: Annotated[int, typer.Option(metavar="N", help="Frames between forecast times.")] = 1,
    steps: Annotated[
        Optional[int],
        typer.Option(
            metavar="N", help="Lead times to verify, counted in frames (not with --lead; default: see --lead)."
        ),
    ] = None,
    lead: Annotated[
        Optional[str],
        typer.Option(
            metavar="DURATION",
            help="Horizon to verify as a duration, e.g. 60min, 1h, 90m (not with --steps; default 60min, or the "
            "model's trained frames for a minmax image model).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Report directory.")] = Path("evaluation"),
    variable: Annotated[Optional[str], typer.Option(metavar="NAME", help="Input data variable.")] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Score the baselines only.")] = False,
    fss_scales: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="Comma-separated FSS window sizes in pixels, at 1 mm/h (e.g. 5,21,61); default: no FSS (slow).",
        ),
    ] = "",
    common_mask: Annotated[
        bool,
        typer.Option(
            "--common-mask/--own-masks",
            help="Score every method on the pixels where all forecasts have data (fair), or each on its own.",
        ),
    ] = True,
    members: Annotated[
        Optional[int],
        typer.Option(
            metavar="N",
            help="Also score an ensemble of N members (STEPS-like; pySTEPS STEPS too with --baselines ...,steps): "
            "CRPS, Brier, reliability, ROC, rank histogram, spread-skill, and its mean as a method.",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(metavar="S", help="Seed of the ensembles (each forecast time's seed derives from it).")
    ] = 0,
    motion_perturbation: MotionPerturbationOption = DEFAULT_MOTION_PERTURBATION,
    noise_adjustment: NoiseAdjustmentOption = DEFAULT_NOISE_ADJUSTMENT,
    initial_perturbation: InitialPerturbationOption = DEFAULT_INITIAL_PERTURBATION,
    threads: ThreadsOption = 0,
    device: DeviceOption = "auto",
) -> None:
    """Score model(s), persistence, extrapolation and sprog per threshold and lead.

    Scales out over processes: torchrun --nproc_per_node N -m nowcast evaluate ... splits the forecast
    times among the ranks; rank 0 merges the counts and alone writes the reports.
    """

    def numbers(text: str, kind: type, hint: str) -> tuple:
        try:
            return tuple(kind(t) for t in text.split(",") if t.strip())
        except ValueError:
            raise typer.BadParameter(f"expected numbers separated by commas, found {text!r}", param_hint=hint) from None

    values = (
        None if thresholds is None else numbers(thresholds, float, "--thresholds")
    )  # usage errors (exit 2) are raised outside _errors
    scales = numbers(fss_scales, int, "--fss-scales")
    ensemble = _ensemble_evaluation(members, seed, motion_perturbation, noise_adjustment, initial_perturbation)
    with _errors():
        from nowcast.verification.evaluate import EvaluateSettings, evaluate_files

        settings = EvaluateSettings(
            model=tuple(model) if model else None,
            names=tuple(name or ()),
            no_model=no_model,
            baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
            thresholds=values,
            comparison=">" if strict else ">=",
            stride=stride,
            steps=steps,
            lead_s=_lead_seconds(lead),
            out_dir=out,
            variable=variable,
            fss_scales=scales,
            common_mask=common_mask,
            threads=threads,
            device=device,
            ensemble=ensemble,
        )
        table = evaluate_files([str(p) for p in inputs], settings)
        if table:  # under torchrun only rank 0 reports
            typer.echo(table)


def _check_motion_perturbation(name: str) -> str:
    """``--motion-perturbation`` checked (usage error, exit 2, for an unknown name)."""
    if name not in MOTION_PERTURBATIONS:
        raise typer.BadParameter(
            f"expected one of {', '.join(MOTION_PERTURBATIONS)}, found {name!r}", param_hint="--motion-perturbation"
        )
    return name


def _check_noise_adjustment(name: str) -> str:
    """``--noise-adjustment`` checked (usage error, exit 2, for an unknown name)."""
    problem = noise_adjustment_problem(name)
    if problem:
        raise typer.BadParameter(problem, param_hint="--noise-adjustment")
    return name


def _check_initial_perturbation(name: str) -> str:
    """``--initial-perturbation`` checked (usage error, exit 2, for an unknown name)."""
    problem = initial_perturbation_problem(name)
    if problem:
        raise typer.BadParameter(problem, param_hint="--initial-perturbation")
    return name


def _ensemble_evaluation(
    members: int | None, seed: int, motion_perturbation: str, noise_adjustment: str, initial_perturbation: str = "none"
) -> Any:
    """``evaluate --members/--seed`` as an ``EnsembleEvaluation`` (None without members); usage errors exit 2."""
    noise = _check_noise_adjustment(noise_adjustment)
    initial = _check_initial_perturbation(initial_perturbation)
    if members is None:
        return None
    if members < 1:
        raise typer.BadParameter(f"expected at least 1 member, found {members}", param_hint="--members")
    if seed < 0:
        raise typer.BadParameter(f"expected 0 or a positive seed, found {seed}", param_hint="--seed")
    from nowcast.verification.ensembles import EnsembleEvaluation

    return EnsembleEvaluation(members, seed, _check_motion_perturbation(motion_perturbation), noise, initial)


def _ensemble_product(
    members: int,
    seed: int,
    probabilities: str,
    motion_perturbation: str,
    noise_adjustment: str,
    centre: str = "sprog",
    initial_perturbation: str = "none",
) -> Any:
    """``--members/--seed/--probabilities/--centre`` as an ``EnsembleProduct`` (None without members); usage
    errors exit 2."""
    noise = _check_noise_adjustment(noise_adjustment)
    initial = _check_initial_perturbation(initial_perturbation)
    from nowcast.ensemble_forecast import CENTRES, EnsembleProduct

    if centre not in CENTRES:
        raise typer.BadParameter(f"expected one of {', '.join(CENTRES)}, found {centre!r}", param_hint="--centre")
    if members < 0:
        raise typer.BadParameter(f"expected 0 (no ensemble) or more members, found {members}", param_hint="--members")
    if members == 0:
        if centre != "sprog":
            raise typer.BadParameter(
                f"expected --members N with --centre {centre}, found no ensemble", param_hint="--centre"
            )
        return None
    try:
        thresholds = tuple(float(t) for t in probabilities.split(",") if t.strip())
        motion = _check_motion_perturbation(motion_perturbation)
        return EnsembleProduct(members, seed, thresholds, motion, noise, centre, initial)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--probabilities") from None


def _importer_options(items: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` items as importer keyword arguments; values read as JSON (numbers, true,
    false, null, lists) where they parse, else as text."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise typer.BadParameter(f"expected KEY=VALUE, found {item!r}", param_hint="--option")
        try:
            out[key.strip()] = json.loads(text)
        except ValueError:
            out[key.strip()] = text
    return out


@app.command()
def convert(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILES", help="Radar files, one frame each, in any order (sorted by their times)."),
    ],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FMT",
            help="pySTEPS importer: bom_rf3, dwd_hdf5, dwd_radolan, fmi_geotiff, fmi_pgm, knmi_hdf5, mch_gif, "
            "mch_hdf5, mch_metranet, mrms_grib, odim_hdf5, opera_hdf5 or saf_crri.",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT.nc", help="NetCDF file to write.")],
    variable_name: Annotated[
        str, typer.Option(metavar="NAME", help="Name of the rain-rate variable written.")
    ] = "rainfall_rate",
    time_pattern: Annotated[
        Optional[str],
        typer.Option(
            metavar="PATTERN",
            help="Time stamp in the file names, strftime-like (%Y %y %m %d %j %H %M %S, ? any one character), "
            "e.g. 'AQC%y%j%H%M'; default: the first of 20240601120000, 20240601_120000, 202406011200, ... found.",
        ),
    ] = None,
    option: Annotated[
        Optional[list[str]],
        typer.Option(
            "--option",
            metavar="KEY=VALUE",
            help="Importer argument (repeatable), e.g. qty=DBZH (odim_hdf5) or product=AQC, unit=mm, accutime=5 "
            "(mch_gif).",
        ),
    ] = None,
) -> None:
    """Convert operational radar files (ODIM HDF5, BoM, FMI, KNMI, MeteoSwiss, MRMS, ...) to one radar NetCDF.

    Each file is read by pySTEPS' importer for its format, converted to rain rate in mm/h (accumulations
    divided by their period, reflectivity by Z = 200 R^1.6) and written in the schema nowcast reads:
    rainfall_rate(time, y, x), int16-packed, CF grid mapping; atomically.
    """
    kwargs = _importer_options(list(option or []))  # usage errors (exit 2) are raised outside _errors
    with _errors():
        from nowcast.io.convert import ConvertSettings, convert_files

        settings = ConvertSettings(
            format=format_,
            time_pattern=time_pattern,
            variable_name=variable_name,
            importer_kwargs=kwargs,
            command=_command_line(),
        )
        convert_files([str(f) for f in files], output, settings)


@config_app.command("list")
def config_list() -> None:
    """List the configs shipped with nowcast (usable as --config NAME)."""
    from nowcast.config import config_summary, shipped_configs

    shipped = shipped_configs()
    width = max((len(n) for n in shipped), default=0)
    for name, path in shipped.items():
        typer.echo(f"{name:<{width}}  {config_summary(path)}")


@config_app.command("show")
def config_show(
    config: Annotated[
        Optional[str], typer.Argument(metavar="NAME|FILE", help="Shipped config or YAML file (default: all defaults).")
    ] = None,
    set_: _SetOption = None,
) -> None:
    """Print a config resolved (defaults, file, --set) as YAML, each key with its type and meaning.

    The output is a valid config: save it, edit it and pass it to nowcast train --config.
    """
    with _errors():
        from nowcast.config import describe_config, load_config, resolve_config

        path = resolve_config(config) if config is not None else None
        cfg = load_config(path, set_ or [])
        title = f"{config} ({path}), resolved" if path is not None else "defaults"
        typer.echo(describe_config(cfg, title + (" with --set " + " ".join(set_) if set_ else "")), nl=False)


_FAST_EXIT = False
"""Set by a command whose work is done and whose files are written and closed (``predict``): ``main``
then leaves through ``os._exit`` once the logs and standard streams are flushed, skipping the
interpreter's teardown of torch and xarray (about 0.7 s of a 9 s forecast, every 5 minutes under
cron). Never set when the app runs inside another program (tests, ``CliRunner``): only ``main`` reads it."""


def _done_and_closed() -> None:
    global _FAST_EXIT
    _FAST_EXIT = True


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="nowcast")
    except SystemExit as exc:
        if _FAST_EXIT and exc.code in (0, None):
            import os

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


if __name__ == "__main__":
    main()
