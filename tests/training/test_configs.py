
import pytest

from rsitr.config import ConfigError, load_config

from support import CONFIGS as ROOT
METHODS = sorted((ROOT / "methods").glob("*.yaml"))
DATA = sorted((ROOT / "data").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS, ids=[p.stem for p in METHODS])
@pytest.mark.parametrize("data", DATA, ids=[p.stem for p in DATA])
def test_every_data_and_method_config_compose(data, method):
    config = load_config([data, method])
    assert config.data.datasets or config.data.synthetic.n_images > 0
    assert config.output_dir.startswith("runs/")


def test_standalone_configs_load():
    for path in ROOT.glob("*.yaml"):
        assert load_config(path).train.epochs >= 1


def test_later_files_override_earlier(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train: {lr: 0.1, epochs: 3}\ndata: {synthetic: {n_images: 4}}\n")
    second.write_text("train: {lr: 0.2}\n")
    config = load_config([first, second])
    assert (config.train.lr, config.train.epochs) == (0.2, 3)


def test_paper_defaults():
    config = load_config(None, ["data.synthetic.n_images=1"])
    t, m = config.train, config.method
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.warmup_steps, t.grad_clip_norm) == (7, 100, 1.5e-5, 0.7, 200, 50)
    assert (m.drop_epoch, m.drop_ratio, m.keywords_top_k, m.ker_weight) == (4, 0.01, 512, 0.5)
    assert (m.global_weight, m.local_weight) == (0.6, 0.4)
    assert config.model.name == "ViT-B-32"


def test_unknown_key_names_the_file_and_suggests(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: {eba_schemee: joint}\ndata: {synthetic: {n_images: 4}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*eba_schemee"):
        load_config(path)


def test_wrong_type_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        load_config(None, ["train.epochs=many", "data.synthetic.n_images=4"])
    with pytest.raises(ConfigError, match="eba_scheme"):
        load_config(None, ["method.eba_scheme=both", "data.synthetic.n_images=4"])
    with pytest.raises(ConfigError, match="data.datasets"):
        load_config(None, [])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_apply_on_top_of_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 0.1}\ndata: {synthetic: {n_images: 4}}\n")
    assert load_config(path).train.lr == 0.1
    assert load_config(path, ["train.lr=0.5"]).train.lr == 0.5
