"""Conformance of every registered strategy, in the spirit of torchmetrics' ``MetricTester``.

On one tiny synthetic federation (three clients, two of them missing a modality on some
samples; a 12-sample proxy set; three rounds), every strategy in the registry must be
deterministic, resume bit-identically from its round checkpoint, send exactly its declared
payload type (also for a free rider), store deltas and kept state as it declares, refuse to
run without the proxy set it needs (and be unaffected by one it does not need), and reject a
bad parameter with one clear line. FedMMKT runs on a tiny image federation instead (its
generator draws 16x16 images for a ``pix`` view and 10 classes). Zero-weight variants must be FedAvg exactly. The vectorised
engine (``train.engine: vmap``) must give the loop's results (within float tolerance; exactly,
where a strategy falls back to the loop) and resume bit-identically too.
"""

import typing
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from conftest import SYNTHETIC_SPEC, interrupted_after_round, synthetic

from fedmm.config import ModelConfig, TrainConfig, config_from_dict
from fedmm.fl import engine
from fedmm.fl.baselines import ModalityDropout, ProxyOnly
from fedmm.fl.client import trainable_state
from fedmm.fl.engine import FederatedOutcome, InProcessClients, run_federated
from fedmm.fl.fedadam import FedAdam
from fedmm.fl.fedmekt import FedMekt
from fedmm.fl.fedmobile import FedMobile
from fedmm.fl.fedprox import FedProx
from fedmm.fl.messages import TrainInstruction
from fedmm.fl.mmfed3 import MMFeD3
from fedmm.fl.moon import Moon
from fedmm.fl.strategies import STRATEGIES, make_strategy
from fedmm.fl.strategy import ServerContext, StrategyError
from fedmm.fl.updates import UpdateStore
from fedmm.fl.vectorised import VectorisedClients
from fedmm.mmkt.strategy import FedMMKT
from fedmm.models.multimodal import ModelSpec
from fedmm.tensors import TensorData

SEED = 0
ROUNDS = 3
RAW = {
    "partition": {"proxy_fraction": 0.1},
    "train": {
        "rounds": ROUNDS, "batch_size": 16, "centralized": False,
        "fedmekt": {"server_epochs": 1, "classifier_epochs": 1},
        "mmfed3": {"server_epochs": 1},
        "proxy": {"epochs": 1, "finetune_epochs": 1},
        "fedmmkt": {"generator": {"hidden": 16, "timesteps": 10, "sampling_steps": 3, "pretrain_steps": 3,
                                  "batch_size": 8}, "finetune": {"steps": 2, "batch_size": 8}, "images_per_class": 2},
    },
}
CLIENTS = [
    synthetic(np.arange(18) % 3, seed=1),
    synthetic(np.arange(18) % 3, seed=2, mask=[[True, k % 2 == 0] for k in range(18)]),
    synthetic(np.arange(12) % 3, seed=3, mask=[[k % 3 != 0, True] for k in range(12)]),
]
PROXY = synthetic(np.arange(12) % 3, seed=4)
VALIDATION = {"val": synthetic(np.arange(12) % 3, seed=5, mask=[[True, k % 2 == 1] for k in range(12)])}
WITH_PROXY = ServerContext(SYNTHETIC_SPEC, proxy=PROXY)
NAMES = sorted(STRATEGIES)
IMAGE_SPEC = ModelSpec.build({"pix": (256,), "fou": (6,)}, 10, ModelConfig(embed_dim=8, channels=4, fusion_dim=8),
                             {"pix": np.array([[0.5] * 256, [0.3] * 256]), "fou": np.array([[0.0] * 6, [1.0] * 6])})


