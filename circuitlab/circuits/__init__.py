"""Head circuits as files: sets of heads (`heads`), the circuit JSON (`circuit`, schema 2) with its schema-1
reader (`v1`), and the official code's `info.pt` (`official`)."""

from circuitlab.core.lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "HeadMask": "heads", "jaccard": "heads", "random_heads": "heads", "top_heads": "heads",
    "AllDocsCurve": "circuit", "Circuit": "circuit", "ExcludedCircuit": "circuit", "LocateRun": "circuit",
    "ModelInfo": "circuit", "Sample": "circuit", "Selection": "circuit", "TaskInfo": "circuit",
})
