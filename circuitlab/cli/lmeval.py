"""`circuitlab lm-eval-tasks`: lm-evaluation-harness task files that score as `circuitlab eval`."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option, add_settings, build


def add(sub) -> None:
    from circuitlab.lmeval import LmEvalTasksConfig

    p = sub.add_parser("lm-eval-tasks", help="write lm-evaluation-harness YAML tasks made from circuitlab's tasks")
    add_data_dir_option(p)
    add_settings(p, LmEvalTasksConfig)
    p.add_argument("--out", required=True, help="directory for the YAML files and their utils.py")


def run(args) -> None:
    from circuitlab.lmeval import PREFIX, TAG, LmEvalTasksConfig, write_task_files

    cfg = build(LmEvalTasksConfig, args)
    written = write_task_files(args.out, cfg, args.data_dir)
    out = written[0].parent
    print(f"wrote {len(written)} lm-eval tasks ({', '.join(p.stem for p in written)}) and utils.py to {out}")
    print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {out} "
          f"--tasks {TAG}  (or e.g. --tasks {PREFIX}{cfg.tasks[0]})")


COMMANDS = {"lm-eval-tasks": (add, run)}
