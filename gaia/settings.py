"""Settings, from ``GAIA_*`` environment variables and the command line, in one place."""

from __future__ import annotations

import ipaddress
import os
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gaia"


def _networks(items: list[Any] | tuple[Any, ...]) -> list[IPv4Network | IPv6Network]:
    """CIDRs (``"10.0.0.0/8"``, ``" fd12::/64"``; blanks skipped) as networks; ``ValueError``
    naming the first that is not one, so a bad setting stops the start, not a later request."""
    networks: list[IPv4Network | IPv6Network] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a CIDR (10.0.0.0/8, fd12::/64)") from None
    return networks


def _host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GAIA_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # HA (issue 21, docs/ha.md): this replica's name in the leader leases (default: host, pid
    # and a random suffix) and how long a lease lasts without renewal (a dead leader's loops
    # move to another replica within it)
    replica_id: str = Field(default="", max_length=255)
    leader_lease_seconds: float = Field(default=10.0, ge=3, le=600)
    # CI/CD pipelines (issue 18): builds at once per business and on this replica in all
    pipeline_builds_per_business: int = Field(default=2, ge=1)
    pipeline_builds_total: int = Field(default=2, ge=1)
    # file:// git URLs read this machine's disk: off unless an operator allows it (tests do)
    pipeline_local_git: bool = False
    pipeline_runner_interval_seconds: float = Field(default=2.0, gt=0)
    # who builds (docs/pipelines.md, 'Build user'): a root platform hands builds to build_user
    # (empty: gaia-build when it exists) and refuses to build as root unless build_as_root;
    # build_dir holds the build folders and layer caches (default <data_dir>/builds)
    build_user: str = ""
    build_as_root: bool = False
    build_dir: Path | None = None
    # Empty: SQLite at <data_dir>/gaia.db. Otherwise any SQLAlchemy URL; PostgreSQL is the
    # production store (postgresql+psycopg://user:pass@host/db).
    database_url: str = ""
    # Fernet key (urlsafe base64, 32 bytes) that encrypts secrets at rest; several
    # comma-separated keys rotate (the first encrypts, all decrypt). Empty: a key file is created
    # in the data dir on first start (mode 0600); refused with PostgreSQL (gaia.security).
    secret_key: str = ""
    admin_password: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    session_ttl_seconds: int = 12 * 3600
    cluster_health_interval_seconds: float = 10.0
    cluster_health_timeout_seconds: float = 5.0
    app_reconcile_interval_seconds: float = 1.0
    # a quiet platform (every app as wished, nothing changing) gets a full controller pass this
    # often; changes (instances, API writes on any replica) get one at the next tick
    # (docs/architecture.md, "One controller pass")
    app_resync_seconds: float = Field(default=10.0, gt=0, le=3600)
    reservation_ttl_seconds: int = 600
    # P2P images (docs/p2p.md): the agents' heartbeat period (a node silent for three is
    # forgotten) and how long a piece assignment may stay unreported before it is cancelled
    p2p_heartbeat_seconds: float = Field(default=10.0, ge=1, le=300)
    p2p_lease_seconds: float = Field(default=30.0, ge=5, le=600)
    # how a P2P agent proves its node (docs/p2p.md, "Threat model"): the ServiceAccount
    # (namespace:name) whose pod-bound tokens, audience "gaia-p2p", the agents send; where the
    # cluster-wide agent token (it speaks for any node: weaker) is still accepted: "sim"
    # clusters only, "all", or "none"; how long a TokenReview's yes is trusted (seconds)
    p2p_agent_service_account: str = Field(
        default="gaia-system:gaia-p2p-agent", pattern=r"^[a-z0-9-]{1,63}:[a-z0-9.-]{1,253}$"
    )
    p2p_shared_agent_token: Literal["sim", "all", "none"] = "sim"  # noqa: S105 (a policy)
    p2p_token_review_cache_seconds: float = Field(default=30.0, ge=0, le=600)
    # how long an agent call's cluster lookup is kept (gaia.api.routes.p2p): a change to the
    # cluster on this replica clears it at once, another replica holds it at most this long
    p2p_cluster_cache_seconds: float = Field(default=5.0, ge=0, le=600)
    # image registry (docs/registry.md): the address `gaia up` runs Debian's docker-registry on
    # (empty: it runs none; a registry run apart is configured with `gaia registry-config`),
    # the URL Gaia reaches it at (default http://<registry_listen>), the host[:port] clients
    # push to and pull from (default: registry_listen), its binary and storage folder (default
    # <data_dir>/registry/storage), and each business's quota unless the business has its own
    registry_listen: str = ""
    registry_url: str = ""
    registry_address: str = ""
    registry_binary: str = "docker-registry"
    registry_storage_dir: Path | None = None
    registry_quota_bytes: int = Field(default=10 << 30, ge=0)
    # TLS of the registry `gaia up` runs: its certificate chain and key (PEM files; the default
    # URL becomes https://<registry_listen>), and the CA bundle that signs it when that is not a
    # public CA: Gaia's own calls, the builds' pushes and the P2P agents trust it
    registry_tls_cert_file: Path | None = None
    registry_tls_key_file: Path | None = None
    registry_ca_file: Path | None = None
    # the access layer (docs/access.md): where `gaia up` runs HAProxy for apps' domains
    # (host:port; empty: none), where dnsmasq answers them (host:port), and the address the
    # domains resolve to (default: the host of access_listen, which must then be an address)
    access_listen: str = ""
    access_dns_listen: str = "127.0.0.1:5353"
    access_address: str = ""
    access_haproxy_binary: str = "haproxy"
    access_dnsmasq_binary: str = "dnsmasq"
    # garbage collection of the registry `gaia up` runs (0: never; POST /registry/gc any time)
    registry_gc_interval_seconds: float = Field(default=86400.0, ge=0)
    # monitoring: how often the collector reads every cluster's metrics; how often alert
    # policies are evaluated
    metrics_interval_seconds: float = 15.0
    alert_eval_interval_seconds: float = 15.0
    # logs: the bounded store of container and platform log lines (<data_dir>/logs.db on
    # SQLite; on PostgreSQL the log_lines table every replica reads): at most this many lines,
    # none older than the age (0: no age bound), trimmed by age every retention interval
    log_store_max_lines: int = 2_000_000
    log_store_max_age_seconds: float = Field(default=7 * 86400.0, ge=0)
    log_retention_interval_seconds: float = Field(default=300.0, gt=0)
    log_collect_interval_seconds: float = 5.0
    # metric store: "embedded" (in memory, snapshot in <data_dir>/tsdb) or "prometheus" (a real
    # Prometheus at prometheus_url that scrapes GET /metrics/clusters)
    metrics_store: Literal["embedded", "prometheus"] = "embedded"
    metrics_retention_seconds: int = 7 * 86400
    metrics_max_series: int = 1_000_000
    metrics_snapshot_interval_seconds: float = 300.0
    prometheus_url: str = ""
    prometheus_token: str = ""  # bearer token Gaia sends to Prometheus, if it needs one
    # GET /metrics: besides a platform admin's API token, this bearer token (empty: admins only)
    metrics_token: str = ""
    demo: bool = True
    # backups (docs/backup.md): where the controllers leader writes scheduled ones (default
    # <data_dir>/backups), how often (0: never on a schedule; POST /backups any time), how many
    # succeeded ones it keeps; etcd's tools (etcdctl takes snapshots, etcdutl restores them);
    # PostgreSQL's pg_dump/pg_restore folder (default: the newest Debian PostgreSQL's, or PATH)
    backup_dir: Path | None = None
    backup_every_seconds: float = Field(default=86400.0, ge=0)
    backup_keep: int = Field(default=7, ge=1)
    backup_include_secret_key: bool = False
    etcdctl: str = "etcdctl"
    etcdutl: str = "etcdutl"
    pg_bin_dir: Path | None = None
    # alerting: the token Alertmanager sends to POST /api/v1/alerts/alertmanager (empty: only a
    # platform admin's API token is accepted); the console's address, for links in notifications
    alertmanager_token: str = ""
    external_url: str = ""
    # egress: CIDRs (comma-separated) that alert channels may reach although they are loopback,
    # private, link-local or otherwise not public (gaia.egress); empty: public addresses only
    egress_allow_cidrs: str = ""
    # the largest request body the API reads, and the largest WebSocket message the server
    # takes (the console's terminal): bigger ones are refused with 413 before they are read.
    # 4 MiB fits the biggest legitimate bodies with margin: a config of 1 MiB of data escaped
    # into JSON, a kubeconfig of up to 1 MB, a batch of Alertmanager alerts.
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    @field_validator("egress_allow_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        # refused at start-up, not at the first alert that tries to leave
        _networks(value.split(","))
        return value

    # login throttle (gaia.store.throttle): failed logins are counted per (client address,
    # username) and per client address across all usernames, in leaky buckets that drain
    # completely in login_failure_window_seconds; a full bucket answers 429 with Retry-After.
    # The counts live in the database, so replicas sharing one PostgreSQL share one budget.
    login_failures_per_user: int = Field(default=10, ge=1)
    login_failures_per_client: int = Field(default=50, ge=1)
    login_failure_window_seconds: float = Field(default=300.0, gt=0)
    # the most (client, username) and client rows kept; beyond it the stalest are forgotten
    login_throttle_max_rows: int = Field(default=100_000, ge=10)
    # how long a resolved token's principal is cached (gaia.store.identity.PrincipalCache): a
    # change on this replica clears it at once, another replica's cache holds at most this long
    principal_cache_seconds: float = Field(default=3.0, ge=0)
    # reverse proxies (comma-separated CIDRs) whose X-Forwarded-For names the client
    # (gaia.api.client_address) and whose X-Forwarded-Proto says the browser came over https
    # (the console's cookie is then Secure, gaia.console.browser_guard); empty: the socket peer
    # is the client, and neither header is ever believed
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_cidrs(cls, value: Any) -> Any:
        # "10.0.0.0/8, fd00::/8" from the environment; a list when built in code
        items = value.split(",") if isinstance(value, str) else value
        return _networks(items) if isinstance(items, list | tuple) else value

    @model_validator(mode="after")
    def _registry_tls(self) -> Settings:
        # refused at start-up: a certificate without its key (or the other way) would start a
        # plain-HTTP registry the operator believes is HTTPS
        if (self.registry_tls_cert_file is None) != (self.registry_tls_key_file is None):
            raise ValueError(
                "GAIA_REGISTRY_TLS_CERT_FILE and GAIA_REGISTRY_TLS_KEY_FILE go together: "
                "set both for an HTTPS registry, or neither"
            )
        for name in ("registry_tls_cert_file", "registry_tls_key_file", "registry_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"GAIA_{name.upper()}: no file at {path}")
        return self

    @model_validator(mode="after")
    def _access(self) -> Settings:
        for name in ("access_listen", "access_dns_listen"):
            value = getattr(self, name)
            if value and not _host_port(value):
                raise ValueError(f"GAIA_{name.upper()}: {value!r} is not host:port")
        if self.access_listen and not self.resolved_access_address():
            raise ValueError(
                "GAIA_ACCESS_ADDRESS: the address the apps' domains resolve to is needed when "
                f"GAIA_ACCESS_LISTEN ({self.access_listen}) names no single address"
            )
        return self

    def resolved_access_address(self) -> str:
        if self.access_address:
            return self.access_address
        host = self.access_listen.rpartition(":")[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return ""
        return "" if address.is_unspecified else str(address)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'gaia.db'}"

    def resolved_backup_dir(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"
