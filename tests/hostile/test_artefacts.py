"""Hostile policy, predictor and learned-environment directories, and pipeline caches.

Every loader meets a malicious pickle in place of each of its files: the pickle would create a
marker file when unpickled, and each case asserts the marker does not exist afterwards (the
payload did not run) and that the load failed with one line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from batchrl_mtf.core.io import MARKER
from batchrl_mtf.data.build import build_dataset
from batchrl_mtf.data.formats import load_dataset
from batchrl_mtf.data.reward import RewardConfig
from batchrl_mtf.data.transitions import Transitions
from batchrl_mtf.learned.runtime import read_ranker_scale, read_responses
from batchrl_mtf.pipeline.glue import load_npz
from batchrl_mtf.pipeline.stage import read_record
from batchrl_mtf.predictors import PredictorConfig, fit_predictor, load_predictor, save_predictor
from batchrl_mtf.sim.spec import load_spec
from batchrl_mtf.training import load_policy, resolve_config, train
from tests.hostile._harness import Payload, judge, malicious_pickle, run_call, run_cli, snapshot
from tests.logs_factory import make_logs

TINY = {"n_steps": 6, "n_steps_per_epoch": 3, "hidden_units": [8], "batch_size": 8, "algo": "bc"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Transitions:
    tmp = tmp_path_factory.mktemp("hostile_ds")
    make_logs(n_users=6, sessions_per_user=2, requests_per_session=3).to_parquet(
        tmp / "logs.parquet"
    )
    reward = RewardConfig(stickiness={"watch_time": 0.02}, activeness={"like": 1.0})
    build_dataset([tmp / "logs.parquet"], reward, tmp / "ds")
    return load_dataset(tmp / "ds")


@pytest.fixture(scope="module")
def policy_dir(data: Transitions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile_pol") / "bc"
    train(data, out, resolve_config([("test", TINY)]))
    return out


@pytest.fixture(scope="module")
def predictor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = make_logs(n_users=8, sessions_per_user=2, requests_per_session=3)
    cfg = PredictorConfig(
        model="mmoe",
        tasks=("click", "like"),
        embedding_dim=4,
        hidden_dims=(8,),
        tower_dims=(4,),
        n_experts=2,
        n_epochs=1,
        batch_size=64,
    )
    out = tmp_path_factory.mktemp("hostile_pred") / "pred"
    save_predictor(fit_predictor(logs, cfg), out)
    return out


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "artefact"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _manifest(path: Path, **changes: object) -> None:
    doc = json.loads((path / "policy.json").read_text())
    doc.update(changes)
    (path / "policy.json").write_text(json.dumps(doc))


def _legacy(path: Path, marker: Path) -> None:
    """Turn ``path`` into a previous-release directory whose pickles carry the payload."""
    for f in ("model.json", "model.safetensors", "rng_state.json", MARKER):
        (path / f).unlink()
    malicious_pickle(path / "model.d3", marker)
    malicious_pickle(path / "rng_state.pt", marker)
    _manifest(path, format="batchrl-mtf/policy@1", model="model.d3", checkpoint="model.d3")
    del marker


# How a policy directory is read: the library loader, export (CLI), train --resume, upgrade.
def _load(p: Path, data: Transitions, tmp: Path) -> Callable[[], object]:
    return lambda: load_policy(p)


def _export_cli(p: Path, data: Transitions, tmp: Path) -> list[object]:
    return ["export", p, "--format", "torchscript", "--out", tmp / "p.pt"]


def _resume(p: Path, data: Transitions, tmp: Path) -> Callable[[], object]:
    cfg = resolve_config([("test", {**TINY, "n_steps": 9})])
    return lambda: train(data, p, cfg, resume=True)


LOADERS = {"load": _load, "export": _export_cli, "resume": _resume}

Mutate = Callable[[Path, Path], None]


def _pickle_at(name: str) -> Mutate:
    return lambda p, marker: malicious_pickle(p / name, marker)


def _write(name: str, data: bytes) -> Mutate:
    def f(p: Path, marker: Path) -> None:
        (p / name).write_bytes(data)

    return f


def _entry(key: str, value: object) -> Mutate:
    return lambda p, marker: _manifest(p, **{key: value})


def _symlink_out(p: Path, marker: Path) -> None:
    outside = p.parent / "outside.safetensors"
    shutil.copy(p / "model.safetensors", outside)
    (p / "model.safetensors").unlink()
    os.symlink(outside, p / "model.safetensors")


def _wrong_shapes(p: Path, marker: Path) -> None:
    save_file(
        {"policy.encoder.weight": np.zeros((3, 3), dtype=np.float32)}, p / "model.safetensors"
    )


def _nan_weights(p: Path, marker: Path) -> None:
    tensors = load_file(p / "model.safetensors")
    name = sorted(k for k in tensors if k.endswith("weight"))[0]
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, p / "model.safetensors")


def _other_algo(p: Path, marker: Path) -> None:
    doc = json.loads((p / "model.json").read_text())
    doc["config"]["config"]["type"] = "cql"
    (p / "model.json").write_text(json.dumps(doc))


def _drop_state(p: Path, marker: Path) -> None:
    doc = json.loads((p / "model.json").read_text())
    doc["state"].popitem()
    (p / "model.json").write_text(json.dumps(doc))


def _bad_state_node(p: Path, marker: Path) -> None:
    doc = json.loads((p / "model.json").read_text())
    first = sorted(doc["state"])[0]
    doc["state"][first] = {"eval": "__import__('os').system('x')"}
    (p / "model.json").write_text(json.dumps(doc))


DEEP = b"[" * 100_000 + b"]" * 100_000

POLICY_MUTATIONS: dict[str, tuple[Mutate, tuple[str, ...]]] = {
    "pickle as model.safetensors": (_pickle_at("model.safetensors"), ("load", "export", "resume")),
    "pickle as model.json": (_pickle_at("model.json"), ("load", "export", "resume")),
    "pickle as policy.json": (_pickle_at("policy.json"), ("load", "export", "resume")),
    "pickle as features.json": (_pickle_at("features.json"), ("load", "export")),
    "pickle as rng_state.json": (_pickle_at("rng_state.json"), ("resume",)),
    "pickle as config.json": (_pickle_at("config.json"), ("resume",)),
    "model outside (..)": (_entry("model", "../../../../etc/passwd"), ("load", "export")),
    "model absolute": (_entry("model", "/etc/passwd"), ("load",)),
    "model_config outside": (_entry("model_config", "../model.json"), ("load",)),
    "features absolute": (_entry("features", "/etc/hostname"), ("load",)),
    "checkpoint outside": (_entry("checkpoint", "../../x.safetensors"), ("resume",)),
    "rng_state outside": (_entry("rng_state", "/etc/passwd"), ("resume",)),
    "model not a string": (_entry("model", 123), ("load",)),
    "model empty": (_entry("model", ""), ("load",)),
    "model symlink outside": (_symlink_out, ("load",)),
    "0-byte safetensors": (_write("model.safetensors", b""), ("load", "export")),
    "truncated safetensors": (
        _write("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
        ("load",),
    ),
    "wrong tensor shapes": (_wrong_shapes, ("load",)),
    "non-finite weights": (_nan_weights, ("load", "export")),
    "config of another algorithm": (_other_algo, ("load",)),
    "a module's state missing": (_drop_state, ("load",)),
    "code in a state node": (_bad_state_node, ("load",)),
    "model.json deep nesting": (_write("model.json", DEEP), ("load",)),
    "model.json utf-16": (_write("model.json", '{"a": 1}'.encode("utf-16")), ("load",)),
    "policy.json deep nesting": (_write("policy.json", DEEP), ("load",)),
    "policy.json is a list": (_write("policy.json", b"[1, 2]"), ("load",)),
    "policy.json utf-16": (
        _write("policy.json", b'{"format": 1}'.decode().encode("utf-16")),
        ("load",),
    ),
    "features.json garbage": (_write("features.json", b"{not json"), ("load",)),
    "rng_state.json missing": (lambda p, m: (p / "rng_state.json").unlink(), ("resume",)),
    "rng_state.json corrupt": (
        _write("rng_state.json", b'{"format": "x", "python": 1}'),
        ("resume",),
    ),
    "rng_state.json truncated": (
        lambda p, m: (p / "rng_state.json").write_text((p / "rng_state.json").read_text()[:100]),
        ("resume",),
    ),
    "previous release (pickles)": (_legacy, ("load", "export", "resume", "upgrade")),
}

POLICY_CASES = [(m, loader) for m, (_, loaders) in POLICY_MUTATIONS.items() for loader in loaders]


@pytest.mark.parametrize(
    ("mutation", "loader"), POLICY_CASES, ids=[f"{m}-{ld}" for m, ld in POLICY_CASES]
)
def test_hostile_policy_directory(
    mutation: str,
    loader: str,
    policy_dir: Path,
    data: Transitions,
    tmp_path: Path,
    tally: Callable[..., None],
) -> None:
    p = _copy(policy_dir, tmp_path)
    marker = tmp_path / "PAYLOAD_RAN"
    POLICY_MUTATIONS[mutation][0](p, marker)
    watched = snapshot([p])
    if loader == "upgrade":
        ended = run_cli(["upgrade", p])
    elif loader == "export":
        ended = run_cli(_export_cli(p, data, tmp_path))
    else:
        fn = LOADERS[loader](p, data, tmp_path)
        assert callable(fn)
        ended = run_call(fn)
    outcome = judge(
        ended,
        expect="clean",
        watched=watched,
        marker=marker,
        out=tmp_path / "p.pt",
        folders=[tmp_path, p],
    )
    tally(f"policy/{loader}/{mutation}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)
    if mutation.startswith("previous release"):
        assert "--trust-pickle" in ended.output


def test_upgrade_with_trust_converts_a_genuine_previous_release_directory(
    policy_dir: Path, data: Transitions, tmp_path: Path
) -> None:
    p = _copy(policy_dir, tmp_path)
    genuine = load_policy(policy_dir)
    genuine.algo.save(str(p / "model.d3"))  # what the previous release wrote
    torch.save(
        {
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            "grad_step": 6,
        },
        p / "rng_state.pt",
    )
    for f in ("model.json", "model.safetensors", "rng_state.json", MARKER):
        (p / f).unlink()
    _manifest(
        p,
        format="batchrl-mtf/policy@1",
        model="model.d3",
        checkpoint="model.d3",
        rng_state="rng_state.pt",
    )
    assert run_cli(["upgrade", p]).exit_code == 2  # not without --trust-pickle
    ended = run_cli(["upgrade", p, "--trust-pickle"])
    assert ended.exit_code == 0, ended.output
    assert not (p / "model.d3").exists() and not (p / "rng_state.pt").exists()
    upgraded = load_policy(p)
    np.testing.assert_array_equal(upgraded.act(data.observations), genuine.act(data.observations))
    # and it resumes
    cfg = resolve_config([("test", {**TINY, "n_steps": 9})])
    assert train(data, p, cfg, resume=True).n_steps_done == 9
    assert run_cli(["upgrade", p]).output.strip().endswith("nothing to do")


PREDICTOR_MUTATIONS: dict[str, Mutate] = {
    **{
        f"pickle as {f}": _pickle_at(f)
        for f in ("weights.safetensors", "config.json", "vocab.json", "meta.json")
    },
    "weights truncated": _write("weights.safetensors", b"\x10\x00"),
    "meta deep nesting": _write("meta.json", DEEP),
    "config utf-16": _write("config.json", '{"a": 1}'.encode("utf-16")),
    "weights missing": lambda p, m: (p / "weights.safetensors").unlink(),
    "content hash forged": lambda p, m: (p / "meta.json").write_text(
        '{"content_hash": "sha256:0"}'
    ),
}


@pytest.mark.parametrize("mutation", sorted(PREDICTOR_MUTATIONS))
def test_hostile_predictor_directory(
    mutation: str, predictor_dir: Path, tmp_path: Path, tally: Callable[..., None]
) -> None:
    p = _copy(predictor_dir, tmp_path)
    marker = tmp_path / "PAYLOAD_RAN"
    PREDICTOR_MUTATIONS[mutation](p, marker)
    watched = snapshot([p])
    ended = run_call(lambda: load_predictor(p))
    outcome = judge(ended, expect="clean", watched=watched, marker=marker, folders=[tmp_path])
    tally(f"predictor/{mutation}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)


ENV_FILES: dict[str, tuple[Callable[[Path], object], str, bytes | None]] = {
    "responses.json pickle": (read_responses, "responses.json", None),
    "responses.json utf-16": (read_responses, "responses.json", '{"format": 1}'.encode("utf-16")),
    "responses.json deep nesting": (read_responses, "responses.json", DEEP),
    "responses.json bad columns": (
        read_responses,
        "responses.json",
        b'{"format": "batchrl-mtf/responses@1", "columns": [1]}',
    ),
    "ranker_scale not numbers": (
        read_ranker_scale,
        "responses.json",
        b'{"ranker_scale": {"click": "x"}}',
    ),
    "env spec pickle": (load_spec, "env.toml", None),
    "env spec binary": (load_spec, "env.toml", bytes(range(256))),
    "env spec utf-16": (load_spec, "env.toml", "[world]\n".encode("utf-16")),
    "env spec deep nesting": (load_spec, "env.toml", b"x = " + b"[" * 5000 + b"]" * 5000),
    "env spec 0-byte": (load_spec, "env.toml", b""),
}


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_hostile_learned_environment_files(
    name: str, tmp_path: Path, tally: Callable[..., None]
) -> None:
    loader, fname, data = ENV_FILES[name]
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "env" / fname
    if data is None:
        malicious_pickle(path, marker)
    else:
        path.parent.mkdir()
        path.write_bytes(data)
    watched = snapshot([path.parent])
    ended = run_call(lambda: loader(path))
    outcome = judge(ended, expect="clean", watched=watched, marker=marker, folders=[tmp_path])
    tally(f"env/{name}", outcome)
    assert outcome == "clean", (outcome, ended.output, ended.traceback)


def _object_npz(path: Path, marker: Path) -> None:
    """An .npz whose array is an object array holding the payload (needs allow_pickle)."""
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    np.savez(path, values=arr)


@pytest.mark.parametrize("name", ["stage.json pickle", "npz object array", "npz garbage"])
def test_hostile_pipeline_caches(name: str, tmp_path: Path, tally: Callable[..., None]) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    folder = tmp_path / "stage"
    folder.mkdir()
    if name == "stage.json pickle":
        malicious_pickle(folder / "stage.json", marker)
        ended = run_call(lambda: read_record(folder) is None or 1 / 0)
    elif name == "npz object array":
        _object_npz(folder / "values.npz", marker)
        ended = run_call(lambda: load_npz(folder / "values.npz") == {} or 1 / 0)
    else:
        (folder / "values.npz").write_bytes(b"PK\x03\x04garbage")
        ended = run_call(lambda: load_npz(folder / "values.npz") == {} or 1 / 0)
    watched = snapshot([folder])
    outcome = judge(ended, expect="ok", watched=watched, marker=marker, folders=[tmp_path])
    tally(f"cache/{name}", outcome)  # a tampered cache is a cache miss: recomputed, never run
    assert outcome == "ok", (outcome, ended.output, ended.traceback)


def test_loading_checks_every_weight_is_finite(policy_dir: Path, tmp_path: Path) -> None:
    p = _copy(policy_dir, tmp_path)
    _nan_weights(p, tmp_path / "m")
    with pytest.raises(Exception, match="not finite"):
        load_policy(p)


def test_the_policy_directory_holds_no_pickle(policy_dir: Path) -> None:
    names = sorted(f.name for f in policy_dir.iterdir())
    assert "model.d3" not in names and "rng_state.pt" not in names
    for f in policy_dir.iterdir():
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80"), f  # pickle protocol 2+ header
