"""FID/KID: formulas against an independent computation, the content-keyed real-statistics
cache, and the Inception weights that are never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from harness.config import load_config
from harness.data.prepared import read_meta
from harness.errors import UserError
from harness.metrics import fid
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.extractors.synthface import weights_digest, weights_path
from harness.metrics.fid import (
    INCEPTION,
    INCEPTION_FILE,
    Features,
    choose_extractor,
    evaluate_fid,
    fid_kid,
    kid,
    real_statistics,
    stats_path,
)
from harness.metrics.generation import camera_sampler
from models.registry import get_model


def _frechet(x: np.ndarray, y: np.ndarray) -> float:
    """FID by the textbook formula with scipy's matrix square root."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cov_x @ cov_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x + cov_y - 2 * root))


def _kid_one_subset(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 on whole sets."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1) ** 3

    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_fid_and_kid_match_independent_formulas() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    generated = rng.normal(0.4, 1.3, size=(300, 8))
    stats = {"mu": real.mean(0), "sigma": np.cov(real, rowvar=False),
             "features": real.astype(np.float32)}
    # One subset of all 300 samples (drawn without replacement) = the whole sets.
    values = fid_kid(torch.from_numpy(generated).float(), stats, subsets=1, subset_size=300,
                     seed=0)
    assert values["fid"] == pytest.approx(_frechet(generated.astype(np.float32).astype(
        np.float64), real), rel=1e-4)
    assert values["kid"] == pytest.approx(
        _kid_one_subset(generated.astype(np.float32), real.astype(np.float32)), rel=1e-3)
    same = fid_kid(torch.from_numpy(real).float(), stats, subsets=4, subset_size=100, seed=0)
    assert abs(same["fid"]) < 1e-3 and values["fid"] > 1


def test_kid_from_whole_kernel_matrices_matches_torch_fidelity(monkeypatch) -> None:
    import torch_fidelity.metric_kid

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.3, 1.2, size=(60, 32))).float()
    y = torch.from_numpy(rng.normal(size=(100, 32))).float()
    reference = torch_fidelity.metric_kid.kid_features_to_metric(
        x, y, kid_subsets=20, kid_subset_size=50, rng_seed=3, verbose=False)
    expected = (reference["kernel_inception_distance_mean"],
                reference["kernel_inception_distance_std"])

    def refuse(*args, **kwargs):
        raise AssertionError("small sets take the whole-matrix path")

    monkeypatch.setattr(torch_fidelity.metric_kid, "kid_features_to_metric", refuse)
    assert kid(x, y, subsets=20, subset_size=50, seed=3) == pytest.approx(expected, rel=1e-4)
    assert kid(x, y, subsets=20, subset_size=50, seed=4) != pytest.approx(expected, rel=1e-2)
    monkeypatch.undo()
    monkeypatch.setattr(fid, "KID_WHOLE_MAX", 0)  # large sets: torch-fidelity's loop
    assert kid(x, y, subsets=20, subset_size=50, seed=3) == expected


def test_real_statistics_are_cached_by_content(tmp_path: Path, data_cache: Path) -> None:
    config = load_config(None, "smoke", [f"data.cache_dir={data_cache}"])
    features = Features(SYNTHFACE, None, torch.device("cpu"))
    data_dir, path = stats_path(config, SYNTHFACE)
    path.unlink(missing_ok=True)
    first, cached = real_statistics(config, features, SYNTHFACE)
    assert not cached and path.is_file()
    assert path.parent == data_cache / "fid-stats"
    key = f"{SYNTHFACE}.{weights_digest(weights_path(SYNTHFACE))}"
    assert path.name == f"{key}-32-{read_meta(data_dir)['content_hash']}.npz"
    assert first["features"].shape == (48, 77)  # every real image (24 identities x 2 views)
    again, cached = real_statistics(config, features, SYNTHFACE)
    assert cached and np.array_equal(again["mu"], first["mu"])
    # Other data content (another scene seed) gets another key, not the stale statistics.
    other = load_config(None, "smoke", [f"data.cache_dir={data_cache}", "data.seed=1"])
    assert stats_path(other, SYNTHFACE)[1] != path
    # Another extractor, or other weights under the same name, get another key.
    assert stats_path(config, "synthface-v1")[1] != path
    retrained = tmp_path / "synthface-v2.pt"
    retrained.write_bytes(weights_path(SYNTHFACE).read_bytes() + b"\0")
    assert stats_path(config, SYNTHFACE, retrained)[1] != path
    # Inception statistics are keyed by the weights file too: another file, other statistics.
    inception_a, inception_b = tmp_path / "a.pth", tmp_path / "b.pth"
    inception_a.write_bytes(b"weights a")
    inception_b.write_bytes(b"weights b")
    assert stats_path(config, INCEPTION, inception_a)[1] != stats_path(config, INCEPTION,
                                                                       inception_b)[1]


