"""``gaia-ipam``, the CNI IPAM plugin, run as the runtime runs it: a subprocess with the request
in a minimal environment and the network configuration on stdin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gaia.node import ipam
from tests.support.paths import REPO

ROOT = REPO


@dataclass
class Answer:
    code: int
    body: dict[str, Any] | None

    @property
    def ip(self) -> str:
        assert self.code == 0 and self.body is not None, self.body
        address: str = self.body["ips"][0]["address"]
        return address.split("/")[0]

    def error(self, code: int) -> str:
        assert self.code != 0 and self.body is not None, self.body
        assert self.body["code"] == code, self.body
        message: str = self.body["msg"]
        return message


def environment(
    command: str, container: str, pod: str | None = None, now: float | None = None
) -> dict[str, str]:
    """What libcni passes: the CNI variables on top of a runtime's small environment."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": str(ROOT),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/cni-{container}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    if pod:
        namespace, name = pod.split("/")
        env["CNI_ARGS"] = (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
            f"K8S_POD_INFRA_CONTAINER_ID={container}"
        )
    if now is not None:
        env["GAIA_IPAM_NOW"] = str(now)
    return env


def start(env: dict[str, str], conf: bytes) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "gaia.node.ipam"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    assert process.stdin is not None
    process.stdin.write(conf)
    process.stdin.close()
    return process


def finish(process: subprocess.Popen[bytes]) -> Answer:
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()
    err = process.stderr.read()
    code = process.wait(timeout=30)
    assert not err, err.decode()
    return Answer(code, json.loads(out) if out.strip() else None)


class Network:
    def __init__(self, data_dir: Path, **ipam_fields: Any) -> None:
        self.conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "gaia-test",
            "type": "bridge",
            "ipam": {
                "type": "gaia-ipam",
                "subnet": "10.244.7.0/24",
                "dataDir": str(data_dir),
                **ipam_fields,
            },
        }

    def raw(self) -> bytes:
        return json.dumps(self.conf).encode()

    def call(
        self, command: str, container: str, pod: str | None = None, now: float | None = None
    ) -> Answer:
        return finish(start(environment(command, container, pod, now), self.raw()))

    def add(self, container: str, pod: str | None = None, now: float | None = None) -> Answer:
        return self.call("ADD", container, pod, now)

    def delete(self, container: str, pod: str | None = None, now: float | None = None) -> Answer:
        return self.call("DEL", container, pod, now)


@pytest.fixture
def net(tmp_path: Path) -> Network:
    return Network(tmp_path / "leases")


