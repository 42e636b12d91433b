"""`circuitlab official-import` and `official-export`: the official code's circuit file (`info.pt`).

Import needs `--model` because an info.pt names neither its model nor its data: the model's config
gives the dimensions the heads are checked against (no weights are loaded, and the circuit records
no weight fingerprint). Export writes what the official code's fine-tuning scripts read.
"""

from __future__ import annotations

from circuitlab.cli.options import add_settings, build


def add_import(sub) -> None:
    p = sub.add_parser("official-import", help="convert the official code's info.pt into a circuit JSON")
    p.add_argument("info", help="the official code's info.pt (read with torch.load(weights_only=True) only)")
    from circuitlab.models.config import ModelConfig

    add_settings(p, ModelConfig, ["model"])  # its config only: no weights, so no device or dtype
    p.add_argument("--task", help="the task it was located on, recorded in the circuit (default: official)")
    p.add_argument("--out", required=True, help="circuit JSON to write")


def run_import(args) -> None:
    from circuitlab.circuit import TaskInfo
    from circuitlab.io import check_writable
    from circuitlab.models.config import ModelConfig
    from circuitlab.official import circuit_from_info, config_model_info

    where = build(ModelConfig, args)
    out = check_writable(args.out)
    circuit = circuit_from_info(args.info, config_model_info(where.model), TaskInfo(args.task or "official", "train"))
    heads = " ".join(f"{layer}:{','.join(map(str, hs))}" for layer, hs in sorted(circuit.heads.items()))
    print(f"{args.info}: {len(circuit.heads)} layers, up to {circuit.n_per_layer} heads each: {heads}")
    print(f"wrote {circuit.save(out)}")


def add_export(sub) -> None:
    p = sub.add_parser("official-export", help="write a circuit JSON as the official code's info.pt")
    p.add_argument("circuit", help="circuit JSON")
    p.add_argument("--out", required=True, help="info.pt to write")


def run_export(args) -> None:
    from circuitlab.circuit import Circuit
    from circuitlab.io import check_writable
    from circuitlab.official import write_info

    circuit = Circuit.load(args.circuit)
    out = check_writable(args.out)
    print(f"wrote {write_info(circuit, out)} ({len(circuit.heads)} layers)")


COMMANDS = {"official-import": (add_import, run_import), "official-export": (add_export, run_export)}
