"""The ``evomerge`` command line: one command per job, same names as the Python API.

User mistakes (``EvomergeError``) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evomerge.errors import EvomergeError

# rich_markup_mode=None: help text is plain text ("extra [dashboard]" is not a markup tag)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="evomerge: merge language models and search merge recipes automatically.")
err = Console(stderr=True)


@app.command()
def merge(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (mergekit schema).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")],
    device: Annotated[str, typer.Option(help="Compute device: cpu or cuda[:N].")] = "cpu",
    dtype: Annotated[str | None, typer.Option(
        help="Compute dtype (default float32).")] = None,
    out_dtype: Annotated[str | None, typer.Option(
        help="Storage dtype (default: the recipe's out_dtype/dtype, else the base's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for stochastic methods (DARE, DELLA).")] = 0,
    shard_size: Annotated[str, typer.Option(help="Maximum shard size, e.g. 2GB.")] = "2GB",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Merge even if inputs or results hold NaN/Inf.")] = False,
) -> None:
    """Merge the models of RECIPE into a Hugging Face checkpoint at OUT."""
    from evomerge.io.writer import parse_size
    from evomerge.merge.disk import merge_to_disk
    from evomerge.recipe import load_recipe

    _on_interrupt(f"interrupted; nothing was written to {out}")
    parsed = load_recipe(recipe)
    size = parse_size(shard_size)
    start = time.perf_counter()
    with _progress(quiet, transient=True) as update:
        tensors = (lambda done, total: update("merging", done, total, "tensors")
                   ) if update else None
        path = merge_to_disk(parsed, out, device=device, dtype=dtype, out_dtype=out_dtype,
                             force=force, seed=seed, shard_size=size, progress=tensors,
                             allow_nonfinite=allow_nonfinite,
                             log=None if quiet else err.print)
    if not quiet:
        err.print(f"wrote {path} in {time.perf_counter() - start:.1f} s")


@app.command()
def init(
    base: Annotated[str, typer.Option("--base", help="The base model directory.")],
    model: Annotated[list[str], typer.Option("--model", help="A model to merge (repeat).")],
    task: Annotated[list[str], typer.Option(
        "--task", help="NAME=SEARCH_FILE,TEST_FILE, NAME=lm_eval:TASK or a zoo task (repeat).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Config file to write.")
                   ] = Path("evolve.yaml"),
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Write a commented starting config for your models and tasks (then evomerge evolve)."""
    from evomerge.run.init import init_config

    path = init_config(base, model, task, out, device=device)
    typer.echo(f"wrote {path}: edit it, then run evomerge evolve {path}")


@app.command("eval")
def eval_command(
    paths: Annotated[list[str], typer.Argument(
        help="Model directories, LoRA adapters (or BASE+ADAPTER) or recipe YAML files.")],
    tasks: Annotated[Path, typer.Option(
        "--tasks", help="Tasks YAML: a list of task entries as in an evolve config's tasks: "
        "(an evolve config works too).")],
    split: Annotated[str, typer.Option(help="test (held-out) or search.")] = "test",
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Also write scores, intervals and per-item answers here.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 16,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --json file.")
                     ] = False,
) -> None:
    """Score models, adapters or recipes on tasks: accuracy with item counts and 95 %
    intervals, each model against the first on the same items (Python: evomerge.eval_models)."""
    from evomerge.config import load_tasks
    from evomerge.eval.job import eval_models
    from evomerge.io.outdir import atomic_write_text

    config = load_tasks(tasks)
    if json_out is not None:
        if json_out.exists() and not force:
            raise EvomergeError(f"{json_out} exists (--force to replace it, or another --json)")
        if json_out.is_dir():
            raise EvomergeError(f"--json {json_out} is a directory; name a file")
    _on_interrupt("interrupted; nothing was written")
    report = eval_models(paths, config.tasks, split=split, device=device,  # type: ignore[arg-type]
                         dtype=dtype, batch_size=batch_size, log=err.print)
    _print_scores(report)
    if json_out is not None:
        import json

        atomic_write_text(json_out, json.dumps(report.to_json(), indent=2))
        typer.echo(f"wrote {json_out}")


