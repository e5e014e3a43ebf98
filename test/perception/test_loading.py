"""Model loading refuses a checkpoint of the wrong architecture with one message, before any command."""
import pytest

from clip_vla.core.config import ModelConfig
from clip_vla.perception.loading import ModelUnavailableError, load_models


@pytest.mark.parametrize("role, found, expected", [
    ("clipseg", "clip", "clipseg"),
    ("clip", "clipseg", "clip"),
], ids=["clip_dir_as_clipseg", "clipseg_dir_as_clip"])
def test_a_checkpoint_of_the_wrong_architecture_is_refused(tiny_models, role, found, expected):
    dirs = dict(tiny_models)
    dirs[role] = tiny_models[found]
    with pytest.raises(ModelUnavailableError) as info:
        load_models(ModelConfig(clipseg=dirs["clipseg"], clip=dirs["clip"], device="cpu"))
    message = str(info.value)
    assert f"(models.{role})" in message and tiny_models[found] in message
    assert f"is a '{found}' checkpoint" in message and f"expected model_type '{expected}'" in message
    assert "\n" not in message


def test_matching_checkpoints_load(tiny_models):
    models = load_models(ModelConfig(clipseg=tiny_models["clipseg"], clip=tiny_models["clip"], device="cpu"))
    assert models.ids == {"clipseg": tiny_models["clipseg"], "clip": tiny_models["clip"]}
