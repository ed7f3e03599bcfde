"""Build the study: execute the notebooks of a profile with papermill, then render the book.

The notebooks are jupytext percent scripts (``notebooks/NN_name.py``). Papermill cannot read
those, so each is converted to an ``.ipynb`` in a scratch folder (never beside the source,
where jupytext pairing would sync the injected parameters back into it), executed with the
profile's parameters, and written to ``book/results/`` where the Jupyter Book picks it up.
Code cells are tagged ``hide-input`` so the book shows outputs with a "show code" toggle.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainage._utils import CHECKPOINT_FILE, sha256_file
from brainage.exceptions import BrainageError
from brainage.study.profiles import (
    Profile,
    display_path,
    find_project_root,
    load_profile,
    resolve_path,
)
from brainage.study.provenance import collect_environment, read_provenance, update_provenance
from brainage.study.sentences import abstract_truth_markdown

logger = logging.getLogger(__name__)

__all__ = [
    "BuildError",
    "BuildReport",
    "build",
    "build_book",
    "convert_notebook",
    "discover_notebooks",
    "execute_notebooks",
    "prepare_notebooks",
    "render_generated_pages",
]

#: Tags that fold a code cell in the rendered book.
HIDE_TAG = "hide-input"


class BuildError(BrainageError, RuntimeError):
    """A notebook failed to execute or the book failed to render."""


@dataclass
class BuildReport:
    """What a build produced and how long each step took (seconds)."""

    profile: str
    run_dir: Path
    notebooks: dict[str, float] = field(default_factory=dict)
    book_seconds: float | None = None
    html_dir: Path | None = None

    @property
    def total_seconds(self) -> float:
        return sum(self.notebooks.values()) + (self.book_seconds or 0.0)


def discover_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The study's notebooks in execution order: ``NN_name.py`` sorted by number."""
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py"))
    if not found:
        raise BuildError(f"no notebooks (NN_name.py) in {notebooks_dir}")
    return found


def _fold_code(nb) -> None:
    """Tag every code cell ``hide-input``: the book shows outputs, "show code" reveals cells."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            tags = cell.metadata.setdefault("tags", [])
            if HIDE_TAG not in tags:
                tags.append(HIDE_TAG)


def convert_notebook(source: str | Path, target: str | Path) -> Path:
    """Convert a jupytext percent script to ``.ipynb`` with a python3 kernel and folded code.

    Raises
    ------
    BuildError
        If the script has no cell tagged ``parameters`` or more than one.
    """
    import jupytext

    source, target = Path(source), Path(target)
    nb = jupytext.read(source, fmt="py:percent")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise BuildError(
            f"{source}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
        )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata.pop("jupytext", None)
    _fold_code(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, target, fmt="ipynb")
    return target


def _declared_parameters(notebook: Path) -> list[str]:
    import papermill

    return list(papermill.inspect_notebook(str(notebook)).keys())


def prepare_notebooks(profile: Profile, root: Path
                      ) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Convert the notebooks (into ``book/_generated/notebooks``) and check that the profile
    sets only parameters they declare.

    Returns
    -------
    tuple of dict
        Notebook stem to converted ``.ipynb``; notebook stem to its declared parameters.

    Raises
    ------
    ProfileError
        If a profile key is declared by no notebook (nothing is written to the run folder).
    """
    sources = discover_notebooks(root / "notebooks")
    scratch = root / "book" / "_generated" / "notebooks"
    converted = {src.stem: convert_notebook(src, scratch / f"{src.stem}.ipynb") for src in sources}
    declared = {stem: _declared_parameters(path) for stem, path in converted.items()}
    profile.check_used(declared)
    return converted, declared


