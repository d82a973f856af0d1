"""Whether a cache folder or file on disk may be trusted by this process.

Why: an engine cache entry carries its own SHA-256, so an entry written by someone else is
self-consistent whatever it holds (a solid angle doubled, a radial axis 1 % off: a wrong pressure,
without any warning). The checksum catches accidents; who could have written the file is what this
checks. A folder or entry is trusted when this user owns it and neither its group nor others can
write it; a folder that is shared on purpose (``engine_cache_shared: true``) is trusted by decision.
"""

from __future__ import annotations

import os
import stat

#: mode bits that let users other than the owner change a file or a folder's entries
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def untrusted_because(st: os.stat_result) -> str | None:
    """Why a file or folder with status ``st`` is not to be trusted, or None when it is: owned by
    another user, or writable by its group or by others."""
    me = os.geteuid()
    if st.st_uid != me:
        return f"owned by uid {st.st_uid}, not by this user (uid {me})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & _OTHERS_WRITE:
        return f"writable by group or others (mode {oct(mode)}); expected writable by its owner only"
    return None
