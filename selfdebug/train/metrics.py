"""Per-step metrics to TensorBoard and a JSONL file (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(log_dir: str | Path) -> list[dict]:
    """Records of ``metrics.jsonl``; for a step logged twice (a resumed run), the last wins."""
    path = Path(log_dir) / METRICS_FILE
    if not path.exists():
        return []
    by_key: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_key[(rec["step"], rec.get("split", "train"))] = rec
    return sorted(by_key.values(), key=lambda r: (r["step"], r.get("split", "train")))


class MetricsLog:
    """Appends ``{"step", "split", ...}`` records; on resume drops those after ``resume_step``."""

    def __init__(self, log_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / METRICS_FILE
        # A killed run may have logged steps past its last checkpoint: they are redone now.
        kept = [r for r in read_metrics(log_dir) if r["step"] <= resume_step] if resume_step else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.tb = SummaryWriter(str(log_dir / "tensorboard"), purge_step=resume_step or None)

    def log(self, step: int, split: str, values: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        for k, v in values.items():
            if isinstance(v, int | float):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
