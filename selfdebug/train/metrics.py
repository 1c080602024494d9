"""Per-step metrics to TensorBoard and a JSONL file (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
ATTEMPTS_FILE = "attempts.jsonl"  # one line per start of the training loop (restarts count)


def read_metrics(log_dir: str | Path) -> list[dict]:
    """Records of ``metrics.jsonl``; for a step logged twice (a resumed run), the last wins.

    The file is append-only: a crash while appending leaves a torn last line, which is
    skipped (its step is redone on resume). A bad line before the last is not a crash's
    trace but a damaged file: an error naming the file and line.
    """

    by_key = {(r["step"], r.get("split", "train")): r
              for r in read_jsonl(Path(log_dir) / METRICS_FILE, "step")}
    return sorted(by_key.values(), key=lambda r: (r["step"], r.get("split", "train")))


def read_jsonl(path: Path, key: str) -> list[dict]:
    """Records of an append-only JSONL log, each with ``key``; a torn last line (a crash
    mid-append) is skipped, a bad line elsewhere is an error naming the file and line."""
    from selfdebug.errors import InputError

    if not path.exists():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
            rec[key]  # noqa: B018  a record of this log has its key
        except (ValueError, KeyError, TypeError) as e:
            if i == last:  # torn by a crash mid-append
                continue
            raise InputError(f"{path}, line {i + 1}: not a record of this log ({e})",
                             "delete that line (metrics are logged again from the resumed "
                             "step on)") from None
        out.append(rec)
    return out


def log_attempt(log_dir: Path, resumed_at: int) -> None:
    """Note one start of the training loop (fresh, or resumed after a failure or a re-run)."""
    import time

    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / ATTEMPTS_FILE).open("a") as fh:
        fh.write(json.dumps({"resumed_at": resumed_at, "time": time.time()}) + "\n")


def read_attempts(log_dir: Path) -> list[dict]:
    return read_jsonl(Path(log_dir) / ATTEMPTS_FILE, "resumed_at")


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
