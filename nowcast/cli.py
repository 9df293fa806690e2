"""The ``nowcast`` command line (Typer).

Each command parses its options and calls one library function. Library errors (``NowcastError``)
become one line on stderr and exit code 2; anything unexpected exits 1, with the traceback only under
``--verbose``. Heavy modules (torch, matplotlib, xarray) are imported inside the commands so that
``nowcast --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from typer.core import TyperGroup

from nowcast import __version__
from nowcast.errors import NowcastError

_click_errors = sys.modules[typer.BadParameter.__module__]  # click.exceptions, or the copy newer Typer vendors
_NoArgsIsHelp: type[BaseException] = getattr(_click_errors, "NoArgsIsHelpError", ())  # type: ignore[assignment]


class _OneLineErrors(TyperGroup):
    """The command group, with usage errors (bad option value, unknown option, missing argument) as one
    stderr line and exit 2, instead of Click's usage line and box (DESIGN section 2)."""

    def main(self, *args: object, standalone_mode: bool = True, **extra: object) -> object:  # type: ignore[override]
        try:
            rv = super().main(*args, standalone_mode=False, **extra)  # type: ignore[arg-type]
        except _NoArgsIsHelp as exc:  # `nowcast` alone: the help, exit 2
            if not standalone_mode:
                raise
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
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


app = typer.Typer(
    name="nowcast",
    cls=_OneLineErrors,
    help="Precipitation nowcasting from weather-radar sequences with a ConvLSTM encoder-forecaster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}
log = logging.getLogger("nowcast")


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
    handler = logging.StreamHandler(sys.stderr)
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
        message = " ".join(str(exc).split())
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
        first = " ".join(str(exc).split())
        typer.echo(
            f"nowcast: unexpected error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback)",
            err=True,
        )
        raise typer.Exit(1) from None


def _command_line() -> str:
    return "nowcast " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="NetCDF file to write.")],
    frames: Annotated[int, typer.Option(help="Number of frames.")] = 36,
    size: Annotated[tuple[int, int], typer.Option(help="Frame height and width in pixels.")] = (256, 256),
    step: Annotated[int, typer.Option(help="Time step in seconds.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same file.")] = 0,
) -> None:
    """Write a synthetic radar sequence of moving, growing and decaying rain cells."""
    with _errors():
        from nowcast.synth import write_synthetic

        path = write_synthetic(out, frames=frames, size=size, step_s=step, seed=seed)
        log.info("wrote %s (%d frames of %dx%d, step %d s)", path, frames, size[0], size[1], step)


@app.command()
def info(
    files: Annotated[list[Path], typer.Argument(help="A radar NetCDF file (or several, as one archive), or a checkpoint .pt.")],
    variable: Annotated[Optional[str], typer.Option(help="Data variable to describe.")] = None,
) -> None:
    """Describe a radar file, an archive of several files, or a checkpoint."""
    with _errors():
        if len(files) == 1 and files[0].suffix in (".pt", ".pth", ".ckpt"):
            from nowcast.checkpoint import describe_checkpoint

            lines = describe_checkpoint(files[0])
        else:
            from nowcast.io import describe_radar

            lines = describe_radar([str(f) for f in files], variable=variable)
        for line in lines:
            typer.echo(line)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (see configs/).")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a config value: section.key=value (repeatable).")
    ] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory exactly.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/<config>-<time>).")] = None,
) -> None:
    """Train a ConvLSTM encoder-forecaster (CPU, one GPU, or several through torchrun)."""
    with _errors():
        from nowcast.config import load_config
        from nowcast.train import run_training

        if resume is not None:
            base = config if config is not None else resume / "config.yaml"
        elif config is None:
            raise typer.BadParameter("expected --config FILE (or --resume RUN_DIR)", param_hint="--config")
        else:
            base = config
        cfg = load_config(base, set_ or [])
        out = run_training(cfg, config_name=Path(base).stem, run_dir=run_dir, resume=resume)
        log.info("run directory: %s", out)


