"""Test set-up: every cache in a temporary folder, and all Hub traffic sent to a real Hub-protocol server on loopback.

The environment is set at import time, before ``huggingface_hub`` reads it. The server is ``olah`` serving local git
repositories as Hub model repos (``mirrors-path``) with ``offline = true``, so ``hf_hub_download`` and
``snapshot_download`` run their real download and cache code without the internet.
"""

from __future__ import annotations

import logging
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="masterkey-tests-"))
# benchmarks/families.py (the timm families walked by the tests and the support table) is not part of the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_PORT = _free_port()
os.environ.update(
    HF_HOME=str(_ROOT / "hf-home"),
    MASTERKEY_HOME=str(_ROOT / "masterkey-home"),
    HF_ENDPOINT=f"http://127.0.0.1:{HUB_PORT}",
    HF_HUB_OFFLINE="0",  # the only reachable "Hub" is the loopback server below
    HF_DATASETS_OFFLINE="0",  # `make test` exports it as 1; datasets' own download code must reach that server too
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
)

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class LocalHub:
    """An olah server on loopback serving git repositories under ``root/models/ORG/NAME`` as Hub model repos."""

    def __init__(self, root: Path, port: int):
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        (root / "mirrors" / "models").mkdir(parents=True, exist_ok=True)
        (root / "mirrors" / "datasets").mkdir(parents=True, exist_ok=True)
        (root / "repos").mkdir(exist_ok=True)
        config = root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {port}\n'
            f'repos-path = "{root / "repos"}"\nmirrors-path = ["{root / "mirrors"}"]\n'
            "[accessibility]\noffline = true\n"
        )
        olah = Path(sys.executable).with_name("olah-cli")
        self.log = open(root / "olah.log", "wb")
        self.process = subprocess.Popen([str(olah), "-c", str(config)], cwd=root, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not start; see {root / 'olah.log'}")

    def publish(self, repo_id: str, folder: Path, *, tag: str | None = None, message: str = "upload",
                repo_type: str = "model") -> str:  # fmt: skip
        """Commit the files of ``folder`` to the repo ``repo_id`` (a ``model`` or ``dataset`` repo) on branch main;
        returns the commit sha."""
        repo = self.root / "mirrors" / f"{repo_type}s" / repo_id
        if not (repo / ".git").exists():
            repo.mkdir(parents=True)
            self._git(repo, "init", "-q", "-b", "main")
        for item in repo.iterdir():
            if item.name != ".git":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True)
        self._git(repo, "add", "-A")
        self._git(repo, "commit", "-q", "-m", message)
        if tag:
            self._git(repo, "tag", tag)
        return self._git(repo, "rev-parse", "HEAD").strip()

    @staticmethod
    def _git(repo: Path, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "transfer.py"


def run_example(argv: list[str]) -> int:
    """``examples/transfer.py``'s ``main`` (the command line lives in the example, not in the library); the logging
    set-up it makes for its process is undone afterwards."""
    logger = logging.getLogger("masterkey")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        return runpy.run_path(str(EXAMPLE))["main"](argv)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def kill_at_checkpoint(command: list[str], *, checkpoint: Path, env: dict[str, str], cwd: Path,
                       timeout: float = 240) -> None:  # fmt: skip
    """Run ``command`` (a training run) and SIGKILL it as soon as the folder ``checkpoint`` exists; the run must
    neither end before it nor finish (``results.json`` beside the checkpoints)."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not checkpoint.is_dir():
        assert process.poll() is None, f"the run ended before its checkpoint: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (checkpoint.parent.parent / "results.json").exists(), "the run finished before it was killed"


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory):
    """The environment of a training run started as a process: offline, its caches in one temporary folder, idle
    OpenMP threads passive (on a shared CPU spinning threads slow training many times over)."""
    cache = tmp_path_factory.mktemp("offline-cache")
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


@pytest.fixture(scope="session")
def local_hub():
    hub = LocalHub(_ROOT / "hub", HUB_PORT)
    yield hub
    hub.stop()


@pytest.fixture
def tiny_model():
    """A small real timm DS-CNN (random init): ConvNeXt-atto, 12 depthwise 7x7 convs."""
    torch.manual_seed(0)
    return timm.create_model("convnext_atto", num_classes=10)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ROOT, ignore_errors=True)
