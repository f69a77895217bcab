"""Models, EMA and the checkpoint format (issue 3)."""
import os
import pickle
import random
import urllib.error

import pytest
import torch
from torch import nn

import models
import utils
from conftest import Payload

ARCH = {"img_size": 64, "classes": list(utils.AFFECTNET8)}
# Table 7, exact counts behind the rounded millions.
TABLE7 = {("resnet50", 1): (23_524_424, 23.524), ("convnext_tiny", 1): (27_826_280, 27.826),
          ("convnext_tiny_transformer", 1): (28_546_152, 28.546),
          ("convnext_tiny_transformer", 2): (29_073_256, 29.073)}


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """One randomly initialised model per architecture (ConvNeXt's init costs seconds on a CPU)."""
    torch.manual_seed(0)
    return {name: models.build_model(name, blocks=1, weights="none").eval() for name in models.MODEL_NAMES}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def arch_of(name: str, blocks: int = 1) -> dict:
    return {"name": name, "blocks": blocks, "num_classes": 8, **ARCH}


def test_parameter_counts_match_table7(built):
    for (name, blocks), (exact, millions) in TABLE7.items():
        with torch.device("meta"):  # counting needs no real weights
            model = models.build_model(name, blocks=blocks, weights="none")
        count = models.count_params(model)
        print(f"{name} blocks={blocks}: {count} trainable = {count / 1e6:.3f} M")
        assert count == exact and round(count / 1e6, 3) == millions
    for name in TABLE7:  # the real models too
        if name[1] == 1:
            assert models.count_params(built[name[0]]) == TABLE7[name][0]


@pytest.mark.parametrize("name", [name for name, spec in models.BACKBONES.items() if spec.weights is not None])
def test_backbone_counts_are_torchvisions_with_an_8_class_head(built, name):
    # torchvision publishes each ImageNet model's size; ours swaps the 1000-class head for an 8-class one.
    spec = models.BACKBONES[name]
    published = spec.weights.meta["num_params"]
    expected = published - (spec.features * 1000 + 1000) + (spec.features * 8 + 8)
    print(f"{name}: {expected} trainable = {expected / 1e6:.3f} M")
    assert models.count_params(built[name]) == expected


def test_frozen_parameters_are_not_counted():
    with torch.device("meta"):
        model = models.build_model("resnet50", weights="none")
    model.fc.requires_grad_(False)
    assert models.count_params(model) == TABLE7[("resnet50", 1)][0] - (2048 * 8 + 8)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_forward_64px(built, images, name):
    with torch.no_grad():
        logits = built[name](images)
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()


def test_hybrid_any_multiple_of_32_and_channels_last(built):
    hybrid = built["convnext_tiny_transformer"]
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = hybrid(x)
        hybrid.to(memory_format=torch.channels_last)
        try:
            fast = hybrid(x.contiguous(memory_format=torch.channels_last))
        finally:
            hybrid.to(memory_format=torch.contiguous_format)
    assert plain.shape == (2, 8)
    assert torch.allclose(plain, fast, atol=1e-5)


