"""Adds the SDK's two leaf packages and the license to condpay-client's sdist and wheel.

``wallets`` and ``contracts_dsl`` live at the repository's top level (the server uses them too);
the client ships them beside ``condpay``. Built from a checkout they are read from ``..``; built
from the sdist (``python -m build`` makes the wheel from it) they are already inside the project.
An editable install (``pip install -e ./proto``) copies nothing: ``dev-mode-dirs`` in
pyproject.toml puts this folder and the repository's top level on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("wallets", "contracts_dsl")


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        root = Path(self.root)
        for name in PACKAGES:
            build_data["force_include"][str(_located(root, name))] = name
        license_file = _located(root, "LICENSE")
        if self.target_name == "sdist":
            build_data["force_include"][str(license_file)] = "LICENSE"
        elif license_file.parent != root:
            # From a checkout. From the sdist, hatchling adds LICENSE itself (license-files'
            # default globs) to .dist-info/licenses.
            dist_info = f"{self.metadata.core.name.replace('-', '_')}-{self.metadata.version}"
            build_data["force_include"][str(license_file)] = (
                f"{dist_info}.dist-info/licenses/LICENSE"
            )


def _located(root: Path, name: str) -> Path:
    """``name`` inside the project (an unpacked sdist), else beside it (the checkout)."""
    inside = root / name
    return inside if inside.exists() else root.parent / name
