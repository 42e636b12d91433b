"""What the fine-tuning tests share: a hand-made circuit and a small config."""

from circuitlab.circuits.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.finetune import TrainConfig
from circuitlab.finetune.config import METHODS

HEADS = {0: [0, 2], 1: [1, 3], 3: [0, 1]}


def tiny_circuit(model, tmp_path, heads=HEADS) -> str:
    c = Circuit(ModelInfo.of(model), TaskInfo("capitals", "train"), [], "hand-made", 2, heads)
    return str(c.save(tmp_path / "circuit.json"))


def cfg(**kw) -> TrainConfig:
    base = dict(model="tiny-llama", task="capitals", method="headmap-mha", rank=4, batch_size=4, epochs=2,
                warmup_steps=1, max_train=8, eval_limit=8, lr=1e-2)
    return TrainConfig(**{**base, **kw})


def read_by(method: str, circuit: str, lr_peft: float) -> dict:
    """The circuit and the LoRA/DoRA rate, where `method` reads them (TrainConfig refuses them elsewhere)."""
    spec = METHODS[method]
    return {"method": method, **({"circuit": circuit} if spec.uses_heads else {}),
            **({"lr_peft": lr_peft} if spec.uses_heads and spec.tuner else {})}
