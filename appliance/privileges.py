"""A command run as root on a data folder that belongs to another user runs as that user.

Why: on a box the data folder belongs to the `acopio` user, whose services (web, sync, hub)
open the state files in place. An administrator who types `sudo acopio sync pair URL CODE`
or `sudo acopio users add ...` made those files as root (the credentials with mode 0600), and
the services then failed on them: the sync role could not read its credentials and asked to
be paired again, the web could not save a password. Now such a command switches to the data
folder's owner (its user, group and supplementary groups, like `sudo -u acopio`) before it
touches anything, and says so on stderr.

Commands that need root keep it: `acopio devices watch` and `acopio run` mount cards (their
unit runs them as root with the acopio group and UMask=0002 for this same reason).
"""

from __future__ import annotations

import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Owner:
    name: str
    uid: int
    gid: int
    home: str = "/"


def owner_to_act_as(data_dir: str | os.PathLike[str], *, needs_root: bool = False,
                    euid: int | None = None) -> Owner | None:
    """Whom a command should run as: the data folder's owner when we are root, the folder
    exists and belongs to another user, and the command does not need root; else None."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0 or needs_root:
        return None
    try:
        st = os.stat(data_dir)
    except OSError:  # not made yet: whoever makes it owns it
        return None
    if st.st_uid == 0:
        return None
    try:
        account = pwd.getpwuid(st.st_uid)
    except KeyError:  # an owner with no account: its uid and the folder's group
        return Owner(str(st.st_uid), st.st_uid, st.st_gid)
    return Owner(account.pw_name, st.st_uid, account.pw_gid, account.pw_dir)


def act_as(owner: Owner, data_dir: str | os.PathLike[str]) -> None:
    """Become `owner` for good (groups first: after setuid there is no way back)."""
    try:
        groups = os.getgrouplist(owner.name, owner.gid)
    except (KeyError, OSError):
        groups = [owner.gid]
    os.setgroups(groups)
    os.setgid(owner.gid)
    os.setuid(owner.uid)
    os.environ["HOME"] = owner.home
    print(f"acopio: running as {owner.name}, the owner of {Path(data_dir)}", file=sys.stderr)
