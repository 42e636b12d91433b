"""Edge circuits (the second paper): `config` (EdgesConfig and the registries of methods and metrics), `graph`,
`hooks`, `forward`, `pairs`, `methods`, `metrics`, `circuit` (selection and files), `evaluate` (the exact
evaluator, faithfulness), `change` (edge change per layer), `mib` (EAP-IG / MIB interchange), `run`
(`attribute` and `edges_to`)."""
