"""The validator set as a file a relying party pins (``serve --export-validators PATH``).

The settlement core verifies quorum certificates with keys it got from configuration, never from
the bridge it is about to trust: a bridge that answers ListValidators with other keys is refused.
The file is JSON: ``{"validators": {"<id>": "<public key hex>", ...}, "threshold": N}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bridges._model import ValidatorSet


def validators_json(validators: ValidatorSet) -> str:
    return json.dumps(
        {
            "validators": {v.validator_id: v.public_key.hex() for v in validators.validators},
            "threshold": validators.threshold,
        },
        indent=2,
        sort_keys=True,
    )


def export_validators(validators: ValidatorSet, path: Path) -> None:
    """Write the file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(validators_json(validators) + "\n")
    os.replace(temporary, path)


def load_pinned(text: str) -> dict[str, bytes]:
    """validator id -> public key from the file's text; ValueError if it is not one."""
    try:
        document = json.loads(text)
        keys = {str(k): bytes.fromhex(v) for k, v in document["validators"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a validator set file: {exc}") from None
    if not keys:
        raise ValueError("the validator set file names no validators")
    return keys
