"""`selfdebug world --out FILE`: write the world's problems as a HumanEval-format JSONL.

Any stage reads the file with `selfdebug.problems.load_problems` (format detected from
the content); task ids say the split (``world/train/17``, ``world/test/3``). Extra keys
(family, combination, hidden constant, inputs) are for people and are ignored by loaders.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from selfdebug.world.generate import WorldConfig, generate_world


def public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(public(r)) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfdebug world", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all")
    defaults = WorldConfig()
    for f in fields(WorldConfig):
        if f.name == "families":
            parser.add_argument("--families", default=",".join(defaults.families))
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                                default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    cfg = WorldConfig(**{f.name: getattr(args, f.name) for f in fields(WorldConfig)
                         if f.name != "families"}, families=args.families.split(","))
    try:
        world = generate_world(cfg)
    except ValueError as e:
        parser.error(str(e))
    splits = ["train", "test"] if args.split == "all" else [args.split]
    records = [r for s in splits for r in world[s]]
    out = write_jsonl(records, args.out)
    counts = ", ".join(f"{len(world[s])} {s}" for s in splits)
    print(f"wrote {len(records)} problems ({counts}) to {out}")
    return 0
