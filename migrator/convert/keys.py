"""The text form of keys and of values kept aside (fixups' originals, quarantined rows): ASCII JSON.

A row's key is `dumps([key values])` (its rowid, `[rowid]`, only when the table has no key at all): the same text
in the ledger, the reports, verify's comparisons and an operator's lookup.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> str:
    """ASCII JSON text: safe in a PostgreSQL text column whatever the value holds (NUL, lone surrogates escaped)."""
    return json.dumps(value, ensure_ascii=True, default=str)
