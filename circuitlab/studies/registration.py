"""A study's registration, and what has changed since: written before the first run, read by every analysis.

`register` writes the spec's digest and text, the analysis code's version (a digest of the modules that compute
and word the analysis) and the date into SPEC.registration.json, meant to be committed before the first run (the
history shows it). `deviations` is what `analyze` reports from it, never silently: a spec changed since (with the
lines that differ, less a `notes` line: that only points the page at its hand-written discussion, written once the
results are in), analysis code changed since, runs declared but missing, and a second look (runs added after the first
analysis, which SPEC.looks.json records).
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
from pathlib import Path

from circuitlab import __version__
from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json, write_json_atomic
from circuitlab.studies.spec import Study

ANALYSIS_MODULES = ("analysis.py",)  # what is computed; the wording of the page may change freely
WORDING_KEYS = ("notes",)  # spec settings that word the page and change nothing that is run or computed


def code_version() -> str:
    """A digest of the analysis code's source: changes whenever what `analyze` computes or says can change."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ANALYSIS_MODULES:
        h.update((here / name).read_bytes())
    return f"circuitlab {__version__}, analysis {h.hexdigest()[:12]}"


def register(study: Study, today: str | None = None, force: bool = False) -> Path:
    """Write the registration; an existing one of another spec is refused (a registration is made once)."""
    path = study.registration_path()
    if path.exists() and not force:
        old = read_json(path, "registration")
        if old.get("spec_digest") == study.digest:
            return path
        raise CircuitlabError(f"{path} registers another version of this spec (digest {old.get('spec_digest')}); a "
                              "study is registered once: record a change as a deviation, with its reason, in the spec")
    write_json_atomic(path, {"study": study.name, "spec_digest": study.digest, "analysis_code": code_version(),
                             "date": today or datetime.date.today().isoformat(),
                             "retrospective": study.retrospective, "spec": study.text.splitlines()})
    return path


def changed_lines(registered: list[str], text: str) -> list[str]:
    """The spec's lines added (+) or removed (-) since registration, blank lines and wording settings left out."""
    diff = difflib.unified_diff(registered, text.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---") and line[1:].strip()
            and line[1:].split("=")[0].strip() not in WORDING_KEYS]


def deviations(study: Study, finished: set[str], declared: set[str], today: str | None = None,
               record: bool = True) -> list[str]:
    """Every way this analysis departs from the registration, in words; records this look in SPEC.looks.json."""
    path = study.registration_path()
    if not path.exists():
        return [f"the study is not registered ({path} missing): every result is exploratory"]
    reg = read_json(path, "registration")
    found = []
    diff = changed_lines(reg.get("spec", []), study.text) if reg.get("spec_digest") != study.digest else []
    if diff:
        found.append(f"the spec changed since its registration on {reg.get('date')}: " + "; ".join(diff[:12]))
    if reg.get("analysis_code") != code_version():
        found.append(f"the analysis code changed since registration ({reg.get('analysis_code')} -> {code_version()})")
    missing = declared - finished
    if missing:
        found.append(f"{len(missing)} of {len(declared)} declared runs are missing: " + ", ".join(sorted(missing)[:6])
                     + (" ..." if len(missing) > 6 else ""))
    looks_path = study.looks_path()
    looks = read_json(looks_path, "looks") if looks_path.exists() else []
    key = hashlib.sha256("\n".join(sorted(finished)).encode()).hexdigest()[:16]
    first = looks[0] if looks else None
    if first is not None and first["runs"] != key:
        found.append(f"a later look: the first analysis ({first['date']}) saw {first['n_runs']} runs, this one sees "
                     f"{len(finished)}; what differs is exploratory")
    if record and (not looks or looks[-1]["runs"] != key):
        looks.append({"date": today or datetime.date.today().isoformat(), "runs": key, "n_runs": len(finished)})
        write_json_atomic(looks_path, looks)
    return found
