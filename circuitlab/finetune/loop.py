"""The earlier training loop over a TransformerBridge: AdamW with a linear warm-up schedule, whole-batch
token-mean loss (however the batch is split for gradient accumulation), a checkpoint after every epoch.

`circuitlab finetune` now trains with the HF Trainer (`circuitlab.finetune.trainer`); this loop stays as the
reference that path is checked against (tests/finetune/test_trainer.py: the same loss trajectory to 1e-5)
and benchmarked against (benchmarks/finetune.py)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from circuitlab.finetune.adapters import Adapters
from circuitlab.finetune.checkpoint import load_checkpoint, save_checkpoint
from circuitlab.finetune.config import TrainConfig
from circuitlab.finetune.data import encode_docs, epoch_order, n_targets, summed_loss


def train(model, cfg: TrainConfig, adapters: Adapters, docs, ckpt_dir: Path, progress: bool = True,
          on_step=None) -> dict:
    """Train in place; resumes from `ckpt_dir`. Returns the training record of the result file."""
    from transformers import get_linear_schedule_with_warmup

    hf = model.hf_model
    seqs = encode_docs(model.tokenizer, docs, cfg.max_len)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(adapters.param_groups(cfg), weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
    named = adapters.named_trainable(hf)
    state = load_checkpoint(ckpt_dir, named, optimizer, scheduler)
    step = state["step"] if state else 0
    losses = list(state["loss_curve"]) if state else []
    seconds = state["seconds"] if state else 0.0
    micro = cfg.micro_batch_size or cfg.batch_size
    pad_id = model.tokenizer.pad_token_id
    with adapters.active(model), tqdm(total=total, initial=step, desc=f"{cfg.method} {cfg.task}", unit="step",
                                      disable=not progress) as bar:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            order = epoch_order(len(seqs), cfg.seed, epoch)
            batch = [seqs[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            start = time.perf_counter()
            denom = n_targets(batch)  # mean over the whole batch's tokens, however it is split
            loss_sum = 0.0
            for j in range(0, len(batch), micro):
                loss = summed_loss(hf, batch[j : j + micro], pad_id, model.device) / denom
                loss.backward()
                loss_sum += loss.item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - start
            step += 1
            losses.append(loss_sum)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.4f}", epoch=epoch + 1)
            if step % steps_per_epoch == 0 or step == total:
                save_checkpoint(ckpt_dir, step, named, optimizer, scheduler,
                                {"step": step, "loss_curve": losses, "seconds": seconds})
            if on_step is not None:
                on_step(step)
    return {"steps": total, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "loss_curve": losses,
            "seconds": seconds, "lr": {"headmap": cfg.headmap_lr if adapters.headmap else None,
                                       "peft": cfg.peft_lr if adapters.peft_params else None}}