def _print_scores(report) -> None:  # noqa: ANN001
    from rich.table import Table

    names = list(report.models[0].tasks)
    sizes = sorted({s.n for m in report.models for s in m.tasks.values()})
    table = Table(title=f"{report.split} split: accuracy % [95 % interval], "
                  f"{'/'.join(map(str, sizes))} items")
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for m in report.models:
        table.add_row(m.label, *(f"{100 * s.accuracy:.1f} [{100 * s.interval[0]:.1f}-"
                                 f"{100 * s.interval[1]:.1f}]" for s in m.tasks.values()))
    _table_console().print(table)
    for m in report.models:
        for note in m.notes:
            err.print(f"note: {m.label}: {note}", highlight=False, markup=False)
    for c in report.comparisons:
        typer.echo(c["sentence"])


@app.command("methods")
def list_methods() -> None:
    """List merge methods and their parameters."""
    from evomerge.merge.registry import methods

    for name, m in sorted(methods().items()):
        params = []
        for p in m.params():
            default = "required" if p.required else repr(p.default)
            scope = "per model" if p.meta.per_model else "shared"
            params.append(f"{p.name} ({p.type.__name__}, {scope}, {default})")
        base = {"required": "base required", "optional": "base optional",
                "input": "no base"}[m.base]
        typer.echo(f"{name:18s} [{base}] " + ", ".join(params))


@app.command()
def evolve(
    config: Annotated[Path | None, typer.Argument(help="Run config YAML.")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Resume the run in this directory (with CONFIG: that config, if it only "
             "extends the run).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard an earlier run in the "
                                        "config's run_dir first.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    log_every: Annotated[float, typer.Option(
        "--log-every", help="Without a terminal: seconds between progress lines.")] = 30.0,
) -> None:
    """Search a merge recipe (pymoo, or SMAC + Hyperband) with candidates merged in memory."""
    from evomerge.config import load_config
    from evomerge.errors import ConfigError
    from evomerge.run.loop import evolve as run_evolve

    if config is None and resume is None:
        raise ConfigError("give a config file, or --resume RUN_DIR")
    cfg = load_config(config if config is not None else resume / "config.yaml")  # type: ignore[operator]
    if resume is not None:
        cfg = cfg.model_copy(update={"run_dir": str(resume)})
    _on_interrupt(f"interrupted: resume with evomerge evolve --resume {cfg.run_dir}")
    with _progress(quiet, log_every=log_every) as progress:
        result = run_evolve(cfg, resume=resume is not None, fresh=fresh, progress=progress,
                            log=typer.echo)
    _print_result(result)


DEMO_INTRO = (
    "demo: the zoo's English math expert (math_en) and Italian language expert (lang_it) "
    "merged by task arithmetic, their weights found by a genetic algorithm (16 x 8), scored "
    "on arithmetic asked in Italian (zoo task add_it), against the input models and the "
    "hand-set baselines")


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option(help="Where the demo run goes.")] = Path("runs/demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard a previous demo run.")
                     ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    log_every: Annotated[float, typer.Option(
        "--log-every", help="Without a terminal: seconds between progress lines.")] = 30.0,
) -> None:
    """The offline demo: evolve a cross-lingual merge of the zoo's math and Italian experts."""
    from evomerge.run.demo import demo_config
    from evomerge.run.loop import evolve as run_evolve

    resume = not fresh and (run_dir / "config.yaml").exists()
    cfg = demo_config(run_dir)
    typer.echo(DEMO_INTRO)
    _on_interrupt(f"interrupted: run evomerge demo --run-dir {run_dir} again to resume")
    with _progress(quiet, log_every=log_every) as progress:
        result = run_evolve(cfg, resume=resume, fresh=fresh, progress=progress, log=typer.echo)
    _print_result(result)


