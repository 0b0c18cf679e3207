"""The ``sensorlake`` command line (typer).

Every command reads one :class:`~sensorlake.settings.Settings` from the environment and
passes it explicitly. Errors the user can fix (a wrong path, option, unreachable service)
end the command with a one-line message on stderr and a non-zero exit code, no traceback:
exit 2 for usage errors, 1 for everything else.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sensorlake.errors import InputError, SensorlakeError

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc
from sensorlake.settings import Settings

app = typer.Typer(
    name="sensorlake",
    help="Street-sensor movement lakehouse: Kafka ingest, DuckLake lake, traffic analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="Start, stop and inspect the local stack (Kafka, PostgreSQL, Redis).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

MAX_TRANSFORM_RANGE = timedelta(days=366)  # one call; cron/compose backfill day by day
console = Console(stderr=True)
out = Console()


def _settings(**overrides) -> Settings:
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def _parse_time(raw: str, name: str) -> datetime:
    """An ISO 8601 option value as an aware UTC datetime (naive = UTC)."""
    from lake.schema import as_utc

    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(f"{name} {raw!r} is not an ISO 8601 time") from None
    return as_utc(ts)


# --------------------------------------------------------------------------- stack
@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka (KRaft), PostgreSQL and Redis on loopback; idempotent."""
    from app import stack

    settings = _settings()
    stack.up(settings, console)
    _print_status(stack.status(settings))


