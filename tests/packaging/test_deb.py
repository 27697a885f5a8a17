"""The Debian package as a packager and a sysadmin meet it: built, installed, upgraded, purged.

Three builds of this tree run with `make deb`: two of the same version in directories of
different depths (they must ship the same bytes) and one with a bumped changelog version (the
upgrade). Both source copies carry a stale ``build/lib`` module and ``*.egg-info``, which must
not ship.

The package is installed with dpkg into a Debian 12 chroot made by debootstrap from Debian's
mirror and cached under ``.cache/deb/`` (a fresh copy per run), not on this machine: the test
needs no cleanup of the host, and the maintainer scripts meet a stock Debian. PID 1 here is not
systemd, so the chroot's ``deb-systemd-invoke`` is a stub (dpkg-divert) that records its calls,
and ``/run/systemd/system`` exists so the scripts believe systemd runs; the unit itself is
checked by the host's ``systemd-analyze verify``/``security`` against the chroot (``--root``).
The gateway from the package is started in the chroot as the service would start it, and
answers on loopback.

Last, the same chroot boots with systemd-nspawn (a real systemd as its PID 1, sharing the
host's network): there the package is installed again and the unit runs with all its
hardening, serves a PUT and a GET against a moto backend, is restarted by an upgrade, gives up
after its start limit on a configuration error, listens below port 1024 with the documented
drop-in, and is stopped by ``dpkg -r``.

Needs root, dpkg-dev, debhelper, dh-virtualenv, python3.11-venv, lintian, debootstrap,
systemd-analyze and systemd-nspawn (``.ci/run`` installs them), and network access to PyPI and
Debian's mirror. Outside CI a missing tool skips; in CI it fails.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig

from tests.support.servers import MotoServer, create_bucket

# Three package builds and a debootstrap share the first test's setup: more than the suite's 600 s
# on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("S3ORCH_DEB_CACHE", ROOT / ".cache" / "deb"))
MIRROR = os.environ.get("S3ORCH_DEB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# What the package depends on beyond minbase, and systemd for the unit files systemd-analyze
# resolves (sysinit.target, ...).
CHROOT_PACKAGES = ("python3.11", "adduser", "procps", "systemd")
TOOLS = (
    "dpkg-buildpackage",
    "dh_virtualenv",
    "lintian",
    "debootstrap",
    "systemd-analyze",
    "unshare",
    "chroot",
)
VENV = "opt/venvs/s3orch"
SITE = f"{VENV}/lib/python3.11/site-packages"
UPGRADE_VERSION = "0.1.0+upgrade1"
CALLS = "var/log/deb-systemd-invoke.calls"
SECURITY_MAX = 1.1  # `systemd-analyze security` exposure of the shipped unit (was 3.8)
SECRETS = {"APP1_SECRET_KEY": "app-secret-$not-expanded", "BACKEND1_SECRET_KEY": "backend-secret"}
STALE = "s3orch/_stale_planted_module.py"


def need(ok: bool, why: str) -> None:
    """Skip outside CI, fail in CI: a packaging test CI cannot run is a failure there."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (.ci/run installs what this test needs)")
    pytest.skip(why)


