"""``python -m bench.publish`` (``make bench-publish``): a run's results become the committed ones.

``make bench`` and ``make bench-quick`` write to ``bench/results/local/`` (git-ignored), so a
run leaves the checkout clean. This copies ``local/<db>.json`` and ``.png`` to
``bench/results/``, the figures the README quotes, for each database that has results:

    python -m bench.publish                 # sqlite and postgres, whichever were run
    python -m bench.publish --db postgres
    python -m bench.publish --allow-quick   # a quick run too (short windows: indicative)

A quick run is refused unless ``--allow-quick``: committed figures come from full runs.
"""

import argparse
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parent / "results"
LOCAL = PUBLISHED / "local"
DATABASES = ("sqlite", "postgres")


class NotPublishable(Exception):
    """Nothing to publish, or results that should not be committed."""


def publish(
    local: Path, published: Path, databases: Iterable[str], allow_quick: bool = False
) -> list[Path]:
    """Copy each database's results from ``local`` to ``published``; return what was written.

    All are checked before any is copied. A plot missing beside its JSON removes the published
    plot, so figures and plot never come from different runs.
    """
    found = [db for db in databases if (local / f"{db}.json").exists()]
    if not found:
        raise NotPublishable(f"no results in {local}: run `make bench` first")
    for db in found:
        meta = json.loads((local / f"{db}.json").read_text()).get("meta", {})
        if meta.get("mode") != "full" and not allow_quick:
            raise NotPublishable(
                f"{local / f'{db}.json'} is from a {meta.get('mode')} run; "
                "publish a full run (`make bench`), or pass --allow-quick"
            )
    written = []
    published.mkdir(parents=True, exist_ok=True)
    for db in found:
        for suffix in (".json", ".png"):
            source, target = local / f"{db}{suffix}", published / f"{db}{suffix}"
            if source.exists():
                shutil.copyfile(source, target)
                written.append(target)
            else:
                target.unlink(missing_ok=True)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.split("\n")[0])
    p.add_argument("--db", choices=DATABASES, action="append", help="default: every database")
    p.add_argument("--allow-quick", action="store_true")
    args = p.parse_args(argv)
    try:
        written = publish(LOCAL, PUBLISHED, args.db or DATABASES, args.allow_quick)
    except NotPublishable as exc:
        raise SystemExit(f"bench.publish: {exc}") from None
    sys.stdout.write("".join(f"published {path}\n" for path in written))
    sys.stdout.write("review, then: git add bench/results && git commit\n")


if __name__ == "__main__":
    main()
