"""Keyed identifiers for DICOM UIDs: the edge tracks instances without storing original UIDs.

One HMAC namespace for all UIDs (study, series, SOP instance): UIDs are globally unique, so the
same UID always gives the same key, and the key is meaningless without the site key.
"""

from __future__ import annotations

from service.core.keys import SiteKeys, hmac_sha256


def uid_key(keys: SiteKeys, uid: str) -> str:
    """64 hex characters; what the database stores instead of the UID."""
    return hmac_sha256(keys.lookup, "dicom-uid", uid.strip().rstrip("\x00")).hex()
