"""The evidence bundle's format name and serialisation, apart from the verifier
(condpay/evidence.py) so that the server, which writes bundles, does not load the contract
compiler the verifier needs (docs/evidence.md, "Bundle format")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

FORMAT: Final = "condpay.evidence.v1"


def dumps(bundle: Mapping[str, Any]) -> bytes:
    """The bundle's bytes as the server writes them: UTF-8 JSON, sorted keys, one space of
    indent (a verifier must not depend on the layout)."""
    return json.dumps(bundle, sort_keys=True, indent=1, ensure_ascii=False).encode()


__all__ = ["FORMAT", "dumps"]
