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
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# What the commands below import when they run: loaded here, before the child gives up root
# (this machine's interpreter lives under /root, which `nobody` cannot read).
import appliance.accounts
import appliance.agenda
import appliance.datadir  # noqa: F401
from appliance import cli, privileges
from appliance import config as config_mod
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from ingest.pipeline import Importer
from tests.cards import exif_jpeg
from tests.conftest import TEST_ENV


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


def as_user(argv_list: list[list[str]], *, uid: int, gid: int, groups: list[int],
            call: Callable[[], None] | None = None, stdin: str = "una-clave-larga\n"
            ) -> tuple[int, str]:
    """In a forked child with these ids and umask 0002 (both units' UMask=): `call()`, then
    `acopio ARGV` for each argv in turn; the exit code of the first that fails (or 0) and
    everything the commands said."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        said = io.StringIO()
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            os.umask(0o002)
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
            sys.stdout = sys.stderr = said
            if call is not None:
                call()
            code = 0
            for argv in argv_list:
                said.write(f"$ acopio {' '.join(argv)}\n")
                code = cli.main(argv)
                if code != 0:
                    break
        except BaseException:
            said.write(traceback.format_exc())
            code = code or 71
        finally:
            os.write(write_end, said.getvalue().encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def run_in_child(argv: list[str], stdin: str = "") -> tuple[int, str]:
    """`acopio ARGV` in a forked child, as root when it starts; its exit code and output."""
    return as_user([argv], uid=0, gid=0, groups=[], stdin=stdin)


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


# -- the two services on one data folder --------------------------------------------------------


def test_what_the_root_device_watcher_writes_the_acopio_user_can_change(
        nobodys_folder: Path, tmp_path: Path) -> None:
    """acopio-devices.service imports cards as root, in the acopio group with UMask=0002;
    acopio.service, as the acopio user, then edits those items, makes their thumbnails and
    files them into an activity, and its inbox imports more. Here `nobody` and its group
    stand for acopio."""
    nobody = pwd.getpwnam("nobody")
    card = tmp_path / "card"
    for i in range(3):
        exif_jpeg(card / "DCIM" / "100CANON" / f"IMG_{i:04d}.JPG", f"2026:11:2{i} 10:00:00",
                  "-06:00", color=(40 * i, 90, 160))
    nobodys_folder.chmod(0o770)  # StateDirectoryMode=0770
    # then the inbox, as the acopio user, imports a photo of its own (the import's commit
    # lock was made by root)
    inbox = nobodys_folder.parent / "buzon"
    exif_jpeg(inbox / "foto-del-buzon.jpg", "2026:11:23 12:00:00", "-06:00", color=(9, 9, 9))
    inbox.chmod(0o755)

    def work(data: Path) -> list[list[str]]:
        sha = next(iter(Catalog(DataDir.at(data)).items()))["sha256"]
        base = ["--data-dir", str(data)]
        return [[*base, "users", "add", "ana", "--role", "director", "--password-stdin"],
                [*base, "items", "set", sha, "--caption", "Entrega de becas", "--pick",
                 "--as", "ana"],
                [*base, "worker", "--once"],
                [*base, "agenda", "add", "Entrega de becas", "--start", "2026-11-20T09:00",
                 "--end", "2026-11-22T18:00"],
                [*base, "items", "refile", sha, "--activity", "entrega-de-becas", "--as",
                 "ana"],
                [*base, "ingest", str(inbox)],
                [*base, "check"]]

    def import_card(data: Path) -> Callable[[], None]:
        def run() -> None:  # what the device watcher does with a mounted card
            config = config_mod.load(None, environ=TEST_ENV, data_dir=data)
            summary = Importer(config).run(card)
            assert summary.ok and summary.imported == 3, summary.as_dict()
        return run

    # The same work once as root on a folder of root's own: every module it needs is loaded
    # before the children give up root (this machine's interpreter lives under /root).
    rehearsal = tmp_path / "rehearsal"
    import_card(rehearsal)()
    code, said = as_user(work(rehearsal), uid=0, gid=0, groups=[])
    assert code == 0, said

    # The device watcher: root, the acopio group, UMask=0002.
    code, said = as_user([], uid=0, gid=nobody.pw_gid, groups=[], call=import_card(nobodys_folder))
    assert code == 0, said
    made_by_root = [p for p in nobodys_folder.rglob("*") if p.lstat().st_uid == 0]
    assert made_by_root
    # acopio.service: the acopio user, its own group.
    code, said = as_user(work(nobodys_folder), uid=nobody.pw_uid, gid=nobody.pw_gid,
                     groups=[nobody.pw_gid])
    assert code == 0, said
    assert "6 jobs run" in said, said  # a thumbnail and a preview of each photo
    moved = list(Catalog(DataDir.at(nobodys_folder)).items())
    assert sum("entrega-de-becas" in r["archive_path"] for r in moved) == 1
    assert len(moved) == 4 and any(r["original_name"] == "foto-del-buzon.jpg" for r in moved)
    print(said)
