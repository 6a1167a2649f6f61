"""``audit/report.html``: one self-contained page a non-expert can read, built from the audit JSON alone.

One plain sentence per flagged or notable client, the cumulative values with their
intervals, the rounds x clients heat map (an HTML table coloured by value, each cell with
its interval), the game
definition and the validation hash. Every number on the page is written by :func:`num`
into a ``<span class="num" data-key="...">`` naming the audit-JSON entry it shows (with
``data-sign="-1"`` where the page shows its negation), so a reader or a test can check it.
Plots are embedded as base64 PNG; the page loads nothing.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

__all__ = ["render_html", "render_not_auditable", "num", "lookup"]

METRIC_WORDS = {
    "neg_log_loss": ("validation log-likelihood", "nats per validation sample"),
    "accuracy": ("validation accuracy", "share of validation samples"),
    "macro_f1": ("validation macro-F1", "macro-F1 points"),
}
GROUP_WORDS = {"recording": "recordings", "subject": "subjects", "sample": "validation samples"}


def lookup(meta: dict, key: str):
    """The entry of ``meta`` at a dotted path (list positions as integers)."""
    node = meta
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def fmt(value) -> str:
    """How numbers are printed: integers as they are, floats with 3 significant digits."""
    if isinstance(value, (bool, str)) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.3g}"


def num(meta: dict, key: str, sign: int = 1) -> str:
    value = lookup(meta, key)
    shown = value if sign == 1 else -value
    extra = ' data-sign="-1"' if sign == -1 else ""
    return f'<span class="num" data-key="{key}"{extra}>{html.escape(fmt(shown))}</span>'


def _colour(value: float, bound: float) -> str:
    """Red (negative) through white to blue (positive), as a CSS colour."""
    x = 0.0 if bound <= 0 else max(-1.0, min(1.0, value / bound))
    fade = int(round(255 * (1 - 0.6 * abs(x))))  # at most 60% saturated: the numbers stay readable
    return f"rgb(255,{fade},{fade})" if x < 0 else f"rgb({fade},{fade},255)"


def _sentence(meta: dict, i: int) -> str:
    c = meta["clients"][i]
    words, _ = METRIC_WORDS[meta["game"]["metric"]]
    inference = meta["game"]["inference"]
    groups = GROUP_WORDS[inference["group_key"]]
    key = f"clients.{i}"
    level = num(meta, "config.ci_level")
    if c["value"] < 0:
        change = f"lowered the {words} by {num(meta, key + '.value', -1)}"
    else:
        change = f"raised the {words} by {num(meta, key + '.value')}"
    text = (f"Client {num(meta, key + '.client')} {change} ± {num(meta, key + '.ci_half_width')} "
            f"(interval at level {level}) over {num(meta, 'game.inference.n_groups')} {groups}")
    share = c.get("top_group_share")
    if share is not None and share > 0.5 and inference["group_key"] != "sample":
        text += (f"; most of the evidence comes from one {inference['group_key']} "
                 f"({inference['group_key']} {num(meta, key + '.top_group')} carries a share of "
                 f"{num(meta, key + '.top_group_share')} of the absolute evidence)")
    text += ". "
    if c["verdict"] == "harmful":
        text += (f"It is flagged harmful: Holm-adjusted p = {num(meta, key + '.p_holm')}, "
                 f"below alpha = {num(meta, 'flags.thresholds.alpha')}.")
    elif c["verdict"] == "insufficient evidence":
        text += (f"Not flagged, but not cleared either: the interval reaches below -{num(meta, 'config.min_effect')}; "
                 f"the smallest harm this audit would detect is {num(meta, key + '.mde')}.")
    else:
        text += f"It did not harm the model by more than {num(meta, 'config.min_effect')}."
    for flag in meta["flags"]["clients"].get(str(c["client"]), []):
        if flag["flag"] == "free_rider":
            text += f" Flagged free rider ({html.escape(flag['rule'])}; median norm ratio " \
                    f"{num(meta, key + '.median_norm_ratio')}, RMS cosine {num(meta, key + '.rms_cosine_others')})."
        elif flag["flag"] == "anomalous" and flag["rule"].startswith("update opposed"):
            text += f" Flagged anomalous: its updates point against the other clients' (mean over rounds of the " \
                    f"median cosine to them {num(meta, key + '.median_cosine')}, interval up to " \
                    f"{num(meta, key + '.median_cosine_high')}, Holm-adjusted p = {num(meta, key + '.p_opposed')})."
        elif flag["flag"] == "anomalous":
            text += f" Flagged anomalous: its update norm is {num(meta, key + '.median_norm_ratio')} times the " \
                    f"round's median (limit {num(meta, 'config.anomalous_norm_ratio')})."
    return f"<li>{text}</li>"


def _notable(meta: dict) -> list[int]:
    """Flagged clients, those not cleared, and the largest contributor."""
    clients = meta["clients"]
    picked = {i for i, c in enumerate(clients) if c["flags"] or c["verdict"] != "not harmful"}
    if clients:
        picked.add(max(range(len(clients)), key=lambda i: clients[i]["value"]))
    return sorted(picked, key=lambda i: clients[i]["value"])


def _client_table(meta: dict) -> str:
    head = ("client", "value", "interval", "p (Holm)", "min. detectable harm", "verdict", "flags",
            "median norm ratio", "RMS cosine to others", "median cosine to each other")
    rows = []
    for i, c in enumerate(meta["clients"]):
        k = f"clients.{i}"
        rows.append(
            f"<tr><td>{num(meta, k + '.client')}</td><td>{num(meta, k + '.value')}</td>"
            f"<td>[{num(meta, k + '.ci_low')}, {num(meta, k + '.ci_high')}]</td><td>{num(meta, k + '.p_holm')}</td>"
            f"<td>{num(meta, k + '.mde')}</td><td>{html.escape(c['verdict'])}</td>"
            f"<td>{html.escape(c['flags'].replace(',', ', '))}</td><td>{num(meta, k + '.median_norm_ratio')}</td>"
            f"<td>{num(meta, k + '.rms_cosine_others')}</td><td>{num(meta, k + '.median_cosine')}</td></tr>"
        )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _heatmap(meta: dict) -> str:
    clients = [c["client"] for c in meta["clients"]]
    values = [c["value"] for r in meta["rounds"] for c in r["clients"]]
    bound = max((abs(v) for v in values), default=0.0)
    head = "".join(f"<th>{num(meta, f'clients.{i}.client')}</th>" for i in range(len(clients)))
    body = []
    for r, record in enumerate(meta["rounds"]):
        cells = {c["client"]: (j, c) for j, c in enumerate(record["clients"])}
        row = [f"<th>{num(meta, f'rounds.{r}.round')}</th>"]
        for client in clients:
            if client not in cells:
                row.append("<td></td>")
                continue
            j, c = cells[client]
            cell = f"rounds.{r}.clients.{j}"
            row.append(f'<td style="background:{_colour(c["value"], bound)}">{num(meta, cell + ".value")}<br>'
                       f'<small>± {num(meta, cell + ".ci_half_width")}</small></td>')
        body.append("<tr>" + "".join(row) + "</tr>")
    return f'<table class="heat"><tr><th>round \\ client</th>{head}</tr>{"".join(body)}</table>'


def _definition(meta: dict) -> str:
    game = meta["game"]
    inf = game["inference"]
    items = [
        ("utility of a coalition S", html.escape(game["utility"])),
        ("metric", html.escape(game["metric"]) + f" ({METRIC_WORDS[game['metric']][1]}, summed over rounds)"),
        ("weighting", html.escape(game["weighting"])),
        ("validation set", f"{num(meta, 'game.n_val')} samples, {num(meta, 'game.num_classes')} classes, SHA-256 "
                           f"<code>{num(meta, 'game.validation_sha256')}</code>"),
        ("uncertainty", f"{html.escape(inf['method'])} clustered by {html.escape(inf['group_key'])}: "
                        f"G = {num(meta, 'game.inference.n_groups')} clusters, t quantiles on "
                        f"{num(meta, 'game.inference.df')} degrees of freedom (Cameron &amp; Miller 2015"
                        + (f"; {html.escape(inf['group_reason'])}" if inf.get("group_reason") else "")
                        + "); sampled rounds add their Monte Carlo variance"),
        ("harmful", f"Holm-adjusted (Holm 1979) one-sided p below {num(meta, 'flags.thresholds.alpha')} and the "
                    f"interval's upper bound below -{num(meta, 'flags.thresholds.min_effect')}"),
        ("free rider", f"median update norm ratio at most {num(meta, 'flags.thresholds.free_rider_norm')} (zero "
                       f"update), or RMS cosine to the others' aggregate below "
                       f"{num(meta, 'flags.thresholds.min_cosine')} (noise update)"),
        ("anomalous", f"median update norm ratio above {num(meta, 'flags.thresholds.anomalous_norm_ratio')}, or "
                      "updates opposed to the other clients': the per-round median cosine to their updates has a "
                      f"Holm-adjusted one-sided p below {num(meta, 'flags.thresholds.alpha')} (t over rounds) and "
                      f"an interval below -{num(meta, 'flags.thresholds.min_cosine')}"),
        ("estimator", html.escape(meta["config"]["estimator"])),
        ("seed", num(meta, "seed")),
    ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
table.heat td{font-size:80%;min-width:3.5em}dt{font-weight:bold;margin-top:.5em}code{font-size:85%}
img{max-width:100%}
"""


