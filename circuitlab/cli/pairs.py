"""`circuitlab pairs`: a task's clean/corrupted prompt pairs as the JSON Lines the edge attribution reads."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option


def add(sub) -> None:
    p = sub.add_parser("pairs", help="write a task's clean/corrupted prompt pairs as JSON Lines "
                                     '({"clean", "corrupted", "answer"} rows)')
    p.add_argument("--task", required=True, help="a task with corrupted prompts (the arithmetic tasks, e.g. add_sub)")
    p.add_argument("--split", default="test", help="split to write (default: test, the circuit rows)")
    p.add_argument("--seed", type=int, help="arithmetic tasks: draw the rows with this seed instead of the default")
    add_data_dir_option(p)
    p.add_argument("--out", required=True, help="the .jsonl file to write")


def run(args) -> None:
    import json

    from circuitlab.arithmetic import pairs
    from circuitlab.io import check_writable, write_text_atomic

    check_writable(args.out)
    rows = pairs(args.task, args.split, seed=args.seed, data_dir=args.data_dir)
    path = write_text_atomic(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} {args.task} {args.split} pairs to {path}")


COMMANDS = {"pairs": (add, run)}
