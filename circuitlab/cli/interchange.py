"""The official code's circuit file (`official-import`, `official-export`) and lm-evaluation-harness task files
(`lm-eval-tasks`): circuitlab's artefacts where other tools read them."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option, add_settings, build
from circuitlab.evaluate.lmeval import LmEvalTasksConfig
from circuitlab.models.config import ModelConfig


def add_import(sub) -> None:
    p = sub.add_parser("official-import", help="convert the official code's info.pt into a circuit JSON")
    p.add_argument("info", help="the official code's info.pt (read with torch.load(weights_only=True) only)")
    add_settings(p, ModelConfig, ["model"])  # its config only: no weights, so no device or dtype
    p.add_argument("--task", help="the task it was located on, recorded in the circuit (default: official)")
    p.add_argument("--out", required=True, help="circuit JSON to write")


def run_import(args) -> None:
    from circuitlab.circuits.official import import_info

    circuit = import_info(args.info, build(ModelConfig, args).model, args.out, args.task)
    heads = " ".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in sorted(circuit.heads.items()))
    print(f"{args.info}: {len(circuit.heads)} layers, up to {circuit.n_per_layer} heads each: {heads}")
    print(f"wrote {args.out}")


def add_export(sub) -> None:
    p = sub.add_parser("official-export", help="write a circuit JSON as the official code's info.pt")
    p.add_argument("circuit", help="circuit JSON")
    p.add_argument("--out", required=True, help="info.pt to write")


def run_export(args) -> None:
    from circuitlab.circuits.official import export_info

    print(f"wrote {args.out} ({len(export_info(args.circuit, args.out).heads)} layers)")


def add_lmeval(sub) -> None:
    p = sub.add_parser("lm-eval-tasks", help="write lm-evaluation-harness YAML tasks made from circuitlab's tasks")
    add_data_dir_option(p)
    add_settings(p, LmEvalTasksConfig)
    p.add_argument("--out", required=True, help="directory for the YAML files and their utils.py")


def run_lmeval(args) -> None:
    from circuitlab.evaluate.lmeval import PREFIX, TAG, write_task_files

    cfg = build(LmEvalTasksConfig, args)
    written = write_task_files(args.out, cfg, args.data_dir)
    out = written[0].parent
    print(f"wrote {len(written)} lm-eval tasks ({', '.join(p.stem for p in written)}) and utils.py to {out}")
    print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {out} "
          f"--tasks {TAG}  (or e.g. --tasks {PREFIX}{cfg.tasks[0]})")


def add_lm_eval(sub) -> None:
    p = sub.add_parser("lm-eval", help="lm-evaluation-harness's own command line, with HeadMap registered so that "
                                       "`--model_args pretrained=BASE,peft=ADAPTER` loads a HeadMap adapter",
                       prefix_chars="\0")  # every argument is lm_eval's
    p.add_argument("argv", nargs="*", metavar="LM_EVAL_ARGS", help="the arguments of `lm_eval`, as they are")


def run_lm_eval(args) -> None:
    from circuitlab.evaluate.lmeval import run_lm_eval

    run_lm_eval(args.argv)


def add_export_model(sub) -> None:
    p = sub.add_parser("export-model", help="a model as a plain Hugging Face directory (safetensors, tokenizer, config) "
                                            "that AutoModelForCausalLM.from_pretrained loads anywhere")
    p.add_argument("model", metavar="MODEL", help="alias, hub id or local directory")
    p.add_argument("--out", required=True, help="the directory to write (must not exist)")


def run_export_model(args) -> None:
    from circuitlab.models.export import export_model

    print(f"wrote {export_model(args.model, args.out)}")


COMMANDS = {"official-import": (add_import, run_import), "official-export": (add_export, run_export),
            "lm-eval-tasks": (add_lmeval, run_lmeval), "lm-eval": (add_lm_eval, run_lm_eval),
            "export-model": (add_export_model, run_export_model)}