@app.command("np-merge")
def np_merge(
    config: Annotated[Path, typer.Argument(help="NP Merge config YAML.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output model directory "
                                              "(default: the config's output).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    log_every: Annotated[float, typer.Option(
        "--log-every", help="Without a terminal: seconds between progress lines.")] = 30.0,
) -> None:
    """Learn one merging coefficient per parameter on a task's items (NP Merge)."""
    from rich.table import Table

    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge as run_np_merge

    cfg = load_np_merge_config(config)
    if out is not None:
        cfg = cfg.model_copy(update={"output": str(out)})
    _on_interrupt(f"interrupted; nothing was written to {cfg.output}")
    with _progress(quiet, log_every=log_every) as update:
        steps = (lambda done, total, loss: update("learning", done, total, f"loss {loss:.4f}")
                 ) if update else None
        result = run_np_merge(cfg, force=force, progress=steps, log=typer.echo)
    if result.test:
        table = Table(title="test accuracy (%)")
        table.add_column("model")
        table.add_column("accuracy", justify="right")
        for label, acc in result.test.items():
            table.add_row(label, f"{100 * acc:.1f}")
        Console().print(table)
    kept = (f"; kept step {', '.join(map(str, result.best_steps))} by validation loss"
            if result.best_steps else "")
    typer.echo(f"wrote {result.output} (loss {result.losses[0]:.4f} -> "
               f"{result.losses[-1]:.4f} over {len(result.losses)} steps{kept})")
    for note in result.notes:
        typer.echo(f"note: {note}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (finished or running).")],
    top: Annotated[int, typer.Option(help="How many of the best candidates to list.")] = 5,
) -> None:
    """Summarise a run so far: evaluations, items, best candidates; writes progress.png."""
    from rich.table import Table

    from evomerge.run.report import summarize

    s = summarize(run_dir, top=top)
    kinds = ", ".join(f"{n} {k}" for k, n in s["evaluations"].items())
    items = " + ".join(f"{n} {split}" for split, n in s["items"].items())
    typer.echo(f"{run_dir}: {kinds or 'no evaluations yet'}; {items or 0} item evaluations; "
               + ("finished (report.md)" if s["finished"] else "not finished"))
    if s["best"]:
        from evomerge.run.export import recipe_summary

        budgets = any(b["budget"] for b in s["best"])
        table = Table(title="best candidates by estimate (%); evomerge export RUN_DIR ID")
        for col in ("id", "trial" if budgets else "generation", *(["budget"] if budgets else []),
                    *s["tasks"]):
            table.add_column(col, justify="right")
        table.add_column("recipe")
        for b in s["best"]:
            table.add_row(str(b["id"]), str(b["generation"]),
                          *([str(b["budget"])] if budgets else []),
                          *(f"{100 * b['estimates'][t]:.1f}" for t in s["tasks"]),
                          recipe_summary(b["recipe"]))
        Console(width=200).print(table)
    for note in s["notes"]:
        typer.echo(f"note: {note}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    candidate: Annotated[str, typer.Argument(
        help="best, a candidate id (12 or 'candidate 12'), or a label of the final table.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an output evomerge wrote.")
                     ] = False,
) -> None:
    """Write any recorded candidate (or baseline) of a run as a checkpoint with its recipe."""
    from evomerge.run.export import export_candidate

    path, label = export_candidate(run_dir, candidate, out, force=force)
    typer.echo(f"wrote {path} ({label})")


@app.command()
def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (running or not).")],
    port: Annotated[int, typer.Option(help="Port on localhost.")] = 8080,
) -> None:
    """Watch a run in optuna-dashboard (extra [dashboard]): trials, history, Pareto front."""
    from evomerge.run.dashboard import serve

    _on_interrupt("dashboard stopped")
    serve(run_dir, port=port, log=typer.echo)


MAX_ROWS = 20  # rows of the final table on the terminal (all of them in report.md)


