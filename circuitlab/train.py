"""Fine-tuning: HeadMap, the PEFT baselines (LoRA, DoRA) and their combinations, as in the paper.

One run = one directory `runs/NAME`: `config.json` (what was asked), `circuit.json` (the heads used),
`checkpoint/` (trainable tensors, optimizer state and progress after every epoch, safetensors + JSON),
`adapter/` (the trained HeadMap adapter, in the format `circuitlab.hf.attach` reads), `result.json`.
Rerunning the same command resumes from the last checkpoint and gives the same result: the data
order of every epoch is drawn from the seed, nothing else is random, and the optimizer and scheduler
state are restored exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from circuitlab.circuit import Circuit, ModelInfo, TaskInfo
from circuitlab.errors import CircuitlabError
from circuitlab.headmap import METHODS, HeadMapConfig, HeadMapModel
from circuitlab.hf import base_info, save_adapter
from circuitlab.io import read_json, write_json_atomic
from circuitlab.models import LoadedModel
from circuitlab.tasks import Doc, data_fingerprint, get_task, load_docs

PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
PEFT_TARGETS_WITH_HEADMAP = ("v_proj", "up_proj", "down_proj")  # the paper's "HeadMap + LoRA (V, U, D)"
HEADMAP_LR, PEFT_LR = 1e-3, 2e-4  # the paper's learning rates (Section 6)
HEAD_MODES = ("circuit", "random", "redundant")


@dataclass
class TrainConfig:
    """Everything that decides a run's result (the run directory refuses a different one)."""

    model: str
    task: str
    method: str
    heads: str = "circuit"  # circuit | random | redundant
    heads_per_layer: int | None = None  # default: the circuit's n_per_layer
    circuit: str | None = None  # path of the circuit JSON
    rank: int = 32
    scaling: float = 1.0
    lora_alpha: float = 64.0
    lr: float | None = None  # default: 1e-3 for HeadMap, 2e-4 for LoRA/DoRA
    lr_peft: float | None = None  # the PEFT part of a combination (default 2e-4)
    weight_decay: float = 0.0
    batch_size: int = 16
    micro_batch_size: int | None = None  # gradient accumulation when smaller than batch_size
    epochs: int = 2
    warmup_steps: int = 100
    max_len: int = 512
    max_train: int | None = None  # train on the first N documents of the train split
    train_split: str = "train"
    eval_split: str | None = None  # default: the task's evaluation split
    eval_limit: int | None = None
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CircuitlabError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.heads not in HEAD_MODES:
            raise CircuitlabError(f"unknown --heads {self.heads!r}; choose one of {', '.join(HEAD_MODES)}")
        for name in ("rank", "batch_size", "epochs", "max_len"):
            if getattr(self, name) < 1:
                raise CircuitlabError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_train", "eval_limit", "heads_per_layer", "micro_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CircuitlabError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise CircuitlabError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise CircuitlabError(f"batch size {self.batch_size} is not a multiple of micro batch {self.micro_batch_size}")

    @property
    def variant(self) -> str | None:
        return METHODS[self.method][0]

    @property
    def tuner(self) -> str | None:
        return METHODS[self.method][1]

    @property
    def headmap_lr(self) -> float:
        return self.lr if self.lr is not None else HEADMAP_LR

    @property
    def peft_lr(self) -> float:
        if self.variant is None:
            return self.lr if self.lr is not None else PEFT_LR
        return self.lr_peft if self.lr_peft is not None else PEFT_LR

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# -- which heads ----------------------------------------------------------------------------------


def choose_heads(
    circuit: Circuit, mode: str, n_per_layer: int | None, n_heads: int, seed: int
) -> dict[int, list[int]]:
    """The circuit's heads, `n` random heads per circuit layer, or `n` random heads outside the circuit.

    "redundant" follows the paper (Appendix, Table 6): heads drawn at random among those the
    locating algorithm did not select in that layer.
    """
    n = n_per_layer or circuit.n_per_layer
    if mode == "circuit":
        if n_per_layer is not None and any(len(hs) != n_per_layer for hs in circuit.heads.values()):
            raise CircuitlabError(
                f"--heads-per-layer {n_per_layer} differs from the circuit's {circuit.n_per_layer}; "
                "locate a circuit with that many heads per layer"
            )
        return {layer: sorted(hs) for layer, hs in circuit.heads.items()}
    rng = random.Random(seed)
    heads = {}
    for layer in range(circuit.model.n_layers):
        pool = range(n_heads) if mode == "random" else sorted(set(range(n_heads)) - set(circuit.heads.get(layer, [])))
        if len(pool) < n:
            raise CircuitlabError(f"layer {layer} has only {len(pool)} {mode} heads, fewer than {n}")
        heads[layer] = sorted(rng.sample(list(pool), n))
    return heads


