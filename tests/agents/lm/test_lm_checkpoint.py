"""Crash safety of ``agents/lm/checkpoint.py`` and of ``textgym train --resume``.

- In process: every file-system operation of :func:`save_checkpoint` is probed, before and after it runs, for a
  complete checkpoint on disk, starting from each state a kill can leave (nothing yet, ``checkpoint`` only,
  ``checkpoint.old`` only, both, stale temporary folders).
- Real kills: ``textgym train`` runs in forked children (a forkserver that has imported torch once, so a child
  costs no imports) and is SIGKILLed 20 times, 10 at random times and 10 at a random operation inside
  ``save_checkpoint`` (a half-written ``state.pt`` included); after each kill the next child resumes with
  ``--resume``, which must not fail (a failed resume exits with its own code before our kill), and the last
  one runs to the end. Its ``metrics.csv`` must hold exactly the rows of an uninterrupted run with the same
  seed, and its TensorBoard events each (tag, step) once, with the same values.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agents.atomic import atomic_write_text  # noqa: E402
from agents.lm import checkpoint as ck  # noqa: E402
from tests.conftest import make_tiny_gpt2  # noqa: E402


# -- in process: a complete checkpoint at every instant ---------------------------------------------------------
def _state(i: int) -> dict:
    return {"iteration": i, "w": torch.full((3,), float(i))}


def _probe_all_ops(monkeypatch, run_dir: Path, seen: list[int]) -> None:
    """Before and after every os/shutil/torch operation that save_checkpoint performs, a complete checkpoint
    must load from ``run_dir`` (``seen`` collects the iterations found)."""

    def probe():
        folder = ck.find_checkpoint(run_dir)
        assert folder is not None, f"no complete checkpoint in {sorted(p.name for p in run_dir.iterdir())}"
        seen.append(int(ck.load_checkpoint(folder)["iteration"]))

    def wrap(owner, name):
        real = getattr(owner, name)

        def wrapped(*a, **k):
            probe()
            out = real(*a, **k)
            probe()
            return out

        monkeypatch.setattr(owner, name, wrapped)

    for owner, name in [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "rmdir"), (os, "fsync"),
                        (shutil, "rmtree"), (torch, "save"), (Path, "write_text")]:
        wrap(owner, name)


@pytest.mark.parametrize("start", ["checkpoint", "old-only", "both", "stale-tmp"])
def test_a_complete_checkpoint_exists_at_every_instant_of_a_save(tmp_path, monkeypatch, start):
    ck.save_checkpoint(tmp_path, _state(1))
    if start == "old-only":  # what a kill between the two renames of a save leaves
        os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    elif start == "both":  # a kill after the second rename, before checkpoint.old was removed
        shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    elif start == "stale-tmp":  # a kill while writing
        (tmp_path / ".checkpoint-tmp-dead").mkdir()
        (tmp_path / ".checkpoint-tmp-dead" / "state.pt").write_bytes(b"half a file")
    seen: list[int] = []
    _probe_all_ops(monkeypatch, tmp_path, seen)
    ck.save_checkpoint(tmp_path, _state(2))
    ck.save_checkpoint(tmp_path, _state(3))
    monkeypatch.undo()
    assert seen and set(seen) <= {1, 2, 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # old and tmp folders are gone
    assert ck.load_checkpoint(ck.find_checkpoint(tmp_path))["iteration"] == 3


def test_find_checkpoint_skips_incomplete_folders(tmp_path):
    ck.save_checkpoint(tmp_path, _state(1))
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint").mkdir()  # a folder without state.pt / meta.json is not a checkpoint
    assert ck.find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    ck.save_checkpoint(tmp_path, _state(2))
    assert ck.load_checkpoint(ck.find_checkpoint(tmp_path))["iteration"] == 2
    assert not (tmp_path / "checkpoint.old").exists()


def test_atomic_write_text_keeps_the_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic_write_text(path, "old")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


# -- real SIGKILLs of `textgym train` ----------------------------------------------------------------------------
ITERATIONS = 24


def _argv(model: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "TextGen-v0", "--model", str(model), "--tokenizer", "char:abc>", "--prompts",
            "gen:copy", "--scorer", "copy", "--iterations", str(ITERATIONS), "--out", str(out), "--num-envs", "4",
            "--max-new-tokens", "3", "--ppo.minibatch-size", "4", "--ppo.micro-batch-size", "2", "--ppo.n-epochs",
            "1", "--lr", "1e-2", "--checkpoint-every", "1", "--n-samples", "2", "--progress", "false",
            "--num-threads", "1", *extra]


def _kill_inside_save(op: int) -> None:
    """Patch this (child) process so that it SIGKILLs itself at the ``op``-th file operation done inside
    save_checkpoint (counted across saves); a ``torch.save`` picked as the kill point writes half its bytes."""
    count = [0]
    inside = [False]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def counted(real, name):
        def wrapped(*a, **k):
            if inside[0]:
                count[0] += 1
                if count[0] == op:
                    if name == "save":  # a half-written state.pt
                        buf = io.BytesIO()
                        real(a[0], buf)
                        Path(a[1]).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                    die()
            return real(*a, **k)

        return wrapped

    for owner, name in [(os, "replace"), (os, "unlink"), (os, "rmdir"), (os, "fsync"), (torch, "save")]:
        setattr(owner, name, counted(getattr(owner, name), name))
    real_save = ck.save_checkpoint

    def save_checkpoint(*a, **k):
        inside[0] = True
        try:
            return real_save(*a, **k)
        finally:
            inside[0] = False

    ck.save_checkpoint = save_checkpoint


def _child(argv: list[str], kill_op: int | None, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    if kill_op is not None:
        _kill_inside_save(kill_op)
    from agents.cli import main as cli

    code = cli(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start(ctx, argv, kill_op, log):
    p = ctx.Process(target=_child, args=(argv, kill_op, str(log)))
    p.start()
    return p


def _metric_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]


def _tb_scalars(folder: Path) -> list[tuple[str, int, float]]:
    """Every scalar event in every events file of ``folder``, as written (no de-duplication)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for ev in EventFileLoader(str(f)).Load():
            for v in ev.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(v.tensor.float_val[0])
                out.append((v.tag, int(ev.step), value))
    return out


