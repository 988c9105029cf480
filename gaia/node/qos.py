"""Programs a ``QosPlan`` (``gaia.domain.qos``) on a node's uplink with real ``tc``.

Where: the egress of the node's uplink device, classified by u32 on the pods' **source
addresses** (docs/qos.md says why: it is the one place where every instance's traffic meets in
one HTB tree, so an idle guarantee can be lent to a neighbour; a qdisc per veth cannot lend).

The shape: ``htb`` root ``1:`` (default leaf 1:fff) -> class ``1:1`` at the link -> one leaf per
instance (``QosClass``) -> a u32 filter ``800::<minor>`` matching its address.

``reconcile_qos(device, plan)`` is level-triggered: it reads the root qdisc, the classes and the
filters (``tc class show``/``tc -j filter show``), computes what differs and sends only that as
one ``tc -batch``; a second call with the same plan sends nothing and returns no commands. Leaves
of instances that left the node are removed with their filters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from gaia.domain.qos import DEFAULT_MINOR, QosClass, QosInstance, QosPlan, QosPlanError

FILTER_PRIO = 10
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_CLASS_LINE = re.compile(
    r"class htb 1:(?P<minor>[0-9a-f]+) (?:parent 1:(?P<parent>[0-9a-f]+) |root )"
    r"(?:leaf \S+ )?(?:prio (?P<prio>\d+) )?(?:quantum (?P<quantum>\d+) )?"
    r".*?rate (?P<rate>\S+) ceil (?P<ceil>\S+)"
)


class QosApplyError(RuntimeError):
    """``tc`` refused or is missing; the message carries its own words."""


@dataclass(frozen=True)
class ObservedClass:
    minor: int
    parent: int | None
    priority: int
    rate_bits: int
    ceil_bits: int
    quantum: int | None = None  # ``tc -d`` prints it


def _tc(*args: str, stdin: str | None = None) -> str:
    tc = shutil.which("tc", path=os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin")
    if tc is None:
        raise QosApplyError("tc is not installed (Debian package iproute2)")
    # the arguments are ours: device names and numbers from a validated plan
    done = subprocess.run([tc, *args], input=stdin, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        raise QosApplyError(f"tc {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _bits(text: str) -> int:
    match = re.fullmatch(r"([0-9.]+)([kmg]?)bit", text.lower())
    if match is None:
        raise QosApplyError(f"cannot read the rate {text!r} that tc printed")
    return round(float(match.group(1)) * _UNITS[match.group(2)])


def _close(a: int, b: int) -> bool:
    """tc prints rates rounded to about three digits."""
    return abs(a - b) <= max(1000, 0.01 * max(a, b))


@dataclass(frozen=True)
class Observed:
    ours: bool  # our HTB root (default leaf 1:fff) is there
    foreign_root: bool  # another root qdisc with a handle is there (to delete first)
    classes: dict[int, ObservedClass]
    filters: dict[int, str]  # "flowid/address hex" by u32 item


def observe(device: str) -> Observed:
    """What ``device``'s egress shaping is now."""
    qdiscs = _tc("qdisc", "show", "dev", device)
    # ours: an HTB root 1: whose default is our default leaf (another HTB there is replaced)
    ours = any(
        line.startswith("qdisc htb 1: root") and f" default {DEFAULT_MINOR:#x}" in line
        for line in qdiscs.splitlines()
    )
    classes: dict[int, ObservedClass] = {}
    filters: dict[int, str] = {}
    if not ours:
        foreign = any(
            " root" in line and not line.split()[2].startswith("0:")
            for line in qdiscs.splitlines()
            if len(line.split()) > 2
        )
        return Observed(False, foreign, classes, filters)
    for line in _tc("-d", "class", "show", "dev", device).splitlines():
        m = _CLASS_LINE.match(line)
        if m:
            parent = int(m["parent"], 16) if m["parent"] else None
            classes[int(m["minor"], 16)] = ObservedClass(
                int(m["minor"], 16),
                parent,
                int(m["prio"] or 0),
                _bits(m["rate"]),
                _bits(m["ceil"]),
                int(m["quantum"]) if m["quantum"] else None,
            )
    for entry in json.loads(_tc("-j", "filter", "show", "dev", device) or "[]"):
        options = entry.get("options", {})
        fh, flowid, match = options.get("fh", ""), options.get("flowid"), options.get("match")
        if entry.get("pref") == FILTER_PRIO and fh.startswith("800::") and flowid and match:
            filters[int(fh[5:], 16)] = f"{flowid}/{match.get('value')}"
    return Observed(True, False, classes, filters)


