"""The BFCL sandbox: code it runs keeps to its own directory, limits and (no) network."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
from ast import literal_eval
from collections.abc import Iterator
from pathlib import Path

import pytest

from trustee_rl.evaluate import bfcl_sandbox
from trustee_rl.evaluate.bfcl_sandbox import INHERITED_ENVIRONMENT, Sandbox, SandboxError
from trustee_rl.evaluate.confinement import Limits

SECRET = "sk-parent-only-31337"
# No BFCL classes: the calls are plain Python expressions, as a model could send them.
ENTRY = {"id": "sandbox_probe_0", "involved_classes": [], "initial_config": {}}


def call(code: str) -> str:
    """A call text that runs `code` and evaluates to what it left in `result`."""
    return f"(lambda g: (exec({code!r}, g), g.get('result'))[1])({{}})"


def run(sandbox: Sandbox, *codes: str) -> list[str]:
    async def scenario() -> list[str]:
        try:
            return [
                (await sandbox.execute([call(code)], ENTRY, long_context=False))[0]
                for code in codes
            ]
        finally:
            await sandbox.close()

    return asyncio.run(scenario())


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def connection_arrived(server: socket.socket) -> bool:
    readable, _, _ = select.select([server], [], [], 0.5)
    return bool(readable)


def test_code_sees_none_of_the_parents_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTEE_PROBE_API_KEY", SECRET)
    sandbox = Sandbox(tmp_path / "sandbox")
    names, own_key, parents = run(
        sandbox,
        "import os; result = sorted(os.environ)",
        "import os; result = os.environ.get('TRUSTEE_PROBE_API_KEY')",
        f"result = open('/proc/{os.getpid()}/environ', 'rb').read()",
    )
    set_for_the_child = {
        "HOME",
        "TMPDIR",
        "BFCL_PROJECT_ROOT",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
    }
    assert "PATH" in literal_eval(names)
    assert set(literal_eval(names)) <= {*INHERITED_ENVIRONMENT, *set_for_the_child}
    assert own_key == "None"
    assert parents.startswith("Error during execution") and SECRET not in parents


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no-namespaces"])
def test_code_cannot_connect_to_a_loopback_listener(
    tmp_path: Path,
    listener: socket.socket,
    namespaces: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not namespaces:  # a system whose kernel or container refuses unprivileged namespaces
        monkeypatch.setattr(bfcl_sandbox, "_namespace_command", lambda: ())
    port = listener.getsockname()[1]
    sandbox = Sandbox(tmp_path / "sandbox")
    (tcp,) = run(
        sandbox,
        f"import socket; result = socket.create_connection(('127.0.0.1', {port}), timeout=2)",
    )
    assert tcp.startswith("Error during execution")
    assert not connection_arrived(listener)
    with socket.create_connection(("127.0.0.1", port)):  # the listener does take connections
        assert connection_arrived(listener)
    if not namespaces:
        assert "network namespace" not in sandbox.layers
        assert "rests on audit hooks alone" in caplog.text


def test_code_writes_only_in_its_own_fresh_directory(tmp_path: Path) -> None:
    outside = tmp_path / "escaped.txt"
    sandbox = Sandbox(tmp_path / "sandbox")
    home, wrote, escaped, made = run(
        sandbox,
        "import os; result = (os.getcwd(), os.listdir())",
        "result = open('notes.txt', 'w').write('kept inside')",
        f"result = open({str(outside)!r}, 'w').write('escaped')",
        f"import os; result = os.mkdir({str(tmp_path / 'made')!r})",
    )
    directory, listing = literal_eval(home)
    assert Path(directory).parent == (tmp_path / "sandbox").resolve() and listing == []
    assert wrote == "11"
    assert escaped.startswith("Error during execution") and not outside.exists()
    assert made.startswith("Error during execution") and not (tmp_path / "made").exists()
    assert not Path(directory).exists()  # removed with its child


def test_the_child_is_held_to_its_resource_limits(tmp_path: Path) -> None:
    limits = Limits(cpu_s=2, memory_bytes=1 << 30, open_files=64, file_size_bytes=1 << 20)
    sandbox = Sandbox(tmp_path / "sandbox", limits)

    async def scenario() -> None:
        async def code(text: str) -> str:
            return (await sandbox.execute([call(text)], ENTRY, long_context=False))[0]

        try:
            assert await code("result = len(bytearray(64 << 20))") == str(64 << 20)
            assert (await code("result = bytearray(1536 << 20)")).startswith(
                "Error during execution"
            )
            assert (
                await code(
                    "import resource as r; result = [r.getrlimit(r.RLIMIT_NOFILE)[0],"
                    " r.getrlimit(r.RLIMIT_CORE)[0]]"
                )
                == "[64, 0]"
            )
            too_large = await code("open('big', 'wb').write(bytes(2 << 20))")
            assert too_large.startswith("Error during execution") and "File too large" in too_large
            with pytest.raises(SandboxError, match="killed by SIGXCPU"):
                await code("while True: pass")
            assert await code("result = 'replaced'") == "replaced"  # a fresh child
            assert "resource limits" in sandbox.layers and sandbox.layers[-1] == "audit hooks"
        finally:
            await sandbox.close()

    asyncio.run(scenario())


def test_a_child_that_cannot_confine_itself_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox", Limits(open_files=3))  # no descriptor to spare
    with pytest.raises(SandboxError, match=r"^sandbox failed to start: OSError: .*open files"):
        run(sandbox, "result = 'ran anyway'")
    assert list((tmp_path / "sandbox").iterdir()) == []


AUDIT_PROBE = """
import json, os, socket, subprocess, sys
from pathlib import Path
from trustee_rl.evaluate.confinement import guard_with_audit_hooks

guard_with_audit_hooks(Path.cwd())
attempts = {
    "write outside": lambda: open(sys.argv[1], "w"),
    "rename outside": lambda: os.rename("inside.txt", sys.argv[1]),
    "socket": lambda: socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2),
    "subprocess": lambda: subprocess.run(["true"]),
    "parent's environment": lambda: open(f"/proc/{os.getppid()}/environ", "rb").read(),
    "write inside": lambda: open("inside.txt", "w").write("ok"),
}
outcomes = {}
for name, attempt in attempts.items():
    try:
        attempt()
        outcomes[name] = "done"
    except PermissionError as error:
        outcomes[name] = str(error)
print(json.dumps(outcomes))
"""


def test_audit_hooks_alone_refuse_what_the_kernel_layers_refuse(
    tmp_path: Path, listener: socket.socket
) -> None:
    """Where the kernel has neither Landlock nor namespaces, the audit hooks are what is left."""
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "escaped.txt"
    port = listener.getsockname()[1]
    probe = subprocess.run(
        [sys.executable, "-c", AUDIT_PROBE, str(outside), str(port)],
        cwd=home, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    outcomes = json.loads(probe.stdout)
    assert outcomes.pop("write inside") == "done"
    assert all(outcome.startswith("sandbox: ") for outcome in outcomes.values()), outcomes
    assert not outside.exists() and not connection_arrived(listener)
