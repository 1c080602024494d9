"""Per-step metrics to TensorBoard and a JSONL file (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(log_dir: str | Path) -> list[dict]:
    """Records of ``metrics.jsonl``; for a step logged twice (a resumed run), the last wins.

    The file is append-only: a crash while appending leaves a torn last line, which is
    skipped (its step is redone on resume). A bad line before the last is not a crash's
    trace but a damaged file: an error naming the file and line.
    """
    from selfdebug.errors import InputError

    path = Path(log_dir) / METRICS_FILE
    if not path.exists():
        return []
    by_key: dict[tuple, dict] = {}
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
            key = (rec["step"], rec.get("split", "train"))
        except (ValueError, KeyError, TypeError) as e:
            if i == last:  # torn by a crash mid-append
                continue
            raise InputError(f"{path}, line {i + 1}: not a metrics record ({e})",
                             "delete that line (or the file: metrics are logged again from "
                             "the resumed step on)") from None
        by_key[key] = rec
    return sorted(by_key.values(), key=lambda r: (r["step"], r.get("split", "train")))


class MetricsLog:
    """Appends ``{"step", "split", ...}`` records; on resume drops those after ``resume_step``."""

    def __init__(self, log_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        from selfdebug.dataset import atomic_write_bytes

        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / METRICS_FILE
        # A killed run may have logged steps past its last checkpoint: they are redone now.
        kept = [r for r in read_metrics(log_dir) if r["step"] <= resume_step] if resume_step else []
        # (replaced whole: a crash now leaves the old file, never a half-written one)
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.tb = SummaryWriter(str(log_dir / "tensorboard"), purge_step=resume_step or None)

    def log(self, step: int, split: str, values: dict) -> None:
        # one write() per record: a crash tears at most the last line (read_metrics skips it)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        for k, v in values.items():
            if isinstance(v, int | float):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
