"""plugins.runtime.distributed and the agreement of plugins.runtime.errors.check_finite across processes.

The process groups are started in child processes (gloo on the CPU, a free port each), so that no group
outlives its test in the pytest process.
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plugins.runtime.distributed import LAUNCH_ENV, ProcessGroupInfo, setup_process_group

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python *argv`` on the CPU, without the launch variables of the pytest process."""
    clean = {k: v for k, v in os.environ.items() if k not in (*LAUNCH_ENV, "LOCAL_RANK")}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**clean, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", **(env or {})})


def test_a_single_process_run_starts_no_group(monkeypatch):
    for name in (*LAUNCH_ENV, "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert setup_process_group() == ProcessGroupInfo(0, 1, 0)
    assert not setup_process_group().distributed
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_a_launch_without_its_address_names_what_is_missing(monkeypatch):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 is set but MASTER_ADDR, MASTER_PORT not: .*torchrun"):
        setup_process_group()


def test_setting_up_twice_keeps_the_first_group_and_teardown_is_idempotent():
    script = """
        import torch.distributed as dist
        from plugins.runtime.distributed import ProcessGroupInfo, setup_process_group, teardown_process_group

        first = setup_process_group()
        assert first == ProcessGroupInfo(0, 1, 0), first
        assert dist.is_initialized() and dist.get_backend() == "gloo", dist.get_backend()
        world = dist.group.WORLD
        again = setup_process_group()
        assert again == first and dist.group.WORLD is world, "a second set-up must keep the group"
        teardown_process_group()
        assert not dist.is_initialized()
        teardown_process_group()
        print("ok")
    """
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    done = _run(["-c", textwrap.dedent(script)], env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_every_process_stops_at_the_first_non_finite_update_of_any_of_them(tmp_path):
    script = """
        import sys
        import torch
        import torch.multiprocessing as mp

        def worker(rank, port, out):
            import os
            os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(port))
            from plugins.runtime.distributed import setup_process_group, teardown_process_group
            from plugins.runtime.errors import NonFiniteLossError, check_finite

            assert tuple(setup_process_group()) == (rank, 2, rank)
            losses = [torch.tensor(1.0)] * 4
            check_finite(losses, 5)  # all finite everywhere: no error, and the processes still agree below
            losses[3 - rank] = torch.tensor(float("inf") if rank == 0 else float("nan"))
            try:
                check_finite(losses, 5)
            except NonFiniteLossError as err:
                open(f"{out}/{rank}.txt", "w").write(str(err))
            teardown_process_group()

        if __name__ == "__main__":
            mp.spawn(worker, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
    """
    path = tmp_path / "spawned_check_finite.py"  # a file: spawned processes import their parent's main module
    path.write_text(textwrap.dedent(script))
    done = _run([str(path), str(_free_port()), str(tmp_path)])
    assert done.returncode == 0, done.stderr
    said = [(tmp_path / f"{rank}.txt").read_text() for rank in (0, 1)]
    assert said == ["non-finite loss at update 7 (on another process): training stopped",
                    "non-finite loss at update 7 (loss=nan): training stopped"], said
