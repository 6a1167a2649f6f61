"""The update store: int8 blocks within half a scale of float32, every precision read back as float32, and a
site that imports none of the audit."""

import subprocess

import numpy as np
import pytest
import torch
from conftest import REPO

from fedmm.fl.messages import ClientUpdate
from fedmm.fl.updates import BLOCK, UpdateStore, dequantise, quantise

SITE_PYTHON = REPO / ".venv-site" / "bin" / "python"


def test_int8_blocks_are_within_half_a_scale_and_keep_zeros_and_signs():
    rng = np.random.default_rng(0)
    deltas = (rng.standard_t(3, size=(4, 3 * BLOCK + 17)) * np.logspace(-6, 0, 4)[:, None]).astype(np.float32)
    deltas[1, :BLOCK] = 0.0
    codes, scales = quantise(deltas)
    back = dequantise(codes, scales)
    assert codes.dtype == np.int8 and scales.shape == (4, 4)
    bound = np.repeat(scales, BLOCK, axis=1)[:, : deltas.shape[1]] / 2
    assert np.all(np.abs(back - deltas) <= bound * (1 + 1e-6))
    assert not back[1, :BLOCK].any()
    np.testing.assert_allclose(dequantise(*quantise(-3 * deltas)), -3 * back, rtol=1e-6)  # a scaled update stays scaled


@pytest.mark.parametrize("precision", ["int8", "float16", "float32"])
def test_every_precision_reads_back_as_float32_deltas(tmp_path, precision):
    g = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(40, 30, generator=g), "b": torch.randn(30, generator=g)}
    updates = [ClientUpdate(c, 10 + c, {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in start.items()})
               for c in (3, 1)]
    store = UpdateStore(tmp_path / precision, precision)
    store.write_layout(start)
    store.write_round(0, start, updates)
    arrays = UpdateStore.read_round(store.rounds()[0])
    exact = torch.stack([torch.cat([u.delta[k].reshape(-1) for k in start]) for u in updates]).numpy()
    tolerance = {"int8": np.abs(exact).max() / 254, "float16": 1e-6, "float32": 0}[precision]
    assert arrays["deltas"].dtype == np.float32 and arrays["client_ids"].tolist() == [3, 1]
    np.testing.assert_allclose(arrays["deltas"], exact, rtol=0, atol=tolerance)
    np.testing.assert_array_equal(arrays["start"], torch.cat([v.reshape(-1) for v in start.values()]).numpy())


def test_a_site_imports_no_audit_or_impute_module_nor_scipy_or_sklearn():
    """In the site's own virtual environment: the update store and client_payload live outside the audit and
    the server engine, the config's impute section outside the imputers, and strategies load when named, so a
    site never loads them."""
    code = (
        "import sys, fedmm.fl.site;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'sklearn') and '.' not in m"
        " or m.startswith(('fedmm.audit', 'fedmm.impute.')) or m in ('fedmm.impute', 'fedmm.fl.engine')))"
    )
    done = subprocess.run([SITE_PYTHON, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