def digits(labels, seed, mask=None) -> TensorData:
    """Samples of :data:`IMAGE_SPEC`: class-dependent 16x16 images in [0, 1] and a noisy 6-d view."""
    labels = np.asarray(labels)
    mask = np.ones((len(labels), 2), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rng = np.random.default_rng(seed)
    images = np.clip(np.sin((labels[:, None] + 1) * np.linspace(0, 3, 256)) * 0.5 + 0.5
                     + 0.1 * rng.standard_normal((len(labels), 256)), 0, 1)
    fou = labels[:, None] / 10 + rng.standard_normal((len(labels), 6))
    return TensorData.from_numpy({"pix": images * mask[:, :1], "fou": fou * mask[:, 1:]}, mask, labels)


@dataclass(frozen=True)
class Federation:
    """A conformance federation: the model spec, the clients, the validation set and the server's proxy set."""

    spec: ModelSpec
    clients: list = field(hash=False)
    validation: dict = field(hash=False)
    proxy: TensorData = field(hash=False)

    def server(self, proxy: bool = True) -> ServerContext:
        return ServerContext(self.spec, proxy=self.proxy if proxy else None)


SENSOR = Federation(SYNTHETIC_SPEC, CLIENTS, VALIDATION, PROXY)
IMAGES = Federation(IMAGE_SPEC, [digits(np.arange(20) % 10, seed=1),
                                 digits(np.arange(20) % 10, seed=2, mask=[[k % 2 == 0, True] for k in range(20)])],
                    {"val": digits(np.arange(10), seed=5)}, digits(np.arange(10), seed=4))
FEDERATIONS = {"fedmmkt": IMAGES}
"""The federation a strategy is checked on (the sensor one unless named here)."""


def federation_of(name: str) -> Federation:
    return FEDERATIONS.get(name, SENSOR)


def train_config(name: str, *overrides: str) -> TrainConfig:
    return config_from_dict(RAW, [f"train.strategy={name}", *overrides]).train


class RecordingClients(InProcessClients):
    """In-process clients that also keep every payload the server received."""

    def __init__(self, workdir, federation: Federation = SENSOR) -> None:
        super().__init__(federation.spec, federation.clients, SEED, "cpu", workdir)
        self.payloads: list = []

    def fit_round(self, server_round, state, instructions, strategy):
        replies = super().fit_round(server_round, state, instructions, strategy)
        self.payloads.extend(replies.payloads)
        return replies


class RecordingVectorisedClients(RecordingClients, VectorisedClients):
    """The vectorised engine's clients, recording payloads too."""


@dataclass
class Run:
    outcome: FederatedOutcome
    pool: RecordingClients
    workdir: object


def run(name: str, workdir, *overrides: str, proxy: bool = True, pool_class=RecordingClients,
        on: Federation | None = None) -> Run:
    """``name`` on its federation (or ``on``), the server holding the proxy set unless not ``proxy``."""
    train, federation = train_config(name, *overrides), on or federation_of(name)
    pool = pool_class(workdir, federation)
    strategy = make_strategy(train, SEED, federation.server(proxy))
    return Run(run_federated(federation.spec, pool, federation.validation, strategy, train.rounds, SEED, workdir,
                             "cpu"), pool, workdir)


def assert_same_outcome(a: FederatedOutcome, b: FederatedOutcome) -> None:
    """Same history, bit-identical final global state and server state."""
    assert a.history == b.history
    for left, right in ((trainable_state(a.model), trainable_state(b.model)), (a.server_state, b.server_state)):
        assert left.keys() == right.keys()
        for key in left:
            torch.testing.assert_close(left[key], right[key], rtol=0, atol=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Each strategy's run at its configured parameters, computed once per module."""
    runs: dict[str, Run] = {}

    def of(name: str) -> Run:
        if name not in runs:
            runs[name] = run(name, tmp_path_factory.mktemp(name))
        return runs[name]

    return of


def test_registry_matches_the_config_choices():
    assert set(STRATEGIES) == set(typing.get_args(TrainConfig.model_fields["strategy"].annotation))
    for name, cls in STRATEGIES.items():
        assert cls.name == name
        section = TrainConfig.model_fields[cls.config_section].annotation if cls.config_section else None
        assert set(cls.parameter_names()) <= set(section.model_fields if section else ())


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_states(name, reference, tmp_path):
    """A second run is bit-identical; a strategy that needs no proxy set runs (identically) without one."""
    needs_proxy = make_strategy(train_config(name), SEED).needs_proxy
    again = run(name, tmp_path, proxy=needs_proxy)
    assert_same_outcome(again.outcome, reference(name).outcome)


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_a_round_checkpoint_is_bit_identical(name, reference, tmp_path):
    expected = reference(name)
    with interrupted_after_round(ROUNDS - 1):
        run(name, tmp_path)
    kept = sorted(p.name for p in (tmp_path / engine.KEPT_DIR).glob("*"))
    assert (f"after_{ROUNDS - 1:04d}.npz" in kept) if expected.pool.kept else kept == []
    resumed = run(name, tmp_path)
    assert resumed.outcome.resumed_from == ROUNDS - 1
    assert_same_outcome(resumed.outcome, expected.outcome)


@pytest.mark.parametrize("name", NAMES)
def test_payloads_stores_and_free_riders_match_the_declared_payload(name, reference):
    cls, ran = STRATEGIES[name], reference(name)
    federation = federation_of(name)
    strategy = make_strategy(train_config(name), SEED, federation.server())
    asked = sum(len(strategy.configure_train(r, len(federation.clients))) for r in range(ROUNDS))
    assert len(ran.pool.payloads) == asked and all(type(p) is cls.payload_type for p in ran.pool.payloads)
    assert len(UpdateStore(ran.workdir / engine.UPDATES_DIR).rounds()) == (ROUNDS if cls.sends_deltas() and asked else 0)
    kept = sorted(p.name for p in (ran.workdir / engine.KEPT_DIR).glob("*"))
    assert kept == ([f"after_{ROUNDS:04d}.npz"] if ran.pool.kept else [])

    state = trainable_state(ran.outcome.model)
    instruction = TrainInstruction(1, 0, 1, 16, 0.003, "adam")
    if cls.sends_deltas():
        rider = strategy.free_rider_payload(instruction, state, 7)
        assert type(rider) is cls.payload_type and (rider.client_id, rider.num_examples) == (1, 7)
        assert rider.delta.keys() == state.keys() and not any(d.any() for d in rider.delta.values())
    else:
        with pytest.raises(StrategyError, match=f"strategy '{name}' sends no parameter deltas"):
            strategy.free_rider_payload(instruction, state, 7)


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_needing_the_proxy_set_refuses_to_run_without_it(name, tmp_path):
    train = train_config(name)
    strategy = make_strategy(train, SEED)
    assert strategy.needs_proxy == train.needs_proxy  # the config's early check agrees with the class
    if not strategy.needs_proxy:
        return
    message = f"strategy '{name}' needs a server proxy set: set partition.proxy_fraction > 0"
    for server in (ServerContext(SYNTHETIC_SPEC), ServerContext(SYNTHETIC_SPEC, proxy=PROXY.take(torch.arange(0)))):
        with pytest.raises(StrategyError, match=message):
            make_strategy(train, SEED, server)
    with pytest.raises(StrategyError, match=message):
        run_federated(SYNTHETIC_SPEC, RecordingClients(tmp_path), VALIDATION, strategy, ROUNDS, SEED, tmp_path, "cpu")
    assert not any(tmp_path.iterdir())


def test_fedmobile_needs_the_proxy_set_for_clustered_shapley_only():
    samples = train_config("fedmobile", "train.fedmobile.generator_weighting=samples")
    assert not make_strategy(samples, SEED, ServerContext(SYNTHETIC_SPEC)).needs_proxy and not samples.needs_proxy
    assert FedMobile.needs_proxy and make_strategy(train_config("fedmobile"), SEED).needs_proxy


@pytest.mark.parametrize("name", [name for name in NAMES if name != "fedavg"])
def test_default_parameters_differ_from_fedavg(name, reference, tmp_path):
    federation = federation_of(name)
    fedavg = reference("fedavg") if federation is SENSOR else run("fedavg", tmp_path, on=federation)
    ours, fedavg = trainable_state(reference(name).outcome.model), trainable_state(fedavg.outcome.model)
    assert any(not torch.equal(ours[key], fedavg[key]) for key in fedavg)


@pytest.mark.parametrize(
    "name, overrides, rounds",
    [
        ("fedprox", ["train.fedprox.mu=0"], ROUNDS),
        ("moon", ["train.moon.mu=0"], ROUNDS),
        ("mmfed3", ["train.mmfed3.logit_weight=0", "train.mmfed3.feature_weight=0"], ROUNDS),
        ("mmfed3", [f"train.mmfed3.warmup_rounds={ROUNDS}"], ROUNDS),
        ("mmfed3", ["train.mmfed3.warmup_rounds=1"], 1),
        ("fedavg_ft", [], ROUNDS - 1),
    ],
)
def test_zero_weight_variants_are_fedavg_exactly(name, overrides, rounds, reference, tmp_path):
    """These are FedAvg bit for bit over their first ``rounds`` rounds (fedavg_ft: until its fine-tuning)."""
    ours, fedavg = run(name, tmp_path, *overrides).outcome, reference("fedavg").outcome
    assert ours.history[:rounds] == fedavg.history[:rounds]
    if rounds == ROUNDS:
        assert_same_outcome(ours, fedavg)


@pytest.mark.parametrize(
    "cls, parameter, value",
    [
        (FedProx, "mu", -1.0), (Moon, "temperature", 0.0), (FedAdam, "beta1", 1.0), (ModalityDropout, "rate", 1.0),
        (MMFeD3, "server_epochs", -1), (FedMekt, "reconstruction", "pairs"), (FedMobile, "clusters", 0),
        (ProxyOnly, "epochs", 0), (FedMMKT, "images_per_class", 0),
    ],
)
def test_a_bad_parameter_is_one_clear_error(cls, parameter, value):
    section = getattr(train_config(cls.name), cls.config_section)
    parameters = {name: getattr(section, name) for name in cls.parameter_names()}
    with pytest.raises(StrategyError) as error:
        cls(train_config(cls.name), SEED, WITH_PROXY, **{**parameters, parameter: value})
    message = str(error.value)
    assert message.startswith(f"{cls.__name__}({parameter}={value!r}): ") and "\n" not in message


VECTORISED = [name for name in NAMES if STRATEGIES[name].vectorisable()]


def test_the_target_strategies_vectorise():
    assert {"fedavg", "fedprox", "moon"} <= set(VECTORISED)
    assert not {"fedmobile", "fedmekt", "mmfed3", "fedavg_dropout"} & set(VECTORISED)


def assert_close_outcome(vectorised: Run, loop: Run) -> None:
    """The same clients, sample counts and payload types; states, scores and client metrics within float tolerance."""
    a, b = vectorised.outcome, loop.outcome
    assert [[(c.client, c.num_examples) for c in r.clients] for r in a.history] == \
        [[(c.client, c.num_examples) for c in r.clients] for r in b.history]
    for left, right in zip(a.history, b.history):
        scores = [({k: v for k, v in r.to_dict().items() if k.startswith("val_")}) for r in (left, right)]
        for ours, theirs in [scores] + [(x.metrics, y.metrics) for x, y in zip(left.clients, right.clients)]:
            assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)
    assert [type(p) for p in vectorised.pool.payloads] == [type(p) for p in loop.pool.payloads]
    left, right = trainable_state(a.model), trainable_state(b.model)
    for key in right:
        torch.testing.assert_close(left[key], right[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_the_vectorised_engine_gives_the_loops_results(name, reference, tmp_path):
    """Vectorisable strategies within float tolerance; the others fall back to the loop, so exactly."""
    vectorised = run(name, tmp_path, pool_class=RecordingVectorisedClients)
    if name in VECTORISED:
        assert_close_outcome(vectorised, reference(name))
    else:
        assert_same_outcome(vectorised.outcome, reference(name).outcome)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "moon"])
@pytest.mark.parametrize("overrides", [
    ("train.batch_size=10", "train.client_fraction=0.67"),  # 18 and 12 samples: 2 steps each, last batches 8 and 2
    ("train.batch_size=32", "train.optimizer=sgd", "train.lr=0.05"),  # one padded step: 18, 18 and 12 samples
])
def test_padded_batches_and_partial_participation_give_the_loops_math(name, overrides, tmp_path):
    loop = run(name, tmp_path / "loop", *overrides)
    assert_close_outcome(run(name, tmp_path / "vmap", *overrides, pool_class=RecordingVectorisedClients), loop)


@pytest.mark.parametrize("name", VECTORISED)
def test_vectorised_resume_from_a_round_checkpoint_is_bit_identical(name, tmp_path):
    expected = run(name, tmp_path / "whole", pool_class=RecordingVectorisedClients)
    with interrupted_after_round(ROUNDS - 1):
        run(name, tmp_path / "resumed", pool_class=RecordingVectorisedClients)
    resumed = run(name, tmp_path / "resumed", pool_class=RecordingVectorisedClients)
    assert resumed.outcome.resumed_from == ROUNDS - 1
    assert_same_outcome(resumed.outcome, expected.outcome)