def run(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def host_env() -> dict[str, str]:
    """The environment for builds: this one without the test venv's Python settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


# --- building ------------------------------------------------------------------------------


@dataclass
class Build:
    deb: Path
    changes: Path
    source: Path
    seconds: float


def copy_source(dest: Path, version: str | None) -> Path:
    """This tree as git sees it (tracked and new files, nothing ignored), plus the leftovers of an
    earlier build that must not ship: a module deleted from the source but still in build/lib."""
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for name in filter(None, listing.split("\0")):
        src = ROOT / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    stale = dest / "build" / "lib" / STALE
    stale.parent.mkdir(parents=True)
    stale.write_text("raise SystemExit('a stale build/lib module shipped')\n")
    (dest / "s3orch.egg-info").mkdir()
    (dest / "s3orch.egg-info" / "SOURCES.txt").write_text(f"{STALE}\n")
    if version is not None:
        changelog = dest / "debian" / "changelog"
        entry = (
            f"s3orch ({version}) unstable; urgency=medium\n\n  * Test upgrade.\n\n"
            " -- s3orch maintainers <maintainers@users.noreply.b-seed-aebda681.example>"
            "  Wed, 25 Nov 2026 04:00:00 +0000\n\n"
        )
        changelog.write_text(entry + changelog.read_text())
    return dest


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    need(not missing, f"the .deb test needs {', '.join(missing)}")
    need(os.geteuid() == 0, "the .deb test needs root (dpkg and chroot)")
    need(Path("/usr/bin/python3.11").exists(), "the .deb test needs Debian's python3.11")
    need(
        shutil.which("git") is not None and (ROOT / ".git").exists(), "the .deb test copies the tree with git"
    )
    base = tmp_path_factory.mktemp("deb")
    # Same version in two directories of different depth: paths must not leak into the package.
    sources = {
        "a": copy_source(base / "a" / "s3orch", None),
        "b": copy_source(base / "b" / "deeper" / "s3orch", None),
        "upgrade": copy_source(base / "c" / "s3orch", UPGRADE_VERSION),
    }
    started = time.monotonic()
    procs = {}
    for name, src in sources.items():
        log = (src.parent / "build.log").open("w")
        procs[name] = (
            subprocess.Popen(["make", "deb"], cwd=src, env=host_env(), stdout=log, stderr=subprocess.STDOUT),
            log,
        )
    result = {}
    for name, (proc, log) in procs.items():
        rc = proc.wait(timeout=1800)
        log.close()
        text = (sources[name].parent / "build.log").read_text()
        assert rc == 0, f"make deb ({name}) failed:\n{text[-6000:]}"
        debs = sorted((sources[name] / "dist").glob("s3orch_*.deb"))
        changes = sorted((sources[name] / "dist").glob("s3orch_*.changes"))
        assert len(debs) == 1 and len(changes) == 1, f"make deb ({name}) left {debs} {changes}"
        result[name] = Build(debs[0], changes[0], sources[name], time.monotonic() - started)
    for name, build in result.items():
        leftovers = [
            p
            for p in ("build", "s3orch.egg-info", "debian/s3orch", "debian/wheelhouse")
            if (build.source / p).exists()
        ]
        assert leftovers == [], f"make deb ({name}) left {leftovers} in the tree"
    return result


def deb_members(deb: Path, part: str) -> dict[str, tuple[object, ...]]:
    """Every member of the .deb's data (or control) archive: type, mode, owner, mtime, size,
    link target and sha256 of the content."""
    flag = "--fsys-tarfile" if part == "data" else "--ctrl-tarfile"
    raw = subprocess.run(["dpkg-deb", flag, str(deb)], capture_output=True, check=True).stdout
    members: dict[str, tuple[object, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for info in tar:
            digest = ""
            if info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                digest = hashlib.sha256(f.read()).hexdigest()
            key = info.name.removeprefix("./")
            members[key] = (
                info.type,
                info.mode,
                info.uname,
                info.gname,
                info.mtime,
                info.size,
                info.linkname,
                digest,
            )
    return members


def data_files(deb: Path) -> dict[str, bytes]:
    raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for info in tar:
            if info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                out[info.name.removeprefix("./")] = f.read()
    return out


def test_two_builds_of_one_tree_ship_the_same_files_and_bytes(builds: dict[str, Build]) -> None:
    a, b = builds["a"], builds["b"]
    data_a, data_b = deb_members(a.deb, "data"), deb_members(b.deb, "data")
    assert sorted(data_a) == sorted(data_b)
    differ = [name for name in data_a if data_a[name] != data_b[name]]
    assert differ == []
    assert deb_members(a.deb, "control") == deb_members(b.deb, "control")
    assert hashlib.sha256(a.deb.read_bytes()).hexdigest() == hashlib.sha256(b.deb.read_bytes()).hexdigest()


def test_the_package_ships_neither_build_tools_nor_test_suites_nor_the_build_path(
    builds: dict[str, Build],
) -> None:
    files = data_files(builds["a"].deb)
    names = sorted(deb_members(builds["a"].deb, "data"))
    unwanted = re.compile(
        r"/site-packages/(pip|setuptools|wheel|pkg_resources|_distutils_hack)([/-]|$)"
        r"|/site-packages/distutils-precedence\.pth"
        r"|/(test|tests|_test)/"
        r"|Activate\.ps1|activate\.(csh|fish)|\.exe$|\.dll$"
        r"|/direct_url\.json$|__pycache__|\.pyc$"
        r"|/yaml/_yaml\..*\.so$"
    )
    assert [n for n in names if unwanted.search(n)] == []
    bins = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"{VENV}/bin/") and not n.endswith("/"))
    assert bins == ["activate", "python", "python3", "python3.11", "s3orch", "s3orch-admin", "twistd"]
    # the stale module planted in build/lib, and no path of either build tree in any file
    assert not any(STALE in n for n in names)
    assert f"{SITE}/s3orch/cli/main.py" in names
    for build in builds.values():
        leaks = [n for n, content in files.items() if str(build.source.parent).encode() in content]
        assert leaks == [], f"files naming the build directory {build.source.parent}"
    # the venv runs on Debian's python3.11, and the package depends on exactly that
    assert deb_members(builds["a"].deb, "data")[f"{VENV}/bin/python3.11"][6] == "/usr/bin/python3.11"
    depends = run(["dpkg-deb", "-f", str(builds["a"].deb), "Depends"]).stdout
    assert re.search(r"(^|, )python3\.11(,|$)", depends.strip()), depends
    assert "python3 " not in depends and "python3," not in depends


def test_debian_copyright_covers_every_distribution_in_the_venv(builds: dict[str, Build]) -> None:
    names = deb_members(builds["a"].deb, "data")
    text = (ROOT / "debian" / "copyright").read_text()
    patterns = [p for block in re.findall(r"^Files: (.+(?:\n +\S.*)*)", text, re.M) for p in block.split()]
    top = {n[len(SITE) + 1 :].split("/")[0] for n in names if n.startswith(SITE + "/")} - {""}
    ours = {t for t in top if t == "s3orch" or t.startswith("s3orch-")}  # under "Files: *"
    assert ours
    uncovered = sorted(t for t in top - ours if not any(fnmatch.fnmatch(f"{SITE}/{t}", p) for p in patterns))
    assert uncovered == []
    assert "usr/share/doc/s3orch/copyright" in names


def test_lintian_reports_no_error(builds: dict[str, Build]) -> None:
    proc = run(["lintian", "--pedantic", "--display-info", str(builds["a"].changes)], check=False, timeout=600)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], proc.stdout[-4000:]
    # the overrides (debian/s3orch.lintian-overrides) all still match something
    assert "unused-override" not in proc.stdout and "mismatched-override" not in proc.stdout


# --- the chroot ----------------------------------------------------------------------------

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}
ENTER = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"'


def base_chroot() -> Path:
    """A debootstrapped bookworm, made once and kept under .cache/deb/ (never modified)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(CHROOT_PACKAGES)} 1".encode()).hexdigest()[:12]
    base = CACHE / f"chroot-{SUITE}-{key}"
    if (base / ".complete").exists():
        return base
    partial = CACHE / f"chroot-{SUITE}-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(CHROOT_PACKAGES)}",
            SUITE,
            str(partial),
            MIRROR,
        ],
        timeout=1800,
    )
    (partial / ".complete").touch()
    partial.rename(base)
    return base


