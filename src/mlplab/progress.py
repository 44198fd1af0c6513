"""Progress of a suite, shown where the user is: rich bars in a terminal, a live HTML block in
Jupyter, plain lines in a log. Training code only emits events (dicts); `Tracker` turns them into
state (which group, which epoch, how far into it, the best validation accuracy so far, an ETA),
and a view renders that state.

Events: suite (plan: each group's members, epochs and cost), group (a group starts), batch (how
far into an epoch, at most every half second), epoch (an epoch ended: validation accuracies),
group_done, run (a run was stored), rung (successive halving decided a rung), log (a line of
text; `resumed` set when a group resumed from its checkpoint), interrupted (Ctrl-C or a kernel
interrupt: what was saved). Under Dask, workers send their epoch
events to the driver, tagged with their group.

The ETA weights each group by its cost (parameters x members x epochs) and divides the work
left by the rate measured so far: a number from the first half second of training on.
"""

from __future__ import annotations

import contextlib
import html
import sys
import time
from collections.abc import Callable, Iterator

from .safetext import printable

Progress = Callable[[dict], None]


class Tracker:
    """Suite progress as state: done/total work, per running group its epoch, step and best
    validation accuracy, and the ETA."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.started: float | None = None  # first training event: the rate counts from here
        self.suite, self.plan, self.groups, self.finished = "", [], {}, set()
        self.nothing = ""  # a rerun with every run stored already: that, instead of a bar
        self.runs_total = self.runs_stored = 0
        self.current = 0  # the group started last
        self.lines: list[str] = []
        self.resumed, self.interrupted = 0, ""  # groups resumed from checkpoints; the last word

    def update(self, e: dict) -> None:
        kind = e["event"]
        if kind == "suite":
            self.suite, self.plan = e["suite"], e.get("plan", [])
            self.runs_total = e["todo"]
            self.nothing = "" if e["todo"] else nothing_text(e)
        elif kind == "group":
            self.current = e["index"]  # in-process epochs are this group's (halving revisits groups)
            self.groups[e["index"]] = {"label": e["label"], "epoch": 0, "epochs": e["epochs"],
                                       "frac": 0.0, "best": None, "running": e["members"]}
        elif kind in ("batch", "epoch"):
            self.started = self.started or time.perf_counter()
            g = self.groups.setdefault(e.get("group", self.current), {
                "label": e.get("label", ""), "epoch": 0, "epochs": e["epochs"], "frac": 0.0,
                "best": None, "running": 0})
            if kind == "batch":
                g["epoch"], g["frac"] = e["epoch"] - 1, e["step"] / e["steps"]
            else:
                g["epoch"], g["frac"], g["running"] = e["epoch"], 0.0, e["running"]
                accs = [a for a in e["val_acc"] if a == a]
                if accs:
                    g["best"] = max(accs + ([g["best"]] if g["best"] is not None else []))
        elif kind == "group_done":
            self.finished.add(e["index"])
        elif kind == "run":
            self.runs_stored += 1
        elif kind == "log" and e.get("resumed"):
            self.resumed += 1
        elif kind == "interrupted":
            self.interrupted = e["message"]
        if kind not in ("batch", "epoch"):
            self.lines.append(describe(e))

    def cost(self, index: int) -> float:
        return self.plan[index]["cost"] if index < len(self.plan) else 1.0

    def fraction(self) -> float:
        """Share of the suite's work done, weighting groups by cost."""
        total = sum(p["cost"] for p in self.plan) or 1.0
        done = 0.0
        for i, g in self.groups.items():
            if i in self.finished:
                done += self.cost(i)
            elif g["epochs"]:
                done += self.cost(i) * min(1.0, (g["epoch"] + g["frac"]) / g["epochs"])
        return min(1.0, done / total)

    def eta(self) -> float | None:
        """Seconds left at the rate measured so far (None before any training)."""
        f = self.fraction()
        if self.started is None or f <= 0:
            return None
        spent = time.perf_counter() - self.started
        return spent * (1 - f) / f

    def active(self) -> list[tuple[int, dict]]:
        return [(i, g) for i, g in sorted(self.groups.items()) if i not in self.finished]


def describe(e: dict) -> str:
    """One plain line for an event (what the log view prints): names are data, so control
    characters in them never reach the terminal."""
    return printable(_describe(e))


def _describe(e: dict) -> str:
    kind = e["event"]
    if kind == "suite" and not e["todo"]:
        return f"suite {e['suite']}: {nothing_text(e)}"
    if kind == "suite":
        return (f"suite {e['suite']}: {e['cells']} runs, {e['todo']} to train in {e['groups']} "
                f"groups on {e['device']}")
    if kind == "group":
        return f"group {e['index'] + 1}/{e['groups']}: {e['label']}"
    if kind == "group_done":
        return f"group {e['index'] + 1}/{e['groups']} finished: {e['label']}"
    if kind == "run":
        return f"  done {e['name']} seed {e['seed']}: {e['status']}, test_acc {e['test_acc']:.4f}"
    if kind == "log":
        return f"  {e['message']}"
    if kind == "interrupted":
        return e["message"]
    if kind == "rung":
        return (f"rung at epoch {e['epoch']}: {e['contenders']} configurations ranked by mean "
                f"{e['metric']} over seeds; {len(e['kept'])} go on, {len(e['pruned'])} pruned")
    return ""


