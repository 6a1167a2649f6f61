"""audit/report.html renders in headless Chromium and every number on it is an entry of the audit JSON."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from test_audit_report import GROUPS, Linear, blobs, store  # noqa: F401  (store: the fixture)

from fedmm.audit.html import fmt, lookup
from fedmm.audit.run import audit_updates
from fedmm.config import AuditConfig

NUMBER = re.compile(r"\d")
LABELS = ("SHA-256", "Holm 1979", "Cameron & Miller 2015", "cr1", "macro-F1")  # text, not numbers of the audit


class Page(HTMLParser):
    """The rendered body's visible text, split into number spans (data-key) and everything else."""

    def __init__(self):
        super().__init__()
        self.spans, self.outside, self.images = [], [], []
        self._stack, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("style", "title", "script"):
            self._skip += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "span" and attrs.get("class") == "num":
            self.spans.append([attrs["data-key"], int(attrs.get("data-sign", "1")), ""])
            self._stack.append(True)
        elif tag == "span":
            self._stack.append(False)

    def handle_endtag(self, tag):
        if tag in ("style", "title", "script"):
            self._skip -= 1
        if tag == "span":
            self._stack.pop()

    def handle_data(self, data):
        if self._skip:
            return
        if self._stack and self._stack[-1]:
            self.spans[-1][2] += data
        else:
            self.outside.append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, store):  # noqa: F811
    directory = tmp_path_factory.mktemp("html")
    report = audit_updates(store, Linear(), blobs(300, 0), AuditConfig(),
                           groups=GROUPS, group_key="recording")
    report.save(directory / "audit")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed to render the audit report (.ci/run installs it)"
    page = directory / "audit" / "report.html"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return report, json.loads((directory / "audit" / "audit.json").read_text()), dom


def test_report_renders_with_every_number_from_the_audit_json(rendered):
    report, meta, dom = rendered
    assert "<h1>Contribution audit</h1>" in dom and "</table>" in dom
    page = Page()
    page.feed(dom)
    assert len(page.spans) >= len(report.rounds) + 8 * len(meta["clients"])  # heat map + client table
    for key, sign, text in page.spans:
        value = lookup(meta, key)
        assert text == fmt(value if sign == 1 else -value), key
        if isinstance(value, float):
            assert float(text) == pytest.approx(sign * value, rel=5e-3, abs=1e-12), key
    # no digit on the page outside a number span: every number shown is checked above
    text = "".join(page.outside)
    for label in LABELS:
        text = text.replace(label, "")
    stray = NUMBER.findall(text)
    assert not stray, text
    # self-contained: the plots are inline PNGs
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)


def test_report_names_the_flagged_clients_in_plain_sentences(rendered):
    report, meta, dom = rendered
    page = Page()
    page.feed(dom)
    clients = meta["clients"]
    harmful = [i for i, c in enumerate(clients) if c["verdict"] == "harmful"]
    assert [clients[i]["client"] for i in harmful] == [14]
    i = harmful[0]
    shown = {key for key, _, _ in page.spans}
    assert {f"clients.{i}.ci_half_width", f"clients.{i}.p_holm", "game.validation_sha256",
            "game.inference.n_groups"} <= shown
    assert "flagged harmful" in dom and "Flagged free rider" in dom
    # the heat map shows every round's value of every client
    for field in ("value", "ci_half_width"):
        assert sum(key.startswith("rounds.") and key.endswith("." + field) for key in shown) == len(report.rounds)
    assert np.isfinite([c["value"] for c in clients]).all()
