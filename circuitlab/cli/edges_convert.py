"""`circuitlab edges-convert`: an edge circuit to or from EAP-IG / MIB graph JSON, or to a head circuit.

The input's kind is read from its content (a circuitlab edge circuit, or MIB's {cfg, nodes, edges}), so one
`--to` says what to write: `mib` (MIB graph JSON), `edges` (a circuitlab edge circuit: OUT.json and
OUT.safetensors) or `heads` (a head circuit JSON for `finetune --circuit`). Everything is read and
checked before anything is written.
"""

from __future__ import annotations

TARGETS = ("mib", "edges", "heads")


def add(sub) -> None:
    p = sub.add_parser("edges-convert", help="an edge circuit to MIB graph JSON or a head circuit for HeadMap; "
                                             "a MIB graph JSON to a circuitlab edge circuit")
    p.add_argument("input", metavar="IN.json", help="a circuitlab edge circuit or an EAP-IG / MIB graph JSON")
    p.add_argument("--to", required=True, choices=TARGETS,
                   help="mib: EAP-IG / MIB graph JSON; edges: circuitlab edge circuit (+ .safetensors beside); "
                        "heads: head circuit JSON for finetune --circuit")
    p.add_argument("--model-of", metavar="FILE",
                   help="a MIB file not written by circuitlab names no model: take it from this circuit file "
                        "(an edge or head circuit of that model)")
    p.add_argument("--out", required=True, help="the JSON file to write")


def run(args) -> None:
    from circuitlab.edges.mib import head_circuit, load_any, model_of, save_mib
    from circuitlab.io import check_writable

    out = check_writable(args.out)
    model = model_of(args.model_of) if args.model_of else None
    circuit = load_any(args.input, model)
    if args.to == "mib":
        path = save_mib(circuit, out)
    elif args.to == "edges":
        path = circuit.save(out)
    else:
        path = head_circuit(circuit).save(out)
    what = {"mib": "MIB graph JSON", "edges": "edge circuit", "heads": "head circuit"}[args.to]
    print(f"wrote {path} ({what}: {circuit.n_edges} edges kept, {len(circuit.nodes())} nodes)")


COMMANDS = {"edges-convert": (add, run)}
