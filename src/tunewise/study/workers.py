"""Running trials: the Optuna storage, workers that drain the queue, one trial as a fit, data-parallel trials."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from tunewise.config import (
    DEFAULT_TASK,
    DataConfig,
    TrainConfig,
    with_task_knobs,
)
from tunewise.errors import ConfigError, TunewiseError, interrupt_behind, one_line, stopped_quietly
from tunewise.io import file_safe
from tunewise.records import Leaderboard, RunRecord
from tunewise.strategies import get_strategy
from tunewise.study.budget import CHEAP_TIER_COST, explore_allowance, least_cost, reserve, waiting_grace
from tunewise.study.config import SearchConfig
from tunewise.study.tiers import GracePruner, head_only, strategy_choices, trials_of
from tunewise.tasks import get_task

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger("tunewise")


PASSWORD_VARIABLE = "TUNEWISE_STORAGE_PASSWORD"
"""Where the storage's password comes from when the URL holds none: settings.json never keeps it."""


def open_study(run_dir: Path, storage: str | None = None) -> optuna.Study:
    """The search's study: in the database its settings name, or in run_dir/study.journal.
    `storage`: the URL given again (--resume, --worker), for the password settings.json lacks."""
    settings = json.loads((run_dir / "settings.json").read_text())
    saved = settings["storage"]
    if storage and (not saved or masked(storage) != masked(saved)):
        raise TunewiseError(f"{str(run_dir)!r} keeps its study in {masked(saved) if saved else 'its study.journal'}, "
                            f"not in --storage {masked(storage)}. Pass that --storage, or none (the password then "
                            f"comes from {PASSWORD_VARIABLE}).")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=settings["study"], storage=connect(storage or saved, run_dir),
                               direction="maximize", load_if_exists=True, pruner=GracePruner())


def connect(storage: str | None, run_dir: Path | None = None) -> optuna.storages.BaseStorage:
    """A database storage (checked by connecting), or the journal file in `run_dir`."""
    if storage:
        url = _with_password(storage)
        try:
            return optuna.storages.RDBStorage(url.render_as_string(hide_password=False),
                                              engine_kwargs={"pool_pre_ping": True})
        except Exception as err:  # the driver's own error types vary: report any, start nothing
            reason = one_line(err).replace(url.password, "***") if url.password else one_line(err)
            raise TunewiseError(f"cannot reach the study storage {masked(storage)}: {reason}. Check the URL, that "
                                f"the server runs, the password (in the URL or in {PASSWORD_VARIABLE}) and that "
                                "the driver is installed (PostgreSQL: pip install 'tunewise[postgres]').") from None
    from optuna.storages.journal import JournalFileBackend

    assert run_dir is not None, "without a storage URL the study is a file in the run folder"
    return optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


def masked(storage: str) -> str:
    """A storage URL as it is printed and stored: postgresql://user:***@host/db."""
    return _parsed(storage).render_as_string(hide_password=True)


def _with_password(storage: str) -> URL:
    """The URL to connect with: its own password, else the variable's; a masked one (settings.json's)
    without the variable is dropped, so that the driver's own apply (PostgreSQL: PGPASSWORD, ~/.pgpass)."""
    url = _parsed(storage)
    if url.username and url.password in (None, "***"):
        url = url._replace(password=os.environ.get(PASSWORD_VARIABLE))
    return url


