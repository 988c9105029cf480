"""The build executor: a ``BuildSpec`` in, a ``BuildResult`` out, every log line to a sink.

::

    run_build(spec, sink)
      lock spec.cache_dir            one build at a time per cache (a business's layer cache)
      clone   git clone --depth=1 --single-branch --branch=B -- URL src
      checkout  git fetch --depth=1 origin C; git checkout C   (a webhook's commit C, when the
              branch head is another one by now)
      build   buildah build --layers --isolation chroot -f D -t IMAGE CONTEXT
              (failed: the Dockerfile instruction and line, dockerfile.locate_failure)
      push    buildah push --digestfile F IMAGE docker://IMAGE
      remove the build's folder (clone, auth file, temporary files)

Each step is a process (``steps.run_step``): its lines reach the sink live and redacted, it has
a timeout, and ``stop`` (or cancelling the task) kills its process group. The first step that
does not succeed ends the build; ``BuildResult.failure`` says where, shown first on a record.

Secrets never reach an argv, a URL or a log line. The git token is answered to git's own
credential prompt by a ``GIT_ASKPASS`` script that reads it from the environment (git asks only
for the host it clones from, after a 401, so a redirect cannot carry it elsewhere). The registry
password goes into an auth file (``--authfile``) in the build's private folder, which is also the
only auth file buildah reads: a build never sees the host's or another business's logins. Every
line is passed through ``steps.Redactor`` (the spec's secrets in their encodings, then
``gaia.domain.redaction``).

What buildah needed here (Debian 12's buildah 1.28.2, kernel 6.x, ext4), found by experiment:

- ``--isolation chroot``: no OCI runtime and no network namespace set-up; RUN steps run
  chrooted with the host's network. Run by root it is *not* a sandbox: a RUN runs as root on
  the build host. Hence ``BuildTools.run_as``: a platform running as root hands every step to
  an unprivileged user with /etc/subuid and /etc/subgid ranges (``setpriv``), and buildah then
  builds rootless by itself, in a user namespace where the build's root is that user
  (``uid_map``: ``0 <uid> 1``, then the subordinate range). That works here with the ``overlay``
  driver (native overlay in a user namespace, kernel >= 5.13) and with ``vfs``; it needs
  ``newuidmap``/``newgidmap`` (Debian's ``uidmap``, a dependency of buildah), nothing else.
  The clone is that user's too: git refuses a local repository another user owns.
- Storage: ``--root``/``--runroot`` under ``cache_dir``, so builds share no images or layers
  with the host's containers/storage or with other caches; ``overlay`` works as root and
  rootless on this kernel (``vfs`` is the fallback where overlay mounts are refused: slower,
  it copies every layer). A failed step leaves its working container mounted unless
  ``--force-rm`` is given, so it is; after a killed build, ``buildah rm --all`` removes what the
  kill left (safe under the lock). The blob info cache (which compressed blob a registry holds
  for a layer) is under ``XDG_DATA_HOME`` rootless, which points into the cache; as root
  buildah 1.28 keeps it in /var/lib/containers/cache whatever the environment (digests only).
- ``--layers`` keeps each step's layer: a second build of an unchanged step prints
  ``--> Using cache <id>`` and does not run it, and pushes the same digest. buildah's default
  ``--pull=true`` pulls a base image again when the registry's is newer (tried: a base tag
  pushed anew is pulled at the next build), so the cache does not pin a base tag that moved.
- A base image whose config has no ``history`` makes buildah 1.28 fail at the first RUN commit
  ("history lists N non-empty layers, but we have N+1 layers on disk"); real images have it.
- ``buildah push --digestfile`` writes the manifest digest the registry serves for the tag.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import enum
import fcntl
import json
import os
import pwd
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gaia.clock import Clock, RealClock
from gaia.delivery.dockerfile import BuildFailure, locate_failure, parse_dockerfile
from gaia.delivery.spec import BuildSpec
from gaia.delivery.steps import BuildLogSink, Redactor, StepRecord, StepResult, StepRun, run_step

MAX_DOCKERFILE_BYTES = 1024 * 1024
LOCK_POLL_S = 0.2
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$GAIA_GIT_USERNAME" ;;
  *) printf '%s\\n' "$GAIA_GIT_TOKEN" ;;
esac
"""
_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "TZ")


class BuildOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the steps that ran, in order (none after the first that failed), and
    either the pushed image's digest or the failure, located. ``commit`` is the one cloned."""

    result: BuildOutcome
    steps: tuple[StepRecord, ...]
    image: str
    digest: str | None = None
    commit: str | None = None
    failure: BuildFailure | None = None


