"""The CLI as a new user meets it (issue 20): fast to start, clear refusals of wrong input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "faiss", "scipy", "polars", "transformers")
CLI = [sys.executable, "-m", "lineage_index.cli.app"]


@pytest.mark.parametrize("argv", [["--help"], ["neo4j", "--help"], ["query", "--help"], ["edges", "--help"],
                                  ["ingest", "--help"], ["check", "--help"]])
def test_answering_help_imports_no_heavy_library(argv: list[str]) -> None:
    code = ("import sys\nfrom lineage_index.cli.app import app\n"
            f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('\\nLOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in r.stdout, r.stdout[-300:]


def test_check_refuses_a_directory_of_many_models(tmp_path: Path) -> None:
    for name in ("a", "b"):
        repo = tmp_path / "zoo" / "org" / name
        repo.mkdir(parents=True)
        (repo / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (repo / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    r = subprocess.run([*CLI, "check", str(tmp_path / "zoo"), "--no-graph", "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "2 model directories below" in r.stderr and "pass one" in r.stderr


def test_fail_on_license_must_name_a_known_licence(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "check", str(tmp_path), "--fail-on-license", "lama3.1", "--no-graph"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "lama3.1" in r.stderr and "not a licence" in r.stderr


def test_version_exit_codes_and_licence_file() -> None:
    import tomllib

    from lineage_index import __version__

    r = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"lineage-index {__version__}"
    assert "5 Neo4j unreachable" in subprocess.run([*CLI, "--help"], capture_output=True, text=True,
                                                    timeout=60).stdout.replace("\n", " ").replace("│", " ")
    root = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and "Apache License" in (root / "LICENSE").read_text()


def test_a_bad_enum_is_refused_before_any_work(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "ingest", "--dir", str(tmp_path), "--graph-load", "bluk", "--store",
                        str(tmp_path / "s")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--graph-load must be one of" in r.stderr and not (tmp_path / "s").exists()
    assert "Traceback" not in r.stderr


def test_progress_goes_to_stderr_and_results_to_stdout(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    repo = tmp_path / "hub" / "o" / "m"
    repo.mkdir(parents=True)
    save_file({"model.layers.0.mlp.up_proj.weight": np.ones((8, 8), np.float32)}, str(repo / "model.safetensors"))
    (repo / "config.json").write_text(json.dumps({"model_type": "llama"}))
    r = subprocess.run([*CLI, "ingest", "--dir", str(tmp_path / "hub"), "--no-graph", "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "sketching" in r.stderr and "sketching" not in r.stdout and "models" in r.stdout


BAD = [  # (arguments, what the one-line error must say)
    (["eval", "--truth", "nope.json"], "nope.json"),
    (["sim", "recover", "/nonexistent-sim"], "no packed sketch store"),
    (["zoo", "build", "/tmp/never-built", "--size", "huge"], "--size must be one of"),
    (["zoo", "build", "/tmp/never-built", "--recipe", "nope"], "--recipe must be"),
    (["check", "/nonexistent/path"], "no such file or directory"),
    (["query", "nosuchquery"], "unknown query"),
    (["query", "provenance", "-p", "bad"], "key=value"),
    (["report", "licenses", "--format", "pdf"], "--format must be one of"),
    (["closeness", "/nonexistent-a", "/nonexistent-b"], "not found"),
    (["determine", "/nonexistent-a", "/nonexistent-b"], "not found"),
    (["ingest", "--dir", "/nonexistent-dir", "--no-graph"], "not a directory"),
    (["ingest", "--hf-cache", "--dir", "/tmp", "--no-graph"], "exactly one source"),
    (["ingest", "--dir", "/tmp", "--graph-load", "bluk"], "--graph-load must be one of"),
    (["ingest", "--models", "a/b..c", "--no-graph"], "not a Hub model id"),
    (["ingest", "--dir", "/tmp", "--limit", "5", "--no-graph"], "--limit applies to a Hub listing"),
    (["explain", "/nonexistent-target"], "no check has been run"),
    (["ingest", "--org", "acme", "--max-requests", "api=lots", "--no-graph"], "expected api=N,resolvers=N"),
    (["ingest", "--dir", "/tmp", "--plan", "--no-graph"], "--plan estimates Hub requests"),
]


@pytest.mark.parametrize(("argv", "says"), BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_every_command_refuses_bad_input_in_one_line(argv: list[str], says: str, tmp_path: Path) -> None:
    r = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**__import__("os").environ, "LINEAGE_INDEX_CACHE": str(tmp_path / "cache")})
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-500:])
    assert "Traceback" not in err and says in err, err[-500:]
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_a_family_signature_is_described_in_words() -> None:
    from lineage_index.indexer.sketch.canon import describe_family

    text = describe_family("L2;input_layernorm.weight:64;mlp.down_proj.weight:64x176;mlp.gate_proj.weight:176x64")
    assert text == "2 layers, width 64, 3 weight roles per layer" and ";" not in text