def random_circuit(model: LoadedModel, n_per_layer: int, seed: int, task: str) -> Circuit:
    """A circuit of `n_per_layer` random heads in every layer, for runs with no located circuit."""
    rng = random.Random(seed)
    heads = {layer: sorted(rng.sample(range(model.n_heads), n_per_layer)) for layer in range(model.n_layers)}
    return Circuit(ModelInfo.of(model), TaskInfo(task, "none"), [], "random", n_per_layer, heads, seed=seed)


# -- PEFT baselines ---------------------------------------------------------------------------------


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
    """What a method adds to the model: a HeadMap adapter and/or PEFT layers, and their optimizer groups."""

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
    def active(self, model: LoadedModel):
        """The HeadMap hooks on the bridge (PEFT layers are always in place)."""
        if self.headmap is None:
            yield
        else:
            with self.headmap.on_bridge(model.bridge):
                yield


def build_adapters(model: LoadedModel, cfg: TrainConfig, heads: dict[int, list[int]] | None) -> Adapters:
    hf = model.hf_model
    base_params = count_params(hf.parameters())
    for p in hf.parameters():
        p.requires_grad_(False)
    headmap = None
    if cfg.variant is not None:
        hm_cfg = HeadMapConfig(cfg.variant, heads, cfg.rank, cfg.scaling, cfg.seed)
        headmap = HeadMapModel.for_model(hm_cfg, model.config).to(model.device)
    peft_params = []
    if cfg.tuner is not None:
        names = PEFT_TARGETS if cfg.variant is None else PEFT_TARGETS_WITH_HEADMAP
        peft_params = add_peft(hf, cfg.tuner, cfg.rank, cfg.lora_alpha, names, cfg.seed)
        for p in peft_params:
            p.requires_grad_(True)
    return Adapters(headmap, peft_params, base_params)


def param_groups(adapters: Adapters, cfg: TrainConfig) -> list[dict]:
    groups = []
    if adapters.headmap is not None:
        groups.append({"params": list(adapters.headmap.parameters()), "lr": cfg.headmap_lr})
    if adapters.peft_params:
        groups.append({"params": adapters.peft_params, "lr": cfg.peft_lr})
    return groups


# -- data and loss ----------------------------------------------------------------------------------


def encode_docs(tokenizer, docs: list[Doc], max_len: int) -> list[list[int]]:
    """The training text of each doc, `prompt + choices[gold]`, as token ids cut at `max_len`."""
    return [tokenizer(d.prompt + d.target).input_ids[:max_len] for d in docs]


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "b t"], Int[Tensor, "b t"]]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def n_targets(seqs: list[list[int]]) -> int:
    """Predicted tokens in a batch: every token but each sequence's first."""
    return sum(len(s) - 1 for s in seqs)


