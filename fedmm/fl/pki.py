"""A federation's key material, one folder per party: ``fedmm pki init`` and ``fedmm pki add-site``.

Layout of ``DIR`` (give each party only its own folder)::

    pki.json                     the SuperLink's public and operator addresses, the sites
    operator/ca.key              the CA's private key (stays with the operator, offline)
    superlink/                   ca.pem, server.pem, server.key, superexec.secret
    coordinator/                 ca.pem, superexec.secret, keys/<site>.pub, flwr/config.toml
    sites/<site>/                ca.pem, <site> (private key), <site>.pub

The server certificate's SANs are the public host, the operator host and 127.0.0.1 (the
SuperLink's own SuperExec connects there). Site keys are EC P-384 in OpenSSH format, as
Flower's SuperNode authentication expects. ``coordinator/flwr/config.toml`` is the ``flwr``
CLI's connection ``fedmm`` (``FLWR_HOME=coordinator/flwr``): ``flwr supernode register``,
``flwr ls`` and ``flwr run`` work from there against the operator address.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedmm.errors import UserError

FLEET_PORT, OPERATOR_PORT = 9092, 9093
"""The Fleet API (sites) on the public host; Control and Runtime APIs (operator) on the operator host."""
CONNECTION = "fedmm"
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
VALID_DAYS = 365


class PKIError(UserError, ValueError):
    """The PKI folder is missing, incomplete or would be overwritten, or a name is not allowed."""


@dataclass(frozen=True)
class PKI:
    """Paths into a PKI folder written by :func:`init`."""

    root: Path

    @property
    def settings(self) -> dict:
        path = self.root / "pki.json"
        if not path.is_file():
            raise PKIError(f"{self.root} is not a fedmm PKI folder (no pki.json): run `fedmm pki init` first")
        return json.loads(path.read_text())

    @property
    def public_address(self) -> str:
        return _address(self.settings["superlink_host"], self.settings["fleet_port"])

    @property
    def operator_address(self) -> str:
        return _address(self.settings["operator_host"], self.settings["operator_port"])

    def party(self, name: str) -> Path:
        return self.root / name

    def site(self, name: str) -> Path:
        return self.root / "sites" / name


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _subject_names(hosts: list[str]):
    from cryptography import x509

    names = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(data)


def make_ca(directory: Path, key_path: Path) -> Path:
    """A self-signed CA: ``directory/ca.pem``, its key at ``key_path``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmm federation CA")])
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return directory / "ca.pem"


def make_server_certificate(ca_pem: Path, ca_key: Path, directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A server certificate signed by the CA, valid for ``hosts`` (SANs): ``(server.pem, server.key)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    certificate, private = directory / "server.pem", directory / "server.key"
    certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_private(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certificate, private


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode authentication key pair (EC P-384, OpenSSH format): ``(private, public)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    write_private(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


def write_connection(flwr_home: Path, address: str, root_certificates: Path | None) -> Path:
    """The ``flwr`` CLI's connection ``fedmm`` in ``flwr_home/config.toml``: TLS unless no CA is given."""
    lines = [f"[superlink.{CONNECTION}]", f'address = "{address}"']
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{Path(root_certificates).resolve()}"')
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")
    return flwr_home / "config.toml"


def _check_name(name: str) -> None:
    if not SITE_NAME.match(name) or name in {"ca", "server"}:
        raise PKIError(f"site name {name!r} is not allowed: letters, digits, '_', '.', '-' (at most 63)")


def init(root: Path, superlink_host: str, sites: int, operator_host: str = "127.0.0.1") -> PKI:
    """Write a new PKI folder (refuses a non-empty one): CA, server certificate, SuperExec secret, site keys."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise PKIError(f"{root} is not empty: give a new folder (a PKI is never overwritten)")
    if sites < 0:
        raise PKIError(f"--sites must be 0 or more, not {sites}")
    root.mkdir(parents=True, exist_ok=True)
    ca_key = root / "operator" / "ca.key"
    ca = make_ca(root / "superlink", ca_key)
    make_server_certificate(ca, ca_key, root / "superlink", [superlink_host, operator_host, "127.0.0.1"])
    write_private(root / "superlink" / "superexec.secret", secrets.token_hex(32).encode())
    coordinator = root / "coordinator"
    (coordinator / "keys").mkdir(parents=True)
    shutil.copyfile(ca, coordinator / "ca.pem")
    write_private(coordinator / "superexec.secret", (root / "superlink" / "superexec.secret").read_bytes())
    settings = {"superlink_host": superlink_host, "operator_host": operator_host, "fleet_port": FLEET_PORT,
                "operator_port": OPERATOR_PORT, "sites": []}
    (root / "pki.json").write_text(json.dumps(settings, indent=2) + "\n")
    pki = PKI(root)
    write_connection(coordinator / "flwr", pki.operator_address, coordinator / "ca.pem")
    for k in range(sites):
        add_site(root, f"site_{k}")
    return pki


def add_site(root: Path, name: str) -> Path:
    """A new site's folder (its key pair and the CA) and its public key in the coordinator's ``keys/``."""
    pki = PKI(Path(root))
    settings = pki.settings
    _check_name(name)
    folder = pki.site(name)
    if name in settings["sites"] or folder.exists():
        raise PKIError(f"site {name!r} already exists in {pki.root}: rotate its key with `fedmm pki rotate-site`")
    folder.mkdir(parents=True)
    shutil.copyfile(pki.party("superlink") / "ca.pem", folder / "ca.pem")
    _, public = make_node_key(folder, name)
    shutil.copyfile(public, pki.party("coordinator") / "keys" / f"{name}.pub")
    settings["sites"].append(name)
    (pki.root / "pki.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder


def rotate_site(root: Path, name: str) -> tuple[Path, Path]:
    """A new key pair for an existing site; the old public key stays as ``keys/<site>.pub.old`` to unregister.

    Returns the coordinator's copies ``(new public key, old public key)``.
    """
    pki = PKI(Path(root))
    if name not in pki.settings["sites"]:
        raise PKIError(f"no site {name!r} in {pki.root}: add it with `fedmm pki add-site`")
    keys = pki.party("coordinator") / "keys"
    old = keys / f"{name}.pub.old"
    shutil.copyfile(keys / f"{name}.pub", old)
    _, public = make_node_key(pki.site(name), name)
    shutil.copyfile(public, keys / f"{name}.pub")
    return keys / f"{name}.pub", old
