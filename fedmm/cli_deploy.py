"""The ``fedmm`` commands of a deployed federation: ``pki``, ``superlink``, ``site``, ``export-sites``.

``pki`` and ``export-sites`` run anywhere; ``superlink`` and ``site`` run in the Flower
environment (``make install-site``), on the SuperLink host and on each site.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fedmm import runtime
from fedmm.errors import UserError


@click.group()
def pki() -> None:
    """A federation's CA, SuperLink certificate, SuperExec secret and site keys, one folder per party."""


@pki.command("init")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new (or empty) folder for the PKI.")
@click.option("--superlink-host", required=True, help="Host name or IP address the sites reach the SuperLink at.")
@click.option("--operator-host", default="127.0.0.1", show_default=True,
              help="Address of the SuperLink's Control and Runtime APIs (reachable by the coordinator, not sites).")
@click.option("--sites", type=click.IntRange(min=0), default=0, show_default=True,
              help="Site key pairs to create (site_0 ... site_{N-1}).")
def pki_init(directory: Path, superlink_host: str, operator_host: str, sites: int) -> None:
    """Write the CA, the SuperLink certificate (SANs: the hosts and 127.0.0.1), the secret and site keys."""
    from fedmm.fl import pki as keys

    made = keys.init(directory, superlink_host, sites, operator_host)
    click.echo(f"wrote {made.root}: give superlink/ to the SuperLink host, coordinator/ to the coordinator, "
               f"sites/<name>/ to each site; keep operator/ (the CA key) offline")
    click.echo(f"sites reach {made.public_address}; the coordinator reaches {made.operator_address}")


@pki.command("add-site")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name")
def pki_add_site(directory: Path, name: str) -> None:
    """A key pair for a new site NAME (its folder: sites/NAME; its public key: coordinator/keys/NAME.pub)."""
    from fedmm.fl import pki as keys

    folder = keys.add_site(directory, name)
    click.echo(f"wrote {folder}; register it from the coordinator: "
               f"FLWR_HOME={Path(directory) / 'coordinator' / 'flwr'} flwr supernode register "
               f"{Path(directory) / 'coordinator' / 'keys' / (name + '.pub')} fedmm")


@pki.command("rotate-site")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name")
def pki_rotate_site(directory: Path, name: str) -> None:
    """A new key pair for site NAME; the old public key is kept as coordinator/keys/NAME.pub.old."""
    from fedmm.fl import pki as keys

    new, old = keys.rotate_site(directory, name)
    click.echo(f"new key in {Path(directory) / 'sites' / name}; on the coordinator: `flwr supernode list fedmm` "
               f"for the old node id, `flwr supernode unregister NODE_ID fedmm`, then `flwr supernode register {new} "
               f"fedmm`; the old public key is {old}")


@click.command()
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The PKI folder (`fedmm pki init`); its superlink/ part is enough.")
@click.option("--database", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite file for the SuperLink's state (default: in memory).")
@click.option("--operator-bind", default=None, metavar="ADDRESS",
              help="Bind the Control and Runtime APIs here instead of the PKI's operator host (e.g. 0.0.0.0 in a pod "
                   "whose network policy admits only the coordinator to the operator port).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Where the Fleet gateway listens (default: the PKI's public address).")
def superlink(pki_dir: Path, database: Path | None, operator_bind: str | None, listen: str | None) -> None:
    """Run the SuperLink: TLS, node auth, Fleet API for sites, Control/Runtime APIs for the operator only."""
    from fedmm.fl.deploy import Runtime
    from fedmm.fl.pki import PKI
    from fedmm.fl.superlink import serve_superlink

    flower = Runtime(Path(sys.prefix), runtime.state_dir() / "superlink")
    sys.exit(serve_superlink(flower, PKI(pki_dir), click.echo, database, operator_bind, listen))


@click.command()
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="This site's own data file (the bring-your-own-data .npz layout).")
@click.option("--check", is_flag=True, help="Validate the data file, print its report and exit; connect to nothing.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="--check: the run's config (value bounds, validation settings).")
@click.option("--partition-id", type=click.IntRange(min=0), default=None, help="This site's client id in the run.")
@click.option("--superlink", default=None, help="HOST:PORT of the SuperLink's Fleet API.")
@click.option("--root-certificates", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The SuperLink's CA certificate (PEM): TLS.")
@click.option("--insecure", is_flag=True, help="No TLS (refused unless the SuperLink is on loopback).")
@click.option("--auth-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="This SuperNode's private key (OpenSSH EC), whose public key the SuperLink has registered.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the site keeps per-run state (default: .fedmm-site beside the data file).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--retry-for", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="After a crash: seconds to keep retrying while the SuperLink still holds the old node.")
def site(data_path: Path, check: bool, config_path: Path | None, partition_id: int | None, superlink: str | None,
         root_certificates: Path | None, insecure: bool, auth_key: Path | None, state_dir: Path | None,
         threads: int, retry_for: float) -> None:
    """Join a federation as one site: a Flower SuperNode and its ClientApp, with this site's data only.

    Prints one line per event (connected, validating, round trained, refused). Run it in the
    site environment (`make install-site`); the data never leaves this machine: the server
    receives model updates and the validation report.
    """
    if check:
        from fedmm.fl.site import check_site_file

        passed, lines = check_site_file(data_path, config_path)
        click.echo("\n".join(lines))
        sys.exit(0 if passed else 1)
    if partition_id is None or superlink is None:
        raise UserError("give --partition-id and --superlink (or --check to only validate the data file)")
    from fedmm.fl.deploy import Runtime, SiteSpec
    from fedmm.fl.siterun import run_site

    if insecure:
        click.secho(f"warning: insecure (no TLS) connection to {superlink}: loopback only", fg="yellow", err=True)
    spec = SiteSpec(partition_id, data_path.resolve(), (state_dir or data_path.parent / ".fedmm-site").resolve(),
                    auth_key.resolve() if auth_key else None)
    flower = Runtime(Path(sys.prefix), runtime.state_dir() / "flower", threads)
    sys.exit(run_site(flower, spec, superlink, root_certificates, insecure, click.echo, retry_for))


def register(group: click.Group) -> None:
    """Add these commands to the ``fedmm`` group."""
    for command in (pki, superlink, site, export_sites):
        group.add_command(command)


@click.command("export-sites")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="YAML config: the dataset and its partition into sites.")
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value.")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new folder: sites/site_K.npz and coordinator/{validation,test}.npz.")
def export_sites(config_path: Path | None, overrides: tuple[str, ...], directory: Path) -> None:
    """Cut a dataset into per-site files and the coordinator's evaluation files, to rehearse a deployment."""
    from fedmm.config import load_config
    from fedmm.fl.deployed import export_sites as export

    written = export(load_config(config_path, list(overrides)), directory)
    click.echo(f"wrote {len(written['sites'])} site files in {directory / 'sites'} and the coordinator's "
               f"{', '.join(p.name for p in written['coordinator'])} in {directory / 'coordinator'}")
