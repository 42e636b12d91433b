"""What a method adds to a plain HF model, as one PEFT adapter: `peft.get_peft_model` with a `HeadMapConfig`
(HeadMap, and LoRA/DoRA beside it through its `lora` field) or a `LoraConfig` (LoRA/DoRA alone).

One adapter per run, so `save_pretrained` writes every trained tensor into one PEFT directory, which
`PeftModel.from_pretrained` loads (after `circuitlab.headmap.register()`); and one learning rate per part, as
the paper trains its combinations (`param_groups`: HeadMap's maps by name, the rest LoRA/DoRA's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from circuitlab.core.errors import CircuitlabError
from circuitlab.finetune.config import PEFT_TARGETS, PEFT_TARGETS_WITH_HEADMAP, TrainConfig
from circuitlab.core.io import write_text_atomic
from circuitlab.headmap.adapter import base_info
from circuitlab.headmap.cards import headmap_card
from circuitlab.headmap.config import HeadMapConfig
from circuitlab.headmap.tuner import register
from circuitlab.models.identity import count_params
from circuitlab.models.names import public_name
from circuitlab.models.placement import blocks_on_disk

HEADMAP_PARAM = ".headmap_map."  # in the names of HeadMap's parameters inside a PEFT model


def lora_kwargs(cfg: TrainConfig) -> dict:
    """LoraConfig keyword arguments of the method's LoRA/DoRA part (all six projections alone, V/U/D
    beside HeadMap: the paper's "HeadMap + LoRA (V, U, D)")."""
    names = PEFT_TARGETS if cfg.variant is None else PEFT_TARGETS_WITH_HEADMAP
    return {"r": cfg.rank, "lora_alpha": cfg.lora_alpha, "lora_dropout": 0.0, "use_dora": cfg.tuner == "dora",
            "target_modules": list(names)}


def peft_config(cfg: TrainConfig, heads: dict[int, list[int]] | None):
    """The PEFT config of `cfg.method`; Down's initialisation follows the protocol (`down_init_a`)."""
    if cfg.variant is not None:
        return HeadMapConfig(variant=cfg.variant, heads=heads, r=cfg.rank, scaling=cfg.scaling, init_seed=cfg.seed,
                             init_a=cfg.rules.down_init_a, task_type="CAUSAL_LM",
                             lora=lora_kwargs(cfg) if cfg.tuner else None)
    return LoraConfig(task_type="CAUSAL_LM", **lora_kwargs(cfg))


def param_groups(peft_model, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: HeadMap's maps at `cfg.headmap_lr`, LoRA/DoRA at `cfg.peft_lr` (empty groups left out)."""
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    headmap = [p for n, p in named if HEADMAP_PARAM in n]
    peft = [p for n, p in named if HEADMAP_PARAM not in n]
    return [g for g in ({"params": headmap, "lr": cfg.headmap_lr}, {"params": peft, "lr": cfg.peft_lr}) if g["params"]]


@dataclass
class Wrapped:
    """The PEFT model (its base is the run's HF model, changed in place) and the paper's parameter counts."""

    peft_model: object  # peft.PeftModelForCausalLM
    base_params: int  # parameters of the base model, before anything was added

    @property
    def n_trainable(self) -> int:
        return count_params(p for p in self.peft_model.parameters() if p.requires_grad)

    @property
    def share(self) -> float:
        """The paper's "# Params (%)": trainable / base parameters x 100."""
        return 100.0 * self.n_trainable / self.base_params

    def save(self, directory: Path, base: dict | None = None) -> None:
        """The PEFT adapter directory (adapter_config.json + adapter_model.safetensors); a HeadMap adapter's
        config records `base`, the model it was trained on, so it is never loaded onto other weights, and its
        README says how to load it (PEFT's own card says it for LoRA and DoRA)."""
        config = self.peft_model.peft_config["default"]
        if isinstance(config, HeadMapConfig):
            config.base_model = base
        self.peft_model.save_pretrained(str(directory), save_embedding_layers=False)  # none are trained
        if isinstance(config, HeadMapConfig):
            write_text_atomic(Path(directory) / "README.md", headmap_card(config, config.base_model_name_or_path))


def wrap(model, cfg: TrainConfig, heads: dict[int, list[int]] | None, config=None) -> Wrapped:
    """`get_peft_model` on `model.hf_model` (in place: PEFT injects its layers into it). LoRA's A matrices are
    drawn from `cfg.seed` (HeadMap's tuner seeds its own maps and LoRA part from `init_seed`). `config`: a PEFT
    config made elsewhere (CircuitLoRA's, which needs the circuits), instead of `peft_config(cfg, heads)`."""
    hf = model.hf_model
    base_params = count_params(hf.parameters())
    register()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pm = get_peft_model(hf, config if config is not None else peft_config(cfg, heads))
    check_in_memory(pm)
    return Wrapped(pm, base_params)


def check_in_memory(peft_model) -> None:
    """One line when a trained layer sits in a block the device map offloads to disk. accelerate puts such a
    block's weights back on the meta device after every forward, the adapter's with them, and reads them
    again from its disk copy, which has no adapter: training cannot run there. Blocks on the CPU or a GPU can."""
    on_disk = blocks_on_disk((n, p) for n, p in peft_model.named_parameters() if p.requires_grad)
    if on_disk:
        blocks = ", ".join(on_disk)
        raise CircuitlabError(f"the device map offloads {blocks} to disk, but the adapter trains there: raise "
                              f"--max-memory, or give --device-map as a JSON object that keeps those blocks on "
                              f'"cpu" (docs/scale.md)')


def adapter_base(model, fingerprint: str) -> dict:
    return base_info(model.hf_model, public_name(model.name), model.hf_id, fingerprint, model.revision)
