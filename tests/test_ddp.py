"""Multi-process training on CPU (gloo, 2 processes with torchrun's environment variables; one test through two
torchrun launchers): one big batch split over processes, and stops that reach every process, never a hang.

Every process is started by the test and waited for with a timeout (the test fails, killing them, past it).
The training runs use the tiny ``semask_swin_test_fpn`` on the bundled CamVid sample, 2 images per process.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _ddp_worker import FIELDS, one_step
from test_train import SAMPLE, TINY

from semask.engine.distributed import is_collective_error
from semask.weights import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WORKER = str(REPO / "tests" / "_ddp_worker.py")
TIMEOUT = 300  # seconds any launched process may take
RUN = [*TINY, "model.arch=semask_swin_test_fpn", "model.dropout=0.0", "model.sem_drop=0.0"]
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768-60999), so that no outgoing connection can take
    it between this check and the main process binding it."""
    for port in random.sample(range(20000, 32000), 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def launch(cmd: list[str], world: int = 2) -> list[subprocess.Popen]:
    """``cmd`` as ``world`` processes with the environment torchrun gives its workers."""
    port, procs = free_port(), []
    for rank in range(world):
        env = ENV | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        env |= {"LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    """(exit code, stderr) of every process; all are killed, failing the test, when one outlives ``timeout``."""
    deadline, results = time.monotonic() + timeout, []
    try:
        for p in procs:
            p.out, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            results.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a process still ran after {timeout} s (a hang); its threads' stacks:\n{stacks(procs)}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def stacks(procs: list[subprocess.Popen]) -> str:
    """The end of the stderr of every process still running, after asking it for its threads' stacks (the worker
    registers faulthandler on SIGUSR1)."""
    said = []
    for rank, p in enumerate(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
            time.sleep(1)
            p.kill()
            said.append(f"--- process {rank}:\n{p.communicate()[1][-6000:]}")
    return "\n".join(said)


def train_cmd(out: Path, iters: int, *extra: str, inject: tuple[str, ...] = ()) -> list[str]:
    sets = [a for o in [*RUN, f"train.max_iters={iters}", *extra] for a in ("--set", o)]
    args = ["train", "semask_swin_nano_fpn_camvid-demo", "--no-progress", "--data-root", str(SAMPLE)]
    return [sys.executable, WORKER, "train", *inject, "--", *args, "--out", str(out), *sets]


def wait_for(path: Path, procs: list[subprocess.Popen], rows: int = 0) -> int:
    """Wait until ``path`` exists (a text file: with at least ``rows`` lines); returns the line count."""
    deadline = time.monotonic() + TIMEOUT
    count = -1
    while count < rows:
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
        assert time.monotonic() < deadline, f"no {path.name} (with {rows} lines) after {TIMEOUT} s"
        time.sleep(0.02)
        count = (len(path.read_text().splitlines()) if rows else 0) if path.exists() else -1
    return count


def losses_logged(run: Path) -> list[float]:
    return [row["loss"] for row in map(json.loads, (run / "metrics.jsonl").open()) if "loss" in row]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


# ------------------------------------------------------------------------ 1. 2 processes x b == 1 x 2b
def test_one_step_of_two_processes_equals_one_process_with_their_batch(tmp_path):
    """FPN (synchronised BN) and Mask2Former (num_masks all-reduced: the two shares hold 8 and 4 target masks,
    identical point draws): the loss averaged over the processes and the DDP gradients equal one process's on
    the whole batch within 1e-5 relative (float32 summation order only)."""
    assert all(rc == 0 for rc, _ in finish(launch([sys.executable, WORKER, "step", str(tmp_path)])))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {arch: one_step(arch, 0, 1) for arch in FIELDS}
    finally:
        torch.set_num_threads(threads)
    for arch, ref in single.items():
        for key, value in ref["losses"].items():
            mean = (ranks[0][arch]["losses"][key] + ranks[1][arch]["losses"][key]) / 2
            assert mean == pytest.approx(value, rel=1e-5, abs=1e-7), (arch, key)
        got = [ranks[0][arch]["grads"][n] for n in ref["grads"]]
        assert all(torch.equal(ranks[1][arch]["grads"][n], g) for n, g in zip(ref["grads"], got, strict=True))
        ref_all, got_all = (
            torch.cat([g.flatten() for g in ref["grads"].values()]),
            torch.cat([g.flatten() for g in got]),
        )
        assert (got_all - ref_all).norm() <= 1e-5 * ref_all.norm(), arch
        scale = 1e-5 * ref_all.abs().max()  # per element: 1e-5 relative, or 1e-5 of the largest gradient
        for (name, g), h in zip(ref["grads"].items(), got, strict=True):
            torch.testing.assert_close(h, g, rtol=1e-5, atol=scale.item(), msg=f"{arch} {name}")


# --------------------------------------------------------------------- 2. a signal to one process
ITERS = 12


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """2 processes, ITERS iterations without interruption."""
    out = tmp_path_factory.mktemp("straight")
    results = finish(launch(train_cmd(out, ITERS, "train.ckpt_interval=100")))
    assert [rc for rc, _ in results] == [0, 0], results
    return out


def test_sigterm_to_one_process_stops_all_with_one_checkpoint_and_resume_is_exact(tmp_path, straight):
    procs = launch(train_cmd(tmp_path, ITERS, "train.ckpt_interval=100"))
    logged = wait_for(tmp_path / "metrics.jsonl", procs, rows=2)  # rank 0 finished `logged` iterations
    procs[1].send_signal(signal.SIGTERM)
    (rc0, err0), (rc1, err1) = finish(procs)
    done = len(losses_logged(tmp_path))
    assert (rc0, rc1) == (130, 130), (err0, err1)
    assert logged <= done <= logged + 2 < ITERS  # within one iteration
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == done
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["last.pt"]  # the one checkpoint
    said = f"interrupted: stopped by SIGTERM after iteration {done} of {ITERS}; checkpoint saved to "
    assert err0.strip() == said + f"{tmp_path / 'last.pt'} (continue with --resume)"
    assert err1.strip() == ""  # reported once, by the main process
    resumed = finish(launch(train_cmd(tmp_path, ITERS, "train.ckpt_interval=100") + ["--resume"]))
    assert [rc for rc, _ in resumed] == [0, 0], resumed
    a, b = weights(straight), weights(tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact on CPU


# ---------------------------------------------------------------- 3. a non-finite loss on one process
def test_non_finite_loss_on_one_process_is_skipped_then_stops_every_process(tmp_path):
    # NaN on rank 1 only at iterations 1 (skipped: max_nonfinite=1) and 3 (one too many: stop)
    cmd = train_cmd(tmp_path, 6, "train.max_nonfinite=1", inject=("--nan-at", "1,3"))
    (rc0, err0), (rc1, err1) = finish(launch(cmd))
    assert (rc0, rc1) == (2, 2), (err0, err1)
    assert err0.count("note: non-finite loss at iteration 1: update skipped (1 of max_nonfinite=1)") == 1
    assert err0.count("error: non-finite loss (nan) at iteration 3;") == 1
    assert "training stopped after iteration 3; " in err0 and err1.strip() == ""
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["iteration"] == 3 and all(
        v.isfinite().all() for v in ckpt["model"].values() if v.is_floating_point()
    )
    assert [v != v for v in losses_logged(tmp_path)] == [False, True, False]  # the mean over processes


# --------------------------------------------------------------------- 4. a process that dies or hangs
@pytest.mark.parametrize("how, victim", [(signal.SIGKILL, 0), (signal.SIGSTOP, 1)])
def test_a_dead_or_hung_process_makes_the_other_stop_with_an_error(tmp_path, how, victim):
    # SIGKILL: the checkpoint writer dies (maybe mid-save); SIGSTOP: a hung process, found by the 8 s timeout
    procs = launch(train_cmd(tmp_path, 400, "train.ckpt_interval=1") + ["--dist-timeout", "8"])
    wait_for(tmp_path / "last.pt", procs)
    procs[victim].send_signal(how)
    survivor = procs[1 - victim]
    [(rc, err)] = finish([survivor])
    procs[victim].kill()
    procs[victim].communicate()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"error: process {1 - victim} of 2 lost contact with the others" in lines[0]
    assert "8 s collective timeout (--dist-timeout)" in lines[0]
    held = int(lines[0].rsplit("holds iteration ", 1)[1])
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] >= held >= 1  # readable, a finished iteration
    assert not list(tmp_path.glob(".*.tmp")) or victim == 0  # a killed writer may leave a temp file


def test_the_backends_link_errors_are_recognised():
    """What gloo says when a peer is gone, wherever it surfaces (DDP's buffer broadcast says only "Application
    timeout caused pair closure"), makes a LostContact; other errors, or any without a process group, do not."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        for said in (
            "Application timeout caused pair closure",
            "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 8000ms for recv",
            "Connection reset by peer",
        ):
            assert is_collective_error(RuntimeError(said)), said
        assert not is_collective_error(
            RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
        )
    finally:
        dist.destroy_process_group()
    assert not is_collective_error(RuntimeError("Connection reset by peer"))


# ------------------------------------------------------------------- 5. two "nodes" on one machine
def test_two_torchrun_launchers_rendezvous_as_two_nodes(tmp_path):
    port = free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    torchrun += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "semask-test"]
    cmd = [*torchrun, "-m", "semask", *train_cmd(tmp_path, 2)[4:]]
    nodes = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    nodes.append(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = finish(nodes)
    assert [rc for rc, _ in results] == [0, 0], results
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    out = "".join(node.out for node in nodes)
    assert out.count("x 2 processes") == 1 and out.count("best mIoU") == 1  # header and summary by rank 0


# -------------------------------------------------------- 6. Ctrl-C while data loading or evaluation stalls
@pytest.mark.parametrize("stall", ["load", "eval"])
def test_ctrl_c_during_a_stalled_load_or_evaluation_stops_every_process(tmp_path, stall):
    # rank 1's third batch (load) or first evaluated image (eval, after iteration 2) never finishes
    cmd = train_cmd(
        tmp_path, 6, f"train.eval_interval={2 if stall == 'eval' else 100}", inject=("--stall", stall)
    )
    procs = launch(cmd)
    wait_for(tmp_path / "stalled", procs)
    procs[1].send_signal(signal.SIGINT)
    (rc0, err0), (rc1, err1) = finish(procs)
    assert (rc0, rc1) == (130, 130), (err0, err1)
    assert err1.strip() == ""
    during = " during evaluation" if stall == "eval" else ""
    assert f"interrupted: stopped by SIGINT{during} after iteration 2 of 6; checkpoint saved to" in err0
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
