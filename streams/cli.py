"""The ``socialpulse`` command: broker, worker, demo, generate, schemas export."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from pathlib import Path
from typing import Literal

import click

from .settings import Settings, load_settings

__all__ = ["main"]


async def connect(settings: Settings, role: Literal["worker", "generator"] = "worker") -> None:
    """First contact: one connection the way the clients make them (TLS, SASL login), the
    topics, then every permission ``role`` needs (streams/acls.py), so that a refusal stops
    start-up here, named, instead of inside Faust."""
    from schemas.events import INPUT_TOPICS

    from .acls import check
    from .clients import preflight
    from .families import STAGES
    from .topics import all_topics, ensure_topics, worker_internal_topics

    await preflight(settings)
    # the worker's keyed and internal topics too: a topic that does not exist yet when the group's
    # leader assigns is left out of the assignment until the next rebalance, and a changelog Faust
    # creates a moment before it subscribes can be missing from the broker's metadata then: never
    # read back (Kafka creates none itself; seen: every restore found 0 keys)
    internal, compacted, single = worker_internal_topics(settings, (f"{stage}-state" for stage in STAGES))
    names = [settings.topic(t) for t in INPUT_TOPICS] if role == "generator" else [
        *all_topics(settings), *(settings.topic(f"socialpulse.by-{stage}") for stage in STAGES), *internal]
    await asyncio.wait_for(ensure_topics(settings, names, compacted=compacted, single=single), 60)
    await asyncio.wait_for(check(settings, role), settings.broker_timeout / 1000 + 30)  # (the coordinator waits up to broker_timeout)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """socialpulse: live engagement, reply-speed and conversion metrics from Kafka."""


@main.command()
@click.option("--port", default=9092, show_default=True, help="Port to listen on (loopback only).")
def broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) in the foreground."""
    from .broker import BrokerError, start_broker

    try:
        proc = start_broker(port, quiet=False)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"socialpulse broker: Tansu listening on 127.0.0.1:{port}. "
        "It keeps data in MEMORY ONLY: everything is lost when it stops. Ctrl-C stops it."
    )
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)


@main.command()
@click.option("--web-port", type=int, default=None, help="Web port (default SOCIALPULSE_WEB_PORT, 6066).")
def worker(web_port: int | None) -> None:
    """Run one Faust worker; any number of them form one consumer group."""
    import faust

    from .app import build
    from .changelog import distrust_unclean, mark_clean
    from .clients import explain
    from .families import check_settings
    from .groups import with_timeouts

    overrides = {"web_port": web_port} if web_port else {}
    settings = load_settings(**overrides)
    check_settings(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(connect(settings))
        settings = loop.run_until_complete(with_timeouts(settings))
    except Exception as exc:
        raise click.ClickException(explain(exc, settings)) from None
    app, _pipeline = build(settings)
    tabledir = Path(app.conf.tabledir)
    if distrust_unclean(tabledir):
        click.echo(f"socialpulse worker: the last run did not stop cleanly; local state in {tabledir} "
                   "is rebuilt from the changelog", err=True)
    # The per-event path makes many short-lived objects; at CPython's default GC thresholds
    # the collector keeps walking the whole heap (about a third of the worker's CPU,
    # bench/RESULTS.md). Start-up objects move out of its sight and the young generation is
    # collected less often; the older ones keep their default pace, so cyclic garbage is
    # still collected regularly (the soak run in bench/RESULTS.md watches memory).
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    # no terminal spinner: at WARNING it would set the root logger to DEBUG, so every debug
    # call in Faust and aiokafka builds a log record (message values included) for nothing
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        mark_clean(tabledir)


@main.command()
@click.option("--rate", default=200.0, show_default=True, help="Events per second the generator sends.")
@click.option("--port", default=9092, show_default=True, help="Port of the embedded broker.")
def demo(rate: float, port: int) -> None:
    """Embedded broker + one worker + the generator, with a live summary."""
    from .demo import run_demo

    sys.exit(run_demo(load_settings(), rate=rate, port=port))


@main.command()
@click.option("--rate", type=float, required=True, help="Events per second.")
@click.option("--duration", type=float, required=True, help="Seconds of traffic.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (same seed, same traffic).")
@click.option("--start", "start_ms", type=int, default=None, help="Event time of the first second (epoch ms); default now.")
@click.option("--fast", is_flag=True, help="Produce as fast as possible instead of in real time.")
@click.option("--incident", type=click.Choice(["slow-replies"]), default=None,
              help="Add an incident: slow-replies = instagram/in-brand-1 answers 8-20 min late (or not) for 20 min.")
@click.option("--incident-at", type=int, default=60, show_default=True, help="Seconds of traffic before the incident starts.")
@click.option("--reply-median", type=float, default=240.0, show_default=True, help="Median seconds to a human reply.")
def generate(rate: float, duration: float, seed: int, start_ms: int | None, fast: bool, incident: str | None,
             incident_at: int, reply_median: float) -> None:
    """Write realistic synthetic traffic into the input topics."""
    from .clients import explain
    from .generator import run

    settings = load_settings()
    try:
        asyncio.run(connect(settings, "generator"))
    except Exception as exc:
        raise click.ClickException(explain(exc, settings)) from None
    counts = asyncio.run(run(settings, rate, duration, seed, start_ms=start_ms, fast=fast, reply_median_s=reply_median,
                             incident=incident, incident_at_s=incident_at))
    click.echo(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))


@main.group()
def schemas() -> None:
    """Event and result contracts."""


@schemas.command("export")
@click.argument("directory")
def schemas_export(directory: str) -> None:
    """Write the JSON Schema of every event and result to DIRECTORY."""
    from schemas.export import export

    for path in export(directory):
        click.echo(str(path))


if __name__ == "__main__":
    main()
