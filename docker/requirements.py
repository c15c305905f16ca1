"""Print a requirements list from pyproject.toml, so the image installs dependencies before the source.

python requirements.py                       # [project].dependencies
python requirements.py --only-extra trainer  # one optional-dependency group
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--only-extra", help="print this optional-dependency group instead of the base set")
    args = parser.parse_args()
    project = tomllib.loads(args.pyproject.read_text())["project"]
    if args.only_extra:
        extras = project.get("optional-dependencies", {})
        if args.only_extra not in extras:
            parser.error(f"no optional-dependency group {args.only_extra!r}; have {sorted(extras)}")
        requirements = extras[args.only_extra]
    else:
        requirements = project["dependencies"]
    # A self-reference such as "pkg[trainer]" is not installable before the source is there.
    own_name = project["name"]
    sys.stdout.write("".join(f"{req}\n" for req in requirements if not req.startswith(own_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
