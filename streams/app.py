"""The ``faust.App`` factory: broker, store, web and consumer-group settings.

Nothing domain-specific lives here; ``pipeline.build`` wires topics, agents,
tables and views onto the app this returns.
"""

from __future__ import annotations

import socket

from .changelog import CheckedTable
from .clients import faust_credentials, servers
from .exporter import SeriesPolicy
from .groups import timeouts
from .pipeline import Pipeline
from .settings import Settings
from .transport import App
from .web import register_views
from .web_security import load_web_config

__all__ = ["create_app", "build"]


def create_app(settings: Settings) -> App:
    host = settings.web_host if settings.web_host not in ("0.0.0.0", "::") else socket.gethostname()
    web = load_web_config(settings.web_config) if settings.web_config else None
    session, heartbeat = timeouts(settings, "tansu" if settings.session_timeout is None else None)
    return App(
        settings.app_id,
        settings=settings,
        # recovery reads each changelog to the end a fetch reports, on every broker: Tansu's
        # ListOffsets is low after multi-record batches, and exactness must not hang on a setting
        true_ends=True,
        broker=[f"kafka://{server}" for server in servers(settings)],
        broker_credentials=faust_credentials(settings),
        Table=CheckedTable,  # recovery reads every changelog record through the stage's check first  # every Kafka client: streams/clients.py
        store=settings.store,
        datadir=settings.data_dir,
        web_host=host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # with TLS the router forwards account requests over https, with the peers' TLS and the
        # caller's Authorization header (streams/web_security.py)
        canonical_url=f"{web.scheme if web else 'http'}://{host}:{settings.web_port}",
        web_ssl_context=web.server_context() if web else None,
        HttpClient=web.peer_client() if web else None,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        # classic group protocol; the timeouts that suit the broker (streams/groups.py)
        broker_session_timeout=session,
        broker_heartbeat_interval=heartbeat,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        stream_buffer_maxsize=16_384,
        broker_max_poll_records=settings.batch_size,  # records per fetched batch a lane gets
        # at most 256 KiB per partition per fetch (Faust: 1 MiB): a backlog's batches then hold
        # records of every input partition, so each input's marks, and the watermark, move together
        consumer_max_fetch_size=256 * 1024,
        web_enabled=True,
        table_standby_replicas=0,
        # on: with true changelog ends (streams/transport.py) it holds on Tansu too, and it is
        # what notices a broker that came back without the changelog this worker wrote
        recovery_consistency_check=True,
        # every record socialpulse writes is at most 64 KiB (streams/pages.py RECORD_MAX), whatever
        # an account does, so a broker's default limits fit (message.max.bytes 1048588): Kafka's
        # default request size, and batches of half of it (changelog writes come in bursts)
        producer_max_request_size=1024 * 1024,
        producer_max_batch_size=512 * 1024,
    )


def build(settings: Settings) -> tuple[App, Pipeline]:
    """The composition root: the Faust app, the pipeline on it and its web endpoints."""
    app = create_app(settings)
    pipeline = Pipeline(app, settings)
    # which accounts keep their own series on /metrics (METRICS_ACCOUNTS, METRICS_TOP_ACCOUNTS)
    pipeline.metrics.use_series(SeriesPolicy.from_settings(settings))
    register_views(app, pipeline)
    return app, pipeline
