"""Adding and removing this machine's users with shadow-utils, on a machine where many do.

Every stack start, deploy, archive and sandbox on a machine may add or remove a user at the same
moment. shadow-utils (`useradd`, `usermod`, `userdel`, `groupadd`) waits for the user database's
lock only so long, then fails with "cannot lock ...; try again later" (exit 1, the code of any
other failure). `change_accounts` runs such a command again while that is the reason; every
other outcome goes back to the caller, whose error names what to do.
"""

from __future__ import annotations

import subprocess

#: shadow-utils' words for a database another command holds.
_LOCKED = "try again later"


def change_accounts(argv: list[str], attempts: int = 5) -> subprocess.CompletedProcess[str]:
    """Run `argv`; again (up to `attempts` times) while it fails on the database's lock."""
    for _ in range(attempts - 1):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode == 0 or _LOCKED not in result.stderr:
            return result
    return subprocess.run(argv, capture_output=True, text=True, check=False)
