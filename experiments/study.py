"""The comparison protocol in one command: a study file in; tuned rates, final runs, verdicts and a report out.

    python -m experiments.study STUDY.yaml --dry-run     # the plan: stages, runs done and missing, cost
    python -m experiments.study STUDY.yaml               # run it, or resume it (a rerun trains nothing done)
    python -m experiments.study STUDY.yaml hydra/launcher=joblib hydra.launcher.n_jobs=2   # two runs at a time

What it does, stage by stage (docs/protocol.md states the rules):

1. **Tuning** on the selection split: every variant on every task at each ``tuning.lr_factors`` (times
   the variant's default rate, as ``train.lr_factor``), each ``tuning.seeds``, into
   ``<results_dir>/tuning``. ``experiments.tune``'s rule chooses per (task, variant); with
   ``tuning.extend`` a winner at an edge of its grid gets the next factor beyond it (the edge factor
   ×/÷ ``tuning.step``) until it is inside, at most ``tuning.max_extensions`` times per cell (a cell
   that hits the cap is printed and keeps its edge winner). With ``tuning.confirm_seeds``, the best
   two settings of each cell then get those seeds too, before the choice (one tuning seed's winner
   often beats its runner-up by less than the seed-to-seed spread).
2. The choice is written to ``<results_dir>/tuning/tuned.yaml`` (the file ``experiments.tune`` writes).
3. **Final runs**: every variant at its tuned rates, each ``final.seeds``, into ``<results_dir>/final``.
4. **Verdicts**: ``analysis.compare`` against ``reference`` within ``margin``, printed, and the HTML
   report, ``<results_dir>/report.html``.

Every run goes through ``python run.py -m`` (so through the Hydra launcher the command line names), with
the study's ``overrides`` (and ``task_overrides`` of its task); a configuration with an ``ok`` record is
never trained again, and two launches of one study on one folder train each configuration once (the
per-configuration locks), each waiting for the other's runs before it decides. Every decision is
printed and appended to ``<results_dir>/decisions.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import tune
from .config import ConfigError, planned_runs
from .config.checking import rounded, yaml_problem
from .config.command_line import check_overrides, groups
from .config.schema import TrainConfig
from .config.task import suggestion
from .records import locks, store

REPO = Path(__file__).resolve().parents[1]
#: where costs come from when the study's own folder has no record yet
REFERENCE_RECORDS = REPO / "results" / "second_edition"
#: seconds between looks at runs another launcher of the same study is training
WAIT_SECONDS = 10.0


# -- the study file ------------------------------------------------------------------------------------

@dataclass
class Tuning:
    lr_factors: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    seeds: list = field(default_factory=lambda: [0])
    extend: bool = True
    step: float = 2.0
    max_extensions: int = 4
    confirm_seeds: list = field(default_factory=list)


@dataclass
class Final:
    seeds: list = field(default_factory=lambda: [1, 2, 3, 4, 5])


@dataclass
class Study:
    name: str
    results_dir: str
    variants: list
    tasks: list
    reference: str
    margin: float = 1.5
    overrides: list = field(default_factory=list)
    task_overrides: dict = field(default_factory=dict)
    tuning: Tuning = field(default_factory=Tuning)
    final: Final = field(default_factory=Final)
    #: the study file, for messages
    source: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.results_dir)

    def overrides_for(self, task: str) -> list[str]:
        return [*self.overrides, *self.task_overrides.get(task, [])]


def _keys(kind) -> list[str]:
    return [f.name for f in dataclasses.fields(kind) if f.name != "source"]


def _numbers(value, where: str, key: str, integer: bool, positive: bool = False) -> list:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and (not integer or isinstance(v, int))
            and (not positive or v > 0) for v in value):
        kind = "integers" if integer else "numbers > 0" if positive else "numbers"
        raise ConfigError(f"{where}: {key}={value!r}: must be a non-empty list of {kind}")
    return value


def _section(content, kind, where: str, prefix: str = "") -> dict:
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{where}: {prefix or 'the study file'} must be a mapping of {', '.join(_keys(kind))}")
    for key in content:
        if key not in _keys(kind):
            raise ConfigError(f"{where}: unknown key {prefix + str(key)!r}{suggestion(key, _keys(kind))}; valid keys"
                              f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(_keys(kind))}")
    return dict(content)


def load_study(path) -> Study:
    """The study a file describes, every key checked (ConfigError of one line naming it)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"{where}: no such study file")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(error, path)) from None
    top = _section(content, Study, where)
    missing = [key for key in ("name", "results_dir", "variants", "tasks", "reference") if key not in top]
    if missing:
        raise ConfigError(f"{where}: required key(s) {', '.join(missing)} missing")
    tuning = Tuning(**_section(top.pop("tuning", None), Tuning, where, "tuning."))
    final = Final(**_section(top.pop("final", None), Final, where, "final."))
    study = Study(**top, tuning=tuning, final=final, source=where)
    _check(study, where)
    return study


