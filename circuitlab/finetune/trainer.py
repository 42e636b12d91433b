"""Training with the Hugging Face `Trainer`: what circuitlab decides, and nothing Trainer already does.

Trainer runs AdamW, the linear warm-up schedule, gradient accumulation, clipping, mixed precision, gradient
checkpointing, evaluation, checkpoints (PEFT adapter directories) and resuming, on one device or under
`torchrun` / `accelerate launch`. circuitlab sets three things:

- the data order: every epoch reads the documents in `epoch_order(n, seed, epoch)` (`_get_train_sampler`),
  the order circuitlab has always used, so a run is reproducible and a resumed run sees the same batches;
- the optimizer's groups: one learning rate for HeadMap and one for LoRA/DoRA (`create_optimizer`);
- the loss: the model's own labels loss. With gradient accumulation Trainer counts the batch's predicted
  tokens over all its micro-batches (and processes) and passes that count as `num_items_in_batch` to the
  model, whose loss is then sum / count: the token mean over the whole batch, however it is split.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from pathlib import Path

import torch

from circuitlab.core.progress import progress_bar
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from circuitlab.core.errors import CircuitlabError, ConfigError
from circuitlab.core.io import fault_point, safetensors_problem
from circuitlab.finetune.config import RunOptions, TrainConfig, check_run
from circuitlab.finetune.data import EpochOrderSampler, PadCollator, TokenDataset
from circuitlab.finetune.wrap import param_groups
from circuitlab.core.processes import launched_world


class CircuitlabTrainer(Trainer):
    """`Trainer` with circuitlab's data order and per-part learning rates."""

    def __init__(self, *args, cfg: TrainConfig, **kwargs):
        self.cfg = cfg
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        return EpochOrderSampler(len(self.train_dataset if train_dataset is None else train_dataset), self.cfg.seed)

    # Write boundaries inside a checkpoint (`circuitlab.core.io.fault_point`). Trainer writes trainer_state.json
    # last, so a crash at any of them leaves a checkpoint without it, which `last_complete_checkpoint` skips.
    def save_model(self, output_dir=None, _internal_call=False):
        super().save_model(output_dir, _internal_call)
        if _internal_call:
            fault_point(f"checkpoint adapter written: {Path(output_dir).name}")

    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        fault_point(f"checkpoint optimizer written: {Path(output_dir).name}")

    def _save_rng_state(self, output_dir):
        super()._save_rng_state(output_dir)
        fault_point(f"checkpoint RNG state written, trainer state not: {Path(output_dir).name}")

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        fault_point(f"checkpoint complete, the one before removed: step {self.state.global_step}")

    def create_optimizer(self, model=None):
        if self.optimizer is None:  # torch's AdamW (betas 0.9/0.999, eps 1e-8), decay on every trained tensor
            self.optimizer = torch.optim.AdamW(param_groups(model or self.model, self.cfg),
                                               weight_decay=self.args.weight_decay)
        return self.optimizer


