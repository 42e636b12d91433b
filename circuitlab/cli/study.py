"""`circuitlab study plan|register|run|status|analyze SPEC`: a declared grid of circuitlab's jobs
(`circuitlab.studies.study`); each subcommand is one library call."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option
from circuitlab.core.errors import CircuitlabError

ACTIONS = ("plan", "register", "run", "status", "analyze")
ENGINES = ("local", "ray")
RUN_OPTIONS = ("engine", "address", "gpus_per_job", "cpus", "threads", "retries")  # what `study.run` takes


def add_study(sub) -> None:
    p = sub.add_parser("study", help="a study: a declared grid of locate / finetune / eval jobs, registered before "
                                     "it runs, run here or on a Ray cluster, analysed into its page")
    p.add_argument("action", choices=ACTIONS, help="plan: the grid and its cost, every check; register: write the "
                                                   "registration; run: the jobs not yet done; status: where they "
                                                   "stand; analyze: the page")
    p.add_argument("spec", metavar="SPEC", help="the study's TOML file (docs/studies.md)")
    add_data_dir_option(p)
    p.add_argument("--engine", choices=ENGINES, help="run: local (this process, one job at a time; the default) or ray "
                                                     "(a Ray cluster)")
    p.add_argument("--address", help="run --engine ray: an existing cluster's address (default: start one here)")
    p.add_argument("--gpus-per-job", type=float, help="run --engine ray: GPUs each job asks for (default 0)")
    p.add_argument("--cpus", type=int, help="run --engine ray: CPUs of the local cluster (default: all)")
    p.add_argument("--threads", type=int, help="run: CPU threads per job (and CPUs a Ray job asks for; default 1 "
                                               "there, all here): equal counts give equal files on both engines")
    p.add_argument("--retries", type=int, help="run --engine ray: Ray's retries of a job whose worker died (default 0)")
    p.add_argument("--no-png", dest="png", action="store_false", help="analyze: skip the figure's PNG")


def run_study(args) -> None:
    from circuitlab.studies import study

    run_options = {name: getattr(args, name) for name in RUN_OPTIONS if getattr(args, name) is not None}
    if run_options and args.action != "run":  # an option the action would not read is refused, not ignored
        flag = "--" + next(iter(run_options)).replace("_", "-")
        raise CircuitlabError(f"study {args.action}: {flag} is an option of study run")
    if not args.png and args.action != "analyze":
        raise CircuitlabError(f"study {args.action}: --no-png is an option of study analyze")
    if args.action in ("plan", "status"):
        print("\n".join(study.plan(args.spec, args.data_dir).summary()))
    elif args.action == "register":
        print(f"wrote {study.register(args.spec, args.data_dir)}: commit it before the first run")
    elif args.action == "run":
        print("\n".join(study.run(args.spec, args.data_dir, **run_options).summary()))
    else:
        study.analyze(args.spec, args.data_dir, png=args.png)  # prints what it wrote


COMMANDS = {"study": (add_study, run_study)}