def _check(study: Study, where: str) -> None:
    import variants

    choices = groups()
    for key in ("name", "results_dir", "reference"):
        if not isinstance(getattr(study, key), str) or not getattr(study, key).strip():
            raise ConfigError(f"{where}: {key}={getattr(study, key)!r}: must be a non-empty string")
    for key, valid in (("variants", variants.available()), ("tasks", choices.get("task", []))):
        values = getattr(study, key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key}={values!r}: must be a non-empty list")
        for value in values:
            if value not in valid:
                raise ConfigError(f"{where}: {key}: {value!r} is not one{suggestion(value, valid)}; valid: {', '.join(valid)}")
    if study.reference not in study.variants:
        raise ConfigError(f"{where}: reference={study.reference!r} is not among the study's variants "
                          f"({', '.join(study.variants)})")
    if isinstance(study.margin, bool) or not isinstance(study.margin, (int, float)) or not study.margin > 0:
        raise ConfigError(f"{where}: margin={study.margin!r}: must be a number > 0 (points ×100)")
    tuning = study.tuning
    _numbers(tuning.lr_factors, where, "tuning.lr_factors", integer=False, positive=True)
    _numbers(tuning.seeds, where, "tuning.seeds", integer=True)
    _numbers(study.final.seeds, where, "final.seeds", integer=True)
    if tuning.confirm_seeds:
        _numbers(tuning.confirm_seeds, where, "tuning.confirm_seeds", integer=True)
    if not isinstance(tuning.extend, bool):
        raise ConfigError(f"{where}: tuning.extend={tuning.extend!r}: must be true or false")
    if isinstance(tuning.step, bool) or not isinstance(tuning.step, (int, float)) or not tuning.step > 1:
        raise ConfigError(f"{where}: tuning.step={tuning.step!r}: must be a number > 1 (the factor of each extension)")
    if isinstance(tuning.max_extensions, bool) or not isinstance(tuning.max_extensions, int) or tuning.max_extensions < 0:
        raise ConfigError(f"{where}: tuning.max_extensions={tuning.max_extensions!r}: must be an integer >= 0")
    if not isinstance(study.overrides, list) or not all(isinstance(o, str) for o in study.overrides):
        raise ConfigError(f"{where}: overrides must be a list of command-line overrides, e.g. [train.epochs=5]")
    if not isinstance(study.task_overrides, dict):
        raise ConfigError(f"{where}: task_overrides must map a task to a list of overrides")
    for task, extra in study.task_overrides.items():
        if task not in study.tasks:
            raise ConfigError(f"{where}: task_overrides names {task!r}, which is not among the study's tasks")
        if not isinstance(extra, list) or not all(isinstance(o, str) for o in extra):
            raise ConfigError(f"{where}: task_overrides.{task} must be a list of command-line overrides")
    reserved = ("variant=", "task=", "seed=", "train.lr_factor=", "train.tuned_file=", "results.dir=")
    for override in [*study.overrides, *(o for extra in study.task_overrides.values() for o in extra)]:
        if override.startswith(reserved):
            raise ConfigError(f"{where}: overrides: {override!r} is the study's to set (it sweeps variant, task, "
                              "seed and train.lr_factor, and chooses the folders and the tuned file)")
    try:
        for task in study.tasks:
            check_overrides(["-m", f"task={task}", *study.overrides_for(task)])
    except ConfigError as error:
        raise ConfigError(f"{where}: overrides: {error}") from None
    if not any(o.startswith("data.selection_fraction=") for o in study.overrides):
        raise ConfigError(f"{where}: overrides must hold data.selection_fraction (e.g. data.selection_fraction=0.1): "
                          "the protocol tunes on a selection split held out of train")