def _parsed(storage: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(storage)
    except ArgumentError:  # not repeated in the message: it may hold a password
        raise ConfigError("--storage is not a database URL (dialect://user@host/db, e.g. postgresql://alice@db/"
                          f"tunewise with the password in {PASSWORD_VARIABLE}). Check it, or leave --storage out "
                          "for a journal file in the run folder.") from None


def drain(run_dir: Path, study: optuna.Study, workers: int, storage: str | None = None) -> None:
    """Run every waiting trial, in this process and `workers - 1` more sharing the study (through
    `storage`, the URL given with its password, or settings.json's). Stopped
    (Ctrl-C, SIGTERM), it stops the others too: each leaves its trial running in the study, to be
    queued again by `search --resume`."""
    context = multiprocessing.get_context("spawn")
    helpers = [context.Process(target=stopped_quietly, args=(__name__, "work", str(run_dir), None, storage))
               for _ in range(workers - 1)]
    with _ctrl_c_ignored():
        for helper in helpers:
            helper.start()
    try:
        work(str(run_dir), study)
        while _wait_for_others(study):  # trials that workers on other machines (--worker) still run
            work(str(run_dir), study)  # and those of dead workers, queued again
    except KeyboardInterrupt:
        for helper in helpers:  # a SIGTERM reaches this process alone; Ctrl-C reached them already
            helper.terminate()
        raise
    finally:
        for helper in helpers:
            helper.join()


def _wait_for_others(study: optuna.Study, poll_seconds: float = 2.0) -> bool:
    """Wait while trials run elsewhere, until none does or one is waiting (a dead worker's trial,
    queued again). Returns whether there is a waiting trial to run."""
    said: set[str] = set()
    while True:
        requeue_dead(study)
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if not trials or any(t.state == TrialState.WAITING for t in trials):
            return bool(trials)
        workers = {str(t.user_attrs.get("worker", "a worker")) for t in trials}
        if workers - said:
            tqdm.write(f"waiting for {len(trials)} trial(s) running on {', '.join(sorted(workers))}")
            said |= workers
        time.sleep(poll_seconds)


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C ignored while helpers start: they inherit that and keep it until stopped_quietly's handler
    is in place, so a Ctrl-C during their start-up code (seconds of imports) prints no traceback from
    each. The coordinator, stopped, stops them with SIGTERM. (One in the milliseconds of start() is
    lost: blocking it instead would not do, another thread of this process would take it.)"""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


BUDGET_LOCK = "budget.lock"
"""The file lock in the search folder under which workers reserve the explore tier's budget."""


def work(run_dir: str, study: optuna.Study | None = None, storage: str | None = None) -> int:
    """Take waiting trials one at a time until none is left; past the explore tier's share of
    the budget, its waiting trials are closed as failed with the reason. Returns how many ran."""
    folder = Path(run_dir)
    settings = with_task_knobs(json.loads((folder / "settings.json").read_text()))
    study = study or open_study(folder, storage)
    config = SearchConfig(**settings["search"])
    unit, allowance = config.limit.unit, explore_allowance(config)
    cacheable = get_task(settings.get("task", DEFAULT_TASK)).cacheable
    ran = 0
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        if "tier" not in trial.user_attrs:  # another worker took the last waiting trial first
            trial.set_user_attr("tier", "none")
            study.tell(trial, state=TrialState.FAIL)
            break
        strategy = trial.suggest_categorical("strategy", strategy_choices(study))
        lr = trial.suggest_float("lr", 1e-12, 1e6, log=True)  # wide: enqueued rates are fixed
        least = least_cost(strategy, config, cacheable) if unit == "epochs" else 0.0
        if trial.user_attrs["tier"] == "explore" and not reserve(study, trial, unit, least, allowance,
                                                                 folder / BUDGET_LOCK):
            reason = (f"not run: the explore tier's part of the budget ({allowance:g} of {config.budget}) "
                      f"is spent or reserved by running trials")
            trial.set_user_attr("skipped", reason)
            study.tell(trial, state=TrialState.FAIL)
            _say(study, trial, strategy, lr, f"skipped: {reason}")
            continue
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # alive while this process is
        _say(study, trial, strategy, lr, f"starts{time_left(study, config)}")
        run_trial(study, trial, strategy, lr, folder, settings)
        ran += 1
    return ran


def _label(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float) -> str:
    """Stage, trial k of N in it, strategy (knobs, model), rate and seed: what a bar and a line say."""
    attrs = trial.user_attrs
    stage = [t.number for t in trials_of(study, attrs["tier"])]
    knobs = "".join(f" {k}={v}" for k, v in attrs.get("knobs", {}).items())
    flags = " no-augment" if attrs.get("augment") is False else ""
    on = f" on {attrs['model']}" if attrs.get("model") else ""
    return (f"{attrs['tier']} {stage.index(trial.number) + 1}/{len(stage)}: {strategy}{knobs}{flags}{on} "
            f"lr {lr:.3g} seed {attrs.get('seed', 0)}")


def _say(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float, what: str) -> None:
    """One line per trial above the bars, and what happens to it."""
    tqdm.write(f"[{_label(study, trial, strategy, lr)}] {what}")


def time_left(study: optuna.Study, config: SearchConfig) -> str:
    """About how long the whole search has left, from its pace so far (epoch budgets only)."""
    unit, amount = config.limit.unit, config.limit.amount
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("compute")]
    compute, seconds = sum(t.user_attrs["compute"] for t in done), sum(t.user_attrs.get("seconds", 0) for t in done)
    if unit == "seconds":
        return f"; the whole search has {max(0.0, amount - seconds) / 60:.0f} min left at most"
    if compute <= 0:
        return ""
    return f"; the whole search has about {max(0.0, amount - compute) * seconds / compute / 60:.0f} min left at most"


