"""FedMMKT without the text model: the image view, the payload rows, the server's weights and prototypes, the table."""


import pandas as pd
import pytest
import torch
from mmkt_support import REPO, TINY_GENERATOR, federation, tiny_config  # noqa: F401  (federation: a fixture)

from fedmm.config import ConfigError
from fedmm.mmkt import strategy as fedmmkt
from fedmm.mmkt.experiment import load_mmkt_spec, markdown, summarise
from fedmm.mmkt.messages import MMKTUpdate, SyntheticBatch


def test_pix_becomes_a_16x16_image_in_unit_range(federation):
    images, labels = federation.image_split("test")
    assert images.shape[1] == 256 and 0 <= images.min() and images.max() <= 1 and images.max() > 0.9
    assert federation.spec.sample_shapes["pix"] == (256,)
    assert federation.prepared.manifest["modalities"]["pix"] == [256]


def test_square_images_prepares_the_source_a_site_file_and_export_sites_alike(tmp_path):
    """``data.square_images`` is one function: a file holding pix as UCI ships it (a site's own) squares to the
    prepared source's images, squaring twice changes nothing, and rehearsal site files hold the images."""
    import numpy as np

    from fedmm.data.dataset import DatasetError, load_npz
    from fedmm.data.images import square_images
    from fedmm.data.prepare import prepare
    from fedmm.fl.deployed import export_sites
    from fedmm.mmkt.federation import federation_config

    config = federation_config(tiny_config())
    squared = prepare(config.data, config.seed)
    as_shipped = prepare(config.data.model_copy(update={"square_images": False}), config.seed)
    at_site = square_images(as_shipped.dataset)
    assert as_shipped.dataset.modalities["pix"].shape[1] == 240 and squared.manifest["value_bounds"]["pix"] == [0, 1]
    np.testing.assert_array_equal(at_site.modalities["pix"], squared.dataset.modalities["pix"])
    assert square_images(at_site) is at_site
    written = export_sites(config, tmp_path / "rehearsal")
    assert {load_npz(path).modalities["pix"].shape[1] for path in written["sites"]} == {256}
    odd = as_shipped.dataset.subset(np.arange(4))
    odd.modalities["pix"] = odd.modalities["pix"][:, :100]
    with pytest.raises(DatasetError, match=r"^data.square_images: 'pix' has shape \(100,\)"):
        square_images(odd)


def test_feedback_rows_follow_the_synthetic_images(federation):
    from fedmm.models.multimodal import build_model

    model = build_model(federation.spec, 0)
    images = torch.rand((6, 256), generator=torch.Generator().manual_seed(1))
    batch = SyntheticBatch(0, images, torch.tensor([0, 0, 1, 1, 2, 2]))
    changed = SyntheticBatch(0, images.clone().index_fill_(0, torch.tensor([3]), 0.0), batch.prompted)
    a, b = fedmmkt.client_feedback(model, batch), fedmmkt.client_feedback(model, changed)
    differs = (a["logits"] != b["logits"]).any(1)
    assert differs.tolist() == [False, False, False, True, False, False]
    torch.testing.assert_close(a["prototypes"][[0, 2]], b["prototypes"][[0, 2]])


def feedback(client: int, logits, prototypes, mass) -> MMKTUpdate:
    return MMKTUpdate(client, 0, {}, logits=logits, prototypes=prototypes, mass=mass)


def test_reward_weights_favour_what_the_ensemble_recognises_and_keep_every_class():
    prompted = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    weights = fedmmkt.reward_weights([feedback(0, logits, torch.zeros(2, 3), torch.ones(2)),
                                      feedback(1, logits, torch.zeros(2, 3), torch.ones(2))], prompted, 0.5)
    torch.testing.assert_close(weights[:2].sum(), torch.tensor(1.0))
    torch.testing.assert_close(weights[2:].sum(), torch.tensor(1.0))
    assert weights[0] > weights[1] and weights[3] > weights[2]