# -- runs: planned, done, launched ---------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One run of the study: a stage's (task, variant, factor, seed)."""
    stage: str          # tuning | final
    task: str
    variant: str
    factor: float
    seed: int


def _factor_text(factor: float) -> str:
    return f"{factor:g}"


def overrides_of(study: Study, point: Point) -> list[str]:
    folder = study.folder / point.stage
    common = [f"task={point.task}", f"variant={point.variant}", f"seed={point.seed}", f"results.dir={folder}",
              *study.overrides_for(point.task)]
    if point.stage == "final":
        return [*common, f"train.tuned_file={study.folder / 'tuning' / 'tuned.yaml'}"]
    return [*common, f"train.lr_factor={_factor_text(point.factor)}"]


class Ledger:
    """Which of the study's runs have a successful record, which are claimed by a live run, and their
    built configs: one composition per (stage, task, variant); another seed or factor is that config
    with the seed and the rates it gives (what ``run.py`` builds for it, so the same hash)."""

    def __init__(self, study: Study):
        self.study, self.bases, self.configs, self.done = study, {}, {}, {}

    def config(self, point: Point):
        if point not in self.configs:
            key = (point.stage, point.task, point.variant)
            if key not in self.bases:
                first = dataclasses.replace(point, factor=1.0)
                self.bases[key] = planned_runs(overrides_of(self.study, first), check_files=False)[0][1]
            base = self.bases[key]
            train = base.train
            if point.factor != 1:
                train = dataclasses.replace(train, lr=rounded(train.lr * point.factor),
                                            head_lr=None if train.head_lr is None else rounded(train.head_lr * point.factor))
            config = dataclasses.replace(base, seed=point.seed, train=train)
            for name in ("experiment_name", "task_spec"):
                object.__setattr__(config, name, getattr(base, name))
            self.configs[point] = config
        return self.configs[point]

    def record(self, point: Point) -> dict | None:
        """The point's successful record (read once it exists: a successful record is never replaced)."""
        if point not in self.done:
            config = self.config(point)
            record = store.read_record(store.record_path(config.results.dir, config.config_hash))
            if not (record and record.get("status") == "ok"):
                return None
            self.done[point] = record
        return self.done[point]

    def running(self, point: Point) -> bool:
        config = self.config(point)
        return locks.live_claim(config.results.dir, config.config_hash, config.results.stale_claim_after) is not None


def launch(study: Study, points: list[Point], launcher: list[str], say) -> None:
    """Train ``points`` through ``python run.py -m``: one sweep per (stage, task) where the points are every
    combination of their variants, factors and seeds (a grid), else one per (stage, task, factor)."""
    by_task: dict[tuple, list[Point]] = {}
    for point in points:
        by_task.setdefault((point.stage, point.task), []).append(point)
    sweeps = []
    for members in by_task.values():
        axes = [sorted({getattr(p, axis) for p in members}) for axis in ("variant", "factor", "seed")]
        if len(members) == len(axes[0]) * len(axes[1]) * len(axes[2]):
            sweeps.append(members)
        else:
            by_factor: dict[float, list[Point]] = {}
            for point in members:
                by_factor.setdefault(point.factor, []).append(point)
            sweeps += list(by_factor.values())
    for members in sweeps:
        first = members[0]
        command = [arg for arg in overrides_of(study, first)
                   if not arg.startswith(("variant=", "seed=", "train.lr_factor="))]
        swept = {"variant": sorted({p.variant for p in members}), "seed": sorted({p.seed for p in members})}
        if first.stage == "tuning":
            swept["train.lr_factor"] = [_factor_text(f) for f in sorted({p.factor for p in members})]
        command += [f"{key}={','.join(map(str, values))}" for key, values in swept.items()]
        say(f"  $ python run.py -m {' '.join(command)}")
        done = subprocess.run([sys.executable, "run.py", "-m", *command, *launcher], cwd=REPO)
        if done.returncode != 0:
            say(f"  (the sweep exited with status {done.returncode}; its failed runs are recorded and the study goes on)")