@stack_app.command("down")
def stack_down() -> None:
    """Stop everything `stack up` started."""
    from app import stack

    stack.down(_settings())
    console.print("stack stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Print each service's endpoint and health; exit 1 if any is unhealthy."""
    from app import stack

    statuses = stack.status(_settings())
    _print_status(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def _print_status(statuses) -> None:
    t = Table("service", "endpoint", "health", "detail")
    for s in statuses:
        t.add_row(s.name, s.endpoint, "[green]up[/]" if s.healthy else "[red]down[/]", s.detail or "")
    out.print(t)


# --------------------------------------------------------------------------- ingest
@app.command()
def produce(
    source: Annotated[str, typer.Option(help="Dataset file/directory, or 'synthetic'.")],
    speedup: Annotated[float, typer.Option(help="Replay at X times real time.")] = 1.0,
    max_rate: Annotated[bool, typer.Option("--max-rate", help="Send as fast as possible.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after N events.")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Replay again and again (new traveler ids).")] = False,
    shift_to_now: Annotated[bool, typer.Option("--shift-to-now", help="Shift event times so the first is now.")] = False,
    sensors: Annotated[int, typer.Option(help="synthetic: number of sensors.")] = 5,
    travelers: Annotated[int, typer.Option(help="synthetic: number of travelers.")] = 200,
    rate_hz: Annotated[float, typer.Option(help="synthetic: observations per traveler per second.")] = 10.0,
    duration_s: Annotated[float, typer.Option(help="synthetic: seconds of event time.")] = 60.0,
    seed: Annotated[int, typer.Option(help="synthetic: random seed.")] = 42,
) -> None:
    """Publish movement events to the `movements` topic (replay of real data or synthetic load)."""
    from ingest.producer import produce as do_produce

    _finite_positive(speedup, "--speedup")
    if limit is not None and limit <= 0:
        raise InputError("--limit must be > 0")
    if source == "synthetic":
        for value, name in ((sensors, "--sensors"), (travelers, "--travelers")):
            if value <= 0:
                raise InputError(f"{name} must be > 0")
        _finite_positive(rate_hz, "--rate-hz")
        _finite_positive(duration_s, "--duration-s")
        if seed < 0:
            raise InputError("--seed must be >= 0")
    settings = _settings()
    events = _open_events(source, sensors=sensors, travelers=travelers, rate_hz=rate_hz, duration_s=duration_s, seed=seed)
    stats = do_produce(
        settings, events, speedup=None if max_rate else speedup, max_rate=max_rate, limit=limit,
        loop=loop, shift_to_now=shift_to_now, console=console,
    )  # fmt: skip
    out.print(f"produced {stats.count} events in {stats.seconds:.1f} s ({stats.events_per_s:,.0f} events/s)")


def _open_events(source: str, **synth):
    if source == "synthetic":
        from ingest.synthetic import generate

        return generate(
            sensors=synth["sensors"], travelers=synth["travelers"], rate_hz=synth["rate_hz"],
            duration_s=synth["duration_s"], seed=synth["seed"],
        )  # fmt: skip
    from ingest.readers import open_source

    return open_source(Path(source))


@app.command()
def consume(
    group: Annotated[str | None, typer.Option(help="Consumer group (default SENSORLAKE_CONSUMER_GROUP).")] = None,
    until_idle: Annotated[float | None, typer.Option(help="Exit 0 after this many seconds without a message since the last partition assignment (a consumer not yet assigned waits 20 s more: a restart after a crash joins late).")] = None,
) -> None:
    """Consume `movements`: speeds via Redis, summaries to PostgreSQL, raw events to the lake."""
    from ingest.consumer import run_consumer

    if until_idle is not None:
        _finite_positive(until_idle, "--until-idle")
    stats = run_consumer(_settings(), group=group, until_idle_s=until_idle)
    dlq = sum(stats.dlq.values())
    out.print(
        f"consumed {stats.consumed} ({stats.valid} valid, {dlq} to DLQ), "
        f"{stats.lake_rows} rows in {stats.lake_commits} lake commits, {stats.events_per_s:,.0f} events/s"
    )


# --------------------------------------------------------------------------- lake
@app.command()
def transform(
    start: Annotated[str, typer.Option(help="Range start, ISO 8601 (naive = UTC).")],
    end: Annotated[str, typer.Option(help="Range end (exclusive), ISO 8601.")],
    engine: Annotated[str, typer.Option(help="duckdb or polars (same rows).")] = "duckdb",
    job: Annotated[
        list[str] | None,
        typer.Option("--job", help="windows, rollups, peak_hour or occupancy; repeat for several (default: all)."),
    ] = None,
    window: Annotated[
        list[int] | None,
        typer.Option("--window", help="Window length in seconds; repeat for several (default 60, 300, 900)."),
    ] = None,
    step: Annotated[
        int | None, typer.Option(help="Sliding step in seconds (default SENSORLAKE_WINDOW_STEP_S; must divide each window).")
    ] = None,
) -> None:
    """Backfill the derived tables for [start, end): replaces exactly that range, in one transaction.

    Re-running a range gives identical tables. Jobs: windows (1/5/15-min sliding windows,
    speed bins), rollups (15 min -> hour -> day), peak_hour (peak hour factor per day),
    occupancy (5-ft grid per hour).
    """
    from transforms.backfill import ENGINES, run_transform, validate_jobs

    if engine not in ENGINES:
        raise InputError(f"--engine must be duckdb or polars, not {engine!r}")
    jobs = validate_jobs(job or None)
    t0, t1 = _parse_time(start, "--start"), _parse_time(end, "--end")
    if t1 - t0 > MAX_TRANSFORM_RANGE:
        raise InputError(f"range longer than {MAX_TRANSFORM_RANGE.days} days: split the backfill")
    if step is not None and step <= 0:
        raise InputError("--step must be > 0")
    if window and any(w <= 0 for w in window):
        raise InputError("--window must be > 0")
    res = run_transform(
        _settings(), t0, t1, engine=engine,
        jobs=jobs, windows_s=window or None, step_s=step,
    )  # fmt: skip
    out.print(res.summary(), highlight=False)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only SELECT over the lake (tables lake.*).")],
    as_csv: Annotated[bool, typer.Option("--csv", help="Write CSV to stdout.")] = False,
    max_rows: Annotated[int, typer.Option(min=1, max=10_000_000, help="Rows to print at most.")] = 1000,
    timeout: Annotated[float, typer.Option(help="Seconds before the query is interrupted.")] = 60.0,
) -> None:
    """Run one ad-hoc read-only SELECT over the lake (`lake.movements`, `lake.window_stats`, ...).

    The lake is attached read-only, only SELECT is accepted, and no file outside the
    lake's data directory can be read (none can be written).
    """
    from lake.readonly import run_readonly

    _finite_positive(timeout, "--timeout")
    table, more = run_readonly(_settings(), query, max_rows=max_rows, timeout_s=timeout)
    columns = table.column_names
    rows = list(zip(*(table.column(c).to_pylist() for c in columns), strict=True)) if columns else []
    if as_csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    else:
        t = Table(*columns)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        out.print(t)
    if more:
        console.print(f"(first {max_rows} rows shown; use --max-rows for more)")


def _finite_positive(value: float, name: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, not {value}")


@app.command()
def maintain(
    snapshot_retention_s: Annotated[float, typer.Option(help="Expire snapshots older than this (s); time travel reaches this far.")] = 7 * 86_400.0,
    file_grace_s: Annotated[float, typer.Option(help="Keep unneeded or orphaned files younger than this (s); above the longest query and lake commit.")] = 3_600.0,
    compact: Annotated[bool, typer.Option("--compact/--no-compact", help="Merge small adjacent files first.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; report what would be deleted.")] = False,
) -> None:
    """Lake maintenance: compaction, snapshot expiry, removal of old and orphaned files (schedule it)."""
    from lake.maintenance import run_maintenance

    for value, name in ((snapshot_retention_s, "--snapshot-retention-s"), (file_grace_s, "--file-grace-s")):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0, not {value}")
    res = run_maintenance(
        _settings(), snapshot_retention=timedelta(seconds=snapshot_retention_s),
        file_grace=timedelta(seconds=file_grace_s), compact=compact, dry_run=dry_run,
    )  # fmt: skip
    out.print(str(res), highlight=False)


# --------------------------------------------------------------------------- app / demo
@app.command("app")
def run_app(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="HTTP port (default SENSORLAKE_APP_PORT).")] = None,
    headless: Annotated[bool, typer.Option("--headless/--browser", help="Do not open a browser.")] = True,
) -> None:
    """Start the Streamlit app (live PostgreSQL metrics next to lake analytics)."""
    settings = _settings()
    script = Path(__file__).with_name("streamlit_app.py")
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port or settings.app_port), "--server.address", settings.host,
        "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    console.print(f"app on http://{settings.host}:{port or settings.app_port}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)  # become Streamlit: signals reach it, no orphan holds the port


