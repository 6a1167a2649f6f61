"""The centralized reference trained beside the federation, in a forked child: same bits, no orphan."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from reference_support import CONFIG, children_named, reference_of

from fedmm.fl.reference import reference_beside, train_centralized
from fedmm.tensors import TensorData, intra_op_threads


def test_the_reference_trained_beside_is_the_one_trained_here(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path))
    reference = reference_of()
    with reference_beside(reference) as central_reference:
        assert len(children_named("centralized-reference")) == 1
        state, history = central_reference()
    assert reference.cached and not children_named("centralized-reference")
    with intra_op_threads(1):  # as training runs on a CPU (fedmm.fl.training.train)
        model, here = train_centralized(reference.spec, TensorData.concat(reference.clients), reference.evaluation,
                                        CONFIG, "cpu")
    assert history == here
    for name, value in model.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    with reference_beside(reference) as cached:
        assert not children_named("centralized-reference")
        assert cached()[1] == history


def test_a_failed_federation_kills_the_reference_child(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDMM_HOME", str(tmp_path))
    reference = reference_of(CONFIG.model_copy(update={"train": CONFIG.train.model_copy(update={"rounds": 400})}))
    with pytest.raises(RuntimeError, match="federation failed"), reference_beside(reference):
        (child,) = children_named("centralized-reference")
        raise RuntimeError("federation failed")
    assert not child.is_alive() and child.exitcode == -signal.SIGKILL
    assert not reference.cached


CHILD_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from reference_support import CONFIG, children_named, reference_of
    from fedmm.fl.reference import reference_beside
    config = CONFIG.model_copy(update={{"train": CONFIG.train.model_copy(update={{"rounds": 400}})}})
    try:
        with reference_beside(reference_of(config)):
            print(children_named("centralized-reference")[0].pid, flush=True)
            time.sleep(600)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def start_parent(tmp_path) -> tuple[subprocess.Popen, int]:
    """A process training a long reference beside (it sleeps), in a session of its own; and its child's pid."""
    env = {**os.environ, "FEDMM_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT.format(tests=os.path.dirname(__file__))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    return parent, int(parent.stdout.readline())


def test_ctrl_c_stops_the_run_and_its_reference_child_without_a_traceback(tmp_path):
    """Ctrl-C reaches the whole process group: the run answers it, the child says nothing and is gone."""
    parent, child = start_parent(tmp_path)
    try:
        os.kill(child, signal.SIGINT)
        time.sleep(1)
        assert os.path.exists(f"/proc/{child}") and not is_zombie(child)
        os.killpg(parent.pid, signal.SIGINT)
        out, err = parent.communicate(timeout=30)
        assert (parent.returncode, out, err) == (0, "interrupted\n", "")
        assert not os.path.exists(f"/proc/{child}") or is_zombie(child)
    finally:
        stop(parent, child)


def test_the_reference_child_dies_with_a_killed_parent(tmp_path):
    parent, child = start_parent(tmp_path)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{child}") and not is_zombie(child):
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{child}") or is_zombie(child)
    finally:
        stop(parent, child)


def stop(parent: subprocess.Popen, child: int) -> None:
    """Whatever a failed test left running is killed."""
    parent.kill()
    parent.communicate()
    if not is_zombie(child):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False