@dataclass(frozen=True)
class BuildTools:
    """The programs a build runs, buildah's storage driver (see the module docstring), the
    CA certificates git trusts for https:// clones when not the system's (an internal GitLab),
    and ``run_as``: an unprivileged user (with /etc/subuid and /etc/subgid ranges) that a
    platform running as root hands every step to, so that buildah builds rootless."""

    git: str = "git"
    buildah: str = "buildah"
    storage_driver: str = "overlay"
    git_ca_file: Path | None = None
    run_as: str | None = None

    def user(self) -> tuple[int, int] | None:
        if self.run_as is None:
            return None
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise ValueError(f"run_as: no user {self.run_as!r} on this host") from None
        return entry.pw_uid, entry.pw_gid


DEFAULT_BUILD_USER = "gaia-build"


def resolve_build_user(
    configured: str,
    *,
    build_dir: Path,
    as_root_allowed: bool = False,
    euid: int | None = None,
    subuid_file: Path = Path("/etc/subuid"),
    subgid_file: Path = Path("/etc/subgid"),
) -> tuple[str | None, str | None]:
    """Whom a platform's builds run as: ``(user, None)``, or ``(None, None)`` for the
    platform's own user, or ``(None, reason)`` when builds must not run at all.

    A platform that is not root builds as itself (buildah is rootless by itself). A root one
    hands builds to ``configured`` (``GAIA_BUILD_USER``), else to ``gaia-build`` when that
    user exists; the user needs subordinate ids (newuidmap reads them) and must be able to
    reach ``build_dir``. With no such user a root platform refuses to build unless
    ``as_root_allowed`` (``GAIA_BUILD_AS_ROOT``): a RUN step would run as root on the host."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None, None
    name = configured or DEFAULT_BUILD_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if configured:
            return None, f"GAIA_BUILD_USER: no user {configured!r} on this host"
        if as_root_allowed:
            return None, None
        return None, (
            "this platform runs as root and has no build user, so a RUN step would run as root "
            f"on the host: add the user {DEFAULT_BUILD_USER} with subordinate ids "
            "(docs/pipelines.md, 'Build user'), name another with GAIA_BUILD_USER, or accept "
            "root builds with GAIA_BUILD_AS_ROOT=true"
        )
    for file in (subuid_file, subgid_file):
        if not _has_subordinate_ids(file, name, entry.pw_uid):
            return None, (
                f"the build user {name} has no range in {file} (usermod --add-subuids and "
                "--add-subgids): rootless buildah needs one"
            )
    blocked = _unreachable(build_dir, entry.pw_uid, entry.pw_gid)
    if blocked is not None:
        return None, (
            f"the build user {name} cannot reach {blocked} on the way to the build folder "
            f"{build_dir}: set GAIA_BUILD_DIR to a folder it can reach (/var/lib/gaia-build)"
        )
    return name, None


def _has_subordinate_ids(file: Path, name: str, uid: int) -> bool:
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        owner, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if owner in (name, str(uid)) and start.isdigit() and count.isdigit() and int(count):
            return True
    return False


def _unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing folder above (or at) ``path`` that ``uid``/``gid`` may not enter
    (folders not made yet will be made by the runner, traversable); None when all may be."""
    for folder in reversed([path, *path.parents]):
        try:
            st = folder.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == uid:
            allowed = bool(st.st_mode & 0o100)
        elif st.st_gid == gid:
            allowed = bool(st.st_mode & 0o010)
        else:
            allowed = bool(st.st_mode & 0o001)
        if not allowed:
            return folder
    return None