def complete(study: Study, ledger: Ledger, points: list[Point], launcher: list[str], say) -> None:
    """Make sure every point has a successful record: train the missing ones, then wait for those that
    another launcher of the study is training."""
    missing = [p for p in points if ledger.record(p) is None and not ledger.running(p)]
    if missing:
        launch(study, missing, launcher, say)
    told = False
    while True:
        waiting = [p for p in points if ledger.record(p) is None]
        running = [p for p in waiting if ledger.running(p)]
        if not running:
            break
        if not told:
            say(f"  waiting for {len(running)} run(s) that another launcher is training")
            told = True
        time.sleep(WAIT_SECONDS)
    failed = [p for p in points if ledger.record(p) is None]
    if failed:
        listed = "; ".join(f"{p.task}/{p.variant} factor {_factor_text(p.factor)} seed {p.seed}" for p in failed[:5])
        raise ConfigError(f"{len(failed)} run(s) have no successful record after training ({listed}); see their "
                          f"records under {study.folder}, fix the cause and rerun the study")


# -- the tuning decisions ------------------------------------------------------------------------------

@dataclass
class Cell:
    """One (task, variant) cell of the tuning grid."""
    task: str
    variant: str
    factors: list
    seeds: list
    extensions: int = 0
    capped: bool = False
    confirmed: list = field(default_factory=list)

    def points(self, extra_seeds=()) -> list[Point]:
        base = [Point("tuning", self.task, self.variant, f, s) for f in self.factors for s in self.seeds]
        return base + [Point("tuning", self.task, self.variant, f, s) for f in self.confirmed for s in extra_seeds]


def _rows(cell: Cell, ledger: Ledger, confirm_seeds) -> list[dict] | None:
    """tune's rows for the cell from the records of its points, or None while one is missing."""
    records = [ledger.record(p) for p in cell.points(confirm_seeds)]
    if any(r is None for r in records):
        return None
    return tune.choose(records)


def decide(study: Study, cells: list[Cell], ledger: Ledger, log) -> tuple[list[Point], bool]:
    """One round of decisions over the cells whose runs are all recorded: extend an edge winner (or note
    the cap), or confirm the best two. Returns (the new points to run, whether anything changed)."""
    tuning, new, changed = study.tuning, [], False
    for cell in cells:
        rows = _rows(cell, ledger, tuning.confirm_seeds if cell.confirmed else ())
        if rows is None:
            continue
        winner = next(r for r in rows if r["chosen"])
        edge = winner["edge"] if not cell.confirmed else None
        if edge and tuning.extend and cell.extensions < tuning.max_extensions:
            step = tuning.step
            added = min(cell.factors) / step if edge == "lowest" else max(cell.factors) * step
            added = float(f"{added:.12g}")
            cell.factors.append(added)
            cell.extensions += 1
            log(f"tuning {cell.task}/{cell.variant}: the winner ({winner['lr']:g}, median selection "
                f"{100 * winner['median']:.2f}) is the {edge} rate of its grid: extension {cell.extensions} adds "
                f"factor {_factor_text(added)}")
            new += [Point("tuning", cell.task, cell.variant, added, s) for s in cell.seeds]
            changed = True
        elif edge and tuning.extend and not cell.capped:
            cell.capped = True
            log(f"tuning {cell.task}/{cell.variant}: the winner ({winner['lr']:g}) is still the {edge} rate of its "
                f"grid after {cell.extensions} extensions: the cap (tuning.max_extensions={tuning.max_extensions}) "
                "is hit; the winner stands at the edge")
            changed = True
        elif tuning.confirm_seeds and not cell.confirmed:
            best = sorted(rows, key=lambda r: (-r["median"], r["lr"]))[:2]
            cell.confirmed = [f for f in cell.factors if any(_same_rate(study, ledger, cell, f, r) for r in best)]
            rates = ", ".join(format(r["lr"], "g") for r in best)
            log(f"tuning {cell.task}/{cell.variant}: its best two rates ({rates}) "
                f"get seeds {', '.join(map(str, tuning.confirm_seeds))} before the choice")
            new += [Point("tuning", cell.task, cell.variant, f, s) for f in cell.confirmed for s in tuning.confirm_seeds]
            changed = True
    return new, changed


