"""`circuitlab finetune`, `export` and `merge`: train adapters, and take them out of circuitlab."""

from __future__ import annotations

from circuitlab.cli.options import (add_data_dir_option, add_model_options, add_progress_option, add_settings, build,
                                    name_flags)
from circuitlab.core.processes import launched_main
from circuitlab.finetune.config import RunOptions, TrainConfig
from circuitlab.models.config import ModelConfig

TRAIN_FLAGS = {"eval_limit": "--limit"}  # TrainConfig's model and dtype come from the shared model options


def add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune with HeadMap, LoRA/DoRA or both (PEFT + the HF Trainer; "
                                        "torchrun / accelerate launch for several GPUs), then evaluate (resumable)")
    add_model_options(p)
    add_data_dir_option(p)
    add_settings(p, TrainConfig, [f for f in TrainConfig.__dataclass_fields__ if f not in ("model", "dtype")],
                 flags=TRAIN_FLAGS)
    add_settings(p, RunOptions)
    name_flags(p, n_per_layer="--heads-per-layer")  # when a circuit is located first
    add_progress_option(p)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (rerun to resume)")


def run_finetune(args) -> None:
    from circuitlab.finetune.job import finetune

    where = build(ModelConfig, args)
    cfg = build(TrainConfig, args, model=where.model, dtype=where.dtype_name)
    result = finetune(where, cfg, args.out, options=build(RunOptions, args), data_dir=args.data_dir,
                      progress=not args.no_progress)
    if launched_main():
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.eval.metrics.items())
        print(f"{result.method} on {cfg.task} ({result.protocol} protocol): trainable {result.trainable_params:,} "
              f"({result.trainable_share_pct:.3f}%), train {result.train.seconds:.0f}s, "
              f"{result.eval.split} ({result.eval.n_docs} docs): {metrics}")
        if result.circuit_lora:
            c = result.circuit_lora
            print(f"CircuitLoRA: critical layers {c['critical']}, ranks {c['ranks']}, {c['lora_params']:,} LoRA "
                  "parameters")
        print(f"wrote {args.out}/result.json")


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a run's adapter in PEFT's format and its circuit JSON")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--lora", "--peft", action="store_true", dest="lora",
                   help="also a stock PEFT LoRA, in OUT/lora (HeadMap MHA: its map on o_proj)")
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_export(args) -> None:
    from circuitlab.finetune.portable import export_run

    for path in export_run(args.run, args.out, lora=args.lora, model_name=args.model):
        print(f"wrote {path}")


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a run's adapter (HeadMap MHA, LoRA, DoRA, CircuitLoRA) into the "
                                          "model and save a stock HF model")
    p.add_argument("adapter", metavar="RUN_OR_ADAPTER_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_merge(args) -> None:
    from circuitlab.finetune.portable import merge_run

    print(f"wrote {merge_run(args.adapter, args.out, model_name=args.model)}")


COMMANDS = {
    "finetune": (add_finetune, run_finetune),
    "export": (add_export, run_export),
    "merge": (add_merge, run_merge),
}
