"""The lab CA and the cloud stand-in's server certificates (cryptography package, EC P-256: fast to make).

The CA lives in `<state>/ca/` (key mode 0600, folder 0700) and is kept across `lab up` runs while it is valid;
the server certificate is issued at every `lab up` with a SAN for every allow-listed host pattern (wildcards
included) and every host the site lists as refused, so denials are decided by the proxies, not by TLS.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def ensure_ca(ca_dir: Path, days: int = 365) -> tuple[Path, Path]:
    """The lab CA (cert, key); created when missing or expiring within a day."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc > _now() + dt.timedelta(days=1):
                return cert_path, key_path
        except ValueError:
            pass
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "layernet lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "layernet lab CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_server_cert(ca_dir: Path, out_dir: Path, names: Iterable[str], ips: Iterable = (), days: int = 30,
                      stem: str = "server") -> tuple[Path, Path]:
    """A server certificate signed by the lab CA with a DNS SAN per name (e.g. `*.servicebus.windows.net`),
    written as `<out_dir>/<stem>.crt` (with the CA appended) and `<stem>.key`: the cloud's echo uses one for
    every allowed name, each HTTPS app one for exactly its own names."""
    return issue_cert(ca_dir, out_dir, stem, "layernet cloud stand-in", names=names, ips=ips, days=days)


def issue_cert(ca_dir: Path, out_dir: Path, stem: str, common_name: str, *, org: str = "", names: Iterable[str] = (),
               ips: Iterable = (), server: bool = True, client: bool = False, days: int = 30) -> tuple[Path, Path]:
    """A certificate signed by the lab CA: subject CN (and O, which Kubernetes reads as the group), DNS and IP
    SANs, server and/or client use; `<out_dir>/<stem>.crt` (CA appended) and `<stem>.key` (mode 0600)."""
    ca_cert_path, ca_key_path = ensure_ca(ca_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    names = sorted({n.lower() for n in names if n})
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder().subject_name(x509.Name(subject))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    sans: list = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(str(i))) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes())
    return cert_path, key_path


def signing_key(out_dir: Path, stem: str) -> tuple[Path, Path]:
    """An EC P-256 key pair for signing (a cluster's service-account tokens): `<stem>.key` (0600) and `<stem>.pub`."""
    key = ec.generate_private_key(ec.SECP256R1())
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{stem}.key", out_dir / f"{stem}.pub"
    _write_key(key_path, key)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path