def execute_notebooks(profile: Profile, root: Path, run_dir: Path, out_dir: Path,
                      *, only: list[str] | None = None,
                      prepared: tuple[dict[str, Path], dict[str, list[str]]] | None = None
                      ) -> dict[str, float]:
    """Execute the notebooks in order with the profile's parameters.

    Parameters
    ----------
    profile : Profile
        Parameters; each notebook receives the subset it declares, with ``run_dir`` resolved.
    root : Path
        Project root; the kernels run there so relative paths mean the same in every notebook.
    run_dir : Path
        The run folder the notebooks read from and write to.
    out_dir : Path
        Where the executed ``.ipynb`` go (``book/results``).
    only : list of str, optional
        Notebook stems to run (default all); the others keep their earlier output.
    prepared : tuple, optional
        What :func:`prepare_notebooks` returned (default: prepared here).

    Returns
    -------
    dict
        Wall time in seconds per notebook stem.
    """
    import nbformat
    import papermill

    converted, declared = prepared or prepare_notebooks(profile, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for stem, nb_path in converted.items():
        if only and stem not in only:
            continue
        params = profile.for_notebook(declared[stem])
        if "run_dir" in declared[stem]:
            params["run_dir"] = display_path(run_dir, root)  # relative: notebooks run in root
        output = out_dir / f"{stem}.ipynb"
        output.unlink(missing_ok=True)
        logger.info("executing %s with %s", stem, params)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb_path), str(output), parameters=params,
                                       cwd=str(root), kernel_name="python3",
                                       progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as err:
            raise BuildError(
                f"notebook {stem} failed in cell {err.exec_count}: {err.ename}: {err.evalue}. "
                f"The partly executed notebook is {output}"
            ) from err
        timings[stem] = round(time.perf_counter() - start, 2)
        executed = nbformat.read(output, as_version=4)
        _fold_code(executed)  # papermill's injected-parameters cell too
        nbformat.write(executed, output)
        update_provenance(run_dir, notebooks={stem: {"seconds": timings[stem],
                                                     "parameters": params}})
        logger.info("%s done in %.1f s", stem, timings[stem])
    return timings


def _markdown_table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| `{cell(k)}` | {cell(v)} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _captioned(table: str, caption: str, name: str) -> str:
    """A Markdown table in a MyST ``table`` directive: numbered, captioned, named for {numref}.

    A colon fence, since a backtick fence may not hold backticks (code) in its caption.
    """
    return f":::{{table}} {caption}\n:name: {name}\n\n{table}:::\n"


def _checkpoint_rows(run_dir: Path, root: Path) -> list[tuple[str, str]]:
    """``(checkpoint, sha256)`` of every selected model (:data:`CHECKPOINT_FILE`) under the run
    folder."""
    found = sorted((run_dir / "models").glob(f"*/{CHECKPOINT_FILE}")) + sorted(
        (run_dir / "saliency").glob(f"*/{CHECKPOINT_FILE}"))
    return [(display_path(path, root), sha256_file(path)) for path in found]


