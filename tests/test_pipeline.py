"""The whole pipeline (--mode pipeline): JPEG decoders that agree with Pillow, post-processing
(vectorised NMS equal to the per-class greedy loop, top-5, masks), the threaded pipeline's stage
times adding up to each image's end to end, the command's record, report and figure, and its
refusals of bad input in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from visionbench import fidelity
from visionbench.data import decode, postprocess
from visionbench.data.calibration import synthetic_calibration
from visionbench.data.preprocess import get_preprocess, laid_out, preprocess, resized
from visionbench.engines import SessionSpec, get_engine
from visionbench.errors import VisionbenchError
from visionbench.harness.pipeline import STAGES, Stages, run_pipeline

from conftest import TINY, vb, vb_many

ROOT = Path(__file__).resolve().parents[1]


def _random_case(rng: np.random.Generator, anchors: int, classes: int, ties: bool):
    xy = rng.random((anchors, 2)) * 100
    boxes = np.concatenate([xy, xy + rng.random((anchors, 2)) * 40], 1).astype(np.float32)
    scores = (rng.integers(0, 5, (anchors, classes)) / 4 if ties
              else rng.random((anchors, classes))).astype(np.float32)
    return boxes, scores


def _same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y), (x, y)


def test_vectorised_nms_gives_the_greedy_loops_boxes_on_random_inputs(monkeypatch):
    rng = np.random.default_rng(0)
    for trial in range(200):
        boxes, scores = _random_case(rng, int(rng.integers(1, 200)), int(rng.integers(1, 10)),
                                     ties=trial % 3 == 0)
        kw = dict(score_threshold=float(rng.choice([0.0, 0.05, 0.3, 0.6])),
                  iou_threshold=float(rng.choice([0.3, 0.5, 0.7])),
                  pre_nms_top=[None, 1, 10, 100][trial % 4], max_detections=int(rng.choice([3, 100])))
        _same(postprocess.reference_detections(boxes, scores, **kw),
              postprocess.detections(boxes, scores, **kw))
    # The fidelity check's matching runs the same (its own thresholds).
    boxes, scores = _random_case(rng, 150, 4, ties=False)
    _same(fidelity.detections(boxes, scores, pre_nms_top=50),
          postprocess.reference_detections(boxes, scores, fidelity.SCORE_THRESHOLD,
                                           fidelity.NMS_IOU, 50, fidelity.MAX_DETECTIONS))
    # Past MAX_PAIRS same-class pairs, class by class (and a class past it, the greedy loop).
    for limit in (2000, 50):
        monkeypatch.setattr(postprocess, "MAX_PAIRS", limit)
        boxes, scores = _random_case(rng, 120, 3, ties=False)
        _same(postprocess.reference_detections(boxes, scores, 0.2, 0.5, None, 100),
              postprocess.detections(boxes, scores, 0.2, 0.5, None, 100))
    empty = postprocess.detections(boxes, scores * 0, 0.5, 0.5, None, 10)
    assert [len(x) for x in empty] == [0, 0, 0]


def test_vectorised_nms_on_a_seeded_detectors_load():
    # SSD-MobileNet's 1917 anchors x 91 classes with nearly every score over 0.05, as seeded
    # weights give: the pipeline's setting (the 1000 best, at most 300 kept). Its speed against
    # the loop is benchmarks/detection_postprocess.py's to print (no test asserts a speed).
    rng = np.random.default_rng(1)
    xy = rng.random((1917, 2)) * 300
    boxes = np.concatenate([xy, xy + rng.random((1917, 2)) * 100], 1).astype(np.float32)
    scores = (1 / (1 + np.exp(-rng.normal(0, 1, (1917, 91))))).astype(np.float32)
    nms = postprocess.PIPELINE_NMS
    args = (boxes, scores, nms.score_threshold, nms.iou, nms.pre_nms_top, nms.max_detections)
    _same(postprocess.detections(*args), postprocess.reference_detections(*args))
    (kept, _, _), reached = postprocess.detect(boxes, scores, nms)
    assert reached == 1000 and 0 < len(kept) <= 300


def test_top5_and_mask():
    logits = np.random.default_rng(2).normal(size=(3, 10)).astype(np.float32)
    idx, p = postprocess.top5(logits)
    assert np.array_equal(idx, np.argsort(-logits, axis=1)[:, :5])
    e = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(p, np.take_along_axis(e / e.sum(1, keepdims=True), idx, 1))
    maps = np.random.default_rng(3).random((2, 4, 5, 6)).astype(np.float32)
    m = postprocess.mask(maps)
    assert m.shape == (2, 5, 6) and m.dtype == np.uint8 and np.array_equal(m, maps.argmax(1))


def test_every_installed_decoder_gives_pillows_pixels_and_the_fastest_is_preferred(monkeypatch):
    photos = decode.photos()
    assert len(photos) >= 3 and all(10_000 < p.stat().st_size < 100_000 for p in photos)
    pillow = decode.decoder("pillow")
    blobs = decode.read_jpegs(photos, pillow)
    for dec in decode.installed():
        for blob in blobs:
            assert np.array_equal(dec.decode(blob), pillow.decode(blob)), dec.name
    best = decode.best()
    if best.name == "simplejpeg":
        assert best.fallback == "" and best.version
    # The preferred decoders missing: Pillow (or the next), and the record says why.
    monkeypatch.setattr(decode, "DECODERS", ("nonesuch", "pillow"))
    monkeypatch.setitem(decode.MAKERS, "nonesuch", lambda: __import__("nonesuch_decoder"))
    monkeypatch.setitem(decode.DISTRIBUTIONS, "nonesuch", "nonesuch")
    fallback = decode.best()
    assert fallback.name == "pillow" and "nonesuch is not installed" in fallback.fallback


def test_photos_are_package_data_with_their_licences():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "photos/*.jpg" in data["tool"]["setuptools"]["package-data"]["visionbench.data"]
    readme = (decode.PHOTOS / "README.md").read_text()
    for p in decode.photos():
        assert p.name in readme
    assert "CC0" in readme and "public domain" in readme


def test_unreadable_and_non_jpeg_files_are_refused_in_one_line(tmp_path):
    good = decode.photos()[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[:len(good) // 3])
    (tmp_path / "png.jpg").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    dec = decode.best()
    with pytest.raises(VisionbenchError, match=r"not a JPEG file: .*png\.jpg"):
        decode.read_jpegs([tmp_path / "png.jpg"], dec)
    with pytest.raises(VisionbenchError, match=rf"cannot decode .*cut\.jpg with {dec.name}") as e:
        decode.read_jpegs([tmp_path / "cut.jpg"], dec)
    assert "\n" not in str(e.value)


def test_preprocessing_split_in_two_gives_the_same_input():
    image = Image.open(decode.photos()[0]).convert("RGB")
    p = get_preprocess("torchvision")
    x = preprocess(image, p, 64, "NCHW")
    assert np.array_equal(x, laid_out(resized(image, p, 64), "NCHW"))
    assert np.array_equal(laid_out(resized(image, p, 64)[None], "NCHW")[0], x)


@pytest.mark.parametrize("engine_name", [pytest.param(n, marks=pytest.mark.skipif(
    not get_engine(n).installed(), reason=f"{n} not installed")) for n in ("openvino", "onnxruntime")])
def test_a_detectors_session_gives_every_output_to_post_process(engine_name):
    from visionbench.models import resolve

    model = resolve("ssd-mobilenet-tiny")
    session = get_engine(engine_name).prepare(
        SessionSpec(model, "fp32", 1, synthetic_calibration(model, 8), 2))
    try:
        x = np.random.default_rng(4).random(model.input_shape(2), np.float32)
        outs = session.run_outputs(session.feed(x))
        assert [o.shape[-1] for o in outs] == [4, 5] and outs[0].shape[:2] == outs[1].shape[:2]
        for a, b in zip(outs, session.outputs(x), strict=True):
            assert np.allclose(a, b)
        post, what = postprocess.for_task("detection")
        answers = post(outs)
        assert len(answers) == 2 and "per-class NMS" in what
        assert all(0 < kept <= reached <= 1000 for kept, reached in answers)
        with pytest.raises(NotImplementedError, match="boxes"):
            post(outs[1:])  # an engine that gives the primary output only
    finally:
        session.close()


@pytest.fixture(scope="module")
def tiny_stages(tiny):
    engine = get_engine("onnxruntime" if get_engine("onnxruntime").installed() else "openvino")
    session = engine.prepare(SessionSpec(tiny, "fp32", 1, synthetic_calibration(tiny, 8), 1))
    dec, prep = decode.best(), get_preprocess(tiny.preprocessing)
    post, _ = postprocess.for_task(tiny.task)
    stages = Stages(dec.decode, lambda rgb: resized(Image.fromarray(rgb), prep, tiny.height),
                    lambda xs: session.feed(laid_out(np.stack(xs), tiny.layout)),
                    session.run_outputs, post)
    yield stages, decode.read_jpegs(decode.photos(), dec)
    session.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_stage_times_add_up_to_each_images_end_to_end_at_batch_1(tiny_stages, threads):
    stages, blobs = tiny_stages
    t = run_pipeline(blobs, 24, stages, threads, 1)
    assert t.images == 24 and t.batches == 24 and t.queue_size == 2
    for name in STAGES:
        assert len(t.stage_ms[name]) == 24 and all(np.isfinite(t.stage_ms[name]))
        assert min(t.stage_ms[name]) >= 0
    assert min(t.stage_ms["decode"]) > 0 and min(t.stage_ms["inference"]) > 0
    assert all(e > 0 for e in t.end_to_end_ms) and t.images_per_second > 0
    accounted = t.accounted()
    assert np.all(np.abs(accounted - 1) <= 0.05), accounted
    idx, p = t.answers[0]
    assert idx.shape == (1, 5) and np.all((p > 0) & (p <= 1))


def test_batches_form_from_the_queue_and_the_last_takes_what_remains(tiny_stages):
    stages, blobs = tiny_stages
    t = run_pipeline(blobs, 10, stages, 2, 4)
    assert t.images == 10 and t.batches == 3 and t.queue_size == 8
    assert [a[0].shape[0] for a in t.answers] == [4, 4, 2]
    assert np.all(np.abs(t.accounted() - 1) <= 0.05)


def test_a_workers_failure_reaches_the_caller(tiny_stages):
    stages, blobs = tiny_stages
    bad = Stages(lambda b: (_ for _ in ()).throw(ValueError("broken")), stages.preprocess,
                 stages.feed, stages.infer, stages.postprocess)
    with pytest.raises(ValueError, match="broken"):
        run_pipeline(blobs, 8, bad, 2, 1)


def test_the_pipeline_command_records_reports_and_draws_the_stages(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", "{}")  # the default run_outputs: logits only
    proc = vb("pipeline", *TINY, "--engine", "onnxruntime,fake", "--precision", "fp32",
              "--iterations", "12", "--warmup", "1", "--pipeline-threads", "1,2",
              "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["measurements"] == []
    recs = {r["engine"]: r for r in results["pipelines"]}
    for r in recs.values():
        assert r["status"] == "ok" and r["batch_size"] == 1 and r["task"] == "classification"
        assert r["decoder"].startswith(decode.best().name) and r["photos"] == len(decode.photos())
        assert r["weights"].startswith("seeded, untrained")
        assert r["inference_only_ips"] > 0 and r["postprocessing"] == "softmax and top-5"
        assert [t["threads"] for t in r["runs"]] == [1, 2]
        for t in r["runs"]:
            assert t["images"] == 12 and t["images_per_second"] > 0
            assert set(t["stages"]) == set(STAGES)
            assert 0.95 <= t["accounted"]["min"] <= t["accounted"]["max"] <= 1.05
            assert t["end_to_end"]["p50_ms"] <= t["end_to_end"]["p99_ms"]
    assert (out / "stages.png").stat().st_size > 0 and (out / "stages.svg").exists()
    html = (out / "report.html").read_text()
    assert "The whole pipeline beside inference alone" in html and "stages" in html
    assert "The whole pipeline beside inference alone" in proc.stdout


def test_bad_pipeline_input_is_one_line_and_a_failure(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    good = decode.photos()[0].read_bytes()
    (broken / "a.jpg").write_bytes(good)
    (broken / "b.jpg").write_bytes(good[:2000])
    common = ["pipeline", *TINY, "--engine", "onnxruntime", "--precision", "fp32"]
    procs = vb_many([
        [*common, "--pipeline-threads", "0", "--output", str(tmp_path / "r0")],
        [*common, "--pipeline-threads", "1,x", "--output", str(tmp_path / "r1")],
        [*common, "--data", str(empty), "--output", str(tmp_path / "r2")],
        # Refused before the study measures anything (the pipeline comes after it).
        ["run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode",
         "latency,pipeline", "--data", str(broken), "--output", str(tmp_path / "r3")],
    ])
    expected = [r"--pipeline-threads must be positive integers, got '0'",
                r"--pipeline-threads takes a comma list of integers, got '1,x'",
                r"no images found in", r"cannot decode .*b\.jpg with"]
    for proc, pattern in zip(procs, expected, strict=True):
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("visionbench: error:"), proc.stderr
        assert re.search(pattern, lines[0]), lines[0]
    stored = tmp_path / "r3" / "results.json"
    assert not stored.exists() or json.loads(stored.read_text())["measurements"] == []


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "ssd-mobilenet"])
def test_the_pipeline_on_real_photos_resnet50_and_ssd_mobilenet(tmp_path, model):
    """The issue's check: ResNet-50 and SSD-MobileNet over the shipped photos on OpenVINO at
    batch 1, 1 and 2 threads, beside inference alone; the detector's NMS timed in it."""
    out = tmp_path / "run"
    proc = vb("pipeline", "--model", model, "--engine", "openvino", "--precision", "fp32",
              "--iterations", "40", "--output", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr
    [r] = json.loads((out / "results.json").read_text())["pipelines"]
    assert r["status"] == "ok" and [t["threads"] for t in r["runs"]] == [1, 2]
    for t in r["runs"]:
        assert t["accounted"]["min"] >= 0.95 and t["accounted"]["max"] <= 1.05
        assert t["images_per_second"] > 0 and r["inference_only_ips"] > 0
    if model == "ssd-mobilenet":
        assert r["runs"][0]["candidates"]["median"] > 0 and "seeded" in r["weights"]
