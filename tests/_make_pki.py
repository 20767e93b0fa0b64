"""Make the TLS tests' certificates with the ``cryptography`` package.

Imported by tests/_tls_helpers.py's ``pki`` fixture, and run as a script by
tools/wine.py (``python tests/_make_pki.py FOLDER``) to make them on the Linux
side for the Windows Pythons under Wine, where cryptography does not load.
"""
from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from _tls_helpers import CLIENT_CN, Pki


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iocploop tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path = folder / f"{stem}.crt"
    key_path = folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def _ca(cn: str, now: datetime.datetime):
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca_cert, ca_key, cn: str, *, dns=(), ips=(), client=False,
          not_before: datetime.datetime, not_after: datetime.datetime):
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path) -> Pki:
    """Make every certificate and key into folder (which must exist)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_before=now - datetime.timedelta(days=1),
                 not_after=now + datetime.timedelta(days=7))
    expired = dict(not_before=now - datetime.timedelta(days=30),
                   not_after=now - datetime.timedelta(days=2))
    here = dict(dns=["localhost"], ips=["127.0.0.1", "::1"])
    ca_cert, ca_key = _ca("iocploop test CA", now)
    other_cert, other_key = _ca("iocploop untrusted CA", now)
    files = {}
    files["ca"] = _write(folder, "ca", ca_cert, ca_key)[0]
    files["other_ca"] = _write(folder, "other_ca", other_cert, other_key)[0]
    leaves = {
        "server": _leaf(ca_cert, ca_key, "localhost", **here, **valid),
        "client": _leaf(ca_cert, ca_key, CLIENT_CN, client=True, **valid),
        "expired": _leaf(ca_cert, ca_key, "localhost", **here, **expired),
        "wrong_host": _leaf(ca_cert, ca_key, "wrong.example", dns=["wrong.example"], **valid),
        "untrusted": _leaf(other_cert, other_key, "localhost", **here, **valid),
    }
    for stem, (cert, key) in leaves.items():
        files[f"{stem}_cert"], files[f"{stem}_key"] = _write(folder, stem, cert, key)
    return Pki(**files)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    make_pki(out)