def test_version_lists_the_spec_versions_spoken(net: Network) -> None:
    got = finish(start(environment("VERSION", ""), b'{"cniVersion": "0.4.0"}'))
    assert got.code == 0
    assert got.body == {
        "cniVersion": "0.4.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    }


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("gaia-ipam")
    found = str(script) if script.exists() else shutil.which("gaia-ipam")
    assert found, "pip install -e . installs the gaia-ipam console script"
    done = subprocess.run(
        [found],
        input=b'{"cniVersion": "1.0.0"}',
        env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0 and b"supportedVersions" in done.stdout


def test_add_gives_the_first_free_address_with_the_gateway_and_a_default_route(
    net: Network,
) -> None:
    got = net.add("c1", "default/web-0")
    assert got.body == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.244.7.2/24", "gateway": "10.244.7.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }


def test_results_of_older_spec_versions_name_the_ip_version(net: Network) -> None:
    net.conf["cniVersion"] = "0.4.0"
    got = net.add("c1", "default/web-0")
    assert got.body is not None
    assert got.body["cniVersion"] == "0.4.0"
    assert got.body["ips"] == [
        {"address": "10.244.7.2/24", "gateway": "10.244.7.1", "version": "4"}
    ]


def test_a_repeated_add_of_one_container_answers_the_same_address(net: Network) -> None:
    assert net.add("c1", "default/web-0").ip == net.add("c1", "default/web-0").ip == "10.244.7.2"
    assert net.call("CHECK", "c1", "default/web-0").code == 0


def test_a_pod_recreated_under_its_name_gets_its_address_back(net: Network) -> None:
    first = net.add("sandbox-1", "default/web-0").ip
    assert net.delete("sandbox-1", "default/web-0").code == 0
    other = net.add("sandbox-2", "default/web-1").ip
    assert other != first, "a deleted pod's address stays reserved for its name"
    assert net.add("sandbox-3", "default/web-0").ip == first


def test_the_same_name_in_another_namespace_is_another_pod(net: Network) -> None:
    assert net.add("c1", "alpha/web-0").ip != net.add("c2", "beta/web-0").ip


def test_a_reservation_ends_after_keep_s(net: Network) -> None:
    net.conf["ipam"]["keep_s"] = 60
    net.conf["ipam"]["rangeEnd"] = "10.244.7.2"
    assert net.add("c1", "default/web-0", now=1000).ip == "10.244.7.2"
    net.delete("c1", "default/web-0", now=1000)
    assert net.add("c2", "default/web-1", now=1059).error(ipam.RANGE_EXHAUSTED)
    assert net.add("c2", "default/web-1", now=1060).ip == "10.244.7.2"
    assert net.add("c3", "default/web-0", now=1061).error(ipam.RANGE_EXHAUSTED)


def test_a_new_sandbox_waits_while_the_old_one_holds_the_address(net: Network) -> None:
    ip = net.add("old", "default/web-0").ip
    message = net.add("new", "default/web-0").error(ipam.TRY_AGAIN_LATER)
    assert "still held by container old" in message
    net.delete("old", "default/web-0")
    assert net.add("new", "default/web-0").ip == ip


def test_a_late_del_of_an_old_sandbox_leaves_the_new_one_alone(net: Network) -> None:
    ip = net.add("old", "default/web-0").ip
    net.delete("old", "default/web-0")
    assert net.add("new", "default/web-0").ip == ip
    assert net.delete("old", "default/web-0").code == 0
    assert net.call("CHECK", "new", "default/web-0").code == 0
    assert net.add("intruder", "default/web-0").error(ipam.TRY_AGAIN_LATER)


def test_without_a_pod_name_an_address_is_held_per_container_until_del(net: Network) -> None:
    ip = net.add("plain-1").ip
    assert net.add("plain-2").ip != ip
    net.delete("plain-1")
    assert net.add("plain-3").ip == ip


def test_del_of_an_unknown_container_succeeds_quietly(net: Network) -> None:
    assert net.delete("never-added", "default/web-0") == Answer(0, None)


def test_check_of_a_container_without_an_address_fails(net: Network) -> None:
    net.call("CHECK", "nobody", "default/web-0").error(ipam.UNKNOWN_CONTAINER)


def test_concurrent_adds_get_distinct_addresses(net: Network) -> None:
    processes = [
        start(environment("ADD", f"c{i}", f"default/web-{i}"), net.raw()) for i in range(24)
    ]
    ips = [finish(p).ip for p in processes]
    assert len(set(ips)) == len(ips) == 24
    leases = json.loads((Path(net.conf["ipam"]["dataDir"]) / "leases.json").read_text())
    assert sorted(lease["ip"] for lease in leases["leases"].values()) == sorted(ips)


def test_an_exhausted_range_is_a_clear_error(net: Network) -> None:
    net.conf["ipam"].update(rangeStart="10.244.7.10", rangeEnd="10.244.7.11")
    assert [net.add(f"c{i}", f"default/web-{i}").ip for i in range(2)] == [
        "10.244.7.10",
        "10.244.7.11",
    ]
    net.delete("c1", "default/web-1")
    got = net.add("c2", "default/web-2")
    assert "no free address in 10.244.7.10-10.244.7.11" in got.error(ipam.RANGE_EXHAUSTED)
    assert got.body is not None and "1 reserved for deleted pods" in got.body["details"]


@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        ({"cniVersion": "9.9.9"}, ipam.INCOMPATIBLE_VERSION, "cniVersion '9.9.9'"),
        ({"ipam": None}, ipam.INVALID_CONFIG, "no 'ipam'"),
        ({"name": ""}, ipam.INVALID_CONFIG, "no 'name'"),
        ({"ipam": {"type": "gaia-ipam"}}, ipam.INVALID_CONFIG, "ipam.subnet is required"),
        ({"ipam": {"subnet": "10.244.7.1/24"}}, ipam.INVALID_CONFIG, "not an IPv4 network"),
        ({"ipam": {"subnet": "fd00::/64"}}, ipam.INVALID_CONFIG, "not an IPv4 network"),
        ({"ipam": {"subnet": "10.244.7.0/31"}}, ipam.INVALID_CONFIG, "no room"),
        (
            {"ipam": {"subnet": "10.244.7.0/24", "rangeStart": "10.244.8.1"}},
            ipam.INVALID_CONFIG,
            "not a host address of 10.244.7.0/24",
        ),
        (
            {"ipam": {"subnet": "10.244.7.0/24", "rangeStart": ".5", "rangeEnd": "10.244.7.4"}},
            ipam.INVALID_CONFIG,
            "not an IPv4 address",
        ),
        (
            {
                "ipam": {
                    "subnet": "10.244.7.0/24",
                    "rangeStart": "10.244.7.9",
                    "rangeEnd": "10.244.7.4",
                }
            },
            ipam.INVALID_CONFIG,
            "is after ipam.rangeEnd",
        ),
        ({"ipam": {"subnet": "10.244.7.0/24", "keep_s": -1}}, ipam.INVALID_CONFIG, "keep_s"),
        ({"ipam": {"subnet": "10.244.7.0/24", "routes": "x"}}, ipam.INVALID_CONFIG, "routes"),
    ],
)
def test_a_bad_network_configuration_is_reported(
    net: Network, change: dict[str, Any], code: int, says: str
) -> None:
    net.conf.update(change)
    message = net.add("c1", "default/web-0").error(code)
    assert says in message


def test_stdin_that_is_not_json_is_a_decoding_error() -> None:
    got = finish(start(environment("ADD", "c1", "default/web-0"), b"{not json"))
    got.error(ipam.DECODE_FAILURE)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CNI_COMMAND": "GC"}, "CNI_COMMAND 'GC'"),
        ({"CNI_CONTAINERID": ""}, "CNI_CONTAINERID is not set"),
        ({"CNI_ARGS": "K8S_POD_NAME"}, "malformed pair"),
    ],
)
def test_a_bad_environment_is_reported(net: Network, env: dict[str, str], says: str) -> None:
    process = start({**environment("ADD", "c1"), **env}, net.raw())
    assert says in finish(process).error(ipam.INVALID_ENVIRONMENT)


def test_a_lease_folder_that_cannot_be_made_is_an_io_error(net: Network, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    net.conf["ipam"]["dataDir"] = str(blocker / "leases")
    net.add("c1", "default/web-0").error(ipam.IO_FAILURE)