class StepHooks(TrainerCallback):
    """A progress bar with the loss, and `on_step(step)` after every optimizer step (tests interrupt there)."""

    def __init__(self, desc: str, progress: bool, on_step=None):
        self.desc, self.progress, self.on_step, self.bar = desc, progress, on_step, None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress and state.is_world_process_zero:
            self.bar = progress_bar(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=f"{state.epoch:.2f}")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        if self.on_step is not None:
            self.on_step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class NoInputGradients(TrainerCallback):
    """transformers makes the embeddings' output require a gradient whenever gradient checkpointing is on
    (reentrant checkpoints need it), so every backward pass runs down to the embeddings, even when only the
    last layers train: for a circuit in the last layer of a 7B model, 31 blocks of backward for nothing.
    circuitlab's checkpoints are non-reentrant, which need no such gradient: the hook is removed once
    Trainer has set it. The trained parameters' gradients are the same."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.disable_input_require_grads()


def training_arguments(cfg: TrainConfig, opts: RunOptions, out: Path, n_train: int, device: torch.device,
                       world: int = 1) -> TrainingArguments:
    """TrainingArguments for `cfg`: `batch_size` documents per optimizer step as `micro_batch_size` per
    device and process times the accumulation steps; the protocol's held-out evaluation, clipping and
    checkpoints."""
    micro = cfg.micro_batch_size or cfg.batch_size
    if cfg.batch_size % (micro * world):
        raise ConfigError("batch_size", f"{cfg.batch_size} is not a multiple of micro_batch_size {micro} "
                                         f"x {world} processes")
    check_run(cfg, opts, device)
    evaluate = cfg.eval_steps
    save_steps = opts.save_every or evaluate or math.ceil(n_train / cfg.batch_size)  # default: once per epoch
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=micro, per_device_eval_batch_size=micro,
        gradient_accumulation_steps=cfg.batch_size // (micro * world), num_train_epochs=cfg.epochs,
        learning_rate=cfg.headmap_lr if cfg.variant else cfg.peft_lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear", warmup_steps=cfg.warmup_steps, max_grad_norm=cfg.rules.max_grad_norm or 0.0,
        seed=cfg.seed, bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16",
        use_cpu=device.type == "cpu", gradient_checkpointing=opts.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if opts.gradient_checkpointing else None,
        logging_strategy="steps", logging_steps=1, save_strategy="steps", save_steps=save_steps,
        save_total_limit=None if opts.save_every else 1,
        eval_strategy="steps" if evaluate else "no", eval_steps=evaluate, load_best_model_at_end=bool(evaluate),
        metric_for_best_model="eval_loss" if evaluate else None, greater_is_better=False if evaluate else None,
        label_names=["labels"], remove_unused_columns=False, prediction_loss_only=True, report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, ddp_find_unused_parameters=False,
    )


def train(model, wrapped, cfg: TrainConfig, train_seqs: list[list[int]], held_seqs: list[list[int]],
          ckpt_dir: Path, opts: RunOptions | None = None, progress: bool = True, on_step=None,
          callbacks: list | None = None) -> dict:
    """Train `wrapped.peft_model` in place, resuming from the last checkpoint in `ckpt_dir`; with held-out
    data the best checkpoint's weights are loaded at the end. Returns the training record of the result file.
    `callbacks`: further `TrainerCallback`s (tests observe the gradients with one)."""
    opts = opts or RunOptions()
    args = training_arguments(cfg, opts, ckpt_dir, len(train_seqs), model.device, launched_world())
    trainer = CircuitlabTrainer(
        model=wrapped.peft_model, args=args, cfg=cfg, train_dataset=TokenDataset(train_seqs),
        eval_dataset=TokenDataset(held_seqs) if args.eval_strategy != "no" else None,
        data_collator=PadCollator(model.tokenizer.pad_token_id),
        callbacks=[StepHooks(f"{cfg.method} {cfg.task}", progress, on_step),
                   *([NoInputGradients()] if opts.gradient_checkpointing else []), *(callbacks or [])],
    )
    for quiet in (PrinterCallback, ProgressCallback):  # the bar above shows the loss; no dict per step
        trainer.remove_callback(quiet)
    last = last_complete_checkpoint(ckpt_dir, remove=args.should_save)
    try:
        output = trainer.train(resume_from_checkpoint=last)
    except pickle.UnpicklingError as e:  # Trainer reads its state files with weights_only=True: nothing ran
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CircuitlabError(f"checkpoint {last}: refused to unpickle one of its files (only tensors are loaded "
                              f"from pickles): {first[:200]}; delete it to resume from the one before") from None
    wrapped.peft_model.eval()
    history = trainer.state.log_history
    best = trainer.state.best_model_checkpoint  # None when training ended before its first evaluation:
    # then the final weights stand, as in the official code
    return {
        "steps": trainer.state.global_step, "epochs": cfg.epochs,
        "steps_per_epoch": math.ceil(len(train_seqs) / cfg.batch_size),
        "loss_curve": [h["loss"] for h in history if "loss" in h],
        "eval_curve": [{"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "best_step": int(Path(best).name.rsplit("-", 1)[-1]) if best else None,
        "n_held_out": len(held_seqs) if args.eval_strategy != "no" else 0,
        "seconds": output.metrics.get("train_runtime", 0.0),
        "lr": {"headmap": cfg.headmap_lr if cfg.variant else None, "peft": cfg.peft_lr if cfg.tuner else None},
    }


CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_problem(directory: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from (None: it can). Trainer writes the adapter, the optimizer
    and scheduler, the RNG state and, last, trainer_state.json, none of them atomically: a run killed while it
    saves leaves a directory that lacks one or holds half of one."""
    try:
        state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no complete trainer_state.json"
    if not isinstance(state, dict) or "global_step" not in state:
        return "no complete trainer_state.json"
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (directory / name).is_file() or (directory / name).stat().st_size == 0:
            return f"no {name}"
    return safetensors_problem(directory / "adapter_model.safetensors")


def last_complete_checkpoint(ckpt_dir: Path, remove: bool = True) -> str | None:
    """The newest checkpoint a run can resume from. Incomplete ones (a kill while Trainer wrote them, or while it
    removed an older one) are skipped, and removed by the process that writes (`remove`), so that Trainer, which
    would pick the newest directory whatever it holds, never sees them."""
    found = []
    for d in sorted(ckpt_dir.iterdir()) if ckpt_dir.is_dir() else []:
        m = CHECKPOINT.fullmatch(d.name)
        if not (m and d.is_dir()):
            continue
        if checkpoint_problem(d) is None:
            found.append((int(m.group(1)), d))
        elif remove:
            shutil.rmtree(d, ignore_errors=True)
    return str(max(found)[1]) if found else None
