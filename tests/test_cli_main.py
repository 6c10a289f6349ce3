"""The ``batchrank`` command group: help, exit codes, lazy imports, the Keras backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchrank._backend import ensure_jax_backend
from batchrank.cli.main import COMMANDS, main
from batchrank.errors import EXIT_CODES

BATCHRANK = Path(sys.executable).parent / "batchrank"
HEAVY = ("tensorflow", "tensorflow_datasets", "keras", "jax", "matplotlib")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(extra)
    return env


def test_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) in (None, 0)
    out = capsys.readouterr().out
    assert "Usage: batchrank" in out
    for name in ("train", "evaluate", "score", "sample-data"):
        assert name in out
    for name, (_, help_) in COMMANDS.items():
        assert name in out
        assert help_.split()[0] in out
    assert "Exit codes:" in out
    for code, text in EXIT_CODES.items():
        assert f"{code}  {text}" in out, code


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_command_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert main([command, "--help"]) in (None, 0)
    out = capsys.readouterr().out
    for flag in ("--ratings", "--user-col", "--item-col", "--rating-col"):
        assert flag in out
    if command == "train":
        for flag in ("--items", "--rating-scale", "--preset", "--epochs", "--test-fraction",
                     "--seed", "--out"):  # fmt: skip
            assert flag in out
    else:
        assert "--model" in out
        assert "--json" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from batchrank import __version__

    assert main(["--version"]) in (None, 0)
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "No such command" in err
    assert "Traceback" not in err


def test_help_imports_no_tensorflow_keras_or_jax() -> None:
    """``batchrank --help`` (and a command's --help) stays fast: no heavy imports."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from batchrank.cli.main import main
        for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"],
                     ["run", "--help"], ["validate", "--help"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code in (None, 0), e.code
        print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(HEAVY, False)


def test_console_script_bad_input(tmp_path: Path) -> None:
    """The installed ``batchrank`` script: exit 3, one line on stderr, no traceback, no bundle."""
    if not BATCHRANK.exists():
        pytest.skip(f"console script not installed at {BATCHRANK}")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user,item,stars\n1,2,3\n")
    out = tmp_path / "bundle"
    proc = subprocess.run(
        [str(BATCHRANK), "train", "--ratings", str(ratings), "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"batchrank: error: {ratings}: ratings column")
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [ratings]


def test_keras_backend_other_than_jax_warns_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.warns(UserWarning, match=r"KERAS_BACKEND='torch' is not supported .* using 'jax'"):
        ensure_jax_backend()
    assert os.environ["KERAS_BACKEND"] == "jax"


def test_keras_backend_jax_does_not_warn(
    monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    ensure_jax_backend()
    assert not [w for w in recwarn if "KERAS_BACKEND" in str(w.message)]


@pytest.mark.slow
def test_keras_backend_torch_in_a_fresh_process() -> None:
    """A user with KERAS_BACKEND=torch in the environment: a warning, and Keras runs on JAX."""
    code = textwrap.dedent(
        """
        from batchrank._backend import keras_module
        keras = keras_module()
        print(keras.backend.backend())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(KERAS_BACKEND="torch"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "jax"
    assert "KERAS_BACKEND='torch' is not supported by batchrank; using 'jax' instead" in proc.stderr


@pytest.mark.parametrize("command", ["run", "train", "evaluate", "validate"])
def test_commands_take_log_format(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert main([command, "--help"]) in (None, 0)
    out = capsys.readouterr().out
    assert "--log-format [human|json]" in out and "BATCHRANK_LOG_FORMAT" in out


def test_help_documents_the_signal_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) in (None, 0)
    out = " ".join(capsys.readouterr().out.split())
    for code, name in ((129, "SIGHUP"), (130, "SIGINT"), (143, "SIGTERM")):
        assert f"{code} stopped by {name}" in out
    assert "exits with 128 + the signal's number" in out


def test_usage_error_in_json_mode_names_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --log-format is a usage error (exit 2) before any logging is set up."""
    with pytest.raises(SystemExit) as info:
        main(["validate", "job.toml", "--log-format", "yaml"])
    assert info.value.code == 2
    assert "'yaml' is not one of 'human', 'json'" in capsys.readouterr().err
