"""`circuitlab finetune`, `export` and `merge`: train adapters, and take them out of circuitlab."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option, add_model_options, add_settings, build, name_flags

# TrainConfig's model and dtype come from the shared model options.
TRAIN_FLAGS = {"eval_limit": "--limit"}


def add_finetune(sub) -> None:
    from circuitlab.finetune import RunOptions, TrainConfig

    p = sub.add_parser("finetune", help="fine-tune with HeadMap, LoRA/DoRA or both (PEFT + the HF Trainer; "
                                        "torchrun / accelerate launch for several GPUs), then evaluate (resumable)")
    add_model_options(p)
    add_data_dir_option(p)
    names = [f for f in TrainConfig.__dataclass_fields__ if f not in ("model", "dtype")]
    add_settings(p, TrainConfig, names, flags=TRAIN_FLAGS)
    add_settings(p, RunOptions)
    name_flags(p, n_per_layer="--heads-per-layer")  # when a circuit is located first
    p.add_argument("--out", required=True, help="run directory, e.g. runs/NAME (rerun to resume)")


def run_finetune(args) -> None:
    from circuitlab.finetune import RunOptions, TrainConfig, load_plain, train_and_eval
    from circuitlab.finetune.config import check_run
    from circuitlab.finetune.run import check_run_dir, prepare
    from circuitlab.io import check_writable
    from circuitlab.processes import launched_main
    from circuitlab.models import ModelDims, model_config
    from circuitlab.models.config import ModelConfig

    where = build(ModelConfig, args)
    cfg = build(TrainConfig, args, model=where.model, dtype=where.dtype_name)
    options = build(RunOptions, args)
    check_run(cfg, options, where.where.device)
    out = check_writable(args.out, "dir")
    result = check_run_dir(out, cfg)
    if result is None:
        inputs = prepare(cfg, args.data_dir, ModelDims.of_config(model_config(where.model)))
        model = load_plain(where.model, where.device, where.dtype, device_map=where.device_map,
                           max_memory=where.max_memory)
        result = train_and_eval(model, cfg, out, args.data_dir, inputs=inputs, options=options)
    if not launched_main():
        return
    metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.eval.metrics.items())
    print(f"{result.method} on {cfg.task} ({result.protocol} protocol): trainable {result.trainable_params:,} "
          f"({result.trainable_share_pct:.3f}%), train {result.train.seconds:.0f}s, "
          f"{result.eval.split} ({result.eval.n_docs} docs): {metrics}")
    if result.circuit_lora:
        c = result.circuit_lora
        print(f"CircuitLoRA: critical layers {c['critical']}, ranks {c['ranks']}, {c['lora_params']:,} LoRA parameters")
    print(f"wrote {out}/result.json")


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a run's HeadMap adapter: circuit JSON, safetensors weights, config JSON")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--peft", action="store_true", help="also write it as a PEFT LoRA adapter on o_proj (MHA variant)")
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_export(args) -> None:
    from circuitlab.headmap.conversion import export
    from circuitlab.io import check_writable

    check_writable(args.out, "dir")
    for path in export(args.run, args.out, peft=args.peft, model_name=args.model):
        print(f"wrote {path}")


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold an MHA-variant adapter into o_proj and save a stock HF model")
    p.add_argument("adapter", metavar="RUN_OR_ADAPTER_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="base model (default: the one the adapter was trained on)")


def run_merge(args) -> None:
    from circuitlab.headmap.conversion import merge
    from circuitlab.io import check_writable

    check_writable(args.out, "dir")
    print(f"wrote {merge(args.adapter, args.out, model_name=args.model)}")


COMMANDS = {
    "finetune": (add_finetune, run_finetune),
    "export": (add_export, run_export),
    "merge": (add_merge, run_merge),
}
