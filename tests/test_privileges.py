"""Root on a data folder that is another user's: the command runs as that user.

The real switch (setgroups, setgid, setuid) is irreversible, so it runs in a forked child of
this process; the folder belongs to `nobody`, as the box's folder belongs to `acopio`.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# What the commands below import when they run: loaded here, before the child gives up root
# (this machine's interpreter lives under /root, which `nobody` cannot read).
import appliance.accounts
import appliance.agenda
import appliance.datadir  # noqa: F401
from appliance import cli, privileges


@pytest.fixture
def nobodys_folder() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test switches users and needs root (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="acopio-owner-", dir="/tmp"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    try:
        yield data
    finally:
        shutil.rmtree(base)


def run_in_child(argv: list[str], stdin: str = "") -> tuple[int, str]:
    """`acopio ARGV` in a forked child (as root when it starts); its exit code and stderr."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.close(read_end)
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
            sys.stderr = io.StringIO()
            sys.stdout = io.StringIO()
            code = cli.main(argv)
            os.write(write_end, sys.stderr.getvalue().encode())
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_root_runs_a_command_as_the_data_folders_owner(nobodys_folder: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    code, err = run_in_child(["--data-dir", str(nobodys_folder), "users", "add", "ana",
                              "--role", "photographer", "--password-stdin"],
                             stdin="una-clave-larga\n")
    assert code == 0, err
    assert f"running as nobody, the owner of {nobodys_folder}" in err
    made = [p for p in nobodys_folder.rglob("*")]
    assert made, "the command wrote nothing"
    for path in made:  # every file and folder it made is the owner's, none root's
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), path

    code, err = run_in_child(["--data-dir", str(nobodys_folder), "agenda", "add",
                              "Informe de gobierno", "--start", "2026-12-01T10:00",
                              "--end", "2026-12-01T12:00"])
    assert code == 0, err
    assert all(p.lstat().st_uid == nobody.pw_uid for p in nobodys_folder.rglob("*"))


def test_who_a_command_runs_as(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)

    owner = privileges.owner_to_act_as(theirs, euid=0)
    assert owner == privileges.Owner("nobody", nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
    # root's own folder, a folder not made yet, a user who is not root, a command that
    # needs root (devices watch and run mount cards): nothing changes
    assert privileges.owner_to_act_as(mine, euid=0) is None
    assert privileges.owner_to_act_as(tmp_path / "not-yet", euid=0) is None
    assert privileges.owner_to_act_as(theirs, euid=1000) is None
    assert privileges.owner_to_act_as(theirs, euid=0, needs_root=True) is None
    # an owner with no account: its uid, and the folder's group
    os.chown(theirs, 43210, 43211)
    assert privileges.owner_to_act_as(theirs, euid=0) == privileges.Owner("43210", 43210,
                                                                           43211)