def _wait_for(path: Path, p, timeout: float = 60) -> float:
    """Poll until ``path`` exists (or the child ended); returns the time it appeared."""
    deadline = time.monotonic() + timeout
    while not path.exists() and p.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return time.monotonic()


def _wait(p, timeout: float) -> None:
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f"a child ran past {timeout} s")


@pytest.mark.timeout(240)
def test_sigkill_at_20_moments_then_resume_gives_the_uninterrupted_run(tmp_path):
    pytest.importorskip("tensorboard")
    model = tmp_path / "tiny"
    make_tiny_gpt2(vocab_size=5).save_pretrained(model)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.utils.tensorboard", "matplotlib.pyplot",
                                "transformers.models.gpt2.modeling_gpt2", "agents.cli", "agents.lm.rlhf",
                                "agents.lm.train", "agents.lm.policy", "agents.logger", __name__])
    log = tmp_path / "children.log"
    warm = ctx.Process(target=time.sleep, args=(0,))  # starts the forkserver (imports), outside the timings
    warm.start()
    warm.join()

    ref = tmp_path / "reference"  # uninterrupted; it also times a child's start-up and iterations
    t0 = time.monotonic()
    p = _start(ctx, _argv(model, ref), None, log)
    t_started = _wait_for(ref / "config.json", p) - t0
    _wait(p, 120)
    assert p.exitcode == 0, log.read_text()[-3000:]
    per_iteration = (time.monotonic() - t0 - t_started) / ITERATIONS  # an upper bound: the ending included

    out = tmp_path / "killed"
    rng = random.Random(0)
    # 4 kills at a random time of the start-up, 6 in the iterations, 10 at a random operation inside a save
    plans = ([("time", rng.uniform(0, t_started)) for _ in range(4)]
             + [("time", t_started + rng.uniform(0, 4 * per_iteration)) for _ in range(6)]
             + [("save", rng.randint(1, 12)) for _ in range(10)])
    rng.shuffle(plans)
    progress = []
    for i, (kind, when) in enumerate(plans):
        t0 = time.monotonic()
        argv = _argv(model, out, *(["--resume"] if i else []))
        p = _start(ctx, argv, when if kind == "save" else None, log)
        if i == 0:  # the run exists (config.json) before the first kill: from then on --resume must work
            t0 = _wait_for(out / "config.json", p) - t_started
        if kind == "time":
            time.sleep(max(0.0, t0 + when - time.monotonic()))
            p.kill()
        _wait(p, 60)
        assert p.exitcode == -signal.SIGKILL, (f"kill {i + 1} ({kind}): the child exited {p.exitcode} before "
                                               f"the kill:\n{log.read_text()[-3000:]}")
        folder = ck.find_checkpoint(out)
        progress.append(ck.load_checkpoint(folder)["iteration"] if folder else 0)
    print("progress after each kill", progress)
    assert max(progress) < ITERATIONS, "the run ended before the 20th kill: too few iterations for the test"
    assert sum(kind == "save" for kind, _ in plans) == 10

    p = _start(ctx, _argv(model, out, "--resume"), None, log)
    _wait(p, 120)
    assert p.exitcode == 0, log.read_text()[-3000:]
    assert not list(out.glob(".checkpoint-tmp-*")) and not (out / "checkpoint.old").exists()

    # the same curve as the uninterrupted run, row for row (timings aside)
    expected, got = _metric_rows(ref / "metrics.csv"), _metric_rows(out / "metrics.csv")
    assert [r["step"] for r in got] == [str(s) for s in range(1, ITERATIONS + 1)]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for k in a:
            assert math.isclose(float(a[k]), float(b[k]), rel_tol=1e-6, abs_tol=1e-9) or a[k] == b[k], (
                a["step"], k, a[k], b[k])

    # TensorBoard: each (tag, step) once, and the values of the uninterrupted run
    ev_ref, ev_got = _tb_scalars(ref / "tb"), _tb_scalars(out / "tb")
    keys = [(tag, step) for tag, step, _ in ev_got]
    assert len(keys) == len(set(keys)), "TensorBoard events after a resume point are duplicated"
    ref_map = {(t, s): v for t, s, v in ev_ref if not t.startswith("time/")}
    got_map = {(t, s): v for t, s, v in ev_got if not t.startswith("time/")}
    assert got_map.keys() == ref_map.keys()
    assert all(math.isclose(got_map[k], ref_map[k], rel_tol=1e-6, abs_tol=1e-9) for k in ref_map)