@app.command()
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Radar NetCDF file(s) holding the latest frames.")],
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the model shipped with nowcast).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Lead times to forecast (default: as trained).")] = None,
    at: Annotated[Optional[str], typer.Option(help="Reference time (ISO 8601); default: the last frame.")] = None,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Output NetCDF; may use {reference_time:%Y%m%d%H%M} and {stem}."),
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="Also write a PNG: the last observed frame and four lead times; same templates as -o."),
    ] = None,
    max_age: Annotated[
        Optional[float], typer.Option(help="Fail (exit 2) if the newest frame is older than this many minutes.")
    ] = None,
    variable: Annotated[Optional[str], typer.Option(help="Input data variable.")] = None,
    lock_timeout: Annotated[float, typer.Option(help="Seconds to wait for another run writing the same output.")] = 60.0,
) -> None:
    """Forecast from the latest frames and write a CF-conventions NetCDF on the input's grid.

    Written atomically under a lock (.nowcast.lock, one per output directory): overlapping cron runs
    never interleave.
    """
    with _errors():
        from nowcast.predict import predict_to_file

        predict_to_file(
            [str(p) for p in inputs],
            model=model,
            steps=steps,
            at=at,
            output=output,
            plot=plot,
            max_age_min=max_age,
            variable=variable,
            lock_timeout_s=lock_timeout,
            history=_command_line(),
        )


@app.command()
def evaluate(
    inputs: Annotated[list[Path], typer.Argument(help="Radar NetCDF file(s) to verify on.")],
    model: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the model shipped with nowcast).")] = None,
    baselines: Annotated[str, typer.Option(help="Comma-separated baselines: persistence, extrapolation, sprog (pySTEPS S-PROG).")] = "persistence,extrapolation",
    thresholds: Annotated[str, typer.Option(help="Comma-separated thresholds in mm/h.")] = "0.1,1,5,10",
    strict: Annotated[bool, typer.Option("--strict", help="Events are value > threshold (pySTEPS) instead of >=.")] = False,
    stride: Annotated[int, typer.Option(help="Frames between forecast times.")] = 1,
    steps: Annotated[Optional[int], typer.Option(help="Lead times to verify (default: as trained).")] = None,
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("evaluation"),
    variable: Annotated[Optional[str], typer.Option(help="Input data variable.")] = None,
    no_model: Annotated[bool, typer.Option("--no-model", help="Score the baselines only.")] = False,
    fss_scales: Annotated[
        str, typer.Option(help="Comma-separated FSS window sizes in pixels, at 1 mm/h (e.g. 5,21,61); default: no FSS (slow).")
    ] = "",
    common_mask: Annotated[
        bool,
        typer.Option(
            "--common-mask/--own-masks",
            help="Score every method on the pixels where all forecasts have data (fair), or each on its own.",
        ),
    ] = True,
) -> None:
    """Score the model against persistence and optical-flow extrapolation per threshold and lead time."""

    def numbers(text: str, kind: type, hint: str) -> tuple:
        try:
            return tuple(kind(t) for t in text.split(",") if t.strip())
        except ValueError:
            raise typer.BadParameter(f"expected numbers separated by commas, found {text!r}", param_hint=hint) from None

    values = numbers(thresholds, float, "--thresholds")  # usage errors (exit 2) are raised outside _errors
    scales = numbers(fss_scales, int, "--fss-scales")
    with _errors():
        from nowcast.evaluate import evaluate_files

        table = evaluate_files(
            [str(p) for p in inputs],
            model=None if no_model else (model or "default"),
            baselines=tuple(b.strip() for b in baselines.split(",") if b.strip()),
            thresholds=values,
            comparison=">" if strict else ">=",
            stride=stride,
            steps=steps,
            out_dir=out,
            variable=variable,
            fss_scales=scales,
            common_mask=common_mask,
        )
        typer.echo(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
