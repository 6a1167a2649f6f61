import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from fedmm.impute.base import ImputationError
from fedmm.impute.diffusion import DiffusionImputer
from fedmm.impute.select import evaluate_selected, select_imputers, selection_tags
from fedmm.impute_config import ImputeConfig
from fedmm.tensors import TensorData

TINY = {
    "imputers": ["zero", "generator", "diffusion"], "patterns": ["random"], "rates": [0.5],
    "generator": {"rounds": 2, "local_epochs": 1, "hidden": 16},
    "diffusion": {"rounds": 2, "local_epochs": 1, "hidden": 16, "timesteps": 20, "sampling_steps": 4, "samples": 2},
    "select": {"generator": [{"distill_weight": 0.0}, {"distill_weight": 1.0}],
               "diffusion": [{"samples": 2}, {"samples": 4, "sampling_steps": 2}]},
}


@pytest.fixture(scope="module")
def validation(validation_set):
    return validation_set, np.zeros(len(validation_set), dtype=int)


def poisoned(data: TensorData) -> TensorData:
    inputs = {name: torch.flip(x, [0]) * 100 for name, x in data.inputs.items()}
    return dataclasses.replace(data, inputs=inputs, labels=1 - data.labels)


def test_a_poisoned_test_split_cannot_change_the_chosen_settings(clients, model, test_set, validation):
    config = ImputeConfig.model_validate(TINY)
    owners = np.zeros(len(test_set), dtype=int)
    clean, _ = evaluate_selected(config, clients, model, validation, (test_set, owners), seed=0)
    dirty, _ = evaluate_selected(config, clients, model, validation, (poisoned(test_set), owners), seed=0)
    assert clean.meta["selection"] == dirty.meta["selection"]
    assert not np.allclose(clean.table["macro_f1"], dirty.table["macro_f1"])
    chosen = [row for row in clean.meta["selection"] if row["chosen"]]
    assert [row["imputer"] for row in chosen] == ["generator", "diffusion"]
    assert set(selection_tags(clean)) == {"fedmm.imputation.selected.generator", "fedmm.imputation.selected.diffusion"}
    assert "Settings chosen on the validation split" in clean.markdown() and '{"distill_weight": 1.0}' in clean.markdown()


def test_the_choice_is_scored_on_the_validation_split(clients, model, validation):
    config = ImputeConfig.model_validate({**TINY, "imputers": ["generator"]})
    data, owners = validation
    clean = select_imputers(config, clients, model, data, owners, seed=0).table
    dirty = select_imputers(config, clients, model, poisoned(data), owners, seed=0).table
    assert len(clean) == 2 and clean["chosen"].sum() == 1
    assert not np.allclose(clean["validation_gap_recovered"], dirty["validation_gap_recovered"], equal_nan=True)


def test_candidates_differing_in_inference_settings_share_one_fit(clients, model, validation, monkeypatch):
    fits = []
    original = DiffusionImputer._fit
    monkeypatch.setattr(DiffusionImputer, "_fit", lambda self, *args: fits.append(1) or original(self, *args))
    config = ImputeConfig.model_validate({**TINY, "imputers": ["diffusion"]})
    selection = select_imputers(config, clients, model, *validation, seed=0)
    assert len(fits) == 1 and len(selection.table) == 2
    chosen = json.loads(selection.table.loc[selection.table["chosen"], "candidate"].item())
    assert selection.imputers["diffusion"].config.samples == chosen["samples"]


def test_selection_needs_validation_samples(clients, model, validation):
    config = ImputeConfig.model_validate({**TINY, "imputers": ["generator"]})
    empty = validation[0].take(torch.zeros(0, dtype=torch.long))
    with pytest.raises(ImputationError, match="validation split, which is empty"):
        select_imputers(config, clients, model, empty, np.zeros(0, dtype=int), seed=0)


def test_undefined_validation_scores_are_said_with_what_was_kept(clients, model, validation):
    """A model blind to its inputs leaves no gap to recover: every score is nan, and the report says so."""
    blind = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in blind.parameters():
            parameter.zero_()
    config = ImputeConfig.model_validate({**TINY, "imputers": ["generator"]})
    selection = select_imputers(config, clients, blind, *validation, seed=0)
    assert selection.table["validation_gap_recovered"].isna().all() and selection.table["chosen"].tolist() == [True, False]
    assert selection.notes == [
        f"generator: every candidate's validation gap recovered is nan (on the {len(validation[0])} complete validation "
        "samples, zero-filling the missing modalities scored at least as well as the full data: no gap to recover), "
        'so none was better; kept the first, {"distill_weight": 0.0}']
