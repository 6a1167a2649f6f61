"""The coordinator's deployed training, as the namespace test and the benchmark run it on the coordinator host.

    python tests/deploy_coordinator.py WORKDIR OUT.npz VALIDATION.npz TEST.npz OVERRIDE...

Prints ``round N T`` as rounds finish (T: the wall clock); writes the final global state to
OUT.npz and a summary (per-round clients and drops) to OUT.json.
"""

import json
import sys
import time
from pathlib import Path

from fedmm.artifacts import write_npz
from fedmm.config import load_config
from fedmm.fl.codec import state_arrays
from fedmm.fl.deployed import CoordinatorData, train_deployed

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    workdir, out, validation, test, *overrides = sys.argv[1:]
    config = load_config(REPO / "configs" / "tiny.yaml", overrides)
    data = CoordinatorData.from_files(validation, test)
    result = train_deployed(config, data, Path(workdir) / "train",
                            on_round=lambda record: print(f"round {record.round} {time.time()}", flush=True))
    write_npz(Path(out), state_arrays(result.state))
    summary = {"clients": [sorted(c.client for c in record.clients) for record in result.history],
               "dropped": [record.dropped for record in result.history]}
    Path(out).with_suffix(".json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
