"""circuitlab: locate knowledge circuits in language models and enhance them with HeadMap.

Every job is one call, and nothing heavy is imported before one is used:

    import circuitlab as cl
    circuit = cl.locate_task("smollm2-135m", "capitals", sampling=cl.SampleConfig(n=16))
    edges = cl.edges_task("smollm2-135m", "add_sub", max_pairs=8, out="edges/add_sub.json")
    result = finetune("smollm2-135m", cl.TrainConfig(task="sst2", method="headmap-mha"), "runs/x")  # circuitlab.finetune
    cl.evaluate_task("smollm2-135m", "arc_easy", cl.EvalConfig(limit=200))
    cl.reproduce("smollm2-135m", "sst2,boolq", "../shared/data", "figures/x")
    cl.track("runs/x", "runs/x/track")
    cl.held_out(["figures/x/circuits/sst2.json"], "figures/x/held_out", data_dir="../shared/data")
"""

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.lazy import exports

__version__ = "0.1.0"

__getattr__, _names = exports(__name__, {
    "load_model": "models.loaded", "ModelConfig": "models.config", "Circuit": "circuits.circuit",
    "locate_task": "locate.job", "LocateConfig": "locate.config", "SampleConfig": "locate.samples",
    "edges_task": "edges.job", "EdgesConfig": "edges.config", "EdgeCircuit": "edges.circuit",
    "TrainConfig": "finetune.config", "RunOptions": "finetune.config",
    "evaluate_task": "evaluate.job", "EvalConfig": "evaluate.config",
    "reproduce": "studies.jobs", "ReproduceConfig": "studies.config", "track": "studies.jobs",
    "held_out": "studies.jobs", "HeldOutConfig": "studies.config",
})


def __dir__() -> list[str]:
    return sorted({*_names(), "CircuitlabError", "__version__"})
