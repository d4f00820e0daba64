"""The README stays true to the code: its options table is the one StyleConfig generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_options_table_matches_the_config():
    table = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "options_table.py")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table.count("\n") > 30
    assert table in readme, "README's options table is stale: run scripts/options_table.py"


def test_readme_names_every_shipped_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = readme + (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "scripts").glob("*.py")) if p.name not in docs]
    assert not missing, f"scripts not mentioned in README.md or docs/benchmarks.md: {missing}"