def serve(run_dir: str | Path, storage: str | None = None, poll_seconds: float = 2.0) -> int:
    """A worker on another machine: run the waiting trials of the search in `run_dir` (a shared
    folder; its settings.json names the storage) until the coordinator has written its
    leaderboard. `storage`: the URL given again, for its password. Returns the number of trials this
    worker ran."""
    folder = Path(run_dir)
    if not (folder / "settings.json").is_file():
        raise TunewiseError(f"{str(folder)!r} holds no search (no settings.json). Start the search there first "
                            "with --storage, then workers with the same --out and --storage.")
    study = open_study(folder, storage)
    mine = 0
    while not (folder / "leaderboard.json").is_file():
        mine += work(str(folder), study)
        time.sleep(poll_seconds)
    return mine


BEAT_SECONDS = 20.0
"""How often a running trial's worker writes the time into its "beat" attribute."""
STALE_SECONDS = 180.0
"""A running trial whose last beat is older than this is taken for dead (its worker was killed) and
queued again. Across machines this compares their clocks, which must agree to well within it (NTP)."""


@contextlib.contextmanager
def beating(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """While the block runs, a thread writes the time into the trial's "beat" every BEAT_SECONDS, so
    that a resumed search or a waiting coordinator can tell a live trial from one whose worker died.
    A block stopped by an exception (Ctrl-C, SIGTERM) releases the trial: its beat becomes 0, so a
    resume in this same process (the Python API) queues it again at once instead of waiting
    STALE_SECONDS for a process that is still alive."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while True:
                study._storage.set_trial_user_attr(trial._trial_id, "beat", time.time())
                if stop.wait(BEAT_SECONDS):
                    return
        except Exception as err:  # the storage went away: the trial's own calls will say so
            log.warning("trial %d stopped its heartbeat: %s", trial.number, one_line(err))

    thread = threading.Thread(target=beat, name=f"beat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as err:
        if isinstance(err, Exception) and interrupt_behind(err) is None:  # the arm's own failure: told as such
            raise
        stop.set()  # stopped (Ctrl-C, SIGTERM): the trial is released, for --resume to queue again
        thread.join()
        with contextlib.suppress(Exception):  # a storage that went away has nothing to release
            study._storage.set_trial_user_attr(trial._trial_id, "beat", 0.0)  # older than any STALE_SECONDS
        raise
    finally:
        stop.set()
        thread.join()


def is_dead(trial: FrozenTrial, now: float) -> bool:
    """Whether a running trial's worker is gone: on this machine, its process has exited; anywhere,
    its last beat (or, before its first, its start) is older than STALE_SECONDS."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and os.name == "posix":
        try:
            os.kill(int(pid), 0)  # signal 0: does the process exist (POSIX only: on Windows it kills)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: it exists
            pass
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return now - trial.user_attrs.get("beat", started) > STALE_SECONDS


def requeue_dead(study: optuna.Study) -> int:
    """Trials left running by a killed search or worker: queued again and closed as failed. Trials
    that another live worker runs (on this machine or another) are left to it. The new trial
    reuses the old one's run folder, so it resumes from its last checkpoint and charges all the
    epochs there: the old trial's charge is cleared, so that each epoch counts once."""
    now = time.time()
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if is_dead(t, now)]
    for t in stale:
        # its time stays the old trial's; who runs it, and its heartbeat, will be the new one's
        attrs = {k: v for k, v in t.user_attrs.items() if k not in ("seconds", "worker", "beat")}
        study.enqueue_trial(dict(t.params), user_attrs={**attrs, "requeued_from": t.number})
        # optuna sets attributes through a Trial object only, made for a trial that runs here
        study._storage.set_trial_user_attr(t._trial_id, "compute", 0.0)
        study.tell(t.number, state=TrialState.FAIL)
    return len(stale)