def _same_rate(study: Study, ledger: Ledger, cell: Cell, factor: float, row: dict) -> bool:
    return math.isclose(ledger.config(Point("tuning", cell.task, cell.variant, factor, cell.seeds[0])).train.lr,
                        row["lr"], rel_tol=1e-9)


def tuning_cells(study: Study) -> list[Cell]:
    return [Cell(task, variant, sorted(float(f) for f in study.tuning.lr_factors), list(study.tuning.seeds))
            for task in study.tasks for variant in study.variants]


def final_points(study: Study) -> list[Point]:
    return [Point("final", task, variant, 1.0, seed) for task in study.tasks for variant in study.variants
            for seed in study.final.seeds]


def chosen_rows(study: Study, cells: list[Cell], ledger: Ledger) -> list[dict]:
    rows = []
    for cell in cells:
        found = _rows(cell, ledger, study.tuning.confirm_seeds if cell.confirmed else ())
        if found is None:
            raise ConfigError(f"tuning {cell.task}/{cell.variant} is not complete")
        rows += found
    return rows


# -- cost ----------------------------------------------------------------------------------------------

def seconds_per_run(study: Study) -> tuple[dict, str]:
    """{(task, variant): median training seconds of one run at the study's epochs} from the study's own
    records, else the second edition's, each record's time scaled by the study's epochs over its own
    (training time is about proportional to the epochs), and where they came from."""
    epochs = study_epochs(study)
    for folder, source in ((study.folder, "this study's records"), (REFERENCE_RECORDS, "the second edition's records")):
        found: dict[tuple, list] = {}
        for path in folder.glob("**/runs/*.json") if folder.is_dir() else []:
            record = store.read_record(path)
            if record and record.get("status") == "ok" and record.get("train_seconds") and record.get("epochs"):
                found.setdefault((record["task"], record["variant"]), []).append(
                    float(record["train_seconds"]) * epochs / float(record["epochs"]))
        if found:
            return {key: statistics.median(values) for key, values in found.items()}, source
    return {}, "no records (no estimate)"


def study_epochs(study: Study) -> float:
    """The epochs the study's runs train (its ``train.epochs`` override, else the schema's default)."""
    given = [item.partition("=")[2] for item in study.overrides if item.startswith("train.epochs=")]
    return float(given[-1]) if given else float(TrainConfig().epochs)


def estimate_hours(points: list[Point], costs: dict) -> float:
    if not costs:
        return math.nan
    every = statistics.median(costs.values())
    by_variant = {}
    for (_, variant), seconds in costs.items():
        by_variant.setdefault(variant, []).append(seconds)
    total = 0.0
    for p in points:
        seconds = costs.get((p.task, p.variant))
        if seconds is None:
            seconds = statistics.median(by_variant[p.variant]) if p.variant in by_variant else every
        total += seconds
    return total / 3600


# -- the command ---------------------------------------------------------------------------------------

