"""Evaluation (LeDex §4): pass@k for Init / Refine / Expl+Refine over refinement rounds.

Modules, one job each: config (EvalConfig), tasks (benchmarks, reply → program rule),
oracle (test-double engines), stages (one Ray Data stage: generate → extract → judge),
store (Parquet shards + manifest, resumable), metrics (pass@k, refinement rates),
report (results.json/.md), plots (PNG), pipeline (orchestration, recompute), cli.
Importing this package pulls in neither Ray nor vLLM.
"""