@app.command()
def demo(
    headless: Annotated[bool, typer.Option("--headless", help="Print the summary and exit; do not start the app.")] = False,
    source: Annotated[str | None, typer.Option(help="Dataset to replay (default: the NGSIM Peachtree sample).")] = None,
    consumers: Annotated[int, typer.Option(help="Consumer processes.")] = 2,
) -> None:
    """Stack up, replay NGSIM Peachtree through Kafka with 2 consumers, transform, summarise."""
    from app.demo import run_demo

    run_demo(_settings(), source=source, consumers=consumers, console=console, out=out)
    if not headless:
        run_app(port=None, headless=True)


# --------------------------------------------------------------------------- entry point
def _error(message: str) -> None:
    """One line on stderr, never wrapped (scripts grep it)."""
    print(f"sensorlake: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors, no tracebacks for user errors."""
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args=argv, prog_name="sensorlake", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        console.print("sensorlake: aborted")
        sys.exit(130)
    except getattr(click_exc, "NoArgsIsHelpError", ()):  # help was printed
        sys.exit(0)
    except click_exc.ClickException as exc:
        _error(f"{exc.format_message()} (try --help)")
        sys.exit(exc.exit_code)
    except SensorlakeError as exc:
        _error(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if type(exc).__name__ == "InterruptException":  # DuckDB turns Ctrl-C into this
            print("sensorlake: interrupted", file=sys.stderr)
            sys.exit(130)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