def run_study(study: Study, launcher: list[str], dry_run: bool, say=print) -> int:
    ledger = Ledger(study)
    decisions = study.folder / "decisions.md"

    def log(line: str) -> None:
        say(f"- {line}")
        if not dry_run:
            decisions.parent.mkdir(parents=True, exist_ok=True)
            with open(decisions, "a") as handle:
                handle.write(f"- {time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    costs, cost_source = seconds_per_run(study)
    cells = tuning_cells(study)
    say(f"# Study {study.name} ({study.source}): {len(study.variants)} variants x {len(study.tasks)} tasks, "
        f"reference {study.reference}, margin ±{study.margin:g}, records under {study.folder}")
    base = [p for cell in cells for p in cell.points()]
    say(f"\n## Stage 1, tuning: {len(base)} grid runs ({len(study.tuning.lr_factors)} factors x "
        f"{len(study.tuning.seeds)} seed(s) per cell), extensions "
        f"{'up to ' + str(study.tuning.max_extensions) + ' per cell' if study.tuning.extend else 'off'}")
    planned: list[Point] = []
    pending = list(base)
    while True:
        missing = [p for p in pending if ledger.record(p) is None]
        if missing and dry_run:
            planned += missing
        elif missing:
            complete(study, ledger, missing, launcher, say)
        new, changed = decide(study, cells, ledger, log)
        pending = new
        if not changed:
            break
    extended = sum(cell.extensions for cell in cells)
    confirmed = sum(len(cell.confirmed) * len(study.tuning.confirm_seeds) for cell in cells)
    tuning_total = sum(len(cell.points(study.tuning.confirm_seeds if cell.confirmed else ())) for cell in cells)
    say(f"tuning: {tuning_total} runs ({len(base)} grid, {extended * len(study.tuning.seeds)} from {extended} "
        f"extension(s), {confirmed} confirmation); {tuning_total - len(planned)} done, {len(planned)} to run"
        + (" (and the extensions their results decide)" if planned else ""))
    finals = final_points(study)
    tuned_file = study.folder / "tuning" / "tuned.yaml"
    if planned:
        say(f"\n## Stage 2, final: {len(finals)} runs after tuning ({len(study.final.seeds)} seeds per cell)")
        say(f"\nestimated: {estimate_hours(planned + finals, costs):.1f} run-hours for the runs above, from {cost_source} "
            "(training time of single-thread runs, two side by side on 2 cores)")
        return 0
    rows = chosen_rows(study, cells, ledger)
    if dry_run:
        say("the tuning decisions, replayed from the records, choose:\n")
        say(tune.chosen_markdown(rows))
    else:
        tune.write_tuned_file(rows, study.folder / "tuning", tuned_file)
        log(f"tuning: wrote {tuned_file}")
    for note in tune.warnings_for(rows):
        say(f"  note: {note}")
    say(f"\n## Stage 2, final: {len(finals)} runs ({len(study.final.seeds)} seeds per cell) at the tuned rates")
    if dry_run:
        if tuned_file.is_file():
            done = sum(ledger.record(p) is not None for p in finals)
            left = [p for p in finals if ledger.record(p) is None]
            say(f"final: {done} done, {len(left)} to run")
        else:
            left = finals
            say(f"final: {len(finals)} to run once {tuned_file} is written")
        say(f"\nestimated: {estimate_hours(left, costs):.1f} run-hours for the runs left, from {cost_source} "
            "(training time of single-thread runs, two side by side on 2 cores)")
        return 0
    complete(study, ledger, finals, launcher, say)
    return verdicts(study, say)


def verdicts(study: Study, say) -> int:
    import analysis

    df = analysis.load_results(study.folder / "final")
    table = analysis.compare(df, analysis.load_predictions(df), reference=study.reference, margin=study.margin)
    say(f"\n## Stage 3, verdicts against {study.reference} (paired, dev, margin ±{study.margin:g})\n")
    say(analysis.to_markdown(analysis.format_comparison(table)))
    report = study.folder / "report.html"
    analysis.write_report(df, report, comparison=table, title=f"lora-arena study: {study.name}")
    say(f"\nwrote {report}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="the study file (YAML; docs/protocol.md lists its keys)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its cost; train nothing")
    parser.add_argument("launcher", nargs="*", help="Hydra overrides for every sweep, e.g. hydra/launcher=joblib "
                                                    "hydra.launcher.n_jobs=2")
    args = parser.parse_args(argv)
    try:
        bad = [arg for arg in args.launcher if not arg.startswith(("hydra/", "hydra."))]
        if bad:
            raise ConfigError(f"{bad[0]!r}: only Hydra's launcher settings (hydra/launcher=..., hydra.launcher....) "
                              "go on the command line; the runs' settings are the study file's overrides")
        study = load_study(args.study)
        return run_study(study, args.launcher, args.dry_run)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
