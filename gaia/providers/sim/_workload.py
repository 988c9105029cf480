"""What a simulated instance does: its resource usage and its log lines, from a workload profile.

An instance picks a profile with the annotation ``sim.gaia.io/profile``: ``web`` (the default:
moderate CPU with a daily-ish swing, steady traffic, an access log), ``batch`` (busy CPU and
memory, bursts of I/O, a line per batch), ``gpu-inference`` (GPU busy, memory at the model's
size, a line per request) or ``idle`` (almost nothing, a heartbeat).

Nothing is stored per sample. Every value is a pure function of the instance's seed (a hash of
``namespace/name``), its requests and the time, so ``metrics()`` over 20,000 instances costs a
few arithmetic operations each and two calls at the same instant agree:

- CPU: a fraction of the request: a per-profile base, a slow sine (period 10-20 minutes, phase
  from the seed) and jitter drawn per 15-second bucket from the seed; clamped below the request.
- memory: grows from a start fraction to a plateau after the container starts; below the request.
- network: the counters are the integral of a positive rate (a sine around the mean), in closed
  form, so they only increase; transmit stays under the instance's egress bandwidth request.
- GPU (instances with cards): utilisation and card memory per profile, within the cards or the
  share held and within the GPU memory request.

A request of zero on a dimension is measured against a small nominal amount (100 millicores,
256 MiB) instead, as a best-effort container still uses something.

A *load override* (``LoadOverride``: the sim's ``load`` fault, for alert drills) replaces the
profile's CPU and/or memory with a fixed percent of the request, still with a jitter of about
one point per 15-second bucket, so "the app's load is raised, then drops" is one call each way.

Log lines are generated the same way, lazily: the ``k``-th periodic line of a container is a
function of (seed, k), so reading the last 100 lines of a container that ran for a week costs
100 lines, not a week of lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.kube.labels import PROFILE_ANNOTATION

PROFILES = ("web", "batch", "gpu-inference", "idle")
DEFAULT_PROFILE = "web"

_MASK = (1 << 64) - 1
_TWO_PI = 2.0 * math.pi
_NOMINAL_CPU_MILLI = 100
_NOMINAL_MEMORY_MIB = 256


@dataclass(frozen=True, slots=True)
class Profile:
    cpu_base: float  # fraction of the request
    cpu_swing: float
    cpu_jitter: float
    memory_start: float
    memory_plateau: float
    memory_tau_s: float
    rx_bytes_s: float
    tx_bytes_s: float
    disk_fraction: float  # of the local disk request, reached after about an hour
    gpu_util: float
    gpu_swing: float
    gpu_memory: float  # fraction of the card memory held
    log_interval_s: float


_PROFILES: dict[str, Profile] = {
    "web": Profile(0.25, 0.12, 0.05, 0.10, 0.55, 120.0, 250e3, 900e3, 0.2, 0.15, 0.08, 0.2, 2.0),
    "batch": Profile(0.80, 0.08, 0.06, 0.15, 0.85, 300.0, 1.5e6, 0.8e6, 0.6, 0.90, 0.05, 0.8, 10.0),
    "gpu-inference": Profile(
        0.35, 0.10, 0.05, 0.20, 0.65, 60.0, 2.0e6, 150e3, 0.1, 0.60, 0.25, 0.7, 1.0
    ),
    "idle": Profile(0.02, 0.005, 0.005, 0.05, 0.12, 600.0, 200.0, 200.0, 0.01, 0.0, 0.0, 0.0, 60.0),
}


def check_profile(annotations: dict[str, str]) -> str:
    profile = annotations.get(PROFILE_ANNOTATION, DEFAULT_PROFILE)
    if profile not in _PROFILES:
        raise InvalidRequest(
            f"annotation {PROFILE_ANNOTATION} is {profile!r}; use one of {', '.join(PROFILES)}"
        )
    return profile


def _mix(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit(seed: int, k: int) -> float:
    """A deterministic number in [0, 1) for (seed, k)."""
    return _mix(seed ^ ((k * 0xD1B54A32D192ED03) & _MASK)) / 18446744073709551616.0


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_milli: float
    memory_mib: float
    rx_bytes_total: float
    tx_bytes_total: float
    disk_used_gib: float
    gpu_util: float
    gpu_memory_mib: float


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _counter(mean: float, period_s: float, phase: float, t_from: float, t_to: float) -> float:
    """The integral of ``mean * (1 + 0.5 sin(w t + phase))`` from ``t_from`` to ``t_to``."""
    w = _TWO_PI / period_s
    return mean * (t_to - t_from) - 0.5 * mean / w * (
        math.cos(w * t_to + phase) - math.cos(w * t_from + phase)
    )


def usage(
    *,
    profile: str,
    seed: int,
    request: ResourceVector,
    card_share_memory_mib: float,
    has_gpu: bool,
    t: float,
    running_s: float,
    alive_s: float,
) -> Usage:
    """The usage at Unix time ``t`` of a container running for ``running_s`` seconds, in an
    instance alive for ``alive_s`` seconds (counters count over the instance's life)."""
    p = _PROFILES[profile]
    u1, u2, u3 = unit(seed, 1), unit(seed, 2), unit(seed, 3)
    period = 600.0 + 600.0 * u1
    phase = _TWO_PI * u2
    wave = math.sin(_TWO_PI * t / period + phase)
    bucket = int(t // 15.0)
    jitter = 2.0 * unit(seed, 1000 + bucket) - 1.0

    cpu_request = request.cpu or _NOMINAL_CPU_MILLI
    cpu_frac = p.cpu_base * (0.85 + 0.3 * u3) + p.cpu_swing * wave + p.cpu_jitter * jitter
    cpu = _clamp(cpu_frac, 0.002, 0.98) * cpu_request

    memory_request = request.memory or _NOMINAL_MEMORY_MIB
    plateau = p.memory_plateau * (0.9 + 0.1 * u3)
    grown = 1.0 - math.exp(-max(0.0, running_s) / p.memory_tau_s)
    memory_frac = p.memory_start + (plateau - p.memory_start) * grown + 0.01 * jitter
    memory = _clamp(memory_frac, 0.01, 0.97) * memory_request

    tx_mean = p.tx_bytes_s * (0.5 + u1)
    if request.bandwidth:
        # the rate peaks at 1.5x its mean: keep the peak inside the egress request
        tx_mean = min(tx_mean, request.bandwidth * 125_000 / 1.5)
    rx_mean = p.rx_bytes_s * (0.5 + u2)
    t_from = t - max(0.0, alive_s)
    rx = _counter(rx_mean, period, phase, t_from, t)
    tx = _counter(tx_mean, period, phase + 1.0, t_from, t)

    disk = request.local_disk * p.disk_fraction * (1.0 - math.exp(-max(0.0, alive_s) / 3600.0))

    gpu_util = gpu_memory = 0.0
    if has_gpu:
        gpu_util = _clamp(p.gpu_util + p.gpu_swing * (wave + 0.5 * jitter), 0.0, 1.0)
        cap = float(request.gpu_memory) if request.gpu_memory else card_share_memory_mib
        gpu_memory = cap * _clamp(p.gpu_memory * (0.9 + 0.1 * u3) * min(1.0, grown * 4), 0.0, 0.97)
    return Usage(cpu, memory, rx, tx, disk, gpu_util, gpu_memory)


@dataclass(frozen=True, slots=True)
class LoadOverride:
    """Percent of the request (0..100) an app's instances use instead of their profile's;
    None leaves that dimension to the profile."""

    cpu_percent: float | None = None
    memory_percent: float | None = None


def check_load_percent(value: object, field: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise InvalidRequest(f"{field} must be a number from 0 to 100, got {value!r}")
    if not 0 <= value <= 100:
        raise InvalidRequest(f"{field} must be from 0 to 100 (percent of the request)")
    return float(value)


def overridden(
    u: Usage, load: LoadOverride, *, seed: int, request: ResourceVector, t: float
) -> Usage:
    """``u`` with the override's dimensions replaced: the percent of the request (or of the
    nominal amount) plus a jitter within one point, clamped to 0..100 %."""
    jitter = 2.0 * unit(seed, 50_000 + int(t // 15.0)) - 1.0
    cpu, memory = u.cpu_milli, u.memory_mib
    if load.cpu_percent is not None:
        fraction = _clamp((load.cpu_percent + jitter) / 100.0, 0.0, 1.0)
        cpu = fraction * (request.cpu or _NOMINAL_CPU_MILLI)
    if load.memory_percent is not None:
        fraction = _clamp((load.memory_percent + jitter) / 100.0, 0.0, 1.0)
        memory = fraction * (request.memory or _NOMINAL_MEMORY_MIB)
    return replace(u, cpu_milli=cpu, memory_mib=memory)


# ---------------------------------------------------------------- log lines


def log_interval_s(profile: str, seed: int) -> float:
    return _PROFILES[profile].log_interval_s * (0.75 + 0.5 * unit(seed, 7))


def banner(
    *,
    profile: str,
    app: str,
    version: str,
    image: str,
    ports: tuple[int, ...],
    gpu_ids: tuple[int, ...],
) -> list[str]:
    lines = [f"starting {app} {version} (image {image})"]
    if profile == "web":
        lines.extend(f"listening on 0.0.0.0:{port}" for port in ports or (8080,))
    elif profile == "batch":
        lines.append("worker started, polling the job queue")
    elif profile == "gpu-inference":
        cards = ",".join(str(g) for g in gpu_ids) or "none (CPU fallback)"
        lines.append(f"model loaded on GPU {cards}; serving on 0.0.0.0:{(ports or (8000,))[0]}")
    else:
        lines.append("nothing to do; sleeping")
    lines.append("ready")
    return lines


_PATHS = ("/api/v1/items", "/api/v1/orders", "/api/v1/users", "/healthz", "/static/app.js")


def periodic_line(profile: str, seed: int, k: int) -> tuple[str, str]:
    """The ``k``-th periodic line of a container as (stream, text)."""
    a, b, c = unit(seed, 10_000 + 3 * k), unit(seed, 10_001 + 3 * k), unit(seed, 10_002 + 3 * k)
    if profile == "web":
        status = 500 if a < 0.002 else 404 if a < 0.02 else 200
        path = _PATHS[int(b * len(_PATHS))]
        client = f"10.{int(a * 250)}.{int(b * 250)}.{int(c * 250) + 2}"
        line = (
            f'{client} - - "GET {path}/{int(c * 10_000)} HTTP/1.1" {status} '
            f"{200 + int(b * 20_000)} {1 + c * 40:.1f}ms"
        )
        return ("stderr" if status == 500 else "stdout", line)
    if profile == "batch":
        return (
            "stdout",
            f"processed batch {k}: {1000 + int(a * 9000)} records in {2 + b * 6:.1f}s",
        )
    if profile == "gpu-inference":
        return (
            "stdout",
            f"infer id={_mix(seed + k) & 0xFFFFFF:06x} batch={1 << int(a * 4)} "
            f"latency={4 + b * 30:.1f}ms",
        )
    return ("stdout", "heartbeat ok")