def render_generated_pages(profile: Profile, run_dir: Path, book_dir: Path) -> None:
    """Write the parameter table and the provenance appendix from the run's files.

    The pages are generated so that no number in them is typed by hand.
    """
    generated = book_dir / "_generated"
    generated.mkdir(parents=True, exist_ok=True)
    params = [(k, json.dumps(v) if not isinstance(v, str) else v)
              for k, v in sorted(profile.params.items())]
    root = book_dir.parent
    (generated / "parameters.md").write_text(
        f"Profile **{profile.name}** (`{display_path(profile.path, root)}`). The book is rebuilt "
        f"from scratch, data, models and all, with `brainage build --profile {profile.name}` "
        "run in the project folder.\n\n"
        + _captioned(_markdown_table(params, ("parameter", "value")),
                     f"The parameters of profile {profile.name}, as the notebooks received them.",
                     "tab-methods-parameters"), encoding="utf-8")

    (generated / "simulation.md").write_text(_simulation_page(run_dir, root), encoding="utf-8")
    info_path = run_dir / "dataset.json"  # the abstract's truth sentences (issue 32)
    simulated = bool(info_path.exists() and json.loads(
        info_path.read_text(encoding="utf-8")).get("simulated"))
    # the real-scan sentence only where notebook 03 predicted the shared real scans
    real = (run_dir / "real_scans.csv").is_file()
    (generated / "abstract_truth.md").write_text(abstract_truth_markdown(simulated, real=real),
                                                 encoding="utf-8")
    (generated / "simulation_model.md").write_text(_simulation_model_page(run_dir, root),
                                                   encoding="utf-8")

    record = read_provenance(run_dir)
    env = record.get("environment", {})
    parts = [f"Run folder: `{display_path(run_dir, root)}`\n"]
    git = env.get("git", {})
    summary = [("profile", record.get("profile", profile.name)),
               ("created", env.get("created", "")),
               ("git commit", git.get("commit") or "not a git checkout"),
               ("uncommitted changes", {True: "yes", False: "no"}.get(git.get("dirty"),
                                                                      "not recorded")),
               ("python", env.get("python", ""))]
    summary += [(f"hardware: {k}", "not recorded" if v is None else
                 ("yes" if v else "no") if isinstance(v, bool) else v)
                for k, v in sorted(env.get("hardware", {}).items())]
    parts.append("## Run\n\n" + _captioned(_markdown_table(summary, ("item", "value")),
                                            "The run: profile, commit, Python and hardware.",
                                            "tab-appendix-run"))
    timings = [(stem, f"{info.get('seconds', '')} s")
               for stem, info in sorted(record.get("notebooks", {}).items())]
    total = sum(float(info.get("seconds") or 0) for info in record.get("notebooks", {}).values())
    parts.append("## Wall time of each notebook\n\n"
                 + _captioned(_markdown_table(timings, ("notebook", "wall time")),
                              f"Wall time (seconds) of each notebook in this build; "
                              f"{total / 60:.1f} minutes in all, rendering the book not included.",
                              "tab-appendix-wall-time"))
    versions = sorted((k, v or "not installed") for k, v in env.get("packages", {}).items())
    parts.append("## Package versions\n\n" + _captioned(
        _markdown_table(versions, ("package", "version")),
        "Versions of the packages the build imported.", "tab-appendix-versions"))
    checkpoints = _checkpoint_rows(run_dir, root)
    if checkpoints:
        parts.append("## Model checkpoints\n\n" + _captioned(
            _markdown_table(checkpoints, ("checkpoint", "sha256")),
            f"SHA-256 of each selected model checkpoint (`{CHECKPOINT_FILE}`; the permuted-age "
            "control under `saliency/`), paths relative to the project.",
            "tab-appendix-checkpoints"))
    else:
        parts.append("## Model checkpoints\n\nThis run wrote no model checkpoint.\n")
    data = record.get("data", {})
    if data:
        rows = [(name, f"{d.get('n_files')} files, sha256 {d.get('sha256')}")
                for name, d in sorted(data.items())]
        parts.append("## Data checksums\n\nPer-file digests are in the run folder "
                     "(`checksums.json`).\n\n" + _captioned(
                         _markdown_table(rows, ("dataset", "digest")),
                         "Number of data files read and their combined SHA-256, per dataset.",
                         "tab-appendix-data"))
    else:
        parts.append("## Data checksums\n\nNo data were recorded by this run.\n")
    (generated / "provenance.md").write_text("\n".join(parts), encoding="utf-8")


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _flatten(f"{prefix}{key}.", sub)]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [item for i, sub in enumerate(value) for item in _flatten(f"{prefix}{i}.", sub)]
    return [(prefix.rstrip("."), json.dumps(value) if not isinstance(value, str) else value)]


def _simulation_page(run_dir: Path, root: Path) -> str:
    """The settings of the run's simulated cohort, from its ``simulation.json``."""
    info_path = run_dir / "dataset.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    if not info.get("simulated"):
        return "This run used no simulated data.\n"
    truth = resolve_path(info["root"], root) / "derivatives" / "ground_truth"
    meta_path = truth / "simulation.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    rows = [("seed", meta.get("seed")), ("resolution_mm", meta.get("resolution_mm")),
            ("counts", json.dumps(meta.get("counts")))]
    rows += _flatten("", meta.get("config", {}))
    return (f"Read from `{display_path(meta_path, root)}`.\n\n"
            f"````{{dropdown}} All {len(rows)} settings\n\n"
            + _captioned(_markdown_table(rows, ("setting", "value")),
                         f"All {len(rows)} settings of this run's simulated cohort, from its "
                         "`simulation.json`.", "tab-methods-simulation") + "````\n")