def summed_loss(hf_model, seqs: list[list[int]], pad_id: int, device) -> Tensor:
    """Sum over all predicted tokens of the whole text of -log p; pad positions are ignored."""
    ids, mask = pad_right(seqs, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    logits = hf_model(input_ids=ids, attention_mask=mask).logits
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


# -- checkpoints (safetensors + JSON, no pickle) ----------------------------------------------------


def save_checkpoint(directory: Path, step: int, named: dict, optimizer, scheduler, progress: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"step-{step:07d}"
    save_file({k: p.detach().cpu().contiguous() for k, p in named.items()}, str(directory / f"{tag}.trainable.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in opt["state"].items() for k, v in s.items()}
    save_file(tensors, str(directory / f"{tag}.optimizer.safetensors"))
    state = {"tag": tag, "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(), **progress}
    write_json_atomic(directory / "state.json", state)  # the commit point: older files go after it
    for old in directory.glob("step-*.safetensors"):
        if not old.name.startswith(tag):
            old.unlink()


def load_checkpoint(directory: Path, named: dict, optimizer, scheduler) -> dict | None:
    if not (directory / "state.json").is_file():
        return None
    state = read_json(directory / "state.json", "checkpoint state")
    tag = state["tag"]
    trainable = load_file(str(directory / f"{tag}.trainable.safetensors"))
    if set(trainable) != set(named):
        raise CircuitlabError(f"checkpoint {directory} holds other parameters than this run trains")
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(trainable[k])
    flat = load_file(str(directory / f"{tag}.optimizer.safetensors"))
    opt_state: dict[int, dict] = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        opt_state.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    return state


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    config: dict
    method: str
    model: dict
    heads: dict[str, list[int]] | None
    trainable_params: int
    base_params: int
    trainable_share_pct: float
    train: dict
    eval: dict
    circuit: dict | None = None  # where the heads came from: the circuit's task and strategy
    versions: dict = field(default_factory=dict)

    def save(self, path) -> Path:
        return write_json_atomic(path, asdict(self))


def _versions() -> dict:
    import peft
    import transformers

    import circuitlab

    return {"circuitlab": circuitlab.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def _check_run_dir(out: Path, cfg: TrainConfig) -> dict | None:
    """The finished result if this run is done; refuse a directory holding another run."""
    path = out / "config.json"
    if path.is_file():
        old = read_json(path, "run config")
        if old != cfg.to_dict():
            diff = sorted(k for k in set(old) | set(cfg.to_dict()) if old.get(k) != cfg.to_dict().get(k))
            raise CircuitlabError(
                f"{out} holds a run with another config (differs in: {', '.join(diff)}); "
                "choose another --out or delete that directory"
            )
    if (out / "result.json").is_file():
        return read_json(out / "result.json", "run result")
    return None


def resolve_circuit(model: LoadedModel, cfg: TrainConfig, out: Path, data_dir=None, progress: bool = True) -> Circuit | None:
    """The circuit HeadMap's heads come from: --circuit, else located now on the training docs."""
    if cfg.variant is None:
        return None
    if cfg.circuit is not None:
        circuit = Circuit.load(cfg.circuit)
        circuit.validate(model)  # may come from another task (transfer), never from another model
        return circuit
    from circuitlab.locate import LocateConfig, default_heads_per_layer, locate, locating_samples

    if cfg.heads == "random":  # no need to locate anything
        return random_circuit(model, cfg.heads_per_layer or default_heads_per_layer(model.n_heads), cfg.seed, cfg.task)
    located = out / "located_circuit.json"
    if located.is_file():  # a resumed run reuses what it located
        return Circuit.load(located)
    # The paper's samples (64 correct, lowest target loss), drawn from the docs this run trains on.
    samples, task_info = locating_samples(model, get_task(cfg.task), data_dir, cfg.train_split, n=64,
                                          max_docs=cfg.max_train, progress=progress)
    circuit = locate(model, samples, LocateConfig(n_per_layer=cfg.heads_per_layer), task_info,
                     checkpoint=out / "located_circuit.partial.json", progress=progress)
    circuit.save(located)
    (out / "located_circuit.partial.json").unlink(missing_ok=True)
    return circuit


def train_and_eval(
    model: LoadedModel,
    cfg: TrainConfig,
    out: str | Path,
    data_dir=None,
    progress: bool = True,
    on_step=None,
) -> dict:
    """Train `cfg.method` on `model` (in place), evaluate it, write `out/result.json`; resumable.

    `on_step(step)` is called after every optimizer step (tests use it to interrupt a run).
    """
    out = Path(out)
    done = _check_run_dir(out, cfg)
    if done is not None:
        return done
    task = get_task(cfg.task)
    eval_split = cfg.eval_split or task.eval_split
    train_docs = load_docs(task, cfg.train_split, data_dir, limit=cfg.max_train) if cfg.method != "base" else []
    eval_docs = _eval_docs(task, eval_split, data_dir, cfg, train_docs)
    circuit = resolve_circuit(model, cfg, out, data_dir, progress)
    write_json_atomic(out / "config.json", cfg.to_dict())  # only once the inputs proved good
    heads = None
    if circuit is not None:
        heads = choose_heads(circuit, cfg.heads, cfg.heads_per_layer, model.n_heads, cfg.seed)
        used = Circuit(circuit.model, circuit.task, circuit.samples,
                       circuit.strategy if cfg.heads == "circuit" else f"{cfg.heads} (seed {cfg.seed})",
                       len(next(iter(heads.values()))), heads, seed=cfg.seed,
                       extra={"source_circuit": cfg.circuit, "heads_mode": cfg.heads})
        used.save(out / "circuit.json")
    model_info = ModelInfo.of(model)
    base = base_info(model.hf_model, model.name, model.hf_id, model_info.fingerprint)
    adapters = build_adapters(model, cfg, heads)

    train = {"n_docs": len(train_docs), "data_fingerprint": data_fingerprint(train_docs) if train_docs else None,
             "split": cfg.train_split, "steps": 0, "loss_curve": [], "seconds": 0.0}
    if cfg.method != "base":
        train = _train(model, cfg, adapters, train_docs, out / "checkpoint", train, progress, on_step)
    if adapters.headmap is not None:
        save_adapter(adapters.headmap, out / "adapter", base,
                     extra={"method": cfg.method, "task": cfg.task, "trained_by": "circuitlab finetune"})

    with adapters.active(model):
        ev = _evaluate(model, task, eval_docs, eval_split, progress)
    result = RunResult(
        config=cfg.to_dict(), method=cfg.method, model=asdict(model_info),
        heads={str(k): v for k, v in heads.items()} if heads else None,
        circuit=None if circuit is None else {"task": circuit.task.name, "strategy": circuit.strategy,
                                              "n_per_layer": circuit.n_per_layer, "path": cfg.circuit},
        trainable_params=adapters.n_trainable, base_params=adapters.base_params,
        trainable_share_pct=adapters.share, train=train, eval=ev, versions=_versions(),
    )
    result.save(out / "result.json")
    return asdict(result)


def _eval_docs(task, split: str, data_dir, cfg: TrainConfig, train_docs: list[Doc]) -> list[Doc]:
    """The evaluation docs; when training used the same split, the docs after the training ones."""
    docs = load_docs(task, split, data_dir)
    if split == cfg.train_split:
        used = {d.index for d in train_docs} if cfg.method != "base" else set(range(cfg.max_train or 0))
        docs = [d for d in docs if d.index not in used]
    docs = docs[: cfg.eval_limit] if cfg.eval_limit else docs
    if not docs:
        raise CircuitlabError(f"no {task.name} {split} documents left to evaluate on")
    return docs


def _evaluate(model: LoadedModel, task, docs: list[Doc], split: str, progress: bool) -> dict:
    """The foundation's evaluator (score_docs + compute_metrics, as `evaluate.evaluate` runs them)."""
    from circuitlab.evaluate import compute_metrics
    from circuitlab.scoring import score_docs

    start = time.perf_counter()
    scores = score_docs(model, docs, progress=progress)
    preds, n_choices = [s.pred for s in scores], max(len(d.choices) for d in docs)
    return {"split": split, "n_docs": len(docs), "first_index": docs[0].index,
            "data_fingerprint": data_fingerprint(docs), "metrics": compute_metrics(task, scores),
            # how often each choice was predicted and was gold: shows a model that only learned the prior
            "pred_counts": [preds.count(i) for i in range(n_choices)],
            "gold_counts": [sum(s.gold == i for s in scores) for i in range(n_choices)],
            "preds": preds, "seconds": time.perf_counter() - start}


def _train(model, cfg, adapters, docs, ckpt_dir: Path, train: dict, progress: bool, on_step) -> dict:
    from transformers import get_linear_schedule_with_warmup

    hf = model.hf_model
    seqs = encode_docs(model.tokenizer, docs, cfg.max_len)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(param_groups(adapters, cfg), weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
    named = adapters.named_trainable(hf)
    state = load_checkpoint(ckpt_dir, named, optimizer, scheduler)
    step = state["step"] if state else 0
    losses = list(state["loss_curve"]) if state else []
    seconds = state["seconds"] if state else 0.0
    micro = cfg.micro_batch_size or cfg.batch_size
    pad_id = model.tokenizer.pad_token_id
    bar = tqdm(total=total, initial=step, desc=f"{cfg.method} {cfg.task}", unit="step", disable=not progress)
    with adapters.active(model):
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            order = epoch_order(len(seqs), cfg.seed, epoch)
            batch = [seqs[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]
            start = time.perf_counter()
            denom = n_targets(batch)  # mean over the whole batch's tokens, however it is split
            loss_sum = 0.0
            for j in range(0, len(batch), micro):
                loss = summed_loss(hf, batch[j : j + micro], pad_id, model.device) / denom
                loss.backward()
                loss_sum += loss.item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - start
            step += 1
            losses.append(loss_sum)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.4f}", epoch=epoch + 1)
            if step % steps_per_epoch == 0 or step == total:
                save_checkpoint(ckpt_dir, step, named, optimizer, scheduler,
                                {"step": step, "loss_curve": losses, "seconds": seconds})
            if on_step is not None:
                on_step(step)
    bar.close()
    return {**train, "steps": total, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch,
            "loss_curve": losses, "seconds": seconds, "lr": {"headmap": cfg.headmap_lr if adapters.headmap else None,
                                                              "peft": cfg.peft_lr if adapters.peft_params else None}}


# -- the Table-1-style summary ----------------------------------------------------------------------


def method_label(result: dict) -> str:
    cfg = result["config"]
    names = {"base": "Base (zero-shot)", "headmap-mha": "HeadMap-MHA", "headmap-hs": "HeadMap-HS", "lora": "LoRA",
             "dora": "DoRA", "headmap-mha+lora": "HeadMap-MHA + LoRA (V,U,D)", "headmap-hs+lora": "HeadMap-HS + LoRA (V,U,D)",
             "headmap-mha+dora": "HeadMap-MHA + DoRA (V,U,D)", "headmap-hs+dora": "HeadMap-HS + DoRA (V,U,D)"}
    label = names.get(result["method"], result["method"])
    if result.get("heads") and cfg.get("heads") != "circuit":
        label += f" ({cfg['heads']})"
    source = (result.get("circuit") or {}).get("task")
    if result.get("heads") and cfg.get("heads") == "circuit" and source not in (None, cfg.get("task")):
        label += f" (transfer from {source})"  # the paper's Table 6
    if result.get("heads"):
        n = len(next(iter(result["heads"].values())))
        label += f" [{n}/layer]"
    return label


def results_table(paths: list[str | Path], metric: str = "acc"):
    """Rows: methods; columns: # Params (%), each task's `metric` (%), Avg., train minutes. A pandas DataFrame."""
    import pandas as pd

    if not paths:
        raise CircuitlabError("no result.json files given")
    rows = []
    for p in paths:
        r = read_json(p, "run result")
        if not isinstance(r, dict) or "eval" not in r or "config" not in r:
            raise CircuitlabError(f"{p} is not a circuitlab finetune result.json")
        value = r["eval"]["metrics"].get(metric)
        if value is None:
            raise CircuitlabError(f"{p} has no metric {metric!r}")
        method_rank = list(METHODS).index(r["method"]) if r["method"] in METHODS else len(METHODS)
        rank = (method_rank, HEAD_MODES.index(r["config"].get("heads")) if r["config"].get("heads") in HEAD_MODES else 0)
        rows.append({"Method": method_label(r), "task": r["config"]["task"], "value": 100 * value, "rank": rank,
                     "share": r["trainable_share_pct"], "minutes": r["train"]["seconds"] / 60})
    df = pd.DataFrame(rows)
    dup = df[df.duplicated(["Method", "task"], keep=False)]
    if len(dup):
        raise CircuitlabError(f"two results for the same method and task: {dup.iloc[0]['Method']} on {dup.iloc[0]['task']}")
    tasks = list(dict.fromkeys(df["task"]))
    table = df.pivot(index="Method", columns="task", values="value")[tasks]
    order = list(dict.fromkeys(df.sort_values("rank", kind="stable")["Method"]))  # base, HeadMap, ..., LoRA
    table = table.loc[order]
    table.insert(0, "# Params (%)", df.groupby("Method")["share"].mean().loc[order])
    table["Avg."] = table[tasks].mean(axis=1)
    table["Train (min, total)"] = df.groupby("Method")["minutes"].sum().loc[order]
    return table.round(2)
