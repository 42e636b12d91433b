"""Locate a layer-conditioned circuit on the first N training docs of a task (circuitlab.locate API;
`circuitlab locate` was not registered in the CLI when this study ran)."""
import argparse, time
from circuitlab.locate import LocateConfig, locate_to, locating_samples
from circuitlab.models import load_model
from circuitlab.tasks import get_task

p = argparse.ArgumentParser()
p.add_argument("--task", required=True); p.add_argument("--split", default="train")
p.add_argument("--max-docs", type=int, default=256); p.add_argument("--samples", type=int, default=64)
p.add_argument("--data-dir", required=True); p.add_argument("--out", required=True)
a = p.parse_args()
model = load_model("smollm2-135m")
t = time.perf_counter()
samples, task_info = locating_samples(model, get_task(a.task), a.data_dir, a.split, n=a.samples, max_docs=a.max_docs)
t_samples = time.perf_counter() - t
circuit = locate_to(a.out, model, samples, LocateConfig(), task_info,
                    finish=lambda c: c.timings.update(samples_s=round(t_samples, 1)))
print(f"{a.task}: {len(samples)} samples ({t_samples:.0f}s), located in {circuit.timings['locate_s']:.0f}s: {circuit.heads}")
