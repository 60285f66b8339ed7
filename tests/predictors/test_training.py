"""Tests of batchrl_mtf.predictors: models, training, freezing, artefacts, fallback, errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from batchrl_mtf.errors import ConfigError, PredictorError, SchemaError
from batchrl_mtf.predictors import (
    MODELS,
    UNKNOWN_INDEX,
    FrozenPredictor,
    PredictorConfig,
    TrainedPredictor,
    fit_predictor,
    freeze,
    load_predictor,
    rescore_frame,
    save_predictor,
)
from batchrl_mtf.predictors.metrics import auc, log_loss
from batchrl_mtf.predictors.models import ESMM
from batchrl_mtf.predictors.training import scale_regression, time_split

KUAIRAND = Path(__file__).resolve().parents[3] / "shared" / "data" / "kuairand"
TASKS = ("click", "like", "watch_time")


def easy_logs(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Schema-v1 logs whose labels depend strongly on user and item biases (easy to learn)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 60
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    ub, ib = rng.normal(size=n_users) * 1.5, rng.normal(size=n_items) * 1.5
    dur = rng.uniform(5, 120, n_items)
    u_act = rng.normal(size=n_users)
    logit = ub[u] + ib[i]
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    like = ((rng.random(n) < 1 / (1 + np.exp(-(logit - 0.5)))) & (click == 1)).astype(np.int64)
    watch = rng.exponential(5.0, n) * (1 + 3 * click)
    return pd.DataFrame(
        {
            "user_id": u,
            "session_id": u,
            "request_id": np.arange(n) // 5,
            "ts": 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 1000,
            "item_id": [f"v{x}" for x in i],
            "position": np.arange(n) % 5,
            "pred_click": 0.5,
            "pred_like": 0.5,
            "w_click": 1.0,
            "click": click,
            "like": like,
            "watch_time": watch,
            "duration": dur[i],
            "u_activity": u_act[u],
        }
    )


def tiny(model: str = "mmoe", **changes: object) -> PredictorConfig:
    """A small, fast configuration."""
    base = PredictorConfig(
        model=model,  # type: ignore[arg-type]
        tasks=TASKS,
        embedding_dim=8,
        hidden_dims=(16,),
        tower_dims=(8,),
        n_experts=2,
        n_shared_experts=1,
        n_task_experts=1,
        n_epochs=4,
        batch_size=128,
        learning_rate=1e-2,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread (and do not fight other processes for cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def logs() -> pd.DataFrame:
    return easy_logs()


@pytest.fixture(scope="module")
def trained(logs: pd.DataFrame) -> dict[str, TrainedPredictor]:
    return {m: fit_predictor(logs, tiny(m)) for m in MODELS}


# --- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_each_model_learns_an_easy_task(trained: dict[str, TrainedPredictor], model: str) -> None:
    by_task = {m.task: m for m in trained[model].metrics}
    assert by_task["click"].auc > 0.7
    assert by_task["like"].auc > 0.7
    assert by_task["watch_time"].rmse < 0.35
    assert trained[model].epoch_losses[-1] < trained[model].epoch_losses[0]
    assert abs(by_task["click"].mean_pred - by_task["click"].observed) < 0.15


def test_esmm_outputs_pctcvr_as_pctr_times_pcvr(trained: dict[str, TrainedPredictor]) -> None:
    model = trained["esmm"].model
    assert isinstance(model, ESMM)
    enc = trained["esmm"].vocab.encode(easy_logs(200, seed=5), easy_logs(200, seed=5))
    args = (
        torch.from_numpy(enc.user_idx),
        torch.from_numpy(enc.item_idx),
        torch.from_numpy(enc.dense),
    )
    model.eval()
    with torch.no_grad():
        pctr, towers = model.parts(*args)
        out = model(*args)
    k_click, k_like, k_watch = (TASKS.index(t) for t in ("click", "like", "watch_time"))
    torch.testing.assert_close(out[:, k_click], pctr)
    torch.testing.assert_close(out[:, k_like], pctr * towers[:, k_like])
    torch.testing.assert_close(out[:, k_watch], towers[:, k_watch])  # regression: no funnel
    assert bool((out[:, k_like] <= out[:, k_click] + 1e-7).all())


def test_soft_sharing_penalty_pulls_task_networks_together(logs: pd.DataFrame) -> None:
    loose = fit_predictor(logs, tiny("soft-sharing", soft_sharing_l2=0.0, n_epochs=2)).model
    tight = fit_predictor(logs, tiny("soft-sharing", soft_sharing_l2=1.0, n_epochs=2)).model
    assert float(loose.penalty()) == 0.0
    loose.l2 = 1.0  # type: ignore[assignment]  # measure both spreads with the same weight
    assert float(tight.penalty().detach()) < float(loose.penalty().detach())


def test_uncertainty_weighting_learns_task_variances(logs: pd.DataFrame) -> None:
    result = fit_predictor(logs, tiny("shared-bottom", loss_weighting="uncertainty", n_epochs=2))
    assert len(result.task_log_vars) == len(TASKS)
    assert all(v != 0.0 for v in result.task_log_vars)
    fixed = fit_predictor(logs, tiny("shared-bottom", n_epochs=2))
    assert fixed.task_log_vars == ()


def test_task_weights_change_training(logs: pd.DataFrame) -> None:
    a = fit_predictor(logs, tiny("shared-bottom", n_epochs=1)).epoch_losses
    b = fit_predictor(
        logs, tiny("shared-bottom", n_epochs=1, task_weights=(1.0, 0.0, 0.0))
    ).epoch_losses
    assert b[0] < a[0]


# --- determinism, split -----------------------------------------------------------------------


def test_same_seed_same_predictor_and_other_seed_differs(logs: pd.DataFrame) -> None:
    a = freeze(fit_predictor(logs, tiny("ple", n_epochs=1)))
    b = freeze(fit_predictor(logs, tiny("ple", n_epochs=1)))
    c = freeze(fit_predictor(logs, tiny("ple", n_epochs=1, seed=7)))
    assert a.content_hash == b.content_hash
    np.testing.assert_array_equal(
        a.predict(logs, logs)["pred_click"], b.predict(logs, logs)["pred_click"]
    )
    assert a.content_hash != c.content_hash


def test_time_split_holds_out_the_latest_rows() -> None:
    ts = np.array([50, 10, 40, 20, 30, 60, 0, 70, 80, 90], dtype=np.int64)
    train, valid = time_split(ts, 0.3)
    assert len(valid) == 3
    assert ts[train].max() <= ts[valid].min()
    assert set(train) | set(valid) == set(range(10))
    with pytest.raises(PredictorError, match="at least 2 rows"):
        time_split(np.array([1]), 0.5)


def test_metrics_auc_and_logloss_are_correct() -> None:
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert log_loss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


# --- freeze, save, load -----------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_save_load_round_trip_gives_identical_predictions(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame, model: str, tmp_path: Path
) -> None:
    saved = save_predictor(trained[model], tmp_path / "pred")
    loaded = load_predictor(tmp_path / "pred")
    assert loaded.tasks == TASKS
    assert loaded.content_hash == saved.content_hash
    assert (
        json.loads((tmp_path / "pred" / "meta.json").read_text())["content_hash"]
        == saved.content_hash
    )
    a, b = saved.predict(logs, logs), loaded.predict(logs, logs)
    assert set(b) == {f"pred_{t}" for t in TASKS}
    for key in a:
        assert b[key].dtype == np.float64
        assert b[key].shape == (len(logs),)
        np.testing.assert_array_equal(a[key], b[key])
        assert ((b[key] >= 0) & (b[key] <= 1)).all()
    loaded.verify()


def test_weights_load_without_pickle(trained: dict[str, TrainedPredictor], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    save_predictor(trained["mmoe"], tmp_path / "p")
    tensors = load_file(str(tmp_path / "p" / "weights.safetensors"))
    assert "vocab.user_table" in tensors
    assert any(k.startswith("model.") for k in tensors)


def test_frozen_model_cannot_be_changed_by_training_code(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame, tmp_path: Path
) -> None:
    save_predictor(trained["shared-bottom"], tmp_path / "p")
    frozen = load_predictor(tmp_path / "p")
    before = frozen.predict(logs, logs)
    net = frozen.model
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    net.train()  # training code switching modes has no effect
    assert not net.training
    assert not any(m.training for m in net.modules())

    opt = torch.optim.SGD(net.parameters(), lr=10.0)
    enc = frozen.encode(logs, logs)
    out = net(
        torch.from_numpy(enc.user_idx), torch.from_numpy(enc.item_idx), torch.from_numpy(enc.dense)
    )
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.sum().backward()
    opt.step()  # no parameter has a gradient, so the step changes nothing
    after = frozen.predict(logs, logs)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    frozen.verify()

    with torch.no_grad():  # tampering behind its back is detected
        next(net.parameters()).add_(1.0)
    with pytest.raises(PredictorError, match="was modified"):
        frozen.verify()


def test_load_rejects_tampered_or_incomplete_artefacts(
    trained: dict[str, TrainedPredictor], tmp_path: Path
) -> None:
    out = tmp_path / "p"
    save_predictor(trained["mmoe"], out)
    cfg = out / "config.json"
    cfg.write_text(cfg.read_text().replace('"n_epochs": 4', '"n_epochs": 5'))
    with pytest.raises(PredictorError, match="content hash mismatch"):
        load_predictor(out)
    (out / "vocab.json").unlink()
    with pytest.raises(PredictorError, match=r"vocab\.json: missing predictor artefact file"):
        load_predictor(out)
    with pytest.raises(PredictorError, match="not a predictor artefact directory"):
        load_predictor(tmp_path / "nope")


# --- inference fallback -----------------------------------------------------------------------


def test_unknown_ids_and_missing_features_fall_back(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame
) -> None:
    frozen = freeze(trained["mmoe"])
    users = pd.DataFrame({"user_id": ["stranger", 10_000, 3]})  # no u_* columns at all
    items = pd.DataFrame({"item_id": ["v0", 424242, None], "duration": [np.nan, 30.0, 30.0]})
    enc = frozen.encode(users, items)
    assert enc.user_idx.tolist()[:2] == [UNKNOWN_INDEX, UNKNOWN_INDEX]
    assert enc.user_idx[2] != UNKNOWN_INDEX
    assert enc.item_idx.tolist() == [enc.item_idx[0], UNKNOWN_INDEX, UNKNOWN_INDEX]
    assert enc.item_idx[0] != UNKNOWN_INDEX
    assert enc.dense[0, frozen.vocab.dense_features.index("duration")] == 0.0  # NaN -> mean
    # a missing u_* column uses the per-user table learnt in training; unknown users get 0
    k = frozen.vocab.dense_features.index("u_activity")
    assert enc.dense[0, k] == 0.0
    assert enc.dense[2, k] != 0.0
    # integer ids (fast numeric path) and their string forms map to the same rows
    np.testing.assert_array_equal(
        frozen.vocab.user_index(np.array([3, 99999, 0])),
        frozen.vocab.user_index(["3", "99999", "0"]),
    )
    preds = frozen.predict(users, items)
    for values in preds.values():
        assert values.shape == (3,)
        assert np.isfinite(values).all()
        assert ((values >= 0) & (values <= 1)).all()
    # the unknown row was trained by id dropout: it moved away from its initialisation
    assert frozen.model.user_emb.weight[UNKNOWN_INDEX].abs().sum() > 0


def test_predict_rejects_unaligned_or_id_less_frames(trained: dict[str, TrainedPredictor]) -> None:
    frozen = freeze(trained["mmoe"])
    with pytest.raises(PredictorError, match="aligned row by row"):
        frozen.predict(pd.DataFrame({"user_id": [1, 2]}), pd.DataFrame({"item_id": ["v1"]}))
    with pytest.raises(PredictorError, match="missing column 'item_id'"):
        frozen.predict(pd.DataFrame({"user_id": [1]}), pd.DataFrame({"id": ["v1"]}))


def test_fast_array_path_matches_predict(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame
) -> None:
    frozen: FrozenPredictor = freeze(trained["ple"])
    enc = frozen.encode(logs, logs)
    arr = frozen.predict_arrays(enc.user_idx, enc.item_idx, enc.dense, batch_size=97)
    np.testing.assert_allclose(arr[:, 0], frozen.predict(logs, logs)["pred_click"], rtol=1e-6)
    with pytest.raises(PredictorError, match="dense: expected shape"):
        frozen.predict_arrays(enc.user_idx, enc.item_idx, enc.dense[:, :1])


def test_regression_prediction_scales_back_to_seconds(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame
) -> None:
    frozen = freeze(trained["shared-bottom"])
    cap = frozen.regression_caps["watch_time"]
    y = np.array([0.0, 1.0, 10.0, cap])
    np.testing.assert_allclose(frozen.to_target_units("watch_time", scale_regression(y, cap)), y)
    seconds = frozen.to_target_units("watch_time", frozen.predict(logs, logs)["pred_watch_time"])
    clicked = logs["click"].to_numpy() == 1
    assert seconds[clicked].mean() > seconds[~clicked].mean()  # watch time follows clicks
    with pytest.raises(PredictorError, match="not a regression task"):
        frozen.to_target_units("click", np.array([0.5]))


def test_rescore_frame_rewrites_pred_columns_only(
    trained: dict[str, TrainedPredictor], logs: pd.DataFrame
) -> None:
    frozen = freeze(trained["mmoe"])
    out = rescore_frame(logs, frozen)
    assert list(out.columns) == [*logs.columns, "pred_watch_time"]
    pd.testing.assert_frame_equal(
        out[["user_id", "w_click", "click"]], logs[["user_id", "w_click", "click"]]
    )
    np.testing.assert_array_equal(
        out["pred_click"].to_numpy(), frozen.predict(logs, logs)["pred_click"]
    )
    assert not (out["pred_like"] == 0.5).all()


def test_item_table_features_are_used_and_looked_up(logs: pd.DataFrame, tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": [f"v{i}" for i in range(60)], "n_views": np.arange(60) * 10.0})
    result = fit_predictor(logs, tiny("shared-bottom", n_epochs=1), items)
    assert result.vocab.item_features == ("duration", "n_views")
    frozen = freeze(result)
    k = frozen.vocab.dense_features.index("n_views")
    enc = frozen.encode(pd.DataFrame({"user_id": [1]}), pd.DataFrame({"item_id": ["v59"]}))
    assert enc.dense[0, k] > 0  # the largest n_views, from the per-item table
    with pytest.raises(SchemaError, match="expected unique ids"):
        fit_predictor(logs, tiny("shared-bottom", n_epochs=1), pd.concat([items, items]))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"model": "xgboost"},
            r"PredictorConfig\.model: expected one of soft-sharing.*found 'xgboost'",
        ),
        ({"tasks": ()}, r"PredictorConfig\.tasks: expected at least one task"),
        ({"tasks": ("click", "click")}, r"PredictorConfig\.tasks: expected distinct tasks"),
        ({"tasks": ("pred click",)}, r"PredictorConfig\.tasks: expected names of letters"),
        ({"task_weights": (1.0,), "tasks": ("a", "b")}, r"task_weights: expected 2 weights"),
        (
            {"model": "esmm", "tasks": ("click",)},
            r"ESMM needs a click task and at least one post-click",
        ),
        ({"model": "esmm", "tasks": ("watch_time", "like")}, r"ESMM click task must be binary"),
        ({"esmm_ctr_task": "buy"}, r"esmm_ctr_task: expected one of the tasks click"),
        ({"valid_fraction": 1.0}, r"valid_fraction: expected 0 < fraction < 1, found 1.0"),
        ({"n_epochs": 0}, r"n_epochs: expected an integer >= 1, found 0"),
        ({"loss_weighting": "gradnorm"}, r"loss_weighting: expected one of fixed, uncertainty"),
    ],
)
def test_config_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PredictorConfig(**changes)  # type: ignore[arg-type]


def _bad(logs: pd.DataFrame, **cols: object) -> pd.DataFrame:
    out = logs.head(50).copy()
    for k, v in cols.items():
        out[k] = v  # type: ignore[call-overload]
    return out


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda d: d.drop(columns=["like"]),
            r"mine: .*column 'like': expected a label column for task 'like'",
        ),
        (lambda d: d.drop(columns=["user_id"]), r"column 'user_id': expected the column to exist"),
        (lambda d: _bad(d, like=2), r"column 'like': expected binary 0/1 labels"),
        (lambda d: _bad(d, click=np.nan), r"column 'click': expected no missing labels"),
        (
            lambda d: _bad(d, watch_time=-1.0),
            r"column 'watch_time': expected regression labels >= 0",
        ),
        (lambda d: _bad(d, click="yes"), r"column 'click': expected numeric labels"),
        (
            lambda d: _bad(d, ts="noon"),
            r"mine: column 'ts': expected int64 epoch milliseconds or timestamps",
        ),
    ],
)
def test_log_errors_name_file_and_column(logs: pd.DataFrame, mutate: object, match: str) -> None:
    bad = mutate(logs)  # type: ignore[operator]
    with pytest.raises(SchemaError, match=match):
        fit_predictor(bad, tiny("shared-bottom", n_epochs=1), file="mine")


def test_context_column_must_exist(logs: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match="missing context column"):
        fit_predictor(logs, tiny(context_features=("slot",)), file="mine")


def test_timestamp_ts_is_accepted(logs: pd.DataFrame) -> None:
    df = logs.copy()
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True)
    a = fit_predictor(df, tiny("shared-bottom", n_epochs=1))
    b = fit_predictor(logs, tiny("shared-bottom", n_epochs=1))
    assert a.n_valid == b.n_valid
    assert a.epoch_losses == b.epoch_losses


# --- real data --------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (KUAIRAND / "log_random_4_22_to_5_08_1k.head.csv").exists(), reason="shared data absent"
)
def test_kuairand_sample_trains_and_predicts(tmp_path: Path) -> None:
    raw = pd.read_csv(KUAIRAND / "log_random_4_22_to_5_08_1k.head.csv")
    df = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["video_id"],
            "ts": raw["time_ms"],
            "click": raw["is_click"],
            "like": raw["is_like"],
            "longview": raw["long_view"],
            "watch_time": raw["play_time_ms"] / 1000.0,
            "duration": raw["duration_ms"] / 1000.0,
        }
    )
    videos = pd.read_csv(KUAIRAND / "video_features_basic_pure.csv")
    items = videos[["video_id", "server_width", "server_height"]].rename(
        columns={"video_id": "item_id"}
    )
    config = tiny(
        "mmoe", tasks=("click", "like", "longview", "watch_time"), n_epochs=2, batch_size=32
    )
    result = fit_predictor(df, config, items)
    assert result.vocab.item_features == ("duration", "server_width", "server_height")
    frozen = save_predictor(result, tmp_path / "kuairand")
    preds = load_predictor(tmp_path / "kuairand").predict(
        df, df.merge(items, on="item_id", how="left")
    )
    for values in preds.values():
        assert values.shape == (len(df),)
        assert ((values >= 0) & (values <= 1)).all()
    assert frozen.tasks == ("click", "like", "longview", "watch_time")
