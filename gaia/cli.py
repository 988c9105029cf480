"""The ``gaia`` command.

gaia up [--host H] [--port P] [--data-dir D] [--no-demo]   API + console + controllers
gaia db upgrade                                            apply migrations and exit
gaia secrets rotate                                        re-encrypt stored secrets (first key)
gaia backup [--out FILE] [--include-secret-key]            database, key reference, etcd snapshots
gaia restore ARCHIVE [--check] [--secret-key-file F]       check, restore fresh, then swap in
gaia openapi                                               print the OpenAPI document
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gaia import __version__
from gaia.monitor.logs.store import quiet_http_client_loggers
from gaia.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir).expanduser().resolve()
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "no_demo", False):
        overrides["demo"] = False
    return Settings(**overrides)


def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    from gaia.app import Platform, create_app
    from gaia.bootstrap import ensure_admin, ensure_demo
    from gaia.security import SecretKeyError
    from gaia.store.migrate import SchemaTooNew

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        platform = Platform.open(settings)
    except (SecretKeyError, SchemaTooNew) as exc:
        print(f"gaia up: {exc}", file=sys.stderr)
        return 2
    password = ensure_admin(platform.db, password=settings.admin_password)
    demo = ensure_demo(platform.db) if settings.demo else False
    store = "PostgreSQL" if not platform.db.is_sqlite else f"SQLite at {settings.data_dir}"
    url = f"http://{settings.host}:{settings.port}/"
    print(f"Gaia {__version__} on {store}", flush=True)
    if demo:
        print("Created the demo business 'demo' and the simulated cluster 'sim-demo'.")
    print(f"Console: {url}    API: {url}api/v1    API docs: {url}api/docs")
    if password is not None:
        if settings.admin_password:
            print("First admin: user 'admin' with the password from GAIA_ADMIN_PASSWORD")
        else:
            print(f"First admin: user 'admin', password '{password}' (shown only this once)")
    else:
        print("Log in as an existing user (the first admin is 'admin').")
    sys.stdout.flush()
    app = create_app(platform)
    settle_startup_heap()
    uvicorn.run(app, **server_options(settings))
    return 0


def settle_startup_heap() -> None:
    """Hide what startup made from the garbage collector: the modules, the app and its routes,
    the ORM mappers and pydantic models live as long as the process, yet a full collection
    walks all of them (some 250,000 objects) while every thread of the server waits; on a
    loaded 2-core machine such a pause took 100-700 ms and was the tail of the API's latency
    (docs/benchmarks.md, "2026-12-06"). Frozen, a full collection walks only what was made
    since."""
    gc.collect()
    gc.freeze()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``gaia up``. A WebSocket message (the console's terminal) is
    bounded like a request body, by ``GAIA_MAX_REQUEST_BYTES``: uvicorn's default is 16 MiB, and
    a bigger message closes the socket (code 1009) before the app reads it."""
    from uvicorn.config import LOGGING_CONFIG

    from gaia.monitor.logs.stream import server_log_config

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        # uvicorn's lines, written by a thread: a stdout nobody reads never stalls a request
        "log_config": server_log_config(LOGGING_CONFIG),
        "proxy_headers": False,
        "ws_max_size": settings.max_request_bytes,
    }


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gaia.store import migrate
    from gaia.store.database import Database

    settings = _settings(args)
    db = Database(settings.resolved_database_url())
    try:
        migrate.upgrade(db.engine)
    except migrate.SchemaTooNew as exc:
        print(f"gaia db upgrade: {exc}", file=sys.stderr)
        return 2
    print("database is at the latest schema")
    return 0