def run_trial(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float, folder: Path,
               settings: dict) -> None:

    attrs = trial.user_attrs
    train = replace(TrainConfig(**settings["train"]), lr=lr, seed=attrs["seed"], epochs=attrs["epochs"],
                    patience=None, augment=attrs.get("augment", TrainConfig(**settings["train"]).augment))
    knobs, model = attrs.get("knobs", {}), attrs.get("model") or settings.get("kept", [settings["model"]])[0]
    # named by what it runs, not by trial number: a requeued trial resumes in the same folder
    variant = "".join(f"-{k}{v}" for k, v in sorted(knobs.items()))
    on = f"{file_safe(model)}-" if len(settings.get("kept", [])) > 1 else ""
    flags = "-noaug" if attrs.get("augment") is False else ""
    out = folder / "trials" / f"{attrs['tier']}-{on}{strategy}{variant}{flags}-lr{lr:.3g}-seed{attrs['seed']}"

    config = SearchConfig(**settings["search"])
    unit = config.limit.unit
    task_caches = get_task(settings.get("task", DEFAULT_TASK)).cacheable
    cached = head_only(strategy) and task_caches
    started = time.perf_counter()

    def through_next_epoch(epoch: int) -> float:
        """What the trial will have cost once the epoch after `epoch` is done: its reservation to go on."""
        if unit == "seconds":
            return (time.perf_counter() - started) * (epoch + 2) / (epoch + 1)
        return CHEAP_TIER_COST if cached else float(epoch + 2)

    def should_stop(epoch: int, score: float) -> bool:
        trial.report(score, epoch)
        # charged as it goes, so that other workers and the budget check see what it has spent
        trial.set_user_attr("compute", CHEAP_TIER_COST if cached else float(epoch + 1))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        if epoch + 1 >= attrs["epochs"]:  # a finished run is not pruned
            return False
        if trial.should_prune():
            trial.set_user_attr("reason", f"pruned after epoch {epoch + 1}: validation {score:.4f} not in the "
                                          f"top third of its rung")
        elif attrs["tier"] == "explore" and not reserve(study, trial, unit, through_next_epoch(epoch),
                                                        explore_allowance(config), folder / BUDGET_LOCK,
                                                        lambda: waiting_grace(study, config, task_caches)):
            trial.set_user_attr("reason", f"stopped after epoch {epoch + 1} of {attrs['epochs']}: the explore "
                                          f"tier's part of the budget is spent, or reserved by other trials and "
                                          f"for the grace epochs of the arms still waiting")
        else:
            return False
        tqdm.write(f"  {strategy} lr {lr:.3g}: {trial.user_attrs['reason']}")
        return True

    run = {"model": model, "data": settings["data"], "strategy": strategy, "knobs": knobs,
           "label": _label(study, trial, strategy, lr),
           "train": asdict(train),
           "out": str(out), "task": settings.get("task", DEFAULT_TASK), "task_knobs": settings["task_knobs"],
           "weights": settings["weights"],
           "resume": out.exists()}
    if data_parallel():
        broadcast(run)  # the other ranks train the same trial, data-parallel
    try:
        with beating(study, trial):
            record = fit_trial(run, should_stop)
    except (TunewiseError, RuntimeError) as err:  # a NaN loss, a shape error: this arm fails, the search goes on
        stop = interrupt_behind(err)
        if stop is not None:  # not the arm's failure: the search was being stopped
            raise stop from None
        trial.set_user_attr("reason", str(err))
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("run_dir", record.run_dir)
    trial.set_user_attr("compute", record.compute)
    trial.set_user_attr("seconds", record.seconds)
    drop_run_state(out)
    if record.diverged:  # never a finalist, a winner, or the rate of the scratch baseline's seeds
        trial.set_user_attr("diverged", f"diverged: {record.diverged}")
        tqdm.write(f"  {strategy} lr {lr:.3g}: {trial.user_attrs['diverged']}; not considered")
        study.tell(trial, state=TrialState.FAIL)
    elif record.stopped == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, record.val_score)


def drop_run_state(folder: Path) -> None:
    """A finished trial (and LP-FT's probe inside it) keeps no resume state: only an interrupted run
    resumes from checkpoint.pt, and best.pt repeats the exported weights where the export was written."""
    for run in (folder, folder / "probe"):
        (run / "checkpoint.pt").unlink(missing_ok=True)
        if (run / "model.safetensors").is_file():
            (run / "best.pt").unlink(missing_ok=True)


def fit_trial(run: dict, should_stop) -> RunRecord:
    from tunewise.train import fit

    strategy = get_strategy(run["strategy"], **run["knobs"])
    task = get_task(run["task"], **run["task_knobs"])
    return fit(run["model"], DataConfig(**run["data"]), strategy, train=TrainConfig(**run["train"]),
               out=run["out"], task=task, weights=run["weights"], test=False, should_stop=should_stop,
               resume=run["resume"], label=run.get("label"))


def data_parallel() -> bool:
    """Whether this process is one of several ranks (accelerate launch and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def broadcast(message: dict | None) -> dict | None:
    """Rank 0's message, on every rank."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # joins the process group once
    return broadcast_object_list([message])[0]


def _received() -> dict:
    """Rank 0's next message, on a rank that sends none."""
    message = broadcast(None)
    assert message is not None, "rank 0 always sends a message"
    return message


def follow() -> Leaderboard:
    """A rank other than 0: train each trial rank 0 sends until it sends the finished search.
    Pruning verdicts come from rank 0 inside fit(); this rank never opens the study."""
    while "done" not in (run := _received()):
        try:
            fit_trial(run, should_stop=lambda epoch, score: False)
        except (TunewiseError, RuntimeError):  # rank 0 meets the same error and records it
            continue
    return Leaderboard.load(Path(run["done"]) / "leaderboard.json")