def nothing_text(e: dict) -> str:
    """A suite event with nothing to train, said instead of an empty bar."""
    return f"nothing to train: {e['cells']} runs already in {e.get('out', 'OUT')}"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def group_text(i: int, g: dict, n_groups: int) -> str:
    best = f"  best val_acc {g['best']:.4f}" if g["best"] is not None else ""
    return (f"group {i + 1}/{n_groups}  epoch {min(g['epoch'] + 1, g['epochs'])}/{g['epochs']} "
            f"({g['frac']:.0%}){best}  {g['running']} running")


class LineView:
    """Plain lines on stderr (logs, pipes, CI): events as they come, an epoch line per epoch."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tracker = Tracker()

    def __call__(self, e: dict) -> None:
        t = self.tracker
        t.update(e)
        if e["event"] == "epoch":  # the epoch that just ended
            i = e.get("group", t.current)
            g = t.groups[i]
            best = f"  best val_acc {g['best']:.4f}" if g["best"] is not None else ""
            self._print(f"  group {i + 1}/{len(t.plan)}  epoch {e['epoch']}/{e['epochs']}{best}  "
                        f"{g['running']} running  [{t.fraction():.0%} of suite, ETA {clock(t.eta())}]")
        elif e["event"] != "batch":
            self._print(describe(e))

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichView:
    """rich bars on a terminal: the suite (work done, ETA) and each running group (epoch and
    progress inside it, best validation accuracy)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.tracker = Tracker()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                             TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.bars.start()
        self.suite_task = self.bars.add_task("suite", total=1.0, info="")
        self.group_tasks: dict[int, int] = {}

    def __call__(self, e: dict) -> None:
        t = self.tracker
        t.update(e)
        if e["event"] not in ("batch", "epoch"):
            line = describe(e)
            if line:
                self.bars.console.print(line, highlight=False, markup=False)
        for i in list(self.group_tasks):
            if i in t.finished:
                self.bars.remove_task(self.group_tasks.pop(i))
        for i, g in t.active():
            if i not in self.group_tasks:
                self.group_tasks[i] = self.bars.add_task(f"  group {i + 1}/{len(t.plan)}", total=1.0,
                                                         info="")
            done = (g["epoch"] + g["frac"]) / g["epochs"] if g["epochs"] else 0
            best = f"best val_acc {g['best']:.4f}  " if g["best"] is not None else ""
            self.bars.update(self.group_tasks[i], completed=done,
                             info=f"epoch {min(g['epoch'] + 1, g['epochs'])}/{g['epochs']}  {best}")
        self.bars.update(self.suite_task, completed=t.fraction(), visible=not t.nothing,
                         info=f"{t.runs_stored}/{t.runs_total} runs  ETA {clock(t.eta())}")

    def close(self) -> None:
        self.bars.stop()


class JupyterView:
    """A live HTML block in a notebook (IPython's display handle, no widgets needed), redrawn at
    most four times a second and once at the end."""

    def __init__(self) -> None:
        from IPython.display import HTML, display

        self.HTML = HTML
        self.tracker = Tracker()
        self.handle = display(HTML("<i>mlplab: starting…</i>"), display_id=True)
        self.last = 0.0

    def __call__(self, e: dict) -> None:
        self.tracker.update(e)
        if e["event"] in ("batch", "epoch") and time.perf_counter() - self.last < 0.25:
            return
        self.draw()

    def draw(self) -> None:
        self.last = time.perf_counter()
        t = self.tracker
        bar = lambda f: f'<progress value="{f:.4f}" max="1" style="width:18em"></progress>'  # noqa: E731
        if t.nothing:
            self.handle.update(self.HTML(f"<div><b>{html.escape(printable(t.suite))}</b> · "
                                         f"{html.escape(printable(t.nothing))}</div>"))
            return
        rows = [f"<div><b>{html.escape(printable(t.suite))}</b> {bar(t.fraction())} {t.fraction():.0%} · "
                f"{t.runs_stored}/{t.runs_total} runs · "
                f"{'interrupted' if t.interrupted else f'ETA {clock(t.eta())}'}"
                f"{f' · {t.resumed} resumed from checkpoints' if t.resumed else ''}</div>"]
        for i, g in t.active():
            done = (g["epoch"] + g["frac"]) / g["epochs"] if g["epochs"] else 0
            rows.append(f"<div>{bar(done)} {html.escape(group_text(i, g, len(t.plan)))}<br>"
                        f"<small>{html.escape(printable(g['label']))}</small></div>")
        rows += [f"<div><small>{html.escape(line)}</small></div>" for line in t.lines[-4:] if line]
        self.handle.update(self.HTML("".join(rows)))

    def close(self) -> None:
        self.draw()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a display handle renders), False in IPython's
    terminal or plain Python."""
    mod = sys.modules.get("IPython")
    shell = mod.get_ipython() if mod and hasattr(mod, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


@contextlib.contextmanager
def progress_view(progress: bool | Progress | None = True) -> Iterator[Progress | None]:
    """The view for where we are: a callable passes through, False/None shows nothing."""
    if callable(progress):
        yield progress
        return
    if not progress:
        yield None
        return
    view = JupyterView() if in_notebook() else RichView() if sys.stderr.isatty() else LineView()
    try:
        yield view
    finally:
        view.close()