def test_truncate_csv_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
    from agents.lm.train import _truncate_csv

    path = tmp_path / "metrics.csv"
    path.write_text("step,reward_mean\r\n" + "".join(f"{i},0.{i}\r\n" for i in range(1, 12)) + "1")  # "12,..." torn
    _truncate_csv(path, 10)
    assert [r["step"] for r in csv.DictReader(path.open(newline=""))] == [str(i) for i in range(1, 11)]
    path.write_text("step,rew")  # a header cut short: nothing to keep
    _truncate_csv(path, 3)
    assert path.read_text() == ""


def test_resume_before_the_first_checkpoint_starts_the_run_again(tmp_path, capsys):
    from agents.cli import main as cli
    from tests.agents.lm.test_lm_train import rows

    model = tmp_path / "tiny"
    make_tiny_gpt2(vocab_size=5).save_pretrained(model)
    out = tmp_path / "run"
    assert cli(_argv(model, out, "--iterations", "2", "--tensorboard", "false")) == 0
    for name in ("checkpoint", "metrics.csv"):  # as if killed after config.json, before the first checkpoint
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    assert cli(_argv(model, out, "--iterations", "2", "--tensorboard", "false", "--resume")) == 0
    assert "from iteration 0 (no checkpoint yet)" in capsys.readouterr().err
    assert [r["step"] for r in rows(out / "metrics.csv")] == ["1", "2"]


def test_an_old_run_with_the_old_kl_horizon_is_refused_with_the_flag_to_pass(tmp_path, capsys):
    import json

    from agents.cli import main as cli

    model = tmp_path / "tiny"
    make_tiny_gpt2(vocab_size=5).save_pretrained(model)
    out = tmp_path / "run"
    assert cli(_argv(model, out, "--iterations", "1", "--tensorboard", "false")) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["kl_horizon"] = 10000  # what every run before the new default saved
    (out / "config.json").write_text(json.dumps(cfg))
    assert cli(_argv(model, out, "--iterations", "2", "--tensorboard", "false", "--resume")) == 2
    assert "pass --kl-horizon 10000" in capsys.readouterr().err
    assert cli(_argv(model, out, "--iterations", "2", "--tensorboard", "false", "--resume", "--kl-horizon",
                     "10000")) == 0
