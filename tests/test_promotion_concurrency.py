"""Concurrent promotions serialise: 20 pairs of simultaneous promotions lose no update, on SQLite and PostgreSQL.

Each pair promotes two versions at the same instant from two processes; version 2i beats
version 2i-1, which beats every earlier one. Whatever order the lock grants, every version
that says "promoted" must be in the champion's history and must have been compared with
the champion it replaced.
"""

import os
import subprocess
import sys
import time

from promotion_support import REPO, backend, postgres_server, register_stress_versions  # noqa: F401 (fixtures)

from fedmm.tracking import registry

PAIRS = 20


def _history(model_name: str) -> list[str]:
    """The champion and the versions it replaced, newest first (from the fedmm.replaced_version tags)."""
    chain, version = [], registry.aliases(model_name).get(registry.CHAMPION)
    while version not in (None, "none"):
        assert version not in chain, f"replacement cycle at v{version}"
        chain.append(version)
        version = registry.client().get_model_version(model_name, version).tags.get(registry.TAG_REPLACED)
    return chain


def test_twenty_concurrent_pairs_lose_no_update(backend, tmp_path):
    import json

    model_name = f"stress-{backend}"
    register_stress_versions(model_name, 2 * PAIRS)
    results = tmp_path / "decisions.jsonl"
    started = time.monotonic()
    driven = subprocess.run(
        [sys.executable, str(REPO / "tests" / "promotion_support.py"), model_name, str(PAIRS), str(results), "0.05"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    elapsed = time.monotonic() - started
    assert driven.returncode == 0 and not driven.stderr.strip(), driven.stderr[-3000:]
    decisions = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(int(d["version"]) for d in decisions) == list(range(1, 2 * PAIRS + 1))
    promoted = {d["version"]: d for d in decisions if d["promoted"]}
    history = _history(model_name)
    lost = sorted(set(promoted) - set(history), key=int)
    print(f"{backend}: {PAIRS} pairs, {len(promoted)} promotions, {len(lost)} lost updates, {elapsed:.1f} s")
    assert lost == []
    assert history[0] == str(2 * PAIRS), "the best version ends as champion"
    assert [int(v) for v in history] == sorted((int(v) for v in history), reverse=True)
    for version, decision in promoted.items():
        replaced = registry.client().get_model_version(model_name, version).tags[registry.TAG_REPLACED]
        assert replaced == (decision["champion_before"] or "none")
    for decision in decisions:
        if not decision["promoted"]:
            # refused only because a better version had won the race, never by a stale read
            assert decision["gates"]["beats_champion"] is False
            assert int(decision["champion_before"]) > int(decision["version"])