def cmd_registry_config(args: argparse.Namespace) -> int:
    """Write the configuration of a registry run apart from ``gaia up`` (a Deployment, a
    systemd unit): its config.yml and the certificate of Gaia's token key, into a folder."""
    from gaia.platform import registry_service
    from gaia.security import SecretBox, SecretKeyError

    settings = _settings(args)
    try:
        secrets = SecretBox.from_settings(
            secret_key=settings.secret_key,
            data_dir=settings.data_dir,
            shared_database=not settings.resolved_database_url().startswith("sqlite"),
        )
    except SecretKeyError as exc:
        print(f"gaia registry-config: {exc}", file=sys.stderr)
        return 2
    service = registry_service(settings, secrets)
    service.listen = args.listen
    service.folder = Path(args.out)
    service.storage_dir = Path(args.storage) if args.storage else service.folder / "storage"
    path = service.config_path()
    print(f"wrote {path} and {path.with_name('token-ca.pem')}")
    print(f"the registry sends clients to {service.realm} for tokens")
    print(f"and its events to {service.events_url}")
    print(f"run it with: docker-registry serve {path}")
    return 0


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    """Re-encrypt every stored secret with the first key of GAIA_SECRET_KEY, in one
    transaction (``gaia.store.secrets``); the old keys may be dropped afterwards."""
    from gaia.security import SecretBox, SecretKeyError
    from gaia.store.database import Database
    from gaia.store.secrets import reencrypt_all

    settings = _settings(args)
    url = settings.resolved_database_url()
    try:
        box = SecretBox.from_settings(
            secret_key=settings.secret_key,
            data_dir=settings.data_dir,
            shared_database=not url.startswith("sqlite"),
        )
    except SecretKeyError as exc:
        print(f"gaia secrets rotate: {exc}", file=sys.stderr)
        return 2
    db = Database(url)
    try:
        with db.write_session() as session:
            counts = reencrypt_all(session, box)
    except ValueError as exc:
        print(f"gaia secrets rotate: nothing changed: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    for label, count in counts.items():
        print(f"re-encrypted {count} {label}")
    if box.key_count > 1:
        print(
            f"all secrets now use the first of the {box.key_count} keys in GAIA_SECRET_KEY; "
            "the others may be removed"
        )
    return 0


def _etcd_tools(settings: Settings) -> Any:
    from gaia.store.backup import EtcdTools

    return EtcdTools(etcdctl=settings.etcdctl, etcdutl=settings.etcdutl)


def cmd_backup(args: argparse.Namespace) -> int:
    """One backup now, written by this process (docs/backup.md): the database, a reference to
    the secret key (the key itself only with --include-secret-key), and an etcd snapshot of
    every kubernetes cluster Gaia has etcd access to."""
    import datetime as dt

    from gaia.security import SecretKeyError
    from gaia.store.backup import BackupError, secret_keys, take_backup
    from gaia.store.backups import etcd_targets
    from gaia.store.database import Database

    settings = _settings(args)
    url = settings.resolved_database_url()
    try:
        keys = secret_keys(secret_key=settings.secret_key, data_dir=settings.data_dir)
        db = Database(url)
        try:
            with db.read_session() as session:
                etcd = etcd_targets(session, keys.box())
        finally:
            db.dispose()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = (
            Path(args.out)
            if args.out
            else settings.resolved_backup_dir() / f"gaia-backup-{stamp}.tar"
        )
        taken = take_backup(
            database_url=url,
            keys=keys,
            etcd=etcd,
            target=out,
            include_key=args.include_secret_key,
            tools=_etcd_tools(settings),
            pg_bin_dir=settings.pg_bin_dir,
            progress=lambda step: print(f"  {step}", flush=True),
        )
    except (BackupError, SecretKeyError, ValueError) as exc:
        print(f"gaia backup: {exc}", file=sys.stderr)
        return 1
    manifest = taken.manifest
    print(f"wrote {taken.path} ({taken.size} bytes), schema {manifest.schema_revision}")
    for part in manifest.parts:
        print(f"  {part.path}: {part.size} bytes, sha256 {part.sha256}")
    if manifest.key.included:
        print("the archive holds the secret key: keep it as secret as the key itself")
    else:
        print(
            f"the secret key is not in the archive: a restore needs the key from "
            f"{manifest.key.source} (fingerprint {manifest.key.fingerprints[0]})"
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup (docs/backup.md): the archive is checked whole, the database restored
    into a fresh file or database, checked (rows, schema, every secret decrypted), and only
    then swapped in; what was there before is kept aside. Stop Gaia's replicas first."""
    from gaia.security import parse_secret_keys
    from gaia.store.backup import BackupError, read_manifest, restore_backup
    from gaia.store.backup.archive import manifest_summary

    settings = _settings(args)
    archive = Path(args.archive)
    try:
        if args.check:
            print(json.dumps(manifest_summary(read_manifest(archive)), indent=2))
            return 0
        keys: list[bytes] = []
        if args.secret_key_file:
            keys = parse_secret_keys(Path(args.secret_key_file).read_bytes())
        elif settings.secret_key:
            keys = parse_secret_keys(settings.secret_key)
        elif (settings.data_dir / "secret.key").exists():
            # a data dir that survived keeps its key; the manifest's fingerprint checks it
            keys = parse_secret_keys((settings.data_dir / "secret.key").read_bytes())
        url = settings.resolved_database_url()
        restored = restore_backup(
            archive=archive,
            database_url=url,
            data_dir=settings.data_dir,
            keys=keys,
            write_key_file=url.startswith("sqlite") and not settings.secret_key,
            etcd_out=Path(args.etcd_out) if args.etcd_out else None,
            tools=_etcd_tools(settings),
            pg_bin_dir=settings.pg_bin_dir,
            etcd_member=args.etcd_member,
            etcd_peer_url=args.etcd_peer_url,
            progress=lambda step: print(f"  {step}", flush=True),
        )
    except (BackupError, OSError, ValueError) as exc:
        print(f"gaia restore: nothing restored: {exc}", file=sys.stderr)
        return 1
    manifest = restored.manifest
    print(
        f"restored the {manifest.dialect} database of {manifest.created_at} (schema "
        f"{manifest.schema_revision}, {restored.rows} rows, {restored.secrets_read} secrets "
        "decrypted with the key given)"
    )
    if restored.previous:
        print(f"what was there before is kept as {restored.previous}")
    if restored.key_written:
        print(f"wrote the secret key to {restored.key_written}")
    elif not settings.secret_key:
        print("start Gaia with GAIA_SECRET_KEY set to the key this backup names")
    for cluster, data_dir in restored.etcd_data_dirs.items():
        print(
            f"etcd of cluster {cluster}: a fresh data dir at {data_dir}; start etcd with "
            f"--data-dir={data_dir} in place of the old member(s), then the kube-apiserver"
        )
    print("gaia up migrates it to this version's schema if it is older")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from gaia.app import Platform, create_app

    settings = Settings(database_url="sqlite://")
    platform = Platform.open(settings, run_migrations=False)
    print(json.dumps(create_app(platform, run_loops=False).openapi(), indent=2))
    return 0


def cmd_scheduler_extender(args: argparse.Namespace) -> int:
    from gaia.scheduler.extender.server import ExtenderSetupError, ServingTLS, serve

    def refuse(message: str) -> int:
        print(f"gaia scheduler-extender: {message}", file=sys.stderr)
        return 2

    if not 0 < args.port < 65536:
        return refuse(f"--port must be 1..65535, not {args.port}")
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        return refuse(f"no kubeconfig at {args.kubeconfig}")
    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        return refuse("--tls-cert-file and --tls-private-key-file go together")
    if args.client_ca_file and not args.tls_cert_file:
        return refuse(
            "--client-ca-file needs --tls-cert-file and --tls-private-key-file: client "
            "certificates are checked in the TLS handshake"
        )
    tls = None
    if args.tls_cert_file:
        tls = ServingTLS(
            cert_file=Path(args.tls_cert_file),
            key_file=Path(args.tls_private_key_file),
            client_ca_file=Path(args.client_ca_file) if args.client_ca_file else None,
        )
    try:
        serve(host=args.host, port=args.port, kubeconfig=args.kubeconfig, token=None, tls=tls)
    except ExtenderSetupError as exc:
        return refuse(str(exc))
    return 0


def cmd_qos_apply(args: argparse.Namespace) -> int:
    from gaia.domain.qos import QosPlanError, plan_qos
    from gaia.node.qos import QosApplyError, load_instances, reconcile_qos

    try:
        text = sys.stdin.read() if args.instances == "-" else Path(args.instances).read_text()
        instances = load_instances(text)
        plan = plan_qos(link=round(args.link_mbit * 125_000), instances=instances)
        sent = reconcile_qos(args.device, plan)
    except (OSError, QosPlanError, QosApplyError) as e:
        print(f"gaia qos-apply: {e}", file=sys.stderr)
        return 2
    print(f"gaia qos-apply: {args.device}: {len(sent)} tc command(s), {len(instances)} instance(s)")
    for line in sent:
        print(f"  tc {line}")
    return 0


def cmd_node_agent(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from gaia.node.agent import serve_node

    def refuse(message: str) -> int:
        print(f"gaia node-agent: {message}", file=sys.stderr)
        return 2

    node_name = args.node_name or os.environ.get("NODE_NAME", "")
    if not node_name:
        return refuse("--node-name (or the NODE_NAME variable) names this node's Node object")
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        return refuse(f"no kubeconfig at {args.kubeconfig}")
    if not 0.5 <= args.interval <= 300:
        return refuse(f"--interval must be 0.5..300 seconds, not {args.interval:g}")
    if (args.qos_device is None) != (args.qos_link_mbit is None):
        return refuse("--qos-device and --qos-link-mbit go together (the uplink and its Mbit/s)")
    if args.qos_link_mbit is not None and args.qos_link_mbit <= 0:
        return refuse(f"--qos-link-mbit must be positive, not {args.qos_link_mbit:g}")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_node(
            node_name=node_name,
            kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
            plugin_dir=Path(args.device_plugin_dir),
            state_dir=Path(args.state_dir),
            enforcement_mode=args.enforcement,
            dev_root=Path(args.dev_root),
            interval_s=args.interval,
            stop=stop,
            qos_device=args.qos_device,
            qos_link=round((args.qos_link_mbit or 0) * 125_000),
        )

    asyncio.run(run())
    return 0


def cmd_p2p_agent(args: argparse.Namespace) -> int:
    """``gaia p2p-agent``: the node's registry mirror and P2P peer (gaia.node.p2p)."""
    import asyncio
    import signal

    from gaia.node.p2p.agent import AgentConfig, P2PAgent
    from gaia.node.p2p.client import HttpCoordinator, TokenFile
    from gaia.node.p2p.upstream import load_registries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = args.node_name or os.environ.get("NODE_NAME", "")
    if not node and not args.write_containerd_hosts:
        print("gaia p2p-agent: --node-name or $NODE_NAME is required", file=sys.stderr)
        return 2
    try:
        listen = _host_port(args.listen)
        peer_listen = _host_port(args.peer_listen)
        registries = load_registries(Path(args.registries_file))
    except (OSError, ValueError) as exc:
        print(f"gaia p2p-agent: {exc}", file=sys.stderr)
        return 2
    if args.write_containerd_hosts:
        from gaia.node.p2p.hosts import write_containerd_hosts

        for path in write_containerd_hosts(
            Path(args.write_containerd_hosts), registries, f"{listen[0]}:{listen[1]}"
        ):
            print(f"wrote {path}")
        return 0
    if not registries and not args.coordinator:
        print(
            "gaia p2p-agent: no registry to mirror: name one in --registries-file, or give "
            "--coordinator (the platform's own registry comes with its answer)",
            file=sys.stderr,
        )
        return 2
    advertise = args.advertise_address or f"{peer_listen[0]}:{peer_listen[1]}"
    config = AgentConfig(
        node=node,
        zone=args.zone,
        listen=listen,
        peer_listen=peer_listen,
        advertise=advertise,
        cache_dir=Path(args.cache_dir),
        cache_max_bytes=args.cache_max_bytes,
        upload_slots=args.upload_slots,
        download_slots=args.download_slots,
        coordinator_patience_s=args.coordinator_patience,
        upload_rate=args.upload_rate,
        download_rate=args.download_rate,
    )

    async def run() -> None:
        coordinator = None
        if args.coordinator:
            # a projected ServiceAccount token is rewritten by the kubelet before it expires:
            # the file is read again whenever it changed
            token = TokenFile(Path(args.token_file)) if args.token_file else ""
            coordinator = HttpCoordinator(
                origin=args.coordinator, cluster=args.cluster, token=token
            )
        agent = P2PAgent(config, registries, coordinator)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        try:
            await agent.run()
        finally:
            if coordinator is not None:
                await coordinator.aclose()

    try:  # uvloop (uvicorn[standard] brings it): the agent's socket work costs less CPU on it
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaia", description="Gaia container cloud")
    parser.add_argument("--version", action="version", version=f"gaia {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the API, console and controllers")
    up.add_argument("--host", help="listen address (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="listen port (default 8080)")
    up.add_argument("--data-dir", help="where SQLite and the secret key live")
    up.add_argument("--no-demo", action="store_true", help="no demo business and cluster")
    up.set_defaults(func=cmd_up)

    registry = sub.add_parser(
        "registry-config",
        help="write the configuration of an image registry that trusts this Gaia's tokens",
    )
    registry.add_argument("--out", required=True, help="folder for config.yml and token-ca.pem")
    registry.add_argument("--listen", default="0.0.0.0:5000", help="the registry's listen address")
    registry.add_argument("--storage", help="its storage folder (default <out>/storage)")
    registry.add_argument("--data-dir", help="Gaia's data dir (its key, without GAIA_SECRET_KEY)")
    registry.set_defaults(func=cmd_registry_config)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("--data-dir")
    upgrade.set_defaults(func=cmd_db_upgrade)

    secrets_cmd = sub.add_parser("secrets", help="secrets at rest")
    secrets_sub = secrets_cmd.add_subparsers(dest="secrets_command", required=True)
    rotate = secrets_sub.add_parser(
        "rotate",
        help="re-encrypt every stored secret with the first key of GAIA_SECRET_KEY",
        description=(
            "Key rotation: put the new key first in GAIA_SECRET_KEY (comma-separated, the old "
            "keys after it), run this once, then drop the old keys. One transaction: if a "
            "secret cannot be decrypted with any key, nothing changes."
        ),
    )
    rotate.add_argument("--data-dir", help="where SQLite and the secret key live")
    rotate.set_defaults(func=cmd_secrets_rotate)

    backup = sub.add_parser(
        "backup",
        help="back up the database, the secret key reference and the clusters' etcd",
        description=(
            "Writes one archive (docs/backup.md): a manifest (versions, schema, sizes and "
            "SHA-256 of each part), the database (SQLite's online backup, or pg_dump), an etcd "
            "snapshot per kubernetes cluster with etcd access, and a fingerprint of the secret "
            "key, not the key, unless --include-secret-key."
        ),
    )
    backup.add_argument("--data-dir", help="where SQLite and the secret key live")
    backup.add_argument("--out", help="the archive (default <backup dir>/gaia-backup-<time>.tar)")
    backup.add_argument(
        "--include-secret-key",
        action="store_true",
        help="put the secret key into the archive (then the archive is as secret as the key)",
    )
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore",
        help="restore a backup: checked whole, restored fresh, verified, then swapped in",
        description=(
            "Stop every replica first. The archive is checked (manifest, sizes, SHA-256; a "
            "newer schema is refused), the database restored into a fresh file or "
            "database, checked (row counts, schema, every secret decrypted with the key) and "
            "only then swapped in; the old one is kept aside. The key: --secret-key-file, "
            "else GAIA_SECRET_KEY, else the data dir's key file, else the archive's own (if taken "
            "with --include-secret-key)."
        ),
    )
    restore.add_argument("archive", help="the backup archive (.tar)")
    restore.add_argument(
        "--data-dir", help="the data dir (SQLite's file and key; the archive is unpacked here)"
    )
    restore.add_argument("--check", action="store_true", help="print the manifest; restore nothing")
    restore.add_argument("--secret-key-file", help="file holding the key(s) the backup names")
    restore.add_argument(
        "--etcd-out", help="make a fresh etcd data dir per cluster snapshot in this folder"
    )
    restore.add_argument("--etcd-member", default="default", help="the restored member's name")
    restore.add_argument(
        "--etcd-peer-url", default="http://127.0.0.1:2380", help="its advertised peer URL"
    )
    restore.set_defaults(func=cmd_restore)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(func=cmd_openapi)

    extender = sub.add_parser(
        "scheduler-extender",
        help="serve the Kubernetes scheduler-extender protocol (filter, prioritize, bind)",
        description=(
            "Topology-aware GPU placement for pods that kube-scheduler places: point a "
            "KubeSchedulerConfiguration extender at this address. Beyond 127.0.0.1 callers "
            "must authenticate: with a client certificate signed by --client-ca-file (what "
            "kube-scheduler's extender tlsConfig sends), or with the bearer token of "
            "GAIA_EXTENDER_TOKEN (never on the command line, where ps shows it)."
        ),
    )
    extender.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    extender.add_argument("--port", type=int, default=8888, help="listen port (default 8888)")
    extender.add_argument(
        "--kubeconfig",
        help="kubeconfig for the bind step (default: the in-cluster service account, if any)",
    )
    extender.add_argument(
        "--tls-cert-file", help="serve HTTPS with this certificate (PEM, chain first to last)"
    )
    extender.add_argument("--tls-private-key-file", help="the key of --tls-cert-file (PEM)")
    extender.add_argument(
        "--client-ca-file",
        help="require a client certificate signed by a CA in this file (PEM) on every connection",
    )
    extender.set_defaults(func=cmd_scheduler_extender)

    agent = sub.add_parser(
        "node-agent",
        help="run on a GPU worker node: publish its GPUs, serve the kubelet's device plugin",
        description=(
            "One per GPU node (deploy/node-agent: a DaemonSet, or a systemd unit). Reads the "
            "cards through NVML (or nvidia-smi), publishes topology, health and NUMA on the "
            "Node, advertises gaia.io/gpu-core (100 units per card) to the kubelet as a device "
            "plugin and gaia.io/gpu-memory (MiB) in the Node's status, and grants each "
            "container its cards and limits. docs/gpu-sharing.md says more."
        ),
    )
    agent.add_argument("--node-name", help="this node's Node name (default: $NODE_NAME)")
    agent.add_argument(
        "--kubeconfig", help="kubeconfig (default: the in-cluster service account, or $KUBECONFIG)"
    )
    agent.add_argument(
        "--device-plugin-dir",
        default="/var/lib/kubelet/device-plugins",
        help="the kubelet's device plugin folder (default /var/lib/kubelet/device-plugins)",
    )
    agent.add_argument(
        "--state-dir",
        default="/var/lib/gaia/node-agent",
        help="where the agent keeps its grants (default /var/lib/gaia/node-agent)",
    )
    agent.add_argument(
        "--enforcement",
        choices=("mps", "none"),
        default="mps",
        help="how shares are enforced: mps (NVIDIA MPS limits; default) or none (visibility only)",
    )
    agent.add_argument("--dev-root", default="/dev", help="where the NVIDIA device nodes are")
    agent.add_argument(
        "--interval", type=float, default=5.0, help="seconds between passes (default 5)"
    )
    agent.add_argument(
        "--qos-device",
        help="also shape this uplink each pass from the pods' bandwidth quotas (docs/qos.md)",
    )
    agent.add_argument(
        "--qos-link-mbit", type=float, help="the uplink's capacity, Mbit/s (with --qos-device)"
    )
    agent.set_defaults(func=cmd_node_agent)

    qos = sub.add_parser(
        "qos-apply",
        help="shape a node's uplink: per-instance guaranteed bandwidth that lends what is idle",
        description=(
            "Reconciles the HTB tree on DEVICE with the instances (docs/qos.md): guarantee = "
            "quota, ceiling = the link, spare split by priority, then in proportion to quotas. "
            "Sends only what differs; run it again whenever the instances change."
        ),
    )
    qos.add_argument("--device", required=True, help="the node's uplink device")
    qos.add_argument("--link-mbit", type=float, required=True, help="the uplink's capacity, Mbit/s")
    qos.add_argument(
        "--instances",
        required=True,
        help='JSON file ("-": stdin): [{"name", "address", "guarantee_mbit", "priority"}]',
    )
    qos.set_defaults(func=cmd_qos_apply)

    p2p = sub.add_parser(
        "p2p-agent",
        help="run on a worker node: the registry mirror for containerd, a peer of the image swarm",
        description=(
            "One per node (deploy/p2p-agent). containerd pulls through it (certs.d hosts.toml, "
            "the registry as the fallback host); blobs come from other nodes' agents as the "
            "coordinator in Gaia assigns, each piece from the registry once for the whole "
            "cluster. docs/p2p.md says more."
        ),
    )
    p2p.add_argument("--node-name", help="this node's name (default: $NODE_NAME)")
    p2p.add_argument("--zone", default="", help="the node's zone (parents in the same zone first)")
    p2p.add_argument(
        "--listen", default="127.0.0.1:65001", help="mirror address (default 127.0.0.1:65001)"
    )
    p2p.add_argument(
        "--peer-listen", default="0.0.0.0:65002", help="peer server address (default 0.0.0.0:65002)"
    )
    p2p.add_argument("--advertise-address", help="host:port other agents reach the peer server at")
    p2p.add_argument("--coordinator", help="Gaia's URL (without it: a caching mirror, no swarm)")
    p2p.add_argument("--cluster", default="", help="this node's cluster name in Gaia")
    p2p.add_argument(
        "--token-file",
        help="file holding the agent's token: its pod's projected ServiceAccount token "
        "(audience gaia-p2p), its node token, or the cluster-wide token (re-read when it changes)",
    )
    p2p.add_argument(
        "--registries-file",
        required=True,
        help='JSON: {"host": {"url": ..., "username": ..., "password": ..., "default": bool}}',
    )
    p2p.add_argument("--cache-dir", default="/var/lib/gaia/p2p", help="blob cache folder")
    p2p.add_argument(
        "--cache-max-bytes", type=int, default=20 << 30, help="cache cap (default 20 GiB)"
    )
    p2p.add_argument("--upload-rate", type=float, default=0, help="bytes/s to peers (0: no limit)")
    p2p.add_argument("--download-rate", type=float, default=0, help="bytes/s fetched (0: no limit)")
    p2p.add_argument("--upload-slots", type=int, default=4, help="pieces served at once")
    p2p.add_argument(
        "--coordinator-patience",
        type=float,
        default=60.0,
        help="seconds to wait for an overloaded coordinator before fetching from the registry",
    )
    p2p.add_argument(
        "--download-slots", type=int, default=4, help="pieces fetched at once (default 4)"
    )
    p2p.add_argument(
        "--write-containerd-hosts",
        metavar="DIR",
        help="write DIR/<registry>/hosts.toml (this agent first, the registry as fallback), exit",
    )
    p2p.set_defaults(func=cmd_p2p_agent)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    quiet_http_client_loggers()
    result: int = args.func(args)
    return result