def _table_console() -> Console:
    """A terminal's own width; without one (a log file, CI) a table is not squeezed into
    80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_result(result) -> None:  # noqa: ANN001
    from rich.table import Table

    from evomerge.run.report import final_columns, final_rows, item_counts

    names = list(next(iter(result.test.values())))
    more = 0
    if result.final:  # estimate, validation and test of every contender of the final choice
        # with several tasks the estimates stay in report.md, so the table fits 80 columns
        keep = [k for k in range(3 * len(names)) if len(names) == 1 or k % 3]
        table = Table(title="final choice: accuracy (%) "
                      + ("on the search subset (estimate), " if len(names) == 1 else "")
                      + "on the whole search split (validation) and the held-out test split, "
                      f"with the 95 % interval ({item_counts(result.final, names)})")
        table.add_column("model", no_wrap=True)
        table.add_column("role")
        columns = final_columns(names)
        for k in keep:
            table.add_column(columns[k], justify="right", no_wrap=True)
        rows = [(r, [c[k] for k in keep])
                for r, c in final_rows(result.final, names, noise="short")]
        # at most MAX_ROWS: the answer, the inputs and baselines, then the best candidates
        room = MAX_ROWS - sum(r["chosen"] or r["role"] != "candidate" for r, _ in rows)
        shown = [(r, c) for r, c in rows if r["chosen"] or r["role"] != "candidate"
                 or (room := room - 1) >= 0]
        more = len(rows) - len(shown)
        for r, cells in shown:
            table.add_row(("* " if r["chosen"] else "") + r["label"], r["role"], *cells)
    else:
        table = Table(title="held-out test accuracy (%)")
        table.add_column("model")
        for n in names:
            table.add_column(n, justify="right")
        for label, accs in result.test.items():
            table.add_row(label, *(f"{100 * accs[n]:.1f}" for n in names))
    _table_console().print(table)
    if more:
        typer.echo(f"({more} more candidates in {result.run_dir / 'report.md'})")
    from evomerge.run.export import recipe_summary

    typer.echo(f"the answer: {result.chosen}: "
               + recipe_summary(result.best_recipe.model_dump(mode="json", exclude_none=True)))
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    typer.echo(f"run directory: {result.run_dir} (report.md, plots, best/ checkpoint); "
               f"{result.new_evaluations} new evaluations, {result.evaluations} recorded")


class _progress:
    """Progress with elapsed time and ETA, one entry per phase; a context manager yielding
    ``update(phase, done, total, msg)``, or None when quiet. On a terminal: rich bars. Without
    one (nohup, CI, cluster logs): a plain line per phase at its start, every ``log_every``
    seconds and at its end, on stdout."""

    def __init__(self, quiet: bool, transient: bool = False, log_every: float = 30.0) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.transient = transient
        self.log_every = log_every
        self.bar: Progress | None = None
        self.tasks: dict[str, object] = {}
        self.started: dict[str, float] = {}
        self.logged: dict[str, tuple[float, int]] = {}  # phase -> (time, done) last printed

    def __enter__(self):  # noqa: ANN204
        if self.quiet:
            return None
        if not self.tty:
            return self.line
        self.bar = Progress(TextColumn("[bold]{task.description:12s}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), TextColumn("{task.fields[msg]}"),
                            console=err, transient=self.transient)
        self.bar.start()
        return self.update

    def update(self, phase: str, done: int, total: int, msg: str = "") -> None:
        assert self.bar is not None
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(phase, total=total, msg="")
        self.bar.update(self.tasks[phase], completed=done, total=total, msg=msg)

    def line(self, phase: str, done: int, total: int, msg: str = "") -> None:
        now = time.monotonic()
        start = self.started.setdefault(phase, now)
        last = self.logged.get(phase)
        finished = total > 0 and done >= total
        if last is not None and (last[1] == done or (now - last[0] < self.log_every
                                                      and not finished)):
            return
        self.logged[phase] = (now, done)
        elapsed = now - start
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        eta = ""
        if 0 < done < total and elapsed > 0:
            eta = f" eta {_clock(elapsed / done * (total - done))}"
        typer.echo(f"{phase} {done}/{total}{pct} elapsed {_clock(elapsed)}{eta}"
                   + (f" | {msg}" if msg else ""))

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


zoo_app = typer.Typer(no_args_is_help=True, help="The offline demo zoo of tiny models.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
def zoo_build(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Target directory (default: "
                                              "the package's committed zoo).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing zoo.")] = False,
    experts_only: Annotated[bool, typer.Option(
        "--experts-only", help="Keep the existing zoo's base and retrain only the experts "
                               "(CPU: a few minutes).")] = False,
) -> None:
    """Train the demo zoo from its recorded recipe (CPU: about 15 minutes)."""
    from evomerge.errors import EvomergeError as UserError
    from evomerge.zoo.build import build_zoo
    from evomerge.zoo.manifest import ZOO_DIR

    target = out or ZOO_DIR
    if (target / "MANIFEST.json").exists() and not force:
        raise UserError(f"a zoo already exists in {target} (use --force to rebuild it)")
    if experts_only and not (target / "MANIFEST.json").exists():
        raise UserError(f"--experts-only needs an existing zoo in {target}")
    paths = build_zoo(target, log=lambda line: err.print(line, highlight=False),
                      base_from=target if experts_only else None)
    err.print(f"wrote {len(paths)} models to {target}")


@zoo_app.command("verify")
def zoo_verify(root: Annotated[Path | None, typer.Argument(help="Zoo directory.")] = None
               ) -> None:
    """Check the zoo's files against their checksums."""
    from evomerge.zoo.manifest import ZOO_DIR, verify

    manifest = verify(root or ZOO_DIR)
    typer.echo(f"ok: {len(manifest['files'])} files, {manifest['total_bytes'] / 1e6:.1f} MB")


