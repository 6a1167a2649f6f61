import numpy as np
import pytest
import torch

from fedmm.impute.base import ImputationError, ImputingNet, imputed_logits
from fedmm.impute.clients import random_owners
from fedmm.impute.evaluate import draw_mask, evaluate_imputation
from fedmm.impute.registry import IMPUTERS, make_imputer
from fedmm.impute.simple import MeanFill
from fedmm.impute_config import SERVABLE
from fedmm.metrics import classification_metrics

LEARNED = ("iterative", "generator", "diffusion")


@pytest.fixture(scope="module")
def fitted(clients, model, config):
    return {name: make_imputer(name, config).fit(clients, model, seed=0) for name in IMPUTERS}


@pytest.fixture(scope="module")
def owners(clients, test_set):
    return random_owners(len(test_set), [len(c) for c in clients], seed=0)


def _impute(imputer, model, data, mask, owners):
    if imputer.space == "input":
        observed = {name: x * mask[:, [m]] for m, (name, x) in enumerate(data.inputs.items())}
        return observed, imputer.impute(observed, mask, owners)
    observed = model.embed(data.inputs, mask)
    return observed, imputer.impute(observed, mask, owners)


def test_learned_imputers_beat_mean_fill(fitted, model, test_set, owners):
    report = evaluate_imputation(model, test_set, fitted, owners, seed=0, patterns=["random"], rates=(0.5,))
    table = report.table.set_index("imputer")
    assert table.loc["mean", "nrmse_own"] == pytest.approx(1.0, abs=0.1)
    assert table.loc["iterative", "nrmse_own"] < 0.6 * table.loc["mean", "nrmse_own"]
    for name in LEARNED:
        assert table.loc[name, "nrmse_latent"] < 0.6 * table.loc["mean", "nrmse_latent"], name


@pytest.mark.parametrize("name", sorted(IMPUTERS))
def test_present_values_come_back_unchanged(name, fitted, model, test_set, owners):
    mask = torch.as_tensor(draw_mask("random", 0.7, len(test_set), ["a", "b"], seed=5))
    observed, filled = _impute(fitted[name], model, test_set, mask, owners)
    if isinstance(observed, dict):
        for m, key in enumerate(observed):
            assert torch.equal(filled[key][mask[:, m]], observed[key][mask[:, m]])
            assert torch.isfinite(filled[key]).all()
    else:
        assert torch.equal(filled[mask], observed[mask])
        assert torch.isfinite(filled).all()


@pytest.mark.parametrize("name", LEARNED + ("knn",))
def test_fitting_is_deterministic_given_the_seed(name, fitted, clients, model, config, test_set, owners):
    mask = torch.as_tensor(draw_mask("random", 0.5, len(test_set), ["a", "b"], seed=1))
    again = make_imputer(name, config).fit(clients, model, seed=0)
    first, second = (_impute(imputer, model, test_set, mask, owners)[1] for imputer in (fitted[name], again))
    if isinstance(first, dict):
        assert all(torch.equal(first[k], second[k]) for k in first)
    else:
        assert torch.equal(first, second)
    if name in ("generator", "diffusion"):
        other = _impute(make_imputer(name, config).fit(clients, model, seed=1), model, test_set, mask, owners)[1]
        assert not torch.equal(first, other)


def test_federated_mean_is_the_pooled_mean_of_present_values(clients, model):
    imputer = MeanFill().fit(clients, model, seed=0)
    for m, name in enumerate(model.modalities):
        pooled = torch.cat([c.inputs[name][c.mask[:, m]] for c in clients]).double().mean(0)
        torch.testing.assert_close(imputer.means[name].double(), pooled, rtol=0, atol=1e-6)


def test_client_local_imputers_use_the_owners_own_data(clients, model, config, weights, make_client):
    flipped = make_client(np.random.default_rng(9), 150, -weights, 0.3)
    imputer = make_imputer("knn", config).fit([clients[0], flipped], model, seed=0)
    a = torch.randn(20, 6)
    observed = {"a": a, "b": torch.zeros(20, 6)}
    mask = torch.tensor([[True, False]] * 20)
    own = imputer.impute(observed, mask, np.zeros(20, dtype=int))["b"]
    other = imputer.impute(observed, mask, np.ones(20, dtype=int))["b"]
    truth = a @ torch.as_tensor(weights, dtype=torch.float32)
    assert ((own - truth) ** 2).mean() < ((other - truth) ** 2).mean()
    with pytest.raises(ImputationError, match="client-local"):
        imputer.impute(observed, mask)


@pytest.mark.parametrize("name", ["zero", "knn", "generator"])
def test_inference_matches_the_evaluation(name, fitted, model, test_set, owners):
    report = evaluate_imputation(model, test_set, {name: fitted[name]}, owners, 0, patterns=["random"], rates=(0.5,))
    mask = torch.as_tensor(draw_mask("random", 0.5, len(test_set), ["a", "b"], seed=0))
    observed = {key: x * mask[:, [m]] for m, (key, x) in enumerate(test_set.inputs.items())}
    with torch.no_grad():
        logits = imputed_logits(fitted[name], model, observed, mask, owners)
    f1 = classification_metrics(test_set.labels.numpy(), logits.argmax(1).numpy())["macro_f1"]
    assert f1 == pytest.approx(report.table.macro_f1.iloc[0])


def test_latent_imputation_keeps_gradients_of_present_entries(fitted, model, test_set):
    mask = torch.as_tensor(draw_mask("random", 0.5, 50, ["a", "b"], seed=0))
    with torch.no_grad():
        embeddings = model.embed(test_set.take(torch.arange(50)).inputs, mask)
    embeddings.requires_grad_(True)
    fitted["generator"].impute(embeddings, mask).sum().backward()
    torch.testing.assert_close(embeddings.grad, mask.unsqueeze(-1).expand_as(embeddings).float())


@pytest.mark.parametrize("name", SERVABLE)
def test_a_restored_imputer_imputes_exactly_as_the_fitted_one(name, fitted, model, config, test_set):
    mask = torch.as_tensor(draw_mask("random", 0.5, len(test_set), ["a", "b"], seed=0))
    observed = {key: x * mask[:, [m]] for m, (key, x) in enumerate(test_set.inputs.items())}
    state = {k: v.clone() for k, v in fitted[name].state().items()}
    restored = make_imputer(name, config).restore(state, model)
    with torch.no_grad():
        expected = imputed_logits(fitted[name], model, observed, mask)
        torch.testing.assert_close(ImputingNet(model, restored)(observed, mask), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(set(IMPUTERS) - set(SERVABLE)))
def test_client_local_imputers_cannot_serve(name, fitted):
    with pytest.raises(ImputationError, match="cannot be saved"):
        fitted[name].state()
