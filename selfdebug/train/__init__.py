"""SFT on the self-debugging dataset (`selfdebug sft`), on Ray Train + DeepSpeed.

Modules, one job each:
- ``config``: `SFTConfig`, every knob;
- ``fixture_data``: a small synthetic debug dataset from MBPP (CPU default and tests);
- ``examples``: debug records / samples → chat examples (refine, explain_refine, generate),
  mixing, the held-out split, tokenization with only the final answer labelled;
- ``packing``: several examples per row with restarting position ids; collation;
- ``data``: Ray Data preprocessing and per-worker shards (or the same locally, no Ray);
- ``engine``: the training engine shared with RL (process group, model + LoRA, value
  model, DeepSpeed config and engines, per-token log-probabilities);
- ``schedule``: optimizer steps from the example count (batch in examples, warm-up check);
- ``loop``: `train_loop(config)`, the per-worker training loop;
- ``checkpoint``: resumable checkpoints through ``ray.train.report`` or a local dir;
- ``export``: the final Hugging Face model (LoRA merged);
- ``metrics`` / ``report``: TensorBoard + JSONL, loss curve, Markdown + JSON report;
- ``cli``: `selfdebug sft --config FILE [--dry-run] [key=value ...]`.
"""