def test_prototypes_aggregate_by_mass():
    a = feedback(0, torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([3.0, 0.0]))
    b = feedback(1, torch.zeros(1, 2), torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(fedmmkt.aggregate_prototypes([a, b]), torch.tensor([[0.75, 0.25], [1.0, 1.0]]))


def test_summary_pairs_methods_by_seed_and_server_metrics_by_cell():
    rows = []
    for seed in range(3):
        server = {f"server_{when}_{m}": base + seed * 0.01 for when, base in (("before", 0.4), ("after", 0.5))
                  for m in ["synthetic_to_real_accuracy", "fidelity", *(f"fidelity_{d}" for d in range(10))]}
        for method, f1 in (("fedavg", 0.8), ("fedavg_frozen", 0.85), ("fedmmkt", 0.9)):
            rows.append({"method": method, "seed": seed, "test_macro_f1": f1 + seed * 0.01,
                         **(server if method == "fedmmkt" else {})})
    client, server = summarise(pd.DataFrame(rows))
    row = client.set_index("method").loc["fedmmkt"]
    assert row["test_macro_f1_vs_fedavg_diff"] == pytest.approx(0.1)
    assert row["test_macro_f1_vs_fedavg_frozen_diff_low"] == pytest.approx(0.05)
    assert server.set_index("metric").loc["fidelity", "diff"] == pytest.approx(0.1)
    table = markdown(client, server)
    assert "| fedmmkt | 0.910 ± 0.010 (3) | +0.100 [+0.100, +0.100] (n=3) |" in table
    assert "| fidelity_9 |" in table


@pytest.mark.parametrize("name, cells", [("fedmmkt", 9), ("fedmmkt_ci", 6)])
def test_shipped_experiment_files_validate_and_the_cli_dispatches_them(name, cells):
    from fedmm.experiments.matrix import spec_task

    path = REPO / "configs" / "experiments" / f"{name}.yaml"
    assert spec_task(path) == "fedmmkt" and len({c.run_id() for c in load_mmkt_spec(path)[1]}) == cells


def test_a_bad_experiment_file_fails_before_any_run(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("task: fedmmkt\nname: x\nmethods: [fedavg]\nseeds: [0]\nconfig: {set: [partition.num_clients=0]}\n")
    with pytest.raises(ConfigError, match="num_clients"):
        load_mmkt_spec(spec)
    spec.write_text("task: fedmmkt\nname: x\nmethods: [fedprox]\nseeds: [0]\n")
    with pytest.raises(ConfigError, match="methods"):
        load_mmkt_spec(spec)


def test_a_saved_predictor_keeps_a_non_alphabetical_modality_order(federation, tmp_path):
    """mfeat's views (fou, fac, kar, pix, zer, mor) are not in sorted order; the JSON spec sorts keys."""
    from fedmm.fl.result import TrainResult, load_predictor
    from fedmm.models.multimodal import build_model

    model = build_model(federation.spec, 0).eval()
    saved = TrainResult(federation.spec, model.state_dict(), [], "fedavg", "", tmp_path).save_predictor(tmp_path / "net")
    loaded = load_predictor(saved)
    test = federation.evaluation["test"]
    assert loaded.modalities == model.modalities == ["fou", "fac", "kar", "pix", "zer", "mor"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(test.inputs, test.mask), model(test.inputs, test.mask))


def test_fedmmkt_on_data_without_square_images_is_one_clear_error():
    from conftest import SYNTHETIC_SPEC

    from fedmm.config import config_from_dict
    from fedmm.errors import UserError
    from fedmm.fl.strategies import make_strategy
    from fedmm.fl.strategy import ServerContext

    train = config_from_dict({}, ["train.strategy=fedmmkt"]).train
    with pytest.raises(UserError, match=r"^strategy 'fedmmkt' needs a 'pix' view of 256 pixels .* this data has pix None"):
        make_strategy(train, 0, ServerContext(SYNTHETIC_SPEC))