def _simulation_model_page(run_dir: Path, root: Path) -> str:
    """The ageing, anatomy and scanner model of the run's simulated cohort, with its sources
    (:func:`brainage.study.sentences.simulation_model_table` of its ``simulation.json``)."""
    import pandas as pd

    from brainage.data import simulate
    from brainage.study.sentences import simulation_model_table

    info_path = run_dir / "dataset.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    if not info.get("simulated"):
        return "This run used no simulated data.\n"
    cohort = resolve_path(info["root"], root)
    meta = simulate.read_truth(cohort)
    truth = pd.read_csv(cohort / "derivatives" / "ground_truth" / "participants_truth.tsv",
                        sep="\t", na_values="n/a")
    sex = pd.read_csv(cohort / "participants.tsv", sep="\t", na_values="n/a")
    truth = truth.merge(sex[["participant_id", "sex"]], on="participant_id")
    table = simulation_model_table(meta.get("config", {}), truth)
    lines = ["| Quantity | This run | Source |", "| --- | --- | --- |"]
    lines += [f"| {r.quantity} | {r.value} | {r.source} |" for r in table.itertuples()]
    return (f"Simulated at {meta.get('resolution_mm')} mm (read from the run's "
            "`simulation.json`):\n\n"
            + _captioned("\n".join(lines) + "\n",
                         "The ageing, anatomy and scanner model of this run's simulated cohort: "
                         "each quantity, its value in this run and its source.",
                         "tab-methods-sim-model"))


def _copy_static_assets(book_dir: Path) -> None:
    """Serve plotly.js from the book's ``_static`` so figures draw offline."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    static = book_dir / "_static"
    static.mkdir(exist_ok=True)
    target = static / "plotly.min.js"
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)


def build_book(book_dir: str | Path) -> Path:
    """Render the Jupyter Book in ``book_dir`` to ``book_dir/_build/html``."""
    book_dir = Path(book_dir)
    _copy_static_assets(book_dir)
    exe = Path(sys.executable).with_name("jupyter-book")
    # --all: Sphinx does not know that the Markdown pages depend on the numbers they paste from
    # the notebooks (glue), so an incremental build kept an earlier run's numbers there.
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_dir),
           "--builder", "html", "--all"]
    logger.info("rendering the book: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = book_dir / "_build" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + "\n" + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        raise BuildError(f"jupyter-book build failed ({result.returncode}); see {log}:\n"
                         f"{result.stderr[-3000:]}")
    return book_dir / "_build" / "html"


def build(profile_name: str | Path = "quick", *, root: str | Path | None = None,
          book: bool = True, only: list[str] | None = None) -> BuildReport:
    """Execute the notebooks of a profile and render the book.

    Parameters
    ----------
    profile_name : str or Path, default="quick"
        A profile name from ``notebooks/params`` or a path to a profile YAML file.
    root : path, optional
        Project root (default: found from the working directory).
    book : bool, default=True
        Render the book after the notebooks ran.
    only : list of str, optional
        Execute only these notebook stems (the book still renders all).
    """
    root = Path(root).resolve() if root else find_project_root()
    profile = load_profile(profile_name, root / "notebooks" / "params")
    run_dir = resolve_path(profile.params.get("run_dir", f"runs/{profile.name}"), root)
    # Every check before the first write: a bad profile leaves an existing run's record as it was.
    prepared = prepare_notebooks(profile, root)
    update_provenance(run_dir, profile=profile.name, profile_file=str(profile.path),
                      parameters=profile.params, environment=collect_environment(root))
    report = BuildReport(profile=profile.name, run_dir=run_dir)
    report.notebooks = execute_notebooks(profile, root, run_dir, root / "book" / "results",
                                         only=only, prepared=prepared)
    if book:
        render_generated_pages(profile, run_dir, root / "book")
        start = time.perf_counter()
        report.html_dir = build_book(root / "book")
        report.book_seconds = round(time.perf_counter() - start, 2)
        update_provenance(run_dir, book={"seconds": report.book_seconds})
    return report
