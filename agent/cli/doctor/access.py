"""Whether the user running the doctor may use a device its group grants (audio, gpio,
plugdev), and the hint to join that group."""

from __future__ import annotations

import grp
import os
import pwd

from agent.cli.doctor.results import Message, msg


def _user_in_group(group: str) -> bool:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return os.geteuid() == 0 or gid in os.getgroups()


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def group_hint(group: str) -> Message | None:
    """None when the user is in `group` (or root), else how to join it."""
    if _user_in_group(group):
        return None
    return msg("User {user} is not in group {group}: `sudo usermod -aG {group} {user}`, then "
               "log in again.", user=_current_user(), group=group)
