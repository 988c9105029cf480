"""The build executor against the real parts: git repositories made here, Debian's buildah, and
Debian's docker-registry (behind a password) holding a busybox base image.

Every build clones a repository from a local path, builds on ``<registry>/base:1`` and pushes
to the same registry, so each test is a whole pipeline run in one to three seconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gaia.delivery import (
    BuildOutcome,
    BuildResult,
    BuildSpec,
    BuildSpecError,
    BuildTools,
    GitCredentials,
    RegistryCredentials,
    StepResult,
    StepTimeouts,
    resolve_build_user,
    run_build,
)
from tests.conftest import missing_component
from tests.support.git_server import GitHttpsServer
from tests.support.images import OciImage, busybox_layer
from tests.support.kube import free_port
from tests.support.p2p import Registry

USER = "builder"
PASSWORD = "reg-pw-5f2c9e71a0"  # the test registry's password: it must never show
GIT_TOKEN = "ghp_tok3n9c1d2e3f4a5b6"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    for tool in ("buildah", "git", "docker-registry", "busybox"):
        if shutil.which(tool) is None:
            missing_component(tool, "scripts/test.sh installs it")
    reg = Registry(tmp_path_factory.mktemp("registry"), users={USER: PASSWORD}).start()
    base = OciImage(layers=(busybox_layer(),), entrypoint=("/bin/sh",), history=True)
    reg.push(base, "base", "1")
    yield reg
    reg.stop()


@dataclass
class Log:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, step: str, line: str) -> None:
        self.lines.append((step, line))

    def text(self, step: str | None = None) -> str:
        return "\n".join(line for s, line in self.lines if step is None or s == step)


def repository(path: Path, files: dict[str, str], *, branch: str = "main") -> Path:
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", branch], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return path


def spec(tmp_path: Path, registry: Registry, repo: Path, **overrides: Any) -> BuildSpec:
    fields: dict[str, Any] = {
        "git_url": str(repo),
        "branch": "main",
        "image": f"{registry.host}/team/app:1",
        "cache_dir": tmp_path / "cache",
        "work_dir": tmp_path / "work",
        "registry_credentials": RegistryCredentials(USER, PASSWORD),
        "registry_insecure": True,
    }
    fields.update(overrides)
    return BuildSpec(**fields)


def build(build_spec: BuildSpec, tools: BuildTools | None = None) -> tuple[BuildResult, Log]:
    log = Log()
    return asyncio.run(run_build(build_spec, log, tools=tools)), log


def dockerfile(registry: Registry, *lines: str) -> str:
    return "\n".join([f"FROM {registry.host}/base:1", *lines]) + "\n"


# ---------------------------------------------------------------------------- builds


def test_build_pushes_the_image_and_returns_the_digest_the_registry_serves(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(
        tmp_path / "repo",
        {
            "Dockerfile": dockerfile(
                registry, "COPY hello.txt /hello.txt", "RUN cat /hello.txt > /copied"
            ),
            "hello.txt": "hello from the repository\n",
        },
    )
    result, log = build(spec(tmp_path, registry, repo))

    assert result.result is BuildOutcome.OK, log.text()
    assert [s.name for s in result.steps] == ["clone", "build", "push"]
    assert all(s.result is StepResult.OK and s.exit_code == 0 for s in result.steps)
    assert all(s.finished_at >= s.started_at and s.duration_s >= 0 for s in result.steps)
    assert result.failure is None
    assert registry.client is not None
    assert result.digest == registry.client.digest("team/app", "1")
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert result.commit == head.stdout.strip()
    # the RUN's own output reached the sink, live, under its step
    assert "hello from the repository" not in log.text("build")  # (cat went to a file)
    assert "STEP 3/3: RUN cat /hello.txt > /copied" in log.text("build")
    # the build's folder (clone, auth file) is gone
    assert list((tmp_path / "work").iterdir()) == []


def test_a_failing_run_is_located_at_its_line(tmp_path: Path, registry: Registry) -> None:
    repo = repository(
        tmp_path / "repo",
        {
            "Dockerfile": dockerfile(registry, "RUN echo before", "RUN echo failing; exit 3"),
        },
    )
    result, log = build(spec(tmp_path, registry, repo))

    assert result.result is BuildOutcome.FAILED
    assert "failing" in log.text("build").splitlines()  # the RUN's output, streamed
    assert [s.name for s in result.steps] == ["clone", "build"]
    assert result.steps[-1].result is StepResult.FAILED
    assert result.steps[-1].exit_code != 0
    failure = result.failure
    assert failure is not None
    assert (failure.step, failure.line, failure.instruction) == (
        "build",
        3,
        "RUN echo failing; exit 3",
    )
    assert "exit status 3" in failure.reason
    assert "failing" in failure.log_tail
    assert result.digest is None
    assert not _buildah_containers(tmp_path / "cache")


def test_a_multi_line_instruction_is_located_at_its_first_line(
    tmp_path: Path, registry: Registry
) -> None:
    source = "\n".join(
        [
            "# syntax=docker/dockerfile:1",
            f"ARG BASE={registry.host}/base:1",
            "FROM $BASE AS first",
            "RUN echo one > /one",
            "",
            "# the final stage",
            "FROM $BASE",
            "COPY --from=first /one /one",
            "RUN echo starting \\",
            "    # a comment inside the continuation",
            "    && cat /missing \\",
            "    && echo never",
            "RUN echo after",
        ]
    )
    repo = repository(tmp_path / "repo", {"build/app.Dockerfile": source + "\n"})
    result, _ = build(spec(tmp_path, registry, repo, dockerfile="build/app.Dockerfile"))

    failure = result.failure
    assert failure is not None
    assert failure.line == 9
    assert failure.instruction == "RUN echo starting     && cat /missing     && echo never"
    assert "exit status 1" in failure.reason


def test_a_second_build_reuses_the_cached_layers(tmp_path: Path, registry: Registry) -> None:
    repo = repository(
        tmp_path / "repo",
        {"Dockerfile": dockerfile(registry, "RUN echo ran-the-step > /marker", "RUN sleep 1")},
    )
    first_started = time.monotonic()
    first, first_log = build(spec(tmp_path, registry, repo))
    first_s = time.monotonic() - first_started
    second_started = time.monotonic()
    second, second_log = build(spec(tmp_path, registry, repo, image=f"{registry.host}/team/app:2"))
    second_s = time.monotonic() - second_started

    assert first.result is second.result is BuildOutcome.OK
    assert "Using cache" not in first_log.text("build")
    assert second_log.text("build").count("--> Using cache") == 2
    assert second_s < first_s  # the sleep did not run again
    # the same layers and config: only the tag differs
    assert second.digest == first.digest


def test_a_step_that_outlives_its_timeout_is_killed_and_located(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(tmp_path / "repo", {"Dockerfile": dockerfile(registry, "RUN sleep 120")})
    started = time.monotonic()
    result, log = build(spec(tmp_path, registry, repo, timeouts=StepTimeouts(build=3)))
    assert "build: timed out after 3 s" in log.text("build")

    assert time.monotonic() - started < 30
    assert result.result is BuildOutcome.FAILED
    failure = result.failure
    assert failure is not None
    assert (failure.line, failure.instruction) == (2, "RUN sleep 120")
    assert "timed out after 3 s" in failure.reason
    assert not _sleepers()
    assert not _buildah_containers(tmp_path / "cache")


def test_stop_cancels_the_running_step(tmp_path: Path, registry: Registry) -> None:
    repo = repository(tmp_path / "repo", {"Dockerfile": dockerfile(registry, "RUN sleep 121")})
    build_spec = spec(tmp_path, registry, repo)

    async def scenario() -> tuple[BuildResult, float]:
        stop = asyncio.Event()

        def sink(step: str, line: str) -> None:
            if "RUN sleep 121" in line:
                asyncio.get_running_loop().call_later(0.5, stop.set)

        started = time.monotonic()
        result = await run_build(build_spec, sink, stop=stop)
        return result, time.monotonic() - started

    result, took = asyncio.run(scenario())

    assert took < 30
    assert result.result is BuildOutcome.CANCELLED
    assert result.steps[-1].name == "build"
    assert result.steps[-1].result is StepResult.CANCELLED
    assert result.failure is not None
    assert (result.failure.reason, result.failure.line) == ("cancelled", 2)
    assert not _sleepers()
    assert not _buildah_containers(tmp_path / "cache")


BUILD_USER = "gaia-build"  # scripts/test.sh makes it, with subordinate ids


def _build_user() -> int | None:
    try:
        uid = pwd.getpwnam(BUILD_USER).pw_uid
    except KeyError:
        return None
    ranges = Path("/etc/subuid").read_text() if Path("/etc/subuid").exists() else ""
    return uid if os.geteuid() == 0 and f"{BUILD_USER}:" in ranges else None


def test_a_root_platform_builds_rootless_as_the_build_user(registry: Registry) -> None:
    if _build_user() is None:
        missing_component(
            f"root and a user {BUILD_USER} with /etc/subuid ranges", "scripts/test.sh adds it"
        )
    # pytest's tmp_path is private to root: the build user needs a folder it can reach
    shared = Path(tempfile.mkdtemp(prefix="gaia-rootless-"))
    try:
        shared.chmod(0o755)
        repo = repository(
            shared / "repo",
            {"Dockerfile": dockerfile(registry, "RUN id -u; cat /proc/self/uid_map")},
        )
        # the build user clones it (git refuses a repository another user owns)
        subprocess.run(["chown", "-R", BUILD_USER, str(repo)], check=True)
        tools = BuildTools(run_as=BUILD_USER)
        image = f"{registry.host}/team/rootless"
        result, log = build(spec(shared, registry, repo, image=f"{image}:1"), tools)
        again, again_log = build(spec(shared, registry, repo, image=f"{image}:2"), tools)
    finally:
        shutil.rmtree(shared)

    assert result.result is BuildOutcome.OK, log.text()
    assert registry.client is not None
    assert result.digest == registry.client.digest("team/rootless", "1")
    # root in the build is the build user outside: the first line of the RUN's uid map
    mapping = [line.split() for line in log.text("build").splitlines() if line.startswith(" ")]
    assert ["0", str(_build_user()), "1"] in mapping
    assert again.result is BuildOutcome.OK
    assert "--> Using cache" in again_log.text("build")
    assert again.digest == result.digest, (log.text("build"), again_log.text("build"))


# ---------------------------------------------------------------------------- clone and push


def test_a_missing_branch_fails_the_clone_with_gits_reason(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(tmp_path / "repo", {"Dockerfile": dockerfile(registry)})
    result, _ = build(spec(tmp_path, registry, repo, branch="release-9"))

    assert result.result is BuildOutcome.FAILED
    assert [s.name for s in result.steps] == ["clone"]
    assert result.failure is not None
    assert result.failure.step == "clone"
    assert "release-9" in result.failure.reason
    assert result.failure.line is None


def test_a_wrong_registry_password_fails_the_push_with_its_reason(
    tmp_path: Path, registry: Registry
) -> None:
    # FROM scratch pulls nothing, so the wrong login is first used by the push
    repo = repository(
        tmp_path / "repo", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "content\n"}
    )
    wrong = RegistryCredentials(USER, "not-the-password-77")
    result, log = build(spec(tmp_path, registry, repo, registry_credentials=wrong))

    assert result.result is BuildOutcome.FAILED
    assert [s.name for s in result.steps] == ["clone", "build", "push"]
    assert result.failure is not None
    assert result.failure.step == "push"
    assert "unauthorized" in result.failure.reason.lower()
    assert "not-the-password-77" not in log.text()


def test_a_symlinked_dockerfile_cannot_leave_the_repository(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(tmp_path / "repo", {"README": "x\n"})
    (repo / "Dockerfile").symlink_to("/etc/passwd")
    subprocess.run(["git", "-C", str(repo), "add", "Dockerfile"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "l"],
        check=True,
    )
    result, _ = build(spec(tmp_path, registry, repo))

    assert result.failure is not None
    assert (result.failure.step, result.failure.reason) == (
        "build",
        "no Dockerfile at Dockerfile on branch main",
    )


# ---------------------------------------------------------------------------- secrets


def _forms(secret: str) -> list[str]:
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"{USER}:{secret}".encode()).decode(),
        base64.b64encode(f"git:{secret}".encode()).decode(),
    ]


def test_the_registry_password_never_reaches_a_log_line(tmp_path: Path, registry: Registry) -> None:
    # a Dockerfile that prints the secret it was given: the line is redacted, the build goes on
    repo = repository(
        tmp_path / "repo",
        {"Dockerfile": dockerfile(registry, "ARG LEAK", 'RUN echo "leaking $LEAK"')},
    )
    result, log = build(spec(tmp_path, registry, repo, build_args={"LEAK": PASSWORD}))

    assert result.result is BuildOutcome.OK
    text = log.text()
    assert "leaking [REDACTED]" in text
    assert not [form for form in _forms(PASSWORD) if form in text]
    assert "--build-arg LEAK" in text  # the name is shown, never the value
    assert not [form for form in _forms(PASSWORD) if form in repr(result)]


def test_the_git_token_never_reaches_a_log_line(tmp_path: Path, registry: Registry) -> None:
    url = f"https://127.0.0.1:{free_port()}/team/app.git"
    result, log = build(
        spec(
            tmp_path,
            registry,
            tmp_path,
            git_url=url,
            git_credentials=GitCredentials("git", GIT_TOKEN),
            build_args={"TOKEN": GIT_TOKEN},
        )
    )

    assert result.failure is not None
    assert result.failure.step == "clone"
    assert "127.0.0.1" in result.failure.reason  # git's own reason: nothing listens there
    text = log.text()
    assert url in text  # the URL is shown, with no credentials in it
    assert not [form for form in _forms(GIT_TOKEN) if form in text]
    assert not [form for form in _forms(GIT_TOKEN) if form in repr(result)]


def test_a_private_repository_is_cloned_over_https_with_the_token_kept_out_of_the_logs(
    tmp_path: Path, registry: Registry
) -> None:
    repository(
        tmp_path / "git" / "app.git",
        {"Dockerfile": dockerfile(registry, "COPY app.txt /app.txt"), "app.txt": "private\n"},
    )
    server = GitHttpsServer(tmp_path / "git", {"git": GIT_TOKEN}, tmp_path / "server").start()
    try:
        url = f"{server.url}/app.git"
        tools = BuildTools(git_ca_file=server.ca_file)
        with_token = spec(
            tmp_path,
            registry,
            tmp_path,
            git_url=url,
            git_credentials=GitCredentials("git", GIT_TOKEN),
        )
        result, log = build(with_token, tools)
        wrong = GitCredentials("git", "not-the-token-1234")
        refused, refused_log = build(
            spec(tmp_path, registry, tmp_path, git_url=url, git_credentials=wrong), tools
        )
        anonymous, _ = build(spec(tmp_path, registry, tmp_path, git_url=url), tools)
    finally:
        server.stop()

    assert result.result is BuildOutcome.OK, log.text()
    assert server.authorized >= 2  # git asked the askpass script, and the server let it in
    text = log.text()
    assert not [form for form in _forms(GIT_TOKEN) if form in text]
    assert refused.failure is not None
    assert refused.failure.step == "clone"
    assert "Authentication failed" in refused.failure.reason
    assert "not-the-token-1234" not in refused_log.text()
    assert anonymous.failure is not None
    assert anonymous.failure.step == "clone"


def test_a_clone_is_pinned_to_the_addresses_the_egress_check_allowed(
    tmp_path: Path, registry: Registry
) -> None:
    """``pinned_addresses`` is where git connects, whatever the name resolves to then: a name
    that does not resolve at all clones through the pin, and a pin to an address where nothing
    listens fails, though the name is the same (DNS rebinding cannot move the clone)."""
    repository(tmp_path / "git" / "app.git", {"Dockerfile": dockerfile(registry, "RUN true")})
    server = GitHttpsServer(
        tmp_path / "git", {"git": GIT_TOKEN}, tmp_path / "server", names=("git.gaia.invalid",)
    ).start()
    try:
        port = server.url.rsplit(":", 1)[1]
        url = f"https://git.gaia.invalid:{port}/app.git"
        tools = BuildTools(git_ca_file=server.ca_file)
        token = GitCredentials("git", GIT_TOKEN)

        def clone(*pinned: str) -> tuple[BuildResult, Log]:
            return build(
                spec(
                    tmp_path,
                    registry,
                    tmp_path,
                    git_url=url,
                    git_credentials=token,
                    pinned_addresses=pinned,
                ),
                tools,
            )

        pinned, log = clone("127.0.0.1")
        elsewhere, _ = clone("127.0.0.2")
        unpinned, _ = clone()
    finally:
        server.stop()
    assert pinned.result is BuildOutcome.OK, log.text()
    assert elsewhere.failure is not None and elsewhere.failure.step == "clone"
    assert unpinned.failure is not None and unpinned.failure.step == "clone"
    assert "resolve" in unpinned.failure.reason.lower()


def test_a_webhooks_commit_is_built_though_the_branch_moved_on(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(tmp_path / "repo", {"Dockerfile": dockerfile(registry, "RUN true")})
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    first = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (repo / "Dockerfile").write_text(dockerfile(registry, "RUN exit 9"))  # a broken later push
    subprocess.run([*git, "commit", "-q", "-am", "second"], check=True)

    result, log = build(spec(tmp_path, registry, repo, commit=first))
    assert result.result is BuildOutcome.OK, log.text()
    assert result.commit == first
    assert [s.name for s in result.steps] == ["clone", "checkout", "build", "push"]
    gone = "0" * 39 + "1"
    missing, missing_log = build(spec(tmp_path, registry, repo, commit=gone))
    assert missing.failure is not None and missing.failure.step == "checkout", missing_log.text()


# ---------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dockerfile": "../outside/Dockerfile"}, "inside the repository"),
        ({"dockerfile": "/etc/Dockerfile"}, "relative to the repository root"),
        ({"context": "app/../../.."}, "inside the repository"),
        ({"build_args": {"BAD-NAME": "x"}}, "build arg name"),
        ({"build_args": {"1ST": "x"}}, "build arg name"),
        ({"build_args": {f"A{i}": "x" for i in range(65)}}, "at most 64 build args"),
        ({"build_args": {"BIG": "x" * 5000}}, "at most 4096 characters"),
        ({"branch": "--upload-pack=evil"}, "not a valid git branch"),
        ({"branch": "a..b"}, "not a valid git branch"),
        ({"git_url": "https://user:pw@example.com/r.git"}, "must not carry credentials"),
        ({"git_url": "ssh://example.com/r.git"}, "use an https:// URL"),
        ({"git_url": "relative/path"}, "use an https:// URL"),
        ({"image": "app:1"}, "registry/repository[:tag]"),
        ({"image": "registry.example.com/App:1"}, "registry/repository[:tag]"),
        ({"git_credentials": GitCredentials("u", "t")}, "only sent to an https:// git URL"),
        ({"commit": "abc123"}, "full commit id"),
        ({"commit": "A" * 40}, "full commit id"),
        ({"pinned_addresses": ("10.0.0.1",)}, "https:// git URL only"),
        ({"git_url": "https://example.com/r.git", "pinned_addresses": ("x",)}, "is not an IP"),
    ],
)
def test_a_bad_spec_is_refused_with_a_clear_error(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "git_url": "/srv/repo",
        "branch": "main",
        "image": "registry.example.com/team/app:1",
        "cache_dir": tmp_path / "cache",
        "work_dir": tmp_path / "work",
    }
    with pytest.raises(BuildSpecError, match=message.replace("[", r"\[")):
        BuildSpec(**{**fields, **change})


# ---------------------------------------------------------------------------- helpers


def _buildah_containers(cache: Path) -> list[str]:
    listed = subprocess.run(
        [
            "buildah",
            "--root",
            str(cache / "storage"),
            "--runroot",
            str(cache / "run"),
            "--storage-driver",
            "overlay",
            "containers",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def _sleepers() -> list[str]:
    found = subprocess.run(["pgrep", "-f", "sleep 12[01]"], capture_output=True, text=True)
    return found.stdout.split()


# ---------------------------------------------------------------------------- concurrency


def test_builds_sharing_a_cache_run_one_after_the_other(tmp_path: Path, registry: Registry) -> None:
    repo = repository(
        tmp_path / "repo", {"Dockerfile": dockerfile(registry, "RUN sleep 1; echo slow")}
    )

    async def scenario() -> list[BuildResult]:
        specs = [
            spec(tmp_path, registry, repo, image=f"{registry.host}/team/para:{n}") for n in (1, 2)
        ]
        return list(await asyncio.gather(*(run_build(s, Log()) for s in specs)))

    first, second = sorted(asyncio.run(scenario()), key=lambda r: r.steps[0].started_at)

    assert first.result is second.result is BuildOutcome.OK
    assert second.steps[0].started_at >= first.steps[-1].finished_at


def test_cancelling_the_task_kills_the_step_and_removes_the_build_folder(
    tmp_path: Path, registry: Registry
) -> None:
    repo = repository(tmp_path / "repo", {"Dockerfile": dockerfile(registry, "RUN sleep 120")})
    build_spec = spec(tmp_path, registry, repo)

    async def scenario() -> None:
        running = asyncio.Event()

        def sink(step: str, line: str) -> None:
            if "RUN sleep 120" in line:
                running.set()

        task = asyncio.create_task(run_build(build_spec, sink))
        await asyncio.wait_for(running.wait(), 30)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert not _sleepers()
    assert list((tmp_path / "work").iterdir()) == []
    assert not _buildah_containers(tmp_path / "cache")


def _subids(tmp_path: Path, text: str) -> dict[str, Path]:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(text)
    subgid.write_text(text)
    return {"subuid_file": subuid, "subgid_file": subgid}


def test_a_platform_that_is_not_root_builds_as_itself(tmp_path: Path) -> None:
    assert resolve_build_user("", build_dir=tmp_path, euid=1000) == (None, None)
    assert resolve_build_user("nobody", build_dir=tmp_path, euid=1000) == (None, None)


def test_a_root_platform_picks_its_build_user_and_checks_what_rootless_needs() -> None:
    # nobody exists on every Debian host; its ids and the folders decide. pytest's tmp_path
    # is private to root, so the folders are in /tmp
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="gaia-reach-"))
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir(mode=0o755)
        ok = _subids(base, "someone:100000:65536\nnobody:200000:65536\n")
        found = resolve_build_user("nobody", build_dir=shared / "builds", euid=0, **ok)
        assert found == ("nobody", None)
        # its uid instead of its name is as good (newuidmap reads both)
        by_uid = _subids(base, f"{nobody.pw_uid}:200000:65536\n")
        assert resolve_build_user("nobody", build_dir=shared, euid=0, **by_uid)[0] == "nobody"
        # no range: refused, naming the file
        none = _subids(base, "someone:100000:65536\n")
        user, reason = resolve_build_user("nobody", build_dir=shared, euid=0, **none)
        assert user is None and reason is not None and "no range in" in reason
        # a folder on the way it may not enter: refused, naming it and the setting
        private = base / "private"
        private.mkdir(mode=0o700)
        ok = _subids(base, "nobody:200000:65536\n")
        user, reason = resolve_build_user("nobody", build_dir=private / "b", euid=0, **ok)
        assert user is None and reason is not None
        assert str(private) in reason and "GAIA_BUILD_DIR" in reason
    finally:
        shutil.rmtree(base)


def test_a_root_platform_without_a_build_user_refuses_unless_root_builds_are_accepted(
    tmp_path: Path,
) -> None:
    user, reason = resolve_build_user("gaia-no-such-user", build_dir=tmp_path, euid=0)
    assert user is None and reason == "GAIA_BUILD_USER: no user 'gaia-no-such-user' on this host"
    if _build_user() is None:  # no gaia-build here: the default user is missing too
        user, reason = resolve_build_user("", build_dir=tmp_path, euid=0)
        assert user is None and reason is not None and "GAIA_BUILD_AS_ROOT" in reason
        assert resolve_build_user("", build_dir=tmp_path, euid=0, as_root_allowed=True) == (
            None,
            None,
        )
    else:  # scripts/test.sh added it: the default finds it
        shared = Path(tempfile.mkdtemp(prefix="gaia-reach-"))
        try:
            shared.chmod(0o755)
            assert resolve_build_user("", build_dir=shared, euid=0) == (BUILD_USER, None)
        finally:
            shutil.rmtree(shared)
