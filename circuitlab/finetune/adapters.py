"""What a method adds to a bridged model, for the reference loop (`loop`): a HeadMap adapter on the bridge's
hooks and/or PEFT LoRA/DoRA layers inside its wrappers, and their optimizer groups (one learning rate per
part, as the paper trains combinations). `circuitlab finetune` itself uses `wrap` (one PEFT adapter)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from circuitlab.errors import CircuitlabError
from circuitlab.finetune.config import PEFT_TARGETS, PEFT_TARGETS_WITH_HEADMAP, TrainConfig
from circuitlab.headmap import HeadMapConfig, HeadMapModel


def peft_target_regex(hf_model, names: tuple[str, ...]) -> str:
    """A PEFT `target_modules` regex for the nn.Linear layers called `names`.

    On a bridge-patched model each projection is a LinearBridge wrapping the real nn.Linear as
    `<name>._original_component`; PEFT must wrap that inner Linear (the bridge then calls it).
    """
    alt = "|".join(names)
    bridged = any(n.endswith("._original_component") for n, _ in hf_model.named_modules())
    return rf".*\.({alt})\._original_component$" if bridged else rf".*\.({alt})$"


def add_peft(hf_model, tuner: str, rank: int, alpha: float, names: tuple[str, ...], seed: int) -> list[torch.nn.Parameter]:
    """Inject LoRA (or DoRA) in place with PEFT; returns the new trainable parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, use_dora=tuner == "dora",
        target_modules=peft_target_regex(hf_model, names),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, hf_model)
    params = [p for n, p in hf_model.named_parameters() if "lora_" in n]
    if not params:
        raise CircuitlabError(f"PEFT found none of {', '.join(names)} in {type(hf_model).__name__}")
    return params


def count_params(params) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


@dataclass
class Adapters:
    headmap: HeadMapModel | None
    peft_params: list[torch.nn.Parameter]
    base_params: int  # parameters of the base model, before anything was added

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [*(self.headmap.parameters() if self.headmap else []), *self.peft_params]

    def named_trainable(self, hf_model) -> dict[str, torch.nn.Parameter]:
        named = {f"headmap.{k}": p for k, p in (self.headmap.named_parameters() if self.headmap else [])}
        ids = {id(p) for p in self.peft_params}
        named.update({f"peft.{k}": p for k, p in hf_model.named_parameters() if id(p) in ids})
        return named

    @property
    def n_trainable(self) -> int:
        return count_params(self.trainable)

    @property
    def share(self) -> float:
        """The paper's "# Params (%)": trainable / base parameters x 100."""
        return 100.0 * self.n_trainable / self.base_params

    @contextlib.contextmanager
    def active(self, model):
        """The HeadMap hooks on the bridge (PEFT layers are always in place)."""
        if self.headmap is None:
            yield
        else:
            with self.headmap.on_bridge(model.bridge):
                yield

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        groups = []
        if self.headmap is not None:
            groups.append({"params": list(self.headmap.parameters()), "lr": cfg.headmap_lr})
        if self.peft_params:
            groups.append({"params": self.peft_params, "lr": cfg.peft_lr})
        return groups


def build_adapters(model, cfg: TrainConfig, heads: dict[int, list[int]] | None) -> Adapters:
    if cfg.method == "circuit-lora":  # its ranks come from edge circuits, which only `run.prepare` reads
        raise CircuitlabError("circuit-lora trains through `circuitlab finetune` (train_and_eval), not this loop")
    hf = model.hf_model
    base_params = count_params(hf.parameters())
    for p in hf.parameters():
        p.requires_grad_(False)
    headmap = None
    if cfg.variant is not None:
        hm_cfg = HeadMapConfig(variant=cfg.variant, heads=heads, r=cfg.rank, scaling=cfg.scaling, init_seed=cfg.seed,
                               init_a=cfg.rules.down_init_a)
        headmap = HeadMapModel.for_model(hm_cfg, model.config).to(model.device)
    peft_params = []
    if cfg.tuner is not None:
        names = PEFT_TARGETS if cfg.variant is None else PEFT_TARGETS_WITH_HEADMAP
        peft_params = add_peft(hf, cfg.tuner, cfg.rank, cfg.lora_alpha, names, cfg.seed)
        for p in peft_params:
            p.requires_grad_(True)
    return Adapters(headmap, peft_params, base_params)