@dataclass
class _Build:
    spec: BuildSpec
    sink: BuildLogSink
    stop: asyncio.Event
    clock: Clock
    tools: BuildTools
    folder: Path
    redactor: Redactor
    user: tuple[int, int] | None = None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def source(self) -> Path:
        return self.folder / "src"

    @property
    def auth_file(self) -> Path:
        return self.folder / "auth.json"

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: nothing of the server's own (its secrets, its HOME)."""
        env = {k: os.environ[k] for k in _ENV_KEPT if k in os.environ}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(HOME=str(self.folder / "home"), TMPDIR=str(self.folder / "tmp"))
        # rootless buildah keeps its blob info cache (which compressed blob a registry already
        # has for a layer) under XDG_DATA_HOME: in the cache, or every push would compress the
        # base layers anew and an unchanged build would get a new digest
        env["XDG_DATA_HOME"] = str(self.spec.cache_dir / "data")
        env.update(extra)
        return env

    def command(self, *argv: str) -> list[str]:
        """``argv`` as the build's user: setpriv drops to it (and its groups to none); buildah
        then enters a user namespace of the user's subordinate ids by itself."""
        if self.user is None:
            return list(argv)
        uid, gid = self.user
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]

    def own(self, *paths: Path) -> None:
        if self.user is not None:
            for path in paths:
                os.chown(path, *self.user)

    def buildah(self, *args: str) -> list[str]:
        storage = self.spec.cache_dir
        return [
            self.tools.buildah,
            "--root",
            str(storage / "storage"),
            "--runroot",
            str(storage / "run"),
            "--storage-driver",
            self.tools.storage_driver,
            *args,
        ]

    async def step(
        self, name: str, argv: Sequence[str], shown: str, timeout_s: float, **env: str
    ) -> StepRun:
        self.sink(name, f"$ {shown}")
        run = await run_step(
            name=name,
            argv=self.command(*argv),
            env=self.env(**env),
            cwd=self.folder,
            timeout_s=timeout_s,
            sink=self.sink,
            redactor=self.redactor,
            stop=self.stop,
            clock=self.clock,
        )
        self.steps.append(run.record)
        return run

    def refuse(self, name: str, reason: str) -> BuildFailure:
        """A step that fails before its process starts (a missing Dockerfile)."""
        now = self.clock.now()
        self.sink(name, reason)
        self.steps.append(StepRecord(name, StepResult.FAILED, now, now, 0.0, None, reason))
        return BuildFailure(step=name, reason=reason, log_tail=(reason,))


async def run_build(
    spec: BuildSpec,
    sink: BuildLogSink,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    tools: BuildTools | None = None,
) -> BuildResult:
    """Clone, build and push ``spec``; set ``stop`` to cancel (the result says ``cancelled``).
    Cancelling the task instead kills the running step and re-raises."""
    tools = tools or BuildTools()
    user = tools.user()
    spec.cache_dir.mkdir(parents=True, exist_ok=True)
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    async with _cache_lock(spec.cache_dir):
        folder = Path(tempfile.mkdtemp(prefix="build-", dir=spec.work_dir))
        try:
            for sub in ("home", "tmp"):
                (folder / sub).mkdir()
            build = _Build(
                spec=spec,
                sink=sink,
                stop=stop or asyncio.Event(),
                clock=clock or RealClock(),
                tools=tools,
                folder=folder,
                redactor=Redactor(spec.secrets(), usernames=_usernames(spec)),
                user=user,
            )
            # a cache belongs to one user: buildah's rootless storage is owned by its ids
            (spec.cache_dir / "data").mkdir(exist_ok=True)
            build.own(spec.cache_dir, spec.cache_dir / "data", folder, folder / "home")
            build.own(folder / "tmp")
            return await _run(build)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


async def _run(build: _Build) -> BuildResult:
    spec = build.spec

    def ended(failure: BuildFailure, *, commit: str | None = None) -> BuildResult:
        cancelled = build.steps and build.steps[-1].result is StepResult.CANCELLED
        return BuildResult(
            result=BuildOutcome.CANCELLED if cancelled else BuildOutcome.FAILED,
            steps=tuple(build.steps),
            image=spec.image,
            commit=commit,
            failure=failure,
        )

    clone = await _clone(build)
    if clone.record.result is not StepResult.OK:
        return ended(_short_failure("clone", clone))
    commit = await _head(build)
    if spec.commit is not None and commit != spec.commit:
        # a webhook names the pushed commit; the branch may have moved on since
        checkout = await _checkout(build, spec.commit)
        if checkout.record.result is not StepResult.OK:
            return ended(_short_failure("checkout", checkout), commit=commit)
        commit = await _head(build)
        if commit != spec.commit:
            return ended(
                build.refuse("checkout", f"commit {spec.commit} could not be checked out"),
                commit=commit,
            )

    dockerfile, context = (
        _inside(build.source, spec.dockerfile),
        _inside(build.source, spec.context),
    )
    if dockerfile is None or not dockerfile.is_file():
        return ended(
            build.refuse("build", f"no Dockerfile at {spec.dockerfile} on branch {spec.branch}"),
            commit=commit,
        )
    if context is None or not context.is_dir():
        return ended(
            build.refuse("build", f"no context folder {spec.context} on branch {spec.branch}"),
            commit=commit,
        )
    if dockerfile.stat().st_size > MAX_DOCKERFILE_BYTES:
        return ended(build.refuse("build", "the Dockerfile is larger than 1 MiB"), commit=commit)
    _write_auth_file(build)

    try:
        built = await _build(build, dockerfile=dockerfile, context=context)
    except asyncio.CancelledError:
        await _remove_containers(build)
        raise
    if built.record.result is not StepResult.OK:
        # a killed build is located too (where was it stuck?), but buildah's last words are
        # about the signal, not the cause: the reason is the step's own
        killed = built.record.result is StepResult.CANCELLED or _timed_out(built)
        if killed:
            await _remove_containers(build)
        instructions = parse_dockerfile(dockerfile.read_text(errors="replace"))
        failure = locate_failure(instructions, built.lines)
        if killed:
            failure = dataclasses.replace(failure, reason=built.record.reason)
        return ended(failure, commit=commit)

    digest_file = build.folder / "digest"
    pushed = await build.step(
        "push",
        build.buildah(
            "push",
            f"--authfile={build.auth_file}",
            f"--digestfile={digest_file}",
            *_tls(build),
            spec.image,
            f"docker://{spec.image}",
        ),
        f"buildah push {spec.image}",
        spec.timeouts.push,
    )
    if pushed.record.result is not StepResult.OK:
        return ended(_short_failure("push", pushed), commit=commit)
    digest = digest_file.read_text().strip() if digest_file.is_file() else None
    build.sink("push", f"pushed {spec.image}@{digest}")
    return BuildResult(
        result=BuildOutcome.OK,
        steps=tuple(build.steps),
        image=spec.image,
        digest=digest,
        commit=commit,
    )


