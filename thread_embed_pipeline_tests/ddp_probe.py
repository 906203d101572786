"""Trainer callbacks the DDP tests hand to the launched training program (``--callback``).

``RecordBatches`` writes, per rank, the anchors of every batch that rank's data loader handed to the
model and the rank's torch seed (``$DDP_PROBE_DIR/rank<r>.jsonl``, one line per step); ``CrashAtStep3`` interrupts the run
after optimizer step 3 on every rank, like a killed job.
"""

import json
import os
from pathlib import Path

from transformers import TrainerCallback


class RecordBatches(TrainerCallback):
    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else 0
        out = Path(os.environ["DDP_PROBE_DIR"]) / f"rank{rank}.jsonl"
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)  # accelerate's DataLoaderShard wraps one
        collate = getattr(loader.collate_fn, "recorded", loader.collate_fn)

        def recording(rows):
            import torch

            with out.open("a") as f:
                f.write(json.dumps({"seed": torch.initial_seed(), "anchors": [row["anchor"] for row in rows]}) + "\n")
            return collate(rows)

        recording.recorded = collate
        loader.collate_fn = recording


class CrashAtStep3(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("simulated interruption after step 3")
