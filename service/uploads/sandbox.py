"""What the upload validator's process may see and do: the sandbox around a program reading a stranger's file.

The validator program parses the uploaded bytes, so it starts with as little as the host allows:

- a minimal environment (``environment``): none of the server's ``SBAUDIT_*`` settings, secrets or
  ``PYTHON*`` variables, only the search path, single-thread caps and its own directory as home and temp
  dir (the program itself runs ``python -I``: sbserver/wiring.py);
- no inherited descriptors beyond stdin, stdout and stderr (the caller starts it with ``close_fds``);
- a fresh private working directory holding only the upload (``Sandbox``), outside the data directory:
  under ``SBAUDIT_UPLOAD_SANDBOX_DIR`` (default ``<temp dir>/sbaudit-sandboxes-<uid>``, which the
  validator may cross but not list). The upload is moved in (renamed on the same filesystem, else copied);
  the validator writes its outputs there; the directory is removed when the request is done with them;
- when the server runs as root: a new network namespace (only a loopback that is down: no network) and the
  unprivileged ``SBAUDIT_UPLOAD_VALIDATOR_USER`` (default ``nobody``, without supplementary groups), with
  the data directory closed to that user, so it reaches neither the database nor the admin key nor other
  owners' files, by relative or absolute path;
- the resource limits the program sets on itself (address space, CPU time, file size), a lower CPU
  priority (nice 10, like job processes), and a wall-clock limit enforced from outside
  (service/uploads/validator.py).

Without root the uid and network steps are skipped (Linux lets an unprivileged process give up neither on
its own): the validator then runs as the server's user, with everything else above.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import Problem
from service.settings import Settings
from service.uploads.rejected import Rejected
from service.uploads.stream import FILE_NAME, sweep_stale

log = logging.getLogger("sbaudit.api")

# One thread per library, a small malloc, no GPU.
_FIXED_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "LC_ALL": "C.UTF-8",
}
_CLONE_NEWNET = 0x40000000
# The validator's CPU priority, that of job processes (worker/local.py): the API comes first.
VALIDATOR_NICENESS = 10


def _libc_unshare() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).unshare
    except (AttributeError, OSError):  # not Linux
        return None
    function.argtypes = [ctypes.c_int]
    return function


_unshare = _libc_unshare()  # resolved here, in the parent: the forked child only calls it


def unavailable(reason: str) -> Problem:
    """A server-side reason the validator cannot run: logged in full, a 503 without details for the client."""
    log.error("the upload validator cannot start: %s", reason)
    return Problem(
        503, "the upload validator cannot start on this server (see its log)", slug="validator-unavailable"
    )


def _enter_new_network_namespace() -> None:
    if _unshare is None or _unshare(_CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")


_network_isolation: bool | None = None


def network_isolation() -> bool:
    """Whether this host lets the server start a process in a new network namespace (root, and no seccomp
    profile forbidding it, as Docker's default one does). Asked once per process."""
    global _network_isolation
    if _network_isolation is None:
        _network_isolation = False
        if os.geteuid() == 0 and _unshare is not None:
            try:
                subprocess.run(
                    [sys.executable, "-I", "-S", "-c", ""],
                    preexec_fn=_enter_new_network_namespace,  # noqa: PLW1509 - one libc call
                    check=True,
                    timeout=30,
                    env={},
                )
                _network_isolation = True
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("upload validators keep the network: no new network namespace here (%s)", exc)
    return _network_isolation


@dataclass(frozen=True)
class Confinement:
    """What the validator's process gives up between fork and exec: CPU priority (like a job's, so the API
    comes first), and as root the network, then root. Called in the forked child, so it only makes system
    calls (nothing that imports, logs or locks)."""

    uid: int | None = None
    gid: int | None = None
    new_network: bool = False

    def __call__(self) -> None:
        os.nice(VALIDATOR_NICENESS)
        if self.new_network:
            _enter_new_network_namespace()
        if self.uid is not None and self.gid is not None:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)


def _validator_account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise unavailable(f"SBAUDIT_UPLOAD_VALIDATOR_USER={name!r} is no user of this host") from None


_runs_interpreter: dict[tuple[int, str], bool] = {}


