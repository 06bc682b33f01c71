"""Certificates and keys for a throw-away local control plane (one CA signs everything).

EC P-256 keys: generating them is instant, unlike RSA, which matters because every test session
makes a fresh PKI. The service-account signing key is EC too (the apiserver signs with ES256).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")
LOOPBACK_IPS = ("127.0.0.1", "10.0.0.1")  # 10.0.0.1: first IP of --service-cluster-ip-range


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


class Pki:
    """A CA plus the certificates the components need, as PEM files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = CertPair(directory / "ca.crt", directory / "ca.key")
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        ca = (x509.CertificateBuilder().subject_name(_name("ocrjob-local-ca")).issuer_name(_name("ocrjob-local-ca"))
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .sign(key, hashes.SHA256()))
        pki.ca.cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pki.ca.key)
        sa = ec.generate_private_key(ec.SECP256R1())
        _write_key(sa, pki.sa_key)
        pki.sa_pub.write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
        return pki

    def issue(self, name: str, common_name: str, *, organization: str | None = None,
              server: bool = False, client: bool = False, dns_names: tuple[str, ...] = LOOPBACK_NAMES,
              ips: tuple[str, ...] = LOOPBACK_IPS) -> CertPair:
        """Issue (once) `<name>.crt`/`<name>.key`; server certs are valid for `dns_names`/`ips` (default: the
        loopback names/IPs; a real kubelet's serving cert names its node IP)."""
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        if pair.cert.exists():
            return pair
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca.key.read_bytes(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (x509.CertificateBuilder().subject_name(_name(common_name, organization))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def write_kubeconfig(path: Path, *, server: str, ca: Path, user: str, client: CertPair | None = None,
                     token: str | None = None, namespace: str | None = None) -> Path:
    """A single-context kubeconfig with absolute file references (readable by kubectl, client-go, python)."""
    creds: dict[str, str] = {}
    if client:
        creds = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    if token:
        creds["token"] = token
    context: dict[str, str] = {"cluster": "ocrjob-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "ocrjob-local", "preferences": {},
        "clusters": [{"name": "ocrjob-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "ocrjob-local", "context": context}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
