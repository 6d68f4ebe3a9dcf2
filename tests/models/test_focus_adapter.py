import pytest
import torch

from rsitr.config import ModelConfig
from rsitr.models import TINY_MODEL, create_model
from rsitr.models.focus_adapter import FocusAdapterCLIP, FocusPooling, tapped_layers
from support.training import fixed_batch, make_trainer

CMER = ["model.focus_adapter=true", "method.negative_queue=8", "data.scene_augment_prob=0.5"]


def test_tapped_layers_spread_evenly_and_end_at_the_last_block():
    assert tapped_layers(12, 4) == [2, 5, 8, 11]
    assert tapped_layers(2, 4) == [0, 1]
    assert tapped_layers(3, 1) == [2]
    with pytest.raises(ValueError):
        tapped_layers(0, 2)


def test_focus_pooling_weights_by_saliency_and_skips_masked_tokens():
    pooling = FocusPooling(2)
    with torch.no_grad():
        for linear in (pooling.query, pooling.key):
            linear.weight.zero_()
            linear.bias.zero_()
        pooling.saliency.weight.copy_(torch.tensor([[1.0, 0.0]]))
        pooling.saliency.bias.zero_()
    tokens = torch.tensor([[[5.0, 0.0], [2.0, 1.0], [1.0, 3.0]]])
    mask = torch.tensor([[False, True, True]])
    pooled, weights = pooling(tokens, query=torch.zeros(1, 2), focus_mask=mask)
    e2, e1 = torch.exp(torch.tensor(2.0)), torch.exp(torch.tensor(1.0))
    expected = torch.tensor([[0.0, e2 / (e2 + e1), e1 / (e2 + e1)]])  # saliency 2 and 1; token 0 excluded
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(pooled, expected[0, 1] * tokens[:, 1] + expected[0, 2] * tokens[:, 2])


def test_at_initialisation_the_adapter_returns_the_frozen_backbone_outputs():
    backbone = create_model(TINY_MODEL, seed=0).model
    adapted = FocusAdapterCLIP(create_model(TINY_MODEL, seed=0).model, adapter_dim=16)
    images = torch.randn(2, 3, 32, 32)
    tokens = backbone.tokenize(["a red plane on an apron", "a lake"])
    with torch.no_grad():
        for a, b in [(adapted.encode_image(images), backbone.encode_image(images)),
                     (adapted.encode_text(tokens), backbone.encode_text(tokens))]:
            for x, y in zip(vars(a).values(), vars(b).values()):
                torch.testing.assert_close(x, y)


def test_only_the_adapter_trains_and_the_backbone_gets_no_gradient(tmp_path):
    trainer = make_trainer(tmp_path, *CMER, "model.adapter_dim=16", "train.lr=1e-3")
    model = trainer.model
    assert isinstance(model, FocusAdapterCLIP)
    backbone = {name: p.detach().clone() for name, p in model.backbone.named_parameters()
                if not name.endswith("logit_scale")}  # the temperature is one trainable scalar
    side = {name: p.detach().clone() for name, p in model.named_parameters() if not name.startswith("backbone.")}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < sum(p.numel() for p in model.backbone.parameters())
    batch = fixed_batch(trainer)
    trainer.train_step(batch)
    trainer.train_step(batch)  # from the second step on gradients pass the zero-initialised outputs
    for name, p in model.backbone.named_parameters():
        if name in backbone:
            assert p.grad is None, name
            assert torch.equal(p, backbone[name]), name
    changed = [name for name, p in model.named_parameters() if name in side and not torch.equal(p, side[name])]
    assert any("vision_side.blocks" in n for n in changed) and any("text_side.blocks" in n for n in changed)
    assert not model.backbone.training  # no dropout in the frozen pass, even in training mode
    assert len(trainer.objective.queue) == 8


def test_factory_builds_and_checkpoint_reloads_the_adapter(tmp_path):
    model = create_model(ModelConfig(name=TINY_MODEL, pretrained=None, focus_adapter=True, adapter_dim=16)).model
    assert isinstance(model, FocusAdapterCLIP) and model.vision_side.global_out[1].out_features == model.embed_dim
    trainer = make_trainer(tmp_path, *CMER, "train.epochs=1")
    trainer.fit()
    result = create_model(None, str(tmp_path / "checkpoints" / "latest.pt"))  # the checkpoint's model
    loaded = result.model
    assert isinstance(loaded, FocusAdapterCLIP) and result.recipe == trainer.recipe
    images = torch.randn(2, 3, 32, 32)
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images).global_, trainer.model.encode_image(images).global_)