@zoo_app.command("report")
def zoo_report(root: Annotated[Path | None, typer.Argument(help="Zoo directory.")] = None
               ) -> None:
    """Accuracy of every zoo model and of hand-set merges on the held-out test split."""
    from evomerge.zoo.manifest import ZOO_DIR, read_manifest
    from evomerge.zoo.report import accuracy_table, markdown

    zoo = root or ZOO_DIR
    rows = accuracy_table(zoo, read_manifest(zoo)["models"], log=lambda line: None)
    typer.echo(markdown(rows))


_interrupt_message = ["interrupted"]
_signal_seen = [0]


def _on_interrupt(message: str) -> None:
    """What to tell the user if this command is interrupted (Ctrl-C or SIGTERM)."""
    _interrupt_message[0] = message


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed and locks released."""
    _signal_seen[0] = signum
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point. Exit codes: 0 success; 2 a user mistake (one line, nothing written);
    130 interrupted by Ctrl-C (143 by SIGTERM), with how to resume; 1 an internal error."""
    import signal

    _interrupt_message[0], _signal_seen[0] = "interrupted", 0
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, _terminate)
        if previous[signal.SIGINT] is signal.default_int_handler:  # not when ignored (nohup)
            signal.signal(signal.SIGINT, _terminate)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        previous = {}
    try:
        try:
            rv = _run(argv)
            code = rv if isinstance(rv, int) else 0
        except KeyboardInterrupt:  # raised outside the command (typer returns 130 inside)
            code = 130
        if code == 130:
            err.print(_interrupt_message[0], highlight=False, soft_wrap=True, markup=False)
            code = 128 + (_signal_seen[0] or signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise SystemExit(code)


def _run(argv: list[str] | None) -> object:
    """The app, with user mistakes and usage errors as one line (exit 2)."""
    try:
        return app(args=argv, standalone_mode=False)
    except Exception as exc:
        # native code (safetensors, torch) may turn the KeyboardInterrupt a signal raised
        # inside it into an error of its own: after a signal, every failure is the interrupt
        if _signal_seen[0]:
            return 130
        if not isinstance(exc, EvomergeError):
            return _other(exc)
        _one_line(str(exc))
        return 2


def _other(exc: Exception) -> object:
    """Usage errors and failed writes as one line; anything else is a bug (re-raised)."""
    import click

    try:
        raise exc
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except (click.exceptions.ClickException, typer.exceptions.TyperException) as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help was the answer
            if exc.format_message().strip():
                err.print(exc.format_message(), highlight=False, markup=False)
            return 2
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _one_line(f"{exc.format_message()}{hint}")
        return int(getattr(exc, "exit_code", 2) or 2)
    except OSError as exc:  # a write that failed where no better message was given
        import errno

        from evomerge.io.outdir import write_error

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                             errno.EPERM):
            raise
        _one_line(str(write_error(Path(exc.filename or "output"), exc)))
        return 2


def _one_line(message: str) -> None:
    from rich.markup import escape

    text = " ".join(message.split())
    err.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
