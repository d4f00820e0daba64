"""Print the README's options table from StyleConfig, the single source of truth.

python scripts/options_table.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxnst.config import StyleConfig  # noqa: E402


def main() -> int:
    print("| option | TOML key | default | meaning |")
    print("|---|---|---|---|")
    for f in dataclasses.fields(StyleConfig):
        default = f.default
        if isinstance(default, tuple):
            shown = " ".join(map(str, default)) if default else "(empty)"
        elif default == "":
            shown = "(empty)"
        else:
            shown = str(default)
        flag = "--" + f.name.replace("_", "-")
        print(f"| `{flag}` | `{f.name}` | `{shown}` | {f.metadata.get('help', '')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
