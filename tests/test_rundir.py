"""Run directories under stress: one writer at a time, checkpoints that are damaged,
truncated or of an older format, faults at an epoch boundary, and resume checks."""

import fcntl
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

import probae
from probae import VAE, data, rundir, saving
from probae.saving import CHECKPOINT_NAME, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def train():
    return data.load("digits", "train")[:128]


def _vae(device, z_dim=3):
    return VAE((64,), z_dim, hidden=(16,)).to(device)


def _fit(model, train, folder, **kwargs):
    kwargs = {"epochs": 2, "batch_size": 32, "binarize": "static", "seed": 1, **kwargs}
    return probae.fit(model, train, checkpoint_dir=folder, **kwargs)


def _same_contents(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same_contents(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(_same_contents(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b or (a != a and b != b)  # NaN equals NaN here


# -- the lock ------------------------------------------------------------------------


class _Holder:
    """A child process (forked from this one) that holds a folder's lock until killed."""

    def __init__(self, folder):
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                with rundir.lock(folder):
                    os.write(ready_w, b"x")
                    signal.pause()
            finally:
                os._exit(0)
        os.read(ready_r, 1)

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self):
        os.waitpid(self.pid, 0)


def _holder(folder):
    return _Holder(folder)


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(
    tmp_path, train, device
):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(rundir.RunDirectoryLocked, match=rf"process {holder.pid} on "):
            with rundir.lock(tmp_path / "run"):
                pass
        # fit refuses too, before writing anything
        with pytest.raises(rundir.RunDirectoryLocked, match=str(holder.pid)):
            _fit(_vae(device), train, tmp_path / "run")
        assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the lock died with its holder; the file still names it, for the record
    assert rundir.holder(tmp_path / "run")["pid"] == holder.pid
    with rundir.lock(tmp_path / "run"):
        assert rundir.holder(tmp_path / "run") == {"pid": os.getpid(), "host": socket.gethostname()}


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    (tmp_path / "run").mkdir()
    with rundir.lock(tmp_path / "run"):
        with rundir.lock(tmp_path / "run"):
            pass
        holder_pid = rundir.holder(tmp_path / "run")["pid"]
        assert holder_pid == os.getpid()
    # released: the lock file is gone, and a fresh lock can be taken
    assert not (tmp_path / "run" / rundir.LOCK_NAME).exists()
    fd = os.open(tmp_path / "run" / rundir.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    # a folder the lock made and nothing was written to is removed again
    with rundir.lock(tmp_path / "fresh"):
        assert (tmp_path / "fresh").is_dir()
    assert not (tmp_path / "fresh").exists()


WRITER = """
import sys, torch, pyro, probae
from probae import VAE, data
torch.set_num_threads(1)
seed = int(sys.argv[2])
pyro.set_rng_seed(seed)
model = VAE((64,), 3, hidden=(16,))
try:
    probae.fit(model, data.load("digits", "train")[:128], epochs=3, batch_size=32,
               binarize="static", seed=seed, checkpoint_dir=sys.argv[1])
except Exception as error:
    print(type(error).__name__, error, flush=True)
    sys.exit(3)
"""


def _concurrent_trial(folder, fork: bool = True) -> tuple:
    """Two processes start fit() on one folder at once (forked from this one and
    released together, or fresh interpreters): (exit statuses, outputs, pids)."""
    if not fork:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(folder), str(seed)],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed in (0, 1)
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        return [p.returncode for p in procs], [o[0] + o[1] for o in outs], [p.pid for p in procs]
    import pyro

    train = data.load("digits", "train")[:128]
    go_r, go_w = os.pipe()
    pids, reports = [], []
    for seed in (0, 1):
        report = folder.parent / f"report-{seed}.txt"
        reports.append(report)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.read(go_r, 1)  # both start at the same moment
                pyro.set_rng_seed(seed)
                model = VAE((64,), 3, hidden=(16,))
                try:
                    probae.fit(model, train, epochs=3, batch_size=32, binarize="static",
                               seed=seed, checkpoint_dir=folder)  # fmt: skip
                    code = 0
                except Exception as error:  # noqa: BLE001 - reported to the parent
                    report.write_text(f"{type(error).__name__} {error}")
            finally:
                os._exit(code)
        pids.append(pid)
    os.write(go_w, b"xx")
    codes = []
    for pid in pids:
        status = os.waitpid(pid, 0)[1]
        codes.append(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
    outputs = [r.read_text() if r.exists() else "" for r in reports]
    return codes, outputs, pids


def _check_concurrent_trial(folder, fork: bool = True):
    codes, outputs, pids = _concurrent_trial(folder, fork)
    assert sorted(codes) == [0, 3], outputs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    # the loser is refused by name (the lock), or finds the winner's finished run
    assert f"process {pids[winner]}" in outputs[loser] or "already holds a run" in outputs[loser], (
        outputs[loser]
    )
    state = read_checkpoint(folder / CHECKPOINT_NAME)  # whole, checksum verified
    assert state["epoch"] == 3 and state["run"]["seed"] == winner
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_two_writers_started_at_once_one_runs_the_other_is_refused(tmp_path):
    _check_concurrent_trial(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("fork", [True, False], ids=["forked", "fresh"])
@pytest.mark.parametrize("trial", range(10))
def test_two_writers_many_trials(tmp_path, trial, fork):
    _check_concurrent_trial(tmp_path / "run", fork)


# -- damaged, truncated and older checkpoints -----------------------------------------


def _a_checkpoint(tmp_path, train, device):
    _fit(_vae(device), train, tmp_path / "run")
    return tmp_path / "run" / CHECKPOINT_NAME


def flip_trials(path: Path, flips: int, seed: int = 0) -> dict:
    """Flips one random bit of one random byte of ``path``, ``flips`` times (each on a
    fresh copy): how many were refused, loaded unchanged (a byte nothing reads), or
    loaded changed without an error (must be none)."""
    original_bytes = path.read_bytes()
    original = read_checkpoint(path)
    rng = random.Random(seed)
    counts = {"refused": 0, "unchanged": 0, "changed": 0}
    damaged = path.with_name("damaged.pt")
    for _ in range(flips):
        raw = bytearray(original_bytes)
        at = rng.randrange(len(raw))
        raw[at] ^= 1 << rng.randrange(8)
        damaged.write_bytes(bytes(raw))
        try:
            loaded = read_checkpoint(damaged)
        except ValueError as error:
            assert (
                "damaged" in str(error) or "corrupt" in str(error) or "not a probae" in str(error)
            )
            counts["refused"] += 1
            continue
        counts["unchanged" if _same_contents(original, loaded) else "changed"] += 1
    return counts


def test_a_flipped_bit_is_refused_or_changes_nothing(tmp_path, train, device):
    counts = flip_trials(_a_checkpoint(tmp_path, train, device), flips=40)
    assert counts["changed"] == 0, counts
    assert counts["refused"] >= 30, counts


@pytest.mark.slow
def test_a_flipped_bit_is_refused_or_changes_nothing_deep(tmp_path, train, device):
    counts = flip_trials(_a_checkpoint(tmp_path, train, device), flips=1000, seed=1)
    assert counts["changed"] == 0, counts


def test_a_flipped_tensor_byte_is_named_as_damage(tmp_path, train, device):
    path = _a_checkpoint(tmp_path, train, device)
    state = read_checkpoint(path)
    raw = bytearray(path.read_bytes())
    # the bytes of one weight, found by value, so the flip lands inside tensor data
    weight = state["module"]["decoder.net.0.weight"].contiguous().numpy().tobytes()
    at = bytes(raw).find(weight)
    assert at > 0
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"checkpoint\.pt' is damaged"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="damaged"):
        probae.load(tmp_path / "run")


def test_every_truncation_is_refused(tmp_path, train, device):
    path = _a_checkpoint(tmp_path, train, device)
    raw = path.read_bytes()
    rng = random.Random(0)
    for length in [0, 1, 10, len(raw) - 1, *rng.sample(range(len(raw)), 20)]:
        path.write_bytes(raw[:length])
        with pytest.raises(ValueError, match="corrupt|damaged|not a probae"):
            read_checkpoint(path)


def test_a_0_1_0_checkpoint_loads_through_the_migration(tmp_path, device):
    """probae 0.1.0 wrote format 1: no model options (the run's config.json has them),
    and the priors' device anchor among the weights."""
    folder = tmp_path / "old-run"
    folder.mkdir()
    torch.manual_seed(0)
    model = VAE((64,), 3, hidden=(16,))
    weights = {**model.state_dict(), "prior._anchor": torch.zeros(())}
    torch.save(
        {"format": "probae-checkpoint-1", "epoch": 1, "module": weights}, folder / CHECKPOINT_NAME
    )
    saving.write_json(
        {"model": "vae", "data": "digits", "z_dim": 3, "hidden": [16], "x_shape": [64]},
        folder / "config.json",
    )
    loaded = probae.load(folder)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_newer_format_says_to_upgrade(tmp_path):
    torch.save({"format": "probae-checkpoint-99", "module": {}}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="newer probae.*upgrade probae"):
        read_checkpoint(tmp_path / "model.pt")


def test_no_temporary_file_is_left_and_the_old_checkpoint_survives_a_failed_write(
    tmp_path, train, device, monkeypatch
):
    path = _a_checkpoint(tmp_path, train, device)
    before = path.read_bytes()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(saving.os, "replace", refuse)
    with pytest.raises(PermissionError):
        _fit(_vae(device), train, tmp_path / "run", epochs=3, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [CHECKPOINT_NAME]
    # and the lock went with the failed run
    with rundir.lock(path.parent):
        pass


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_an_os_error_naming_it(tmp_path, train, device):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="ro"):
            _fit(_vae(device), train, folder)
    finally:
        folder.chmod(0o700)


# -- faults at an epoch boundary --------------------------------------------------------


def _poisoning_adam(at_step: int):
    """Adam whose update number ``at_step`` meets a NaN gradient."""

    class Poisoned(torch.optim.Adam):
        steps = 0

        def step(self, closure=None):
            Poisoned.steps += 1
            if Poisoned.steps == at_step:
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.fill_(float("nan"))
            return super().step(closure)

    return lambda params: Poisoned(params, lr=1e-3)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_nan_gradient_at_the_last_step_of_an_epoch_is_never_saved(tmp_path, train, device):
    folder = tmp_path / "run"
    # 128 points in batches of 32: step 8 is the last of epoch 2
    with pytest.raises(FloatingPointError, match=r"not finite after epoch 2") as error:
        _fit(_vae(device), train, folder, epochs=4, optimizer=_poisoning_adam(8))
    message = str(error.value)
    assert "checkpoint.pt' (epoch 1)" in message
    named = message.split("last good checkpoint is '")[1].split("'")[0]
    state = read_checkpoint(named)  # the file named exists and is good
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["module"].values())
    # the run continues from it at another learning rate
    history = _fit(_vae(device), train, folder, epochs=3, resume=True, lr=1e-4)
    assert history.epoch == [1, 2, 3]
    state = read_checkpoint(folder / CHECKPOINT_NAME)
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-4


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_a_nan_in_the_first_epoch_names_no_file_that_does_not_exist(tmp_path, train, device):
    with pytest.raises(FloatingPointError, match="no checkpoint was written") as error:
        _fit(_vae(device), train, tmp_path / "run", optimizer=_poisoning_adam(4))
    assert "last good checkpoint" not in str(error.value)
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


# -- resume checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(batch_size=16), "batch_size=16 differs from the run's batch_size=32"),
        (dict(loss="iwae", num_particles=2), "loss='iwae' differs"),
        (dict(seed=2), "seed=2 differs from the run's seed=1"),
        (dict(binarize="dynamic"), "binarize='dynamic' differs"),
        (dict(data=True), "data differs"),
        (dict(z_dim=4), "the model's z_dim is 4, the run's is 3"),
    ],
)
def test_resuming_with_another_option_names_it(tmp_path, train, device, change, named):
    _fit(_vae(device), train, tmp_path / "run")
    change = dict(change)
    model = _vae(device, z_dim=change.pop("z_dim", 3))
    data_now = train.x.flip(0) if change.pop("data", False) else train
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        _fit(model, data_now, tmp_path / "run", epochs=3, resume=True, **change)


def test_a_run_is_never_replaced_and_epochs_never_go_back(tmp_path, train, device):
    _fit(_vae(device), train, tmp_path / "run", epochs=3)
    before = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run.*resume=True"):
        _fit(_vae(device), train, tmp_path / "run")
    with pytest.raises(ValueError, match="epochs=2 is fewer than the 3"):
        _fit(_vae(device), train, tmp_path / "run", epochs=2, resume=True)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == before
    assert _fit(_vae(device), train, tmp_path / "run", epochs=3, resume=True).epoch == [1, 2, 3]


# -- SIGKILL at random moments ------------------------------------------------------------

TRAINER = """
import os, random, signal, sys, torch, pyro, probae
from probae import VAE, data, saving
torch.set_num_threads(1)
folder, epochs, self_kill = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if self_kill > 0:
    # die in the middle of a checkpoint write: half the bytes are in the temporary file
    rng = random.Random(os.getpid())
    replace = saving.os.replace
    def dying_replace(src, dst):
        if rng.random() < self_kill:
            os.truncate(src, os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    saving.os.replace = dying_replace
torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports a lot
train, val = data.load("digits", "train")[:96], data.load("digits", "test")[:32]
print("ready", flush=True)
pyro.set_rng_seed(0)
model = VAE((64,), 3, hidden=(16,))
probae.fit(model, train, resume=True, checkpoint_dir=folder, **KWARGS, epochs=epochs)
"""
KWARGS = dict(batch_size=32, binarize="dynamic", seed=5)
TRAINER = TRAINER.replace("**KWARGS", f"**{KWARGS!r}, validation=val")


def _train_process(folder, epochs, self_kill=0.0):
    return subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(folder), str(epochs), str(self_kill)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class _Forked:
    """The trainer in a child forked from this process (no imports to wait for); the
    child is a real process, killed for real."""

    def __init__(self, folder, epochs, self_kill=0.0):
        train, val = data.load("digits", "train")[:96], data.load("digits", "test")[:32]
        self.pid = os.fork()
        if self.pid:
            return
        code = 1
        try:
            import pyro

            if self_kill > 0:
                rng, replace = random.Random(os.getpid()), saving.os.replace

                def dying_replace(src, dst):
                    if rng.random() < self_kill:
                        os.truncate(src, os.path.getsize(src) // 2)
                        os.kill(os.getpid(), signal.SIGKILL)
                    replace(src, dst)

                saving.os.replace = dying_replace
            pyro.set_rng_seed(0)
            model = VAE((64,), 3, hidden=(16,))
            probae.fit(
                model, train, resume=True, checkpoint_dir=folder, validation=val,
                epochs=epochs, **KWARGS,
            )  # fmt: skip
            code = 0
        finally:
            os._exit(code)

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self, timeout=None):
        status = os.waitpid(self.pid, 0)[1]
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def kill_and_resume(tmp_path, epochs: int, kills: int, seed: int = 0, fork: bool = True) -> dict:
    """Trains once straight (in this process), and once in processes SIGKILLed
    ``kills`` times at random moments (alternately from outside, at a random time in
    training, and from inside, in the middle of a random checkpoint write), resuming
    after each; returns the counts and whether the final checkpoints are identical.
    The processes are forked from this one, or (``fork=False``) fresh interpreters."""
    import pyro

    pyro.set_rng_seed(0)
    model = VAE((64,), 3, hidden=(16,))
    train, val = data.load("digits", "train")[:96], data.load("digits", "test")[:32]
    began = time.perf_counter()
    probae.fit(
        model, train, epochs=epochs, checkpoint_dir=tmp_path / "straight", validation=val,
        **KWARGS,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    start = _Forked if fork else _train_process
    rng = random.Random(seed)
    killed = tmp_path / "killed"
    landed = []  # the epoch saved when each kill landed
    in_write = 0  # kills in the middle of a checkpoint write
    for k in range(kills):
        inside = k % 2 == 1
        process = start(killed, epochs, self_kill=0.25 if inside else 0.0)
        if not fork:
            assert process.stdout.readline().strip() == "ready", process.stderr.read()
        if not inside:
            time.sleep(rng.uniform(0.0, 0.8 * seconds) / kills)
            process.send_signal(signal.SIGKILL)
        code = process.wait(timeout=600)
        if code == 0:
            break  # finished before the kill
        assert code == -signal.SIGKILL, code
        path = killed / CHECKPOINT_NAME
        landed.append(read_checkpoint(path)["epoch"] if path.exists() else 0)
        in_write += inside
    assert start(killed, epochs).wait(timeout=600) == 0
    a = read_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)
    b = read_checkpoint(killed / CHECKPOINT_NAME)
    for state in (a, b):
        state["history"].pop("seconds")
        state.pop("checksum")
    return {
        "kills": len(landed),
        "in_write": in_write,
        "landed_at_epochs": landed,
        "exact": _same_contents(a, b),
    }


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, device):
    if device.type != "cpu":
        pytest.skip("bitwise reproducibility is promised on CPU")
    result = kill_and_resume(tmp_path, epochs=30, kills=4)
    assert result["kills"] >= 2 and result["exact"], result


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fork", [True, False], ids=["forked", "fresh"])
def test_sigkill_many_times_then_resume_is_bit_identical(tmp_path, device, seed, fork):
    if device.type != "cpu":
        pytest.skip("bitwise reproducibility is promised on CPU")
    result = kill_and_resume(tmp_path, epochs=40, kills=10 if fork else 4, seed=seed, fork=fork)
    assert result["kills"] >= 2 and result["exact"], result


def test_non_finite_names_the_first_bad_parameter_then_optimizer_state(device):
    from probae import _runstate

    params = [torch.zeros(2, device=device, requires_grad=True) for _ in range(2)]
    optim = torch.optim.Adam(params)
    sum(p.sum() for p in params).backward()
    optim.step()
    assert _runstate.non_finite(params, optim) is None
    optim.state[params[1]]["exp_avg_sq"][0] = float("inf")
    assert _runstate.non_finite(params, optim) == "optimizer state 'exp_avg_sq' of parameter 1"
    with torch.no_grad():
        params[1][1] = float("nan")
    assert _runstate.non_finite(params, optim) == "parameter 1 (shape (2,))"
    with torch.no_grad():
        params[0][0] = float("-inf")
    assert _runstate.non_finite(params, optim) == "parameter 0 (shape (2,))"
