"""Schema-1 circuit files (circuitlab before schema 2) as schema-2 dicts.

Schema 1 kept the other selections' curves in `curves` (by name) and their heads, the all-documents
curve, the excluded circuit and the run's settings in a free-form `extra`. They map onto the typed
fields of schema 2 one to one; nothing is recomputed.
"""

from __future__ import annotations

# Which score table's top n per layer a schema-1 strategy's heads are (`single` is greedy's table).
SELECTED_BY = {"layer-conditioned": "conditioned", "greedy": "single", "single": "single"}
RUN_FIELDS = ("evaluator", "layers", "max_batch_tokens", "prescreen", "resumed_steps", "engine_flops", "reproduce")


def upgrade(d: dict) -> dict:
    extra, curves = dict(d.get("extra") or {}), dict(d.get("curves") or {})
    out = {k: v for k, v in d.items() if k not in ("extra", "curves", "head_list")}
    out["selected_by"] = SELECTED_BY.get(d["strategy"])
    selections = []
    if "greedy" in curves and "greedy_heads" in extra:  # written by `circuitlab reproduce`
        selections.append({"strategy": "greedy", "heads": extra["greedy_heads"], "loss_curve": curves["greedy"]})
    for seed, curve in (extra.get("random_seed_curves") or {}).items():
        heads = (extra.get("random_selections") or {}).get(seed, {})
        selections.append({"strategy": "random", "seed": int(seed), "heads": heads, "loss_curve": curve})
    own = str(d.get("seed"))
    for seed, heads in (extra.get("selections") or {}).items():  # `locate --seeds`: the first is the circuit
        if seed != own:
            selections.append({"strategy": d["strategy"], "seed": int(seed), "heads": heads,
                               "loss_curve": curves[f"seed {seed}"]})
    out["selections"] = selections
    out["all_docs"] = extra.get("all_docs")
    if extra.get("excluded_circuit"):
        out["excluded"] = extra["excluded_circuit"]
    if "evaluator" in extra or "reproduce" in extra:
        out["run"] = {k: extra[k] for k in RUN_FIELDS if k in extra}
        out["run"]["seeds"] = extra.get("seeds", [])
    return out
