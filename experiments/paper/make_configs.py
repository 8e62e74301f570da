"""Regenerate conf/experiment/<paper row>.yaml from longrecipe.experiments.paper (Table 1, Table 2, Fig. 2).

Run: .venv/bin/python experiments/paper/make_configs.py [--check]
--check exits 1 when a committed YAML differs from what this would write (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longrecipe.experiments.paper import paper_experiments, render_yaml
from longrecipe.utils.io import write_text_atomic
from longrecipe.utils.logging import get_logger

log = get_logger("make_configs")
CONF = Path(__file__).resolve().parents[2] / "conf" / "experiment"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args()
    stale = []
    for name, exp in paper_experiments().items():
        path, text = CONF / f"{name}.yaml", render_yaml(exp)
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            write_text_atomic(path, text)
    log.info("%s %d of %d paper configs", "stale:" if args.check else "wrote", len(stale), len(paper_experiments()))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