def _address_hex(address: str) -> str:
    return "".join(f"{int(p):02x}" for p in address.split(".")).lstrip("0") or "0"


def _class_cmd(device: str, c: QosClass) -> str:
    return (
        f"class replace dev {device} parent 1:1 classid 1:{c.minor:x} htb rate {c.rate * 8}bit "
        f"ceil {c.ceil * 8}bit prio {c.priority} quantum {c.quantum}"
    )


def plan_commands(
    device: str,
    plan: QosPlan,
    observed: Observed,
) -> list[str]:
    """The ``tc -batch`` lines that turn ``observed`` into ``plan`` (none when they agree)."""
    classes, filters = observed.classes, observed.filters
    link_bits = plan.link * 8
    lines: list[str] = []
    if not observed.ours:
        classes, filters = {}, {}
        if observed.foreign_root:  # a qdisc of another kind (or HTB set up otherwise)
            lines.append(f"qdisc del dev {device} root")
        lines.append(f"qdisc add dev {device} root handle 1: htb default {DEFAULT_MINOR:x}")
    root = classes.get(1)
    if root is None or not (
        _close(root.rate_bits, link_bits) and _close(root.ceil_bits, link_bits)
    ):
        lines.append(
            f"class replace dev {device} parent 1: classid 1:1 htb rate {link_bits}bit "
            f"ceil {link_bits}bit"
        )
    wanted = {c.minor: c for c in plan.classes}
    for minor in sorted(set(filters) - set(wanted)):
        lines.append(
            f"filter del dev {device} parent 1: protocol ip prio {FILTER_PRIO} "
            f"handle 800::{minor:x} u32"
        )
    for minor in sorted(m for m in classes if m != 1 and m not in wanted):
        lines.append(f"class del dev {device} classid 1:{minor:x}")
    for c in plan.classes:
        seen = classes.get(c.minor)
        if (
            seen is None
            or seen.parent != 1
            or seen.priority != c.priority
            or (seen.quantum is not None and seen.quantum != c.quantum)
            or not _close(seen.rate_bits, c.rate * 8)
            or not _close(seen.ceil_bits, c.ceil * 8)
        ):
            lines.append(_class_cmd(device, c))
        if c.address is None:
            continue
        want_filter = f"1:{c.minor:x}/{_address_hex(c.address)}"
        if filters.get(c.minor) != want_filter:
            if c.minor in filters:
                lines.append(
                    f"filter del dev {device} parent 1: protocol ip prio {FILTER_PRIO} "
                    f"handle 800::{c.minor:x} u32"
                )
            lines.append(
                f"filter add dev {device} parent 1: protocol ip prio {FILTER_PRIO} "
                f"handle 800::{c.minor:x} u32 match ip src {c.address}/32 flowid 1:{c.minor:x}"
            )
    return lines


def reconcile_qos(device: str, plan: QosPlan) -> list[str]:
    """Make ``device``'s egress shaping match ``plan``; returns the commands it sent."""
    lines = plan_commands(device, plan, observe(device))
    if lines:
        _tc("-batch", "-", stdin="\n".join(lines) + "\n")
    return lines


def remove_qos(device: str) -> None:
    """Take Gaia's shaping off ``device`` (its root qdisc goes back to the default)."""
    if observe(device).ours:
        _tc("qdisc", "del", "dev", device, "root")


def load_instances(text: str) -> list[QosInstance]:
    """Instances from JSON ``[{"name", "address", "guarantee_mbit", "priority"?}, ...]``; the
    form ``gaia qos-apply --instances`` reads (a node agent builds the same list from its pods)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise QosPlanError(f"the instances are not JSON: {e}") from None
    if not isinstance(raw, list):
        raise QosPlanError("the instances must be a JSON list of objects")
    out: list[QosInstance] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise QosPlanError(f"instance {i}: expected an object, got {type(item).__name__}")
        missing = {"name", "address", "guarantee_mbit"} - set(item)
        if missing:
            raise QosPlanError(f"instance {i}: missing {', '.join(sorted(missing))}")
        mbit = item["guarantee_mbit"]
        if not isinstance(mbit, int | float) or isinstance(mbit, bool):
            raise QosPlanError(f"instance {i}: guarantee_mbit must be a number, got {mbit!r}")
        priority = item.get("priority", 4)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise QosPlanError(f"instance {i}: priority must be an integer 0..7, got {priority!r}")
        out.append(
            QosInstance(str(item["name"]), str(item["address"]), round(mbit * 125_000), priority)
        )
    return out