def test_extractor_choice_and_missing_inception_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    synthetic = load_config(None, "smoke")
    assert choose_extractor(synthetic, None) == (SYNTHFACE, None)
    real = load_config(None, "smoke", ["data.source=celebamask-hq", "data.path=/nowhere"])
    with pytest.raises(UserError) as error:
        choose_extractor(real, None)
    message = str(error.value)
    assert "\n" not in message and "cannot download" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / INCEPTION_FILE) in message
    with pytest.raises(UserError, match="--inception-weights"):
        choose_extractor(real, tmp_path / "missing.pth")
    weights = tmp_path / INCEPTION_FILE
    torch.save(_random_inception_state(), weights)
    assert choose_extractor(real, weights) == (INCEPTION, weights)
    forced = load_config(None, "smoke", ["evaluate.fid_extractor=inception-v3-compat"])
    with pytest.raises(UserError, match="cannot download"):
        choose_extractor(forced, None)


def _random_inception_state() -> dict[str, torch.Tensor]:
    """A state dict with inception-v3-compat's keys and shapes (random values)."""
    import torch_fidelity.feature_extractor_inceptionv3 as module

    class Unloaded(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ANN001, ANN201
            return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "load_state_dict_from_url", lambda *a, **k: {})
        net = Unloaded(INCEPTION, ["2048"])
    return {key: value.clone() for key, value in net.state_dict().items()}


@pytest.mark.parametrize("content", ["text", "empty", "other tensors", "a tensor", "fewer keys"])
def test_a_file_that_is_not_inception_weights_is_one_line_error(
    tmp_path: Path, content: str,
) -> None:
    """Any file inception-v3-compat cannot load is refused when the extractor is chosen,
    naming the file and the expected one."""
    weights = tmp_path / "weights.pth"
    if content == "text":
        weights.write_text("not weights\n")
    elif content == "empty":
        weights.write_bytes(b"")
    elif content == "other tensors":
        torch.save(torch.nn.Linear(2, 3).state_dict(), weights)
    elif content == "a tensor":
        torch.save(torch.zeros(3), weights)
    else:
        state = _random_inception_state()
        torch.save(dict(list(state.items())[:-1]), weights)
    real = load_config(None, "smoke", ["data.source=celebamask-hq", "data.path=/nowhere"])
    with pytest.raises(UserError) as error:
        choose_extractor(real, weights)
    message = str(error.value)
    assert message.startswith(f"{weights}: not Inception weights") and "\n" not in message
    assert INCEPTION_FILE in message and "--inception-weights" in message


def test_unused_inception_weights_are_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """On synthetic data the automatic extractor is synthface: the flag is reported, not used."""
    weights = tmp_path / "anything.pth"
    with caplog.at_level("WARNING", logger=fid.__name__):
        assert choose_extractor(load_config(None, "smoke"), weights) == (SYNTHFACE, None)
    [record] = caplog.records
    assert str(weights) in record.getMessage() and "not used" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger=fid.__name__):
        choose_extractor(load_config(None, "smoke"), None)
    assert not caplog.records


def test_inception_extractor_loads_given_weights_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """inception-v3-compat is built from the given file; any download attempt fails the test.

    Random weights in the real file's format stand in for it (their features mean nothing).
    """
    weights = tmp_path / INCEPTION_FILE
    torch.save(_random_inception_state(), weights)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("attempted a download")

    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
                        no_download)
    features = Features(INCEPTION, weights, torch.device("cpu"))
    out = features(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_generated_fid_streams_batches(data_cache: Path) -> None:
    config = load_config(None, "smoke", [f"data.cache_dir={data_cache}"])
    torch.manual_seed(0)
    g = get_model("3dssgan").build_generator(config.model).eval()
    one = evaluate_fid(g, config, camera_sampler(config), 20, seed=1, extractor=SYNTHFACE)
    other = load_config(None, "smoke", [f"data.cache_dir={data_cache}",
                                        "evaluate.batch_size=7"])
    two = evaluate_fid(g, other, camera_sampler(other), 20, seed=1, extractor=SYNTHFACE)
    assert one.values["fid"] == pytest.approx(two.values["fid"], rel=1e-4)
    assert one.values["fid_extractor"] == SYNTHFACE and one.values["fid_real_images"] == 48
    assert one.values["kid"] == pytest.approx(two.values["kid"], rel=1e-3, abs=1e-6)
    dataset_poses = load_config(None, "smoke", [f"data.cache_dir={data_cache}",
                                                "evaluate.cameras=dataset"])
    three = evaluate_fid(g, dataset_poses, camera_sampler(dataset_poses), 20, seed=1,
                         extractor=SYNTHFACE)
    assert three.values["fid_cameras"] == "dataset" and np.isfinite(three.values["fid"])