def render_not_auditable(meta: dict) -> str:
    """The page of an audit that had nothing to value: its reason."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Contribution audit</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>Contribution audit</h1>\n<p>Nothing to audit: "
            f"{html.escape(meta['reason'])}.</p>\n</body></html>\n")


def render_html(meta: dict, images: dict[str, Path] | None = None) -> str:
    """The page for an audit's JSON record; ``images`` (title -> PNG file) are embedded as base64."""
    words, unit = METRIC_WORDS[meta["game"]["metric"]]
    sentences = "".join(_sentence(meta, i) for i in _notable(meta))
    pictures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(path).read_bytes()).decode()}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for title, path in (images or {}).items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Contribution audit</title><style>{_STYLE}</style></head>
<body>
<h1>Contribution audit</h1>
<p>Each client's value is its Shapley value in every round's game: how much its update changed the {words}
of the round's model, shared fairly among the clients, summed over the rounds ({unit}). Intervals are at
level {num(meta, 'config.ci_level')} and reflect which validation data happened to be used; "not flagged" is
not the same as "cleared".</p>
<h2>What the audit found</h2>
<ul>{sentences}</ul>
<h2>Cumulative values</h2>
{_client_table(meta)}
<h2>Per round (rounds x clients): value ± half its interval</h2>
{_heatmap(meta)}
{pictures}
<h2>Game definition</h2>
{_definition(meta)}
</body></html>
"""
