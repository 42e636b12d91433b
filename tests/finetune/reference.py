"""The reference the Trainer path is tested and benchmarked against: circuitlab's earlier training loop over a
TransformerBridge, kept here rather than in the package.

Independent of the package's training path at every step that matters: HeadMap is wired by the bridge's hook
names (each layer's map reads `blocks.{l}.attn.hook_z` and adds to `hook_attn_out`, Eq. 8, or `hook_resid_post`,
Eq. 7), not by HeadMap's PEFT layers; LoRA/DoRA are PEFT layers inside the bridge's wrappers; the data order,
AdamW with a linear warm-up, and the whole batch's token-mean loss (however the batch is split) are written out
here. Only the map itself (`HeadMapLayer`, initialised by the same seed) is shared.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from transformers import get_linear_schedule_with_warmup

from circuitlab.finetune.config import PEFT_TARGETS, PEFT_TARGETS_WITH_HEADMAP, TrainConfig
from circuitlab.finetune.data import encode_docs, epoch_order, n_targets, summed_loss
from circuitlab.headmap.layer import HeadMapLayer, build_maps
from circuitlab.models import ModelDims
from circuitlab.models.identity import count_params


def peft_target_regex(hf_model, names: tuple[str, ...]) -> str:
    """PEFT must wrap the real nn.Linear a bridge keeps as `<name>._original_component`."""
    alt = "|".join(names)
    bridged = any(n.endswith("._original_component") for n, _ in hf_model.named_modules())
    return rf".*\.({alt})\._original_component$" if bridged else rf".*\.({alt})$"


def add_peft(hf_model, tuner: str, rank: int, alpha: float, names: tuple[str, ...], seed: int) -> list:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, use_dora=tuner == "dora",
                        target_modules=peft_target_regex(hf_model, names))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, hf_model)
    return [p for n, p in hf_model.named_parameters() if "lora_" in n]


@dataclass
class Adapters:
    maps: dict[int, HeadMapLayer]  # HeadMap's maps by layer (empty without HeadMap)
    variant: str | None
    peft_params: list
    base_params: int

    @property
    def trainable(self) -> list:
        return [*(p for m in self.maps.values() for p in m.parameters()), *self.peft_params]

    @property
    def n_trainable(self) -> int:
        return count_params(self.trainable)

    @property
    def share(self) -> float:
        return 100.0 * self.n_trainable / self.base_params

    def param_groups(self, cfg: TrainConfig) -> list[dict]:
        groups = [{"params": [p for m in self.maps.values() for p in m.parameters()], "lr": cfg.headmap_lr}]
        return [g for g in (*groups, {"params": self.peft_params, "lr": cfg.peft_lr}) if g["params"]]

    @contextlib.contextmanager
    def active(self, bridge):
        """HeadMap on the bridge's hooks: z of the selected heads at hook_z, the map added after W_O or the MLP."""
        target = "hook_attn_out" if self.variant == "mha" else "hook_resid_post"
        z: dict[int, torch.Tensor] = {}
        hooks = []
        for layer, m in self.maps.items():
            def read(t, hook, layer=layer, m=m):
                z[layer] = m.select(t)
                return t

            def write(out, hook, layer=layer, m=m):
                return out + m(z.pop(layer)).to(out.dtype)

            hooks += [(f"blocks.{layer}.attn.hook_z", read), (f"blocks.{layer}.{target}", write)]
        with bridge.hooks(fwd_hooks=hooks):
            yield


def build_adapters(model, cfg: TrainConfig, heads: dict[int, list[int]] | None) -> Adapters:
    hf = model.hf_model
    base_params = count_params(hf.parameters())
    for p in hf.parameters():
        p.requires_grad_(False)
    maps = {}
    if cfg.variant is not None:
        maps = build_maps(heads, ModelDims.of_config(model.config), cfg.rank, cfg.scaling, cfg.seed, cfg.rules.down_init_a)
        for m in maps.values():
            m.to(model.device)
    peft_params = []
    if cfg.tuner is not None:
        names = PEFT_TARGETS if cfg.variant is None else PEFT_TARGETS_WITH_HEADMAP
        peft_params = add_peft(hf, cfg.tuner, cfg.rank, cfg.lora_alpha, names, cfg.seed)
        for p in peft_params:
            p.requires_grad_(True)
    return Adapters(maps, cfg.variant, peft_params, base_params)


def train(model, cfg: TrainConfig, adapters: Adapters, docs) -> dict:
    """Train in place; the training record of the result file (loss per optimizer step)."""
    hf = model.hf_model
    seqs = encode_docs(model.tokenizer, docs, cfg.max_len)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(adapters.param_groups(cfg), weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
    micro = cfg.micro_batch_size or cfg.batch_size
    losses = []
    with adapters.active(model.bridge):
        for step in range(total):
            epoch, k = divmod(step, steps_per_epoch)
            order = epoch_order(len(seqs), cfg.seed, epoch)
            batch = [seqs[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            denom = n_targets(batch)  # the mean over the whole batch's tokens, however it is split
            loss_sum = 0.0
            for j in range(0, len(batch), micro):
                loss = summed_loss(hf, batch[j : j + micro], model.tokenizer.pad_token_id, model.device) / denom
                loss.backward()
                loss_sum += loss.item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss_sum)
    return {"steps": total, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "loss_curve": losses}