def _can_run(interpreter: str, account: pwd.struct_passwd) -> bool:
    """Whether the validator's user can start the validator's interpreter at all (not where it lives under a
    home only root may enter, e.g. a pyenv under a 0700 /root). Where it cannot, validators keep the server's
    uid, with a warning, rather than every upload failing; asked once per process and interpreter."""
    key = (account.pw_uid, interpreter)
    if key not in _runs_interpreter:
        try:
            subprocess.run(
                [interpreter, "-I", "-c", "import encodings"],
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
                check=True,
                capture_output=True,
                timeout=60,
                env={},
            )
            _runs_interpreter[key] = True
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning(
                "upload validators keep this server's user: %s cannot run %s (%s); make it reachable for "
                "that user, or set SBAUDIT_UPLOAD_VALIDATOR_USER",
                account.pw_name,
                interpreter,
                exc,
            )
            _runs_interpreter[key] = False
    return _runs_interpreter[key]


def confinement(settings: Settings, interpreter: str = sys.executable) -> Confinement:
    """The confinement of this server's validators (unprivileged, only the CPU priority)."""
    if os.geteuid() != 0:
        return Confinement()
    uid = gid = None
    if settings.upload_validator_user:
        account = _validator_account(settings.upload_validator_user)
        if account.pw_uid != 0 and _can_run(interpreter, account):
            uid, gid = account.pw_uid, account.pw_gid
    return Confinement(uid=uid, gid=gid, new_network=network_isolation())


def environment(directory: Path) -> dict[str, str]:
    """The validator's whole environment: what it may write besides its outputs stays in ``directory``."""
    home = str(directory)
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": home, "TMPDIR": home, **_FIXED_ENVIRONMENT}


def _close_to(directory: Path, uid: int, gid: int) -> None:
    """Take every permission on ``directory`` from the validator's user, as other and through its group."""
    info = directory.stat()
    if info.st_uid == uid:
        raise unavailable(f"{directory} belongs to the validator's user (uid {uid})")
    mode = stat.S_IMODE(info.st_mode)
    closed = mode & ~0o007 & ~(0o070 if info.st_gid == gid else 0)
    if closed != mode:
        os.chmod(directory, closed)
        log.warning("closed %s to the upload validator's user: mode %o -> %o", directory, mode, closed)


def sandboxes_root(settings: Settings) -> Path:
    """Where the validators' directories go: a directory of this server's user that others may cross (to
    reach their own directory) but not list (to find another's)."""
    default = Path(tempfile.gettempdir()) / f"sbaudit-sandboxes-{os.geteuid()}"
    root = settings.upload_sandbox_dir or default
    if root.resolve().is_relative_to(settings.data_dir):
        raise unavailable(f"{root} (SBAUDIT_UPLOAD_SANDBOX_DIR) is inside the data directory")
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise unavailable(f"{root} (SBAUDIT_UPLOAD_SANDBOX_DIR) is not a directory of this server's user")
    if stat.S_IMODE(info.st_mode) != 0o711:
        os.chmod(root, 0o711)
    return root


@dataclass(frozen=True)
class Sandbox:
    """One validation's private working directory (holding the upload as ``FILE_NAME``) and the
    confinement to start the validator under."""

    directory: Path
    confinement: Confinement

    @classmethod
    def enter(cls, upload: Path | None, settings: Settings, interpreter: str = sys.executable) -> Sandbox:
        """Move ``upload`` into a fresh directory and hand both to the validator's user (no upload: a
        request that reads no file, such as measuring an architecture, still gets its own directory)."""
        confined = confinement(settings, interpreter)
        root = sandboxes_root(settings)
        sweep_stale(root)
        directory = root / secrets.token_hex(16)
        directory.mkdir(mode=0o700)
        sandbox = cls(directory, confined)
        try:
            if upload is not None:
                shutil.move(upload, directory / FILE_NAME)
            if confined.uid is not None and confined.gid is not None:
                _close_to(settings.data_dir, confined.uid, confined.gid)
                for path in (directory, *([directory / FILE_NAME] if upload is not None else [])):
                    os.chown(path, confined.uid, confined.gid, follow_symlinks=False)
        except BaseException:
            sandbox.remove()
            raise
        return sandbox

    def claim_outputs(self) -> None:
        """Take back what the validator wrote, before the server reads it as root or as itself: plain files
        and directories only (a symbolic or hard link would have the server store a file the validator
        could not read), owned by the server's user again."""
        owner = (os.geteuid(), os.getegid())
        for parent, directories, files in os.walk(self.directory):
            for name in (*directories, *files):
                path = Path(parent, name)
                info = path.lstat()
                if not (stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)):
                    log.error("the upload validator wrote %s, which is not a plain file or directory", path)
                    raise Rejected("the file could not be validated (the validator's output was refused)")
                if (info.st_uid, info.st_gid) != owner:
                    os.chown(path, *owner, follow_symlinks=False)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