def enter(root: Path, *cmd: str) -> list[str]:
    """The command line that runs ``cmd`` in the chroot, with /proc and /dev mounted in a mount
    namespace of its own (gone when the command ends: nothing to unmount)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, str(root), *cmd]


def in_root(root: Path, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(enter(root, "sh", "-c", script), env=CHROOT_ENV, check=check, timeout=900)


def snapshot(root: Path) -> set[str]:
    """Every path of the chroot but the volatile ones (dpkg's own database, logs, caches)."""
    skip = {"proc", "dev", "run", "tmp", "var/log", "var/cache", "var/lib/dpkg", "var/lib/apt", "var/backups"}
    paths = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel, d)) not in skip]
        for name in dirnames + filenames:
            paths.add(os.path.normpath(os.path.join(rel, name)))
    return paths


@dataclass
class Chroot:
    root: Path
    before: set[str]
    install_output: str

    def calls(self) -> list[str]:
        path = self.root / CALLS
        return path.read_text().splitlines() if path.exists() else []

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_root(self.root, script, check)


@pytest.fixture(scope="module")
def chroot(builds: dict[str, Build], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chroot]:
    root = tmp_path_factory.mktemp("chroot") / "root"
    run(["cp", "-a", str(base_chroot()), str(root)], timeout=900)
    # deb-systemd-invoke records what the maintainer scripts ask of systemd.
    in_root(root, "dpkg-divert --local --rename --add /usr/bin/deb-systemd-invoke >/dev/null")
    stub = root / "usr/bin/deb-systemd-invoke"
    stub.write_text(f'#!/bin/sh\necho "$*" >> /{CALLS}\n')
    stub.chmod(0o755)
    (root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    before = snapshot(root)
    shutil.copy2(builds["a"].deb, root / "tmp" / "a.deb")
    shutil.copy2(builds["upgrade"].deb, root / "tmp" / "upgrade.deb")
    proc = in_root(root, "dpkg -i /tmp/a.deb 2>&1")
    yield Chroot(root, before, proc.stdout)
    shutil.rmtree(root.parent, ignore_errors=True)


def test_the_installed_unit_verifies_silently_with_and_without_the_example_drop_ins(chroot: Chroot) -> None:
    proc = run(["systemd-analyze", "verify", f"--root={chroot.root}", "s3orch.service"], check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    dropins = chroot.root / "etc/systemd/system/s3orch.service.d"
    shutil.copytree(chroot.root / "usr/share/doc/s3orch/examples/s3orch.service.d", dropins)
    try:
        proc = run(["systemd-analyze", "verify", f"--root={chroot.root}", "s3orch.service"], check=False)
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    finally:
        shutil.rmtree(dropins)
    # Documentation= names a file that is there, uncompressed
    unit = (chroot.root / "lib/systemd/system/s3orch.service").read_text()
    doc = re.search(r"^Documentation=file://(\S+)$", unit, re.M)
    assert doc and (chroot.root / doc.group(1).lstrip("/")).is_file()


def test_the_unit_is_hardened_to_the_documented_exposure(chroot: Chroot) -> None:
    unit = chroot.root / "lib/systemd/system/s3orch.service"
    proc = run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={chroot.root}", "--no-pager", str(unit)],
        check=False,
    )
    match = re.search(r"Overall exposure level for s3orch\.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= SECURITY_MAX
    text = unit.read_text()
    for line in (
        "SystemCallFilter=@system-service",
        "ProtectProc=invisible",
        "PrivateUsers=yes",
        "CapabilityBoundingSet=",
        "StartLimitBurst=5",
        "StartLimitIntervalSec=120",
        "Restart=on-failure",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_install_creates_the_user_the_protected_conffiles_and_compiles_the_bytecode(chroot: Chroot) -> None:
    root = chroot.root
    assert "s3orch:" in (root / "etc/passwd").read_text()
    overrides = chroot.sh("dpkg-statoverride --list").stdout
    assert "root s3orch 640 /etc/s3orch/config.yaml" in overrides
    assert "root root 600 /etc/default/s3orch" in overrides
    assert list((root / SITE / "s3orch" / "__pycache__").glob("*.cpython-311.pyc"))
    assert (root / SITE / "twisted/plugins/dropin.cache").exists()
    assert (root / "usr/bin/s3orch-admin").is_file()
    # --no-start: installing does not start (or enable) the service
    assert chroot.calls() == []


def write_env_file(chroot: Chroot) -> None:
    lines = [f'{key}="{value}"' for key, value in SECRETS.items()]
    with (chroot.root / "etc/default/s3orch").open("a") as f:
        f.write("\n".join(lines) + "\n")


def test_s3orch_admin_runs_with_the_service_environment_directory_and_user(chroot: Chroot) -> None:
    # Without the secrets in /etc/default/s3orch, the shipped config expands them to "".
    proc = chroot.sh("cd /root && s3orch-admin validate", check=False)
    assert proc.returncode == 1 and "secret_access_key" in proc.stderr, proc.stderr
    write_env_file(chroot)
    proc = chroot.sh("cd /root && s3orch-admin validate")
    assert "config /etc/s3orch/config.yaml: valid" in proc.stdout
    # migrate from /root: the relative SQLite path lands where the service works, as the service's user
    proc = chroot.sh("cd /root && s3orch-admin migrate")
    assert "schema version" in proc.stdout, proc.stdout
    assert (chroot.root / "var/lib/s3orch/s3-orchestrator.db").is_file()
    assert not (chroot.root / "root/s3-orchestrator.db").exists()
    owner = chroot.sh("stat -c '%U:%G %a' /var/lib/s3orch/s3-orchestrator.db").stdout.split()
    assert owner == ["s3orch:s3orch", "640"]
    # a relative --config is the caller's file
    proc = chroot.sh(
        "mkdir -p /tmp/alt && cp /etc/s3orch/config.yaml /tmp/alt/mine.yaml && chmod 0644 /tmp/alt/mine.yaml"
        " && cd /tmp/alt && s3orch-admin validate --config mine.yaml"
    )
    assert "config /tmp/alt/mine.yaml: valid" in proc.stdout
    # a user who cannot read the environment file is told so
    proc = chroot.sh("cd /tmp && setpriv --reuid=nobody --regid=nogroup --clear-groups s3orch-admin version")
    assert "cannot read /etc/default/s3orch" in proc.stderr and "working in /tmp" in proc.stderr, proc.stderr


def free_low_port() -> int:
    """A port below 1024 that nothing listens on."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_packaged_gateway_starts_as_the_service_would_and_answers(chroot: Chroot) -> None:
    port = free_port()
    config = chroot.root / "etc/s3orch/config.yaml"
    config.write_text(
        config.read_text().replace('listen_addr: "0.0.0.0:9000"', f'listen_addr: "127.0.0.1:{port}"')
    )
    env = " ".join(f"{k}='{v}'" for k, v in SECRETS.items())
    script = (
        f"cd /var/lib/s3orch && umask 0027 && exec env {env} /opt/venvs/s3orch/bin/twistd -n --pidfile= "
        "s3orch --config /etc/s3orch/config.yaml"
    )
    cmd = enter(
        chroot.root, "setpriv", "--reuid=s3orch", "--regid=s3orch", "--init-groups", "sh", "-c", script
    )
    proc = subprocess.Popen(cmd, env=CHROOT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"no /health answer; exit {proc.poll()}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # twistd stops by itself on SIGTERM, draining, and then exits by that signal (as systemd expects)
    assert proc.returncode in (0, -signal.SIGTERM), out[-4000:]
    assert "Server Shut Down." in out


def test_upgrade_try_restarts_remove_stops_and_purge_leaves_only_the_metadata(chroot: Chroot) -> None:
    root = chroot.root
    calls = root / CALLS
    # upgrade: the service is try-restarted (a running one runs the new version, a stopped one stays stopped)
    proc = chroot.sh("dpkg -i /tmp/upgrade.deb 2>&1")
    assert "warning" not in proc.stdout.lower(), proc.stdout
    assert chroot.sh("dpkg-query -W -f='${Version}' s3orch").stdout == UPGRADE_VERSION
    assert chroot.calls() == ["try-restart s3orch.service"]
    assert list((root / SITE / "s3orch" / "__pycache__").glob("*.pyc"))
    calls.unlink()
    # remove: the service is stopped; the venv goes entirely (bytecode included); conffiles stay
    proc = chroot.sh("dpkg -r s3orch 2>&1")
    assert "warning" not in proc.stdout.lower(), proc.stdout
    assert chroot.calls() == ["stop s3orch.service"]
    assert not (root / "opt/venvs/s3orch").exists()
    assert not (root / "usr/bin/s3orch-admin").exists()
    assert (root / "etc/s3orch/config.yaml").exists()
    calls.unlink()
    # purge: everything goes but /var/lib/s3orch with the metadata (and the system user)
    proc = chroot.sh("dpkg -P s3orch 2>&1")
    assert "kept /var/lib/s3orch" in proc.stdout
    assert "s3orch" not in chroot.sh("dpkg-statoverride --list", check=False).stdout
    left = snapshot(root) - chroot.before
    assert sorted(left) == ["var/lib/s3orch", "var/lib/s3orch/s3-orchestrator.db"]
    for name in ("etc/passwd", "etc/group"):
        assert "s3orch:" in (root / name).read_text()


# --- under a real systemd ----------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def container_init(pid: int) -> int | None:
    """The container's systemd: a descendant of systemd-nspawn named systemd."""
    queue = [pid]
    while queue:
        current = queue.pop(0)
        for child in children(current):
            try:
                if (Path("/proc") / str(child) / "comm").read_text().strip() == "systemd":
                    return child
            except OSError:
                continue
            queue.append(child)
    return None


@contextmanager
def booted(root: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Boot the chroot with systemd-nspawn (systemd as its PID 1, the host's network) and run
    shell commands in it through nsenter; power it off afterwards."""
    log = (root.parent / "nspawn.log").open("w")
    cmd = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "-D",
        str(root),
        "-b",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    init = None
    try:
        deadline = time.monotonic() + 60
        while init is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            init = container_init(proc.pid)
        assert init is not None, (
            f"systemd did not boot in the container: {(root.parent / 'nspawn.log').read_text()[-3000:]}"
        )

        def sh(script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            enter = ["nsenter", "-t", str(init), "-m", "-u", "-i", "-p", "--", "sh", "-c", script]
            return run(enter, env=CHROOT_ENV, check=check, timeout=300)

        state = sh("systemctl is-system-running --wait", check=False).stdout.strip()
        assert state in ("running", "degraded"), state
        yield sh
    finally:
        if init is not None and proc.poll() is None:
            subprocess.run(
                ["nsenter", "-t", str(init), "-m", "-p", "--", "systemctl", "poweroff"], capture_output=True
            )
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return int(response.status)
    except OSError:
        return None


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_under_systemd_the_hardened_service_serves_restarts_on_upgrade_gives_up_on_a_bad_config_and_stops_on_remove(
    chroot: Chroot, moto_server: MotoServer
) -> None:
    need(
        shutil.which("systemd-nspawn") is not None and shutil.which("nsenter") is not None,
        "the .deb test needs systemd-nspawn (apt-get install systemd-container)",
    )
    root = chroot.root
    # the real deb-systemd-invoke again, and no fake /run/systemd (the container has its own)
    chroot.sh(
        "rm -f /usr/bin/deb-systemd-invoke && dpkg-divert --local --rename --remove /usr/bin/deb-systemd-invoke >/dev/null"
    )
    shutil.rmtree(root / "run/systemd", ignore_errors=True)
    for name in ("a", "upgrade"):
        shutil.copy2(
            root / "tmp" / f"{name}.deb", root / "var/tmp" / f"{name}.deb"
        )  # the container's /tmp is its own
    bucket = f"deb-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_server.endpoint, bucket, "testing", "testing", "us-east-1")
    port = free_port()
    secret = "app secret $HOME"  # systemd keeps it as it is: no expansion, spaces kept in '...'
    with booted(root) as sh:
        sh("dpkg -i /var/tmp/a.deb >/dev/null")
        assert sh("systemctl is-active s3orch", check=False).stdout.strip() == "inactive"
        assert sh("systemctl is-enabled s3orch", check=False).stdout.strip() == "disabled"
        config_path = root / "etc/s3orch/config.yaml"
        config = (
            config_path.read_text()
            .replace('listen_addr: "0.0.0.0:9000"', f'listen_addr: "127.0.0.1:{port}"')
            .replace('endpoint: "http://127.0.0.1:9100"', f'endpoint: "{moto_server.endpoint}"')
            .replace('bucket: "s3orch-data"', f'bucket: "{bucket}"')
            .replace('access_key_id: "minioadmin"', 'access_key_id: "testing"')
        )
        config_path.write_text(config)
        with (root / "etc/default/s3orch").open("a") as f:
            f.write(f"APP1_SECRET_KEY='{secret}'\nBACKEND1_SECRET_KEY=testing\n")
        sh("s3orch-admin validate >/dev/null")

        sh("systemctl start s3orch")
        wait_until(lambda: health(port) == 200, 60, "the service's /health")
        pid = sh("systemctl show -p MainPID --value s3orch").stdout.strip()
        status = sh(f"cat /proc/{pid}/status").stdout
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$", status, re.M)
        assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^CapBnd:\s+0+$", status, re.M)
        uid_map = sh(f"cat /proc/{pid}/uid_map").stdout.split()
        assert uid_map[:3] != ["0", "0", "4294967295"], "PrivateUsers= gave no user namespace"
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="APP1_ACCESS_KEY",
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        client.put_object(Bucket="app1-files", Key="from-the-package", Body=b"hello from systemd")
        assert (
            client.get_object(Bucket="app1-files", Key="from-the-package")["Body"].read()
            == b"hello from systemd"
        )

        # upgrade: the running service is restarted into the new version
        sh("dpkg -i /var/tmp/upgrade.deb >/dev/null")
        assert sh("dpkg-query -W -f='${Version}' s3orch").stdout == UPGRADE_VERSION
        wait_until(lambda: health(port) == 200, 60, "/health after the upgrade")
        upgraded = sh("systemctl show -p MainPID --value s3orch").stdout.strip()
        assert upgraded not in ("0", pid)
        assert (
            client.get_object(Bucket="app1-files", Key="from-the-package")["Body"].read()
            == b"hello from systemd"
        )

        # systemctl reload: SIGHUP (ExecReload), the file is re-read by the same process
        sh("systemctl reload s3orch")
        wait_until(
            lambda: "Configuration reload complete" in sh("journalctl -u s3orch -o cat --no-pager").stdout,
            30,
            "the reload's last log line",
        )
        assert sh("systemctl show -p MainPID --value s3orch").stdout.strip() == upgraded
        assert health(port) == 200

        # a configuration error: restarted 4 times, then left failed
        config_path.write_text(config + "\nrouting_strategy: spread\n")  # a duplicate key
        sh("systemctl restart s3orch", check=False)
        wait_until(
            lambda: sh("systemctl show -p ActiveState --value s3orch").stdout.strip() == "failed",
            120,
            "the unit to give up",
        )
        assert sh("systemctl show -p NRestarts --value s3orch").stdout.strip() == "4"
        journal = sh("journalctl -u s3orch -o cat --no-pager").stdout
        assert "error: routing_strategy: duplicate key" in journal
        assert "Start request repeated too quickly" in journal
        config_path.write_text(config)
        sh("systemctl reset-failed s3orch && systemctl start s3orch")
        wait_until(lambda: health(port) == 200, 60, "/health after the fix")

        # the documented drop-in for a port below 1024 (the unit alone holds no capability)
        low = free_low_port()
        dropin = root / "etc/systemd/system/s3orch.service.d/low-port.conf"
        dropin.parent.mkdir(parents=True)
        shutil.copy2(root / "usr/share/doc/s3orch/examples/s3orch.service.d/low-port.conf", dropin)
        config_path.write_text(config.replace(f'"127.0.0.1:{port}"', f'"127.0.0.1:{low}"'))
        sh("systemctl daemon-reload && systemctl restart s3orch")
        wait_until(lambda: health(low) == 200, 60, f"/health on port {low}")
        shutil.rmtree(dropin.parent)
        config_path.write_text(config)
        sh("systemctl daemon-reload && systemctl restart s3orch")
        wait_until(lambda: health(port) == 200, 60, "/health back on the high port")

        # remove: the service is stopped
        sh("dpkg -r s3orch >/dev/null")
        assert sh("systemctl is-active s3orch", check=False).stdout.strip() in ("inactive", "unknown")
        assert health(port) is None