def _git_env(build: _Build) -> dict[str, str]:
    spec = build.spec
    env: dict[str, str] = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    if build.tools.git_ca_file is not None:
        env["GIT_SSL_CAINFO"] = str(build.tools.git_ca_file)
    if spec.git_credentials is not None:
        askpass = build.folder / "askpass"
        if not askpass.exists():
            askpass.write_text(_ASKPASS)
            askpass.chmod(0o700)
            build.own(askpass)
        env.update(
            GIT_ASKPASS=str(askpass),
            GAIA_GIT_USERNAME=spec.git_credentials.username,
            GAIA_GIT_TOKEN=spec.git_credentials.token,
        )
    return env


def _git_options(spec: BuildSpec) -> list[str]:
    """``-c`` options of every git command that talks to the remote: no credential helper
    of the host's; with pinned addresses, connect only to them and follow no redirect (a
    redirect to another host would be resolved afresh, around the egress check)."""
    options = ["-c", "credential.helper="]
    resolve = spec.curl_resolve
    if resolve is not None:
        options += ["-c", f"http.curloptResolve={resolve}", "-c", "http.followRedirects=false"]
    return options


async def _clone(build: _Build) -> StepRun:
    spec = build.spec
    env = _git_env(build)
    if build.user is not None and spec.clone_url.startswith("file://"):
        # a local repository (an operator's opt-in) is another user's: git's safe.directory,
        # read from the build's own HOME (a local clone's upload-pack sees no -c options)
        local = Path(urllib.parse.unquote(urllib.parse.urlsplit(spec.clone_url).path))
        lines = [f"\tdirectory = {_git_quoted(str(p))}\n" for p in (local, local / ".git")]
        config = build.folder / "home" / ".gitconfig"
        config.write_text("[safe]\n" + "".join(lines))
        build.own(config)
    argv = [
        build.tools.git,
        *_git_options(spec),
        "clone",
        "--depth=1",
        "--single-branch",
        "--no-tags",
        f"--branch={spec.branch}",
        "--",
        spec.clone_url,
        str(build.source),
    ]
    shown = f"git clone --depth=1 --branch={spec.branch} {spec.clone_url}"
    return await build.step("clone", argv, shown, spec.timeouts.clone, **env)


def _git_quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def _checkout(build: _Build, commit: str) -> StepRun:
    """Fetch ``commit`` alone (git's protocol v2 serves any reachable commit by id) and
    check it out, in place of the branch head the clone brought."""
    argv = [
        build.tools.git,
        *_git_options(build.spec),
        "-c",
        "advice.detachedHead=false",
        "-C",
        str(build.source),
        "fetch",
        "--depth=1",
        "--no-tags",
        "origin",
        commit,
    ]
    fetched = await build.step(
        "checkout", argv, f"git fetch --depth=1 origin {commit}", build.spec.timeouts.clone,
        **_git_env(build),
    )  # fmt: skip
    if fetched.record.result is StepResult.OK:
        # local and quick: part of the same step
        process = await asyncio.create_subprocess_exec(
            *build.command(build.tools.git, "-C", str(build.source), "checkout", "--quiet",
                           "--detach", commit),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=build.env(),
        )  # fmt: skip
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
    return fetched


