"""What every part of circuitlab stands on; nothing here imports torch.

`errors` (one line, exit code 2), `settings` (config fields that carry their help, bound and choices),
`io` (atomic writes, strict reads), `artefact` (one result on disk: reused, resumed or refused), `protocol`
(the paper's text or its official code), `processes` (one process or several under torchrun), `provenance`
(package versions), `lazy` (package faces that import on first use).
"""
