"""The fast inference path computes what the naive transformers path computes (tiny models, fp32).

Tolerances (fp32 unless stated):
- model level, both paths fed the *same* pixel values: probability maps max |diff| < 1e-4,
  centroids within 1 px (in practice identical masks), identical skill ranking, skill
  probabilities within 1e-4; in bf16 (8-bit mantissa: logits around 10 are rounded by 0.06):
  probability maps max |diff| < 0.1, mean |diff| < 0.01;
- preprocessing (torch on the uint8 frame vs the Pillow image processors): max |diff| < 0.1 and
  mean |diff| < 0.01 in normalised pixel units (Pillow rounds the resized image to uint8 and
  uses fixed-point filter weights);
- end to end (each path with its own preprocessing) on the tiny_config scene: same outcome,
  centroid within 1 px, same skill ranking, same skill/x/y/z tokens, yaw within 0.1 rad.
Plus a smoke run of ``clip-vla bench`` on tiny models (figures printed, no timing asserted).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clip_vla.perception.localize import detect, target_mask
from clip_vla.perception.segmenter import Segmenter, VisionTower, warm_up
from clip_vla.core.types import Frame

W, H = 640, 480
PROMPTS = ["red cup", "background", "table surface", "robot arm"]


def _models(tiny_models, **overrides):
    from clip_vla.core.config import ModelConfig
    from clip_vla.perception.loading import load_models

    kwargs = dict(clipseg=tiny_models["clipseg"], clip=tiny_models["clip"], device="cpu", dtype="float32")
    kwargs.update(overrides)
    return load_models(ModelConfig(**kwargs))


@pytest.fixture(scope="module")
def models(tiny_models):
    return _models(tiny_models)


@pytest.fixture(scope="module")
def naive(models):
    from clip_vla.tools.naive import NaivePerception

    return NaivePerception(models)


@pytest.fixture(scope="module")
def scene():
    from clip_vla.tools.bench import synthetic_scene

    return synthetic_scene(W, H, seed=3)


@pytest.fixture(scope="module")
def image(scene):
    from PIL import Image

    return Image.fromarray(scene[0])


# ----------------------------------------------------------------------------- model level
def test_vision_tower_matches_transformers(models):
    seg = Segmenter(models)
    px = torch.randn(1, 3, models.clipseg_image.size, models.clipseg_image.size)
    features = seg.encode_image(px)
    with torch.inference_mode():
        ref = models.clipseg.clip.vision_model(pixel_values=px, output_hidden_states=True,
                                               interpolate_pos_encoding=True)
        ref_embedding = models.clipseg.clip.visual_projection(ref.pooler_output)
    for got, layer in zip(features.activations, models.clipseg.extract_layers):
        assert torch.allclose(got, ref.hidden_states[layer + 1], atol=1e-5)
    assert torch.allclose(features.image_embedding, ref_embedding, atol=1e-5)

    clip_px = torch.randn(1, 3, models.clip_image.size, models.clip_image.size)
    tower = VisionTower(models.clip.vision_model, models.clip.visual_projection)
    with torch.inference_mode():
        want = models.clip.get_image_features(pixel_values=clip_px).pooler_output
    assert torch.allclose(tower.image_embedding(clip_px), want, atol=1e-5)
    tower.sdpa = not tower.sdpa  # both attention kernels compute the same thing
    assert torch.allclose(tower.image_embedding(clip_px), want, atol=1e-5)


def test_image_embedding_is_lazy(models):
    """The layers after the deepest extracted one run only when the pooled embedding is read."""
    seg = Segmenter(models)
    last = seg.tower.layers[-1].layer_norm1
    assert seg.stop <= seg.tower.num_layers
    calls = []
    handle = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        features = seg.encode_image(torch.randn(1, 3, models.clipseg_image.size, models.clipseg_image.size))
        expected_before = 1 if seg.stop == seg.tower.num_layers else 0
        assert len(calls) == expected_before
        features.image_embedding
        features.image_embedding  # computed once
        assert len(calls) == 1
    finally:
        handle.remove()


def test_masks_and_centroids_match_naive_on_same_pixels(models, naive, image):
    seg = Segmenter(models)
    inputs = naive.segmentation_inputs(image, PROMPTS)
    fast_logits = seg.decode(seg.encode_image(inputs["pixel_values"][:1]), seg.text_embeddings(PROMPTS))
    naive_logits = naive.segment(inputs)
    fast_probs = seg.probabilities(fast_logits, (H, W))
    naive_probs = naive.probabilities(naive_logits, (H, W))
    assert fast_probs.shape == naive_probs.shape == (len(PROMPTS), H, W)
    assert np.abs(fast_probs - naive_probs).max() < 1e-4
    competitors = list(range(len(PROMPTS)))
    found = 0
    for target in range(len(PROMPTS)):
        for threshold in (0.0, float(np.median(naive_probs[target]))):
            a = detect(fast_probs, PROMPTS, target, competitors, threshold, 1)
            b = detect(naive_probs, PROMPTS, target, competitors, threshold, 1)
            assert a.found == b.found
            if a.found:
                found += 1
                assert abs(a.centroid[0] - b.centroid[0]) <= 1.0 and abs(a.centroid[1] - b.centroid[1]) <= 1.0
                assert np.count_nonzero(a.mask != b.mask) <= 0.001 * H * W
    assert found > 0  # the comparison is not vacuous


def test_skill_ranking_matches_naive_on_same_pixels(models, naive, image):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.perception.skill_scorer import SkillScorer

    cfg = ClipVlaConfig.from_yaml()
    scorer = SkillScorer(models, cfg.vocabulary, cfg.perception)
    for instruction, obj in (("pick up the red cup", "red cup"), ("shove the box", "box"), ("make it so", None)):
        texts = [instruction] + [p for s in cfg.vocabulary.skills for p in s.prompts(obj)]
        inputs = naive.skill_inputs(image, texts)
        fast = scorer.score(instruction, obj, scorer.image_embedding(inputs["pixel_values"]))
        slow = naive.skill_probabilities(image, instruction, obj, cfg.vocabulary, cfg.perception, inputs=inputs)
        assert list(fast) == list(slow)
        assert max(abs(fast[k] - slow[k]) for k in fast) < 1e-4


def test_shared_backbone_matches_naive(tiny_models, image):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.tools.naive import NaivePerception
    from clip_vla.perception.skill_scorer import SkillScorer

    models = _models(tiny_models, share_backbone=True)
    cfg = ClipVlaConfig.from_yaml()
    seg, scorer, naive = Segmenter(models), SkillScorer(models, cfg.vocabulary, cfg.perception), NaivePerception(models)
    texts = ["grab the apple"] + [p for s in cfg.vocabulary.skills for p in s.prompts("apple")]
    inputs = naive.skill_inputs(image, texts)
    fast = scorer.score("grab the apple", "apple", seg.encode_image(inputs["pixel_values"]).image_embedding)
    slow = naive.skill_probabilities(image, "grab the apple", "apple", cfg.vocabulary, cfg.perception, inputs=inputs)
    assert list(fast) == list(slow)
    assert max(abs(fast[k] - slow[k]) for k in fast) < 1e-4


def test_bfloat16_stays_close(tiny_models, image):
    from clip_vla.tools.naive import NaivePerception

    models = _models(tiny_models, dtype="bfloat16")
    seg, naive = Segmenter(models), NaivePerception(models)
    inputs = naive.segmentation_inputs(image, PROMPTS)
    fast = seg.probabilities(seg.decode(seg.encode_image(inputs["pixel_values"][:1]), seg.text_embeddings(PROMPTS)),
                             (H // 4, W // 4))
    slow = naive.probabilities(naive.segment(inputs), (H // 4, W // 4))
    diff = np.abs(fast - slow)
    assert diff.max() < 0.1 and diff.mean() < 0.01, (float(diff.max()), float(diff.mean()))


# ----------------------------------------------------------------------------- masks on device
def test_target_maps_follow_localize_rule(models, naive, image):
    seg = Segmenter(models)
    inputs = naive.segmentation_inputs(image, PROMPTS)
    logits = seg.decode(seg.encode_image(inputs["pixel_values"][:1]), seg.text_embeddings(PROMPTS))
    probs = seg.probabilities(logits, (H, W))
    for threshold in (0.0, 0.5):
        maps = seg.target_maps(logits, (H, W), [0, 2], threshold)
        assert set(maps) == {0, 2}
        for t, (prob, mask) in maps.items():
            assert prob.shape == mask.shape == (H, W) and mask.dtype == bool
            np.testing.assert_allclose(prob, probs[t], atol=1e-6)
            want = target_mask(probs, t, range(len(PROMPTS)), threshold)
            # identical except where float32 sigmoids of different logits round to the same value
            assert np.count_nonzero(mask != want) <= 1e-4 * H * W
    only = seg.target_maps(logits, (H, W), [1], 0.0, competitors=[1])  # no rival: threshold alone
    assert only[1][1].all()


def test_target_maps_decide_saturated_ties_by_logits():
    logits = torch.zeros(3, 4, 4)
    logits[0] = 40.0  # sigmoid == 1.0 exactly in float32 ...
    logits[1] = 30.0  # ... and here too: probabilities tie, logits do not
    logits[2, :, :2] = 50.0  # the third prompt wins the left half
    maps = Segmenter.target_maps(logits, (4, 4), [0, 1], 0.5)
    assert maps[0][1][:, 2:].all() and not maps[0][1][:, :2].any()
    assert not maps[1][1].any()
    probs = Segmenter.probabilities(logits, (4, 4))
    assert not target_mask(probs, 0, range(3), 0.5).any()  # the probability rule sees only ties


# ----------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("crop,size", [(False, 352), (True, 224), (False, 64), (True, 32)])
def test_torch_preprocessing_matches_pillow(scene, crop, size):
    from clip_vla.perception.loading import ImageSpec
    from clip_vla.tools.naive import _image_processor
    from clip_vla.perception.preprocess import model_input, to_device_uint8

    spec = ImageSpec(size=size, crop=crop)
    processor = _image_processor("clip" if crop else "clipseg", "/nonexistent", spec, None)
    from PIL import Image

    for rgb in (scene[0], np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)):
        want = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        got = model_input(to_device_uint8(rgb, torch.device("cpu")), spec, torch.float32)
        assert got.shape == want.shape == (1, 3, size, size)
        diff = (got - want).abs()
        assert diff.max() < 0.1 and diff.mean() < 0.01, (float(diff.max()), float(diff.mean()))


# ----------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="module")
def pipelines(tiny_models, open_vocabulary_file):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.tools.naive import NaivePipeline
    from clip_vla.pipeline import VLAPipeline

    from conftest import REPO

    cfg = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml").replace(**{
        "models.clipseg": tiny_models["clipseg"], "models.clip": tiny_models["clip"], "models.device": "cpu",
        "models.dtype": "float32", "perception.mask_threshold": 0.0, "perception.min_confidence": 0.0,
        "geometry.intrinsics": [500.0, 500.0, 319.5, 239.5], "vocabulary_file": open_vocabulary_file,
    })
    fast = VLAPipeline(cfg)
    return fast, NaivePipeline(cfg, models=fast.models)


def test_fast_and_naive_pipelines_agree_end_to_end(pipelines):
    """The two paths differ only in preprocessing (torch vs the transformers processors); on the
    same pixels their masks are equal (test_masks_and_centroids_match_naive_on_same_pixels)."""
    fast, naive = pipelines
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    frame = Frame(rgb=rgb, depth=np.full((H, W), 800, np.uint16))
    for command in ("pick up the red cup", "push the box to the left"):  # the target is the whole image
        a, b = fast.run(frame, command), naive.run(frame, command)
        assert type(a) is type(b) and a.accepted and b.accepted, (a, b)
        assert abs(a.pixel[0] - b.pixel[0]) <= 1.0 and abs(a.pixel[1] - b.pixel[1]) <= 1.0
        assert list(a.skill_probabilities) == list(b.skill_probabilities)
        assert a.tokens[:4] == b.tokens[:4]  # skill, x, y, z
        assert abs(math.remainder(a.theta - b.theta, math.pi)) < 0.1
        assert "clipseg_forward" in b.timings_ms and "image_encoding" in a.timings_ms
    # place: bowl and apple compete over random noise, a mask of many fragments joined by single
    # pixels. The two preprocessings move its boundary pixels, which joins or splits fragments,
    # so the chosen destination is the same region with another outline, not the same pixels.
    a, b = fast.run(frame, "put the apple in the bowl"), naive.run(frame, "put the apple in the bowl")
    assert type(a) is type(b) and a.accepted and b.accepted, (a, b)
    assert a.cmd == b.cmd == "place" and list(a.skill_probabilities) == list(b.skill_probabilities)
    ma, mb = a.destination.mask, b.destination.mask
    assert (ma & mb).sum() / (ma | mb).sum() > 0.5, "the same component, outlined differently"
    assert math.dist(a.pixel, b.pixel) < 0.1 * math.hypot(W, H)  # measured: 43 px of 800


def test_warm_up_fills_caches(pipelines):
    fast, _ = pipelines
    fast.scorer._skill_matrices.clear()
    result = warm_up(fast, 96, 64)
    assert result is not None
    assert len(fast.scorer._skill_matrices) >= len(fast.vocabulary.objects)
    misses = fast.segmenter.text_cache.misses + fast.scorer.text_cache.misses
    frame = Frame(rgb=np.zeros((64, 96, 3), np.uint8))
    fast.run(frame, f"pick up the {fast.vocabulary.objects[-1]}")
    assert fast.segmenter.text_cache.misses + fast.scorer.text_cache.misses == misses


def test_accelerate_modes_on_cpu(models):
    seg = Segmenter(models)
    assert seg.accelerate("cuda_graphs") == "none"  # CUDA only: plain eager on CPU
    assert seg.accelerate("none") == "none"
    with pytest.raises(ValueError):
        seg.accelerate("warp-speed")


def test_text_cache_reuses_stacked_rows():
    from clip_vla.perception.text_cache import TextEmbeddingCache

    calls = []

    def encode(phrases):
        calls.append(list(phrases))
        return torch.arange(len(phrases) * 2, dtype=torch.float32).view(len(phrases), 2) + len(calls) * 10

    cache = TextEmbeddingCache(encode, max_entries=3)
    a = cache.get(["x", "y"])
    assert cache.get(["x", "y"]) is a and calls == [["x", "y"]]
    assert torch.equal(cache.get(["y", "x"]), a.flip(0))
    cache.get(["z", "w"])  # evicts "y", the least recently used: the stacked tensors are dropped too
    again = cache.get(["x", "y"])
    assert calls[-1] == ["y"] and torch.equal(again[0], a[0]) and not torch.equal(again[1], a[1])
    cache.clear()
    assert len(cache) == 0


# ----------------------------------------------------------------------------- the bench tool
def test_bench_smoke(tiny_models, tmp_path, capsys):
    from clip_vla.tools import bench

    out = tmp_path / "bench.json"
    rc = bench.main(["--clipseg", tiny_models["clipseg"], "--clip", tiny_models["clip"], "--device", "cpu",
                     "--dtype", "float32",
                     "--iters", "2", "--warmup", "0", "--resolution", "160x120", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for needle in ("end to end", "speed-up", "continuous mode", "peak RSS", "image_encoding", "clipseg_forward",
                   "equivalence"):
        assert needle in text, needle
    report = json.loads(out.read_text())
    assert report["fast"]["end_to_end_ms"]["p50"] > 0 and report["naive"]["end_to_end_ms"]["p50"] > 0
    assert report["speedup_p50"] > 0 and report["fast"]["continuous_fps"] > 0
    assert report["equivalence"]["model_level_ok"], report["equivalence"]
    assert report["machine"]["cpus"] >= 1 and report["memory"]["peak_rss_mb_fast"] > 0


def test_bench_vocabulary_and_calibration(models):
    from clip_vla.tools.bench import bench_vocabulary, calibrate_random_decoder, synthetic_scene
    from clip_vla.core.config import ClipVlaConfig

    base = ClipVlaConfig.from_yaml().vocabulary
    vocab = bench_vocabulary(base, distractors=6, skills=11)
    assert len(vocab.skills) == 11 and len(vocab.distractors) == 6 and "pick" in vocab.skill_names
    assert len({s.token for s in vocab.skills}) == 11
    small = bench_vocabulary(base, distractors=1, skills=2)
    assert small.skill_names == [base.stop_skill, "pick"] and small.distractors == base.distractors[:1]

    import copy

    from clip_vla.perception.loading import LoadedModels

    clone = LoadedModels(**{**models.__dict__, "clipseg": copy.deepcopy(models.clipseg)})
    seg = Segmenter(clone)
    rgb = synthetic_scene(96, 64, 0)[0]
    calibrate_random_decoder(seg, rgb, target_std=3.0)
    from clip_vla.perception.preprocess import model_input, to_device_uint8

    px = model_input(to_device_uint8(rgb, clone.device), clone.clipseg_image, clone.dtype)
    logits = seg.decode(seg.encode_image(px), seg.text_embeddings(["object", "background"]))
    assert abs(float(logits.mean())) < 0.1 and abs(float(logits.std()) - 3.0) < 0.1


def test_tune_cpu_allocator_is_safe_to_call():
    import sys

    from clip_vla.perception.preprocess import tune_cpu_allocator

    assert tune_cpu_allocator() in (True, False)
    if sys.platform.startswith("linux"):
        assert tune_cpu_allocator() is True or tune_cpu_allocator() is False  # idempotent, never raises