def test_hybrid_structure():
    with torch.device("meta"):
        hybrid = models.build_model("convnext_tiny_transformer", blocks=2, weights="none")
    assert len(hybrid.blocks) == 2
    block = hybrid.blocks[0]
    assert block.self_attn.num_heads == models.N_HEADS == 8 and block.norm_first is False
    assert block.linear1.out_features == 512 and hybrid.proj.out_features == 256
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vit", weights="none")


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_checkpoint_round_trip_gives_identical_logits(built, images, name, tmp_path):
    model = built[name]
    if name == "resnet50":  # make BatchNorm statistics non-trivial so they must be saved too
        with torch.no_grad():
            model.train()(images * 3 + 1)
        model.eval()
    with torch.no_grad():
        expected = model(images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_state = {"epoch": 3, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
    path = tmp_path / "ckpt" / "best.pt"
    models.save_checkpoint(path, model, arch_of(name), "exp1", metrics={"macro_f1": 0.5, "epoch": 3},
                           train_state=train_state)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left over

    loaded, meta = models.load_model(path, device="cpu")
    assert meta == {"arch": arch_of(name), "experiment": "exp1", "metrics": {"macro_f1": 0.5, "epoch": 3}}
    assert not loaded.training
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    with torch.no_grad():
        assert torch.equal(loaded(images), expected)
    assert models.load_checkpoint(path)["train_state"]["epoch"] == 3


def test_compiled_and_ddp_prefixes_are_accepted(built, images, tmp_path):
    model = built["resnet50"]
    with torch.no_grad():
        expected = model(images)
    # Saving a wrapped model strips the wrapper's prefix.
    models.save_checkpoint(tmp_path / "wrapped.pt", nn.DataParallel(model), arch_of("resnet50"), "exp")
    assert not any(k.startswith("module.") for k in models.load_checkpoint(tmp_path / "wrapped.pt")["model"])
    # Files written elsewhere with prefixed keys (DDP around a compiled model) load too.
    checkpoint = models.load_checkpoint(tmp_path / "wrapped.pt")
    checkpoint["model"] = {"module._orig_mod." + k: v for k, v in checkpoint["model"].items()}
    torch.save(checkpoint, tmp_path / "prefixed.pt")
    loaded, _ = models.load_model(tmp_path / "prefixed.pt")
    with torch.no_grad():
        assert torch.equal(loaded(images), expected)
    keys = ["_orig_mod.fc.weight", "module.fc.weight", "module._orig_mod.fc.bias", "fc.module_x"]
    assert list(models.strip_prefixes(dict.fromkeys(keys))) == ["fc.weight", "fc.bias", "fc.module_x"]


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = {"format": "fer-checkpoint", "version": 1, "arch": arch_of("resnet50"), "model": {},
            "x": Payload(str(marker))}
    torch.save(evil, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(evil, f, protocol=2)
    for path in (tmp_path / "evil.pt", tmp_path / "evil.pkl"):
        for load in (models.load_checkpoint, models.load_model):
            with pytest.raises(models.CheckpointError, match="refused, it holds pickled Python objects") as err:
                load(path)
            assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    with open(tmp_path / "evil.pkl", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_unusable_files_give_one_line_errors(tmp_path):
    toy = nn.Linear(4, 2)
    models.save_checkpoint(tmp_path / "good.pt", toy, arch_of("resnet50"), "exp")
    blob = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    # Random bytes reach torch's reader in many ways (IndexError, KeyError, UnicodeDecodeError, unsupported
    # opcodes, ...): 300 seeded blobs cover them all, the same ones every run.
    blobs = [random.Random(seed).randbytes(4096) for seed in range(300)]
    for i, random_bytes in enumerate(blobs):
        (tmp_path / f"random{i}.pt").write_bytes(random_bytes)
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(toy.state_dict(), tmp_path / "state_dict.pt")
    future = models.load_checkpoint(tmp_path / "good.pt") | {"version": 99}
    torch.save(future, tmp_path / "future.pt")
    cases = {"missing.pt": "file not found", "truncated.pt": "truncated", "empty.pt": "truncated",
             "state_dict.pt": "not a FER checkpoint", "future.pt": "version 99", "good.pt": "weights do not fit resnet50"}  # a Linear's weights under a resnet50 arch
    cases |= {f"random{i}.pt": "not a PyTorch checkpoint" for i in range(len(blobs))}
    for name, expected in cases.items():
        with pytest.raises(models.CheckpointError) as err:
            models.load_model(tmp_path / name)
        message = str(err.value)
        assert isinstance(err.value, utils.UserError)
        assert expected in message and str(tmp_path / name) in message and "\n" not in message, message


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny_transformer"])
def test_imagenet_without_cache_or_network_fails_clearly(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    urls = []

    def no_network(url, *args, **kwargs):
        urls.append(url)
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    backbone = "resnet50" if name == "resnet50" else "convnext_tiny"
    file_name = os.path.basename(models.BACKBONES[backbone].weights.url)
    with pytest.raises(models.CheckpointError) as err:
        models.build_model(name, weights="imagenet")
    message = str(err.value)
    assert urls == [models.BACKBONES[backbone].weights.url]  # one try of the download, which fails at once
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / file_name) in message
    assert "--weights none" in message and "--weights PATH" in message and "\n" not in message


def test_imagenet_weights_are_read_from_the_cache(built, images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    state = dict(built["resnet50"].state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # ImageNet head
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / os.path.basename(models.BACKBONES["resnet50"].weights.url))
    model = models.build_model("resnet50", weights="imagenet").eval()
    assert model.fc.out_features == 8
    assert torch.equal(model.conv1.weight, built["resnet50"].conv1.weight)
    assert torch.equal(model.layer4[2].bn3.running_var, built["resnet50"].layer4[2].bn3.running_var)


def test_backbone_weights_from_a_path(built, tmp_path, capsys):
    convnext = built["convnext_tiny"]
    state = dict(convnext.state_dict())  # torchvision format; its head (8 classes here) is ignored
    del state["features.0.0.bias"]
    state["extra.weight"] = torch.zeros(3)
    state["classifier.0.weight"] = torch.rand(768, generator=torch.Generator().manual_seed(2))
    torch.save(state, tmp_path / "backbone.pth")
    hybrid = models.build_model("convnext_tiny_transformer", weights=str(tmp_path / "backbone.pth"))
    report = capsys.readouterr().out
    assert "missing 1 (features.0.0.bias)" in report and "unexpected 1 (extra.weight)" in report
    assert torch.equal(hybrid.features[7][2].block[0].weight, convnext.features[7][2].block[0].weight)
    assert torch.equal(hybrid.norm.weight, state["classifier.0.weight"])  # ConvNeXt's own final norm

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(models.CheckpointError, match="no tensor matches"):
        models.build_model("convnext_tiny", weights=str(tmp_path / "other.pth"))
    with pytest.raises(models.CheckpointError, match="file not found"):
        models.build_model("resnet50", weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("name, blocks", [("resnet50", 1), ("convnext_tiny_transformer", 2)])
def test_a_trained_backbone_exported_from_a_checkpoint_starts_the_next_run(built, images, name, blocks, tmp_path,
                                                                             capsys):
    import export  # the CLI that writes it (no ONNX package needed for --backbone-out)

    torch.manual_seed(1)
    trained = models.build_model(name, num_classes=5, blocks=blocks, weights="none").eval()
    models.save_checkpoint(tmp_path / "best.pt", trained, arch_of(name, blocks) | {"num_classes": 5}, "pretrain")
    export.main(export.get_args_parser().parse_args(["--ckpt", str(tmp_path / "best.pt"),
                                                     "--backbone-out", str(tmp_path / "backbone.pt")]))
    # Plain torchvision names, no head: the file loads into torchvision's own model like ImageNet weights do.
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    backbone = models.HYBRIDS.get(name, name)
    head = models.BACKBONES[backbone].head
    reference = models.BACKBONES[backbone].build(weights=None).state_dict()
    assert set(state) == {k for k in reference if not k.startswith(f"{head}.")}
    assert "pretrain" in capsys.readouterr().out
    # A new run (other classes, other block count) starts from exactly those weights, with a fresh head.
    fresh = models.build_model(name, num_classes=8, blocks=1, weights=str(tmp_path / "backbone.pt")).eval()
    features = (lambda m: m.features) if name in models.HYBRIDS else (lambda m: nn.Sequential(*list(m.children())[:-1]))
    with torch.no_grad():
        assert torch.equal(features(fresh)(images), features(trained)(images))
    if name in models.HYBRIDS:
        assert torch.equal(fresh.norm.weight, trained.norm.weight)


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == torch.device("cpu")
    assert models.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(utils.UserError, match="--device cuda: CUDA is not available"):
        models.resolve_device("cuda")
    with pytest.raises(utils.UserError, match="not a device name"):
        models.resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert models.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(utils.UserError, match="--device cuda:1: only 1 CUDA device"):
        models.resolve_device("cuda:1")


def test_autocast():
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    with models.autocast("cpu", enabled=False):
        assert (a @ a).dtype == torch.float32
    with models.autocast(torch.device("cpu"), enabled=True):
        assert (a @ a).dtype == torch.bfloat16


def toy() -> nn.Module:
    """Conv + BatchNorm + Linear: parameters, float buffers and an integer buffer."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 + 1
    model.train()
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_ema_copy_is_frozen_and_independent():
    torch.manual_seed(0)
    model = toy()
    ema = models.ModelEMA(nn.DataParallel(model), decay=0.9)  # unwraps DDP / compile wrappers
    assert isinstance(ema.module, nn.Sequential) and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_ema_decay_zero_equals_model_and_buffers_follow():
    torch.manual_seed(0)
    model = toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = models.ModelEMA(model, decay=0.0)
    for step in range(3):
        train_step(model, optimizer, step)
        ema.update(model)
    assert_same(ema.module, model)
    assert ema.module[1].num_batches_tracked.item() == 3
    # With a slow average the weights lag but BatchNorm statistics still follow the model exactly.
    slow = models.ModelEMA(model, decay=0.99, warmup=False)
    train_step(model, optimizer, 10)
    slow.update(model)
    assert not torch.equal(slow.module[0].weight, model[0].weight)
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(slow.module[1], buffer), getattr(model[1], buffer))


def test_ema_lags_by_the_decay():
    torch.manual_seed(0)
    model = toy()
    ema = models.ModelEMA(model, decay=0.5, warmup=False)
    weight = model[4].weight
    w0 = weight.detach().clone()
    with torch.no_grad():
        weight.add_(2.0)
    ema.update(model)
    assert torch.allclose(ema.module[4].weight, w0 + 1.0)           # 0.5 * w0 + 0.5 * (w0 + 2)
    with torch.no_grad():
        weight.add_(2.0)
    ema.update(model)
    assert torch.allclose(ema.module[4].weight, w0 + 2.5)           # 0.5 * (w0 + 1) + 0.5 * (w0 + 4)


def test_ema_warmup_ramps_the_decay():
    ema = models.ModelEMA(toy(), decay=0.999)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(ema.module)
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.updates = 100_000
    assert ema.current_decay() == 0.999
    assert models.ModelEMA(toy(), decay=0.999, warmup=False).current_decay() == 0.999


def test_ema_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = models.ModelEMA(model, decay=0.8)
    for step in range(4):
        train_step(model, optimizer, step)
        ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")  # plain values only: loads with weights_only
    resumed = models.ModelEMA(toy(), decay=0.1, warmup=False)
    resumed.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert (resumed.decay, resumed.warmup, resumed.updates) == (0.8, True, 4)
    assert_same(resumed.module, ema.module)
    train_step(model, optimizer, 99)
    ema.update(model)
    resumed.update(model)
    assert_same(resumed.module, ema.module)
