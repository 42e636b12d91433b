"""`circuitlab study plan|register|run|status|analyze SPEC`: a declared grid of circuitlab's jobs
(`circuitlab.studies.study`); each subcommand is one library call."""

from __future__ import annotations

from circuitlab.cli.options import add_data_dir_option

ACTIONS = ("plan", "register", "run", "status", "analyze")


def add_study(sub) -> None:
    p = sub.add_parser("study", help="a study: a declared grid of locate / finetune / eval jobs, registered before "
                                     "it runs, run here or on a Ray cluster, analysed into its page")
    p.add_argument("action", choices=ACTIONS, help="plan: the grid and its cost, every check; register: write the "
                                                   "registration; run: the jobs not yet done; status: where they "
                                                   "stand; analyze: the page")
    p.add_argument("spec", metavar="SPEC", help="the study's TOML file (docs/studies.md)")
    add_data_dir_option(p)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run: local (this process, one job at a time) or ray (a Ray cluster)")
    p.add_argument("--address", help="run --engine ray: an existing cluster's address (default: start one here)")
    p.add_argument("--gpus-per-job", type=float, default=0, help="run --engine ray: GPUs each job asks for")
    p.add_argument("--cpus", type=int, help="run --engine ray: CPUs of the local cluster (default: all)")
    p.add_argument("--threads", type=int, help="run: CPU threads per job (and CPUs a Ray job asks for; default 1 "
                                               "there, all here): equal counts give equal files on both engines")
    p.add_argument("--retries", type=int, default=0, help="run --engine ray: Ray's retries of a job whose worker died")
    p.add_argument("--no-png", dest="png", action="store_false", help="analyze: skip the figure's PNG")


def run_study(args) -> None:
    from circuitlab.studies import study

    if args.action in ("plan", "status"):
        print("\n".join(study.plan(args.spec, args.data_dir).summary()))
    elif args.action == "register":
        print(f"wrote {study.register(args.spec, args.data_dir)}: commit it before the first run")
    elif args.action == "run":
        done = study.run(args.spec, args.data_dir, engine=args.engine, address=args.address,
                         gpus_per_job=args.gpus_per_job, retries=args.retries, cpus=args.cpus,
                         threads=args.threads)
        print("\n".join(done.summary()))
    else:
        study.analyze(args.spec, args.data_dir, png=args.png)  # prints what it wrote


COMMANDS = {"study": (add_study, run_study)}