async def _head(build: _Build) -> str | None:
    process = await asyncio.create_subprocess_exec(
        *build.command(build.tools.git, "-C", str(build.source), "rev-parse", "HEAD"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=build.env(),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    commit = out.decode().strip()
    if process.returncode == 0 and commit:
        build.sink("clone", f"at commit {commit}")
        return commit
    return None


async def _build(build: _Build, *, dockerfile: Path, context: Path) -> StepRun:
    spec = build.spec
    args: list[str] = []
    for name, value in spec.build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    argv = build.buildah(
        "build",
        "--layers",
        "--force-rm",
        "--isolation",
        "chroot",
        f"--authfile={build.auth_file}",
        *_tls(build),
        "-f",
        str(dockerfile),
        "-t",
        spec.image,
        *args,
        str(context),
    )
    # the values of build args are not shown: they are the user's, and may be sensitive
    names = "".join(f" --build-arg {name}" for name in spec.build_args)
    shown = f"buildah build --layers -f {spec.dockerfile} -t {spec.image}{names} {spec.context}"
    return await build.step("build", argv, shown, spec.timeouts.build, BUILDAH_ISOLATION="chroot")


async def _remove_containers(build: _Build) -> None:
    """What a killed buildah left: its working containers and their mounts. Only builds under
    this cache's lock use this storage, so every container in it is the killed build's."""
    process = await asyncio.create_subprocess_exec(
        *build.command(*build.buildah("rm", "--all")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=build.env(),
    )
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()


def _write_auth_file(build: _Build) -> None:
    """The only logins buildah may use: the spec's registry credentials, or none."""
    auths: dict[str, dict[str, str]] = {}
    credentials = build.spec.registry_credentials
    if credentials is not None:
        pair = f"{credentials.username}:{credentials.password}".encode()
        auths[build.spec.registry] = {"auth": base64.b64encode(pair).decode()}
    descriptor = os.open(build.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"auths": auths}, out)
    build.own(build.auth_file)


def _tls(build: _Build) -> list[str]:
    """buildah's TLS flags for the target registry: none (the system's CAs), the private CA
    in the build's own certificate folder (``--cert-dir``: containers/image trusts its
    ``*.crt`` files besides the system's), or no verification for a lab registry."""
    spec = build.spec
    if spec.registry_insecure:
        return ["--tls-verify=false"]
    if spec.registry_ca_pem is None:
        return []
    folder = build.folder / "certs"
    if not folder.exists():
        folder.mkdir()
        (folder / "registry-ca.crt").write_text(spec.registry_ca_pem)
        build.own(folder, folder / "registry-ca.crt")
    return [f"--cert-dir={folder}"]


def _inside(root: Path, relative: str) -> Path | None:
    """``relative`` under ``root``, or None if it resolves outside (a symlink in the
    repository pointing at /etc/shadow must not become the Dockerfile)."""
    resolved = (root / relative).resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else None


def _timed_out(run: StepRun) -> bool:
    return run.record.reason.startswith("timed out")


def _short_failure(step: str, run: StepRun) -> BuildFailure:
    """Clone and push failures: git's first ``fatal:`` line (the cause; later ones are its
    consequences, "Could not read from remote repository") or buildah's last ``Error:`` line,
    else the step's own reason."""
    reason = run.record.reason
    if run.record.result is StepResult.FAILED and not _timed_out(run):
        fatal = [line for line in run.lines if line.startswith("fatal: ")]
        errors = [line for line in run.lines if line.startswith(("Error: ", "error: "))]
        if fatal:
            reason = fatal[0].removeprefix("fatal: ")
        elif errors:
            reason = errors[-1].split(": ", 1)[1]
    return BuildFailure(step=step, reason=reason[:500], log_tail=run.lines[-20:])


def _usernames(spec: BuildSpec) -> list[str]:
    names = []
    if spec.git_credentials is not None:
        names.append(spec.git_credentials.username)
    if spec.registry_credentials is not None:
        names.append(spec.registry_credentials.username)
    return names


@contextlib.asynccontextmanager
async def _cache_lock(cache_dir: Path) -> AsyncIterator[None]:
    """One build at a time per cache: buildah's storage copes with sharing, but cleaning up
    after a killed build (``buildah rm --all``) must not reach another build's containers.
    Polled, so a waiting build can be cancelled."""
    with open(cache_dir / "build.lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
