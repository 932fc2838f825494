"""Packaging: the extras of pyproject.toml agree with their locks (requirements/lock/), the locks
install anywhere (exact pins only), and the core commands run without any extra's heavy stack."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements" / "lock"
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
# What scripts/setup.sh --dev installs side by side: their locks must agree.
INSTALLED_TOGETHER = ("core", "embedded", "train", "eval", "dev")
# The stacks a core command (simulate over HTTP, report, export, judge) must not load.
HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "llama_cpp", "vllm")
EXACT_PIN = re.compile(r"[a-z0-9][a-z0-9._-]*==[0-9][0-9a-z.+!]*")
ABSOLUTE_PATH = re.compile(r"(^|[\s'\"=])/[\w.-]+/", re.MULTILINE)


def locked(name: str) -> dict[str, str]:
    """Package -> version of one lock file, checking that each line is an exact pin."""
    pins: dict[str, str] = {}
    for line in (LOCKS / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        assert EXACT_PIN.fullmatch(line), f"{name}.txt: not an exact pin: {line!r}"
        package, _, version = line.partition("==")
        pins[canonicalize_name(package)] = version
    return pins


def locked_torch() -> str:
    return locked("train")["torch"]


@pytest.mark.parametrize("extra", ["core", *EXTRAS])
def test_every_direct_dependency_is_pinned_in_its_lock(extra: str) -> None:
    pins = locked(extra)
    declared = [*PROJECT["dependencies"], *EXTRAS.get(extra, [])]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{extra}.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{extra}.txt pins {name}=={pins[name]}, outside {requirement}"
        )


def test_the_locks_of_what_is_installed_together_agree() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for lock in INSTALLED_TOGETHER:
        for package, version in locked(lock).items():
            first = seen.setdefault(package, (lock, version))
            assert first[1] == version, (
                f"{package}: {first[0]}.txt {first[1]}, {lock}.txt {version}"
            )


def test_locks_name_no_index_hash_or_path() -> None:
    """A lock made against one machine's index must not carry that index into the project."""
    assert {path.stem for path in LOCKS.glob("*.txt")} == {"core", *EXTRAS}
    for path in [*LOCKS.glob("*.txt"), *(ROOT / "requirements").glob("*-no-deps.txt")]:
        text = path.read_text(encoding="utf-8")
        for marker in ("://", "file:", "sha256", "--hash", "--index-url", "--find-links"):
            assert marker not in text, f"{path.name} holds {marker!r}"
        assert not ABSOLUTE_PATH.search(text), f"{path.name} names a path of the machine"


def test_torch_is_locked_at_the_public_version_of_the_cpu_build() -> None:
    version = locked_torch()
    assert "+" not in version  # `torch==X` is met by the CPU build X+cpu and by macOS builds
    lock_script = (ROOT / "scripts" / "lock.sh").read_text(encoding="utf-8")
    assert f"TORCH_VERSION={version}\n" in lock_script
    # The CPU build's closure: no CUDA libraries ride along.
    gpu_only = [p for p in locked("train") if p.startswith(("nvidia-", "triton", "cuda-"))]
    assert gpu_only == []


@pytest.mark.skipif(
    platform.system() != "Linux" or shutil.which("nvidia-smi") is not None,
    reason="the CPU build is what a Linux machine without an NVIDIA GPU gets",
)
def test_installed_torch_is_the_locked_cpu_build() -> None:
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the train extra is not installed")
    assert installed == f"{locked_torch()}+cpu"


def test_packages_installed_without_their_requirements_are_pinned_apart() -> None:
    """Their declared requirements are wrong for trustee-rl, so no extra may declare them (pip
    would install those requirements); scripts/setup.sh installs them --no-deps."""
    declared = {
        canonicalize_name(Requirement(text).name)
        for text in [*PROJECT["dependencies"], *(r for reqs in EXTRAS.values() for r in reqs)]
    }
    paths = sorted((ROOT / "requirements").glob("*-no-deps.txt"))
    assert [path.name for path in paths] == ["embedded-no-deps.txt", "eval-no-deps.txt"]
    for path in paths:
        extra = path.name.removesuffix("-no-deps.txt")
        assert extra in EXTRAS, f"{path.name} names no extra"
        lines = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")
        ]
        assert lines, f"{path.name} is empty"
        for line in lines:
            assert EXACT_PIN.fullmatch(line), f"{path.name}: not an exact pin: {line!r}"
            assert canonicalize_name(line.partition("==")[0]) not in declared


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_core_commands_load_no_heavy_stack(tmp_path: Path) -> None:
    result = run_python(
        f"""
        import json, sys
        from typer.testing import CliRunner
        from trustee_rl.cli import app
        from trustee_rl.testing.openai_server import AgentResponder, LoopbackOpenAIServer

        run = {str(tmp_path / "run")!r}
        with LoopbackOpenAIServer(AgentResponder(seed=0)) as server:
            url = server.base_url
            commands = [
                ["simulate", "--run-dir", run, "--policy", url, "--simulator", url,
                 "--episodes", "2", "--json"],
                ["report", run],
                ["export", run, "--out", {str(tmp_path / "out")!r}],
            ]
            for args in commands:
                outcome = CliRunner().invoke(app, args)
                assert outcome.exit_code == 0, (args, outcome.output)
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert result.returncode == 0, result.stderr
    loaded = {name.partition(".")[0] for name in json.loads(result.stdout)}
    assert "trustee_rl" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


# Makes the given top-level modules absent for the process, as if their extra were not installed.
_WITHOUT = """
import sys
ABSENT = {absent!r}

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
sys.argv = ["trustee", *{argv!r}]
from trustee_rl.cli import main
main()
"""


@pytest.mark.parametrize(
    ("absent", "argv", "extra"),
    [
        (["torch", "transformers", "trl", "datasets", "peft"], ["train"], "train"),
        (["llama_cpp"], ["simulate", "--simulator", "embedded", "--episodes", "1"], "embedded"),
    ],
)
def test_a_command_needing_a_missing_extra_says_which_in_one_line(
    tmp_path: Path, absent: list[str], argv: list[str], extra: str
) -> None:
    argv = [*argv, "--run-dir", str(tmp_path / "run")]
    result = run_python(_WITHOUT.format(absent=absent, argv=argv))
    assert result.returncode == 2, result.stderr
    command = f"trustee {argv[0]}"
    assert result.stderr == (
        f"error: {command} needs the {extra} extra: pip install 'trustee-rl[{extra}]'\n"
    )
    assert not (tmp_path / "run").exists()


def test_the_trainable_policy_loads_without_llama_cpp() -> None:
    """The train extra alone must reach a transformers policy: finding the embedded model's file
    is not running it."""
    result = run_python(
        "import sys\nimport trustee_rl.policy.model, trustee_rl.train.grpo\n"
        "print('llama_cpp' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
