"""Signing a release with OpenSSF model-signing and a local elliptic-curve key, and verifying it.

Keyless signing (Sigstore) needs the internet, which a business's machine or this one may not have; a local key
works offline. The public key ships in the release so anyone can check its integrity; to check who signed it,
verify with a public key obtained some other way (`alambic verify DIR --key KEY.pub`)."""

from __future__ import annotations

import os
from pathlib import Path

from alambic.errors import AlambicError

SIGNATURE = "model.sig"
PUBLIC_KEY = "signing-key.pub"
UNSIGNED = (SIGNATURE, PUBLIC_KEY)


def ensure_key(private_key: Path) -> Path:
    """The private key, made (P-256, readable by its owner only) if there is none yet."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not private_key.is_file():
        private_key.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        descriptor = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    return private_key


def public_key_pem(private_key: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise AlambicError(f"release.signing_key: {private_key} is not an unencrypted PEM private key") from exc
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hashing():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=list(UNSIGNED))


def sign_release(directory: Path, private_key: Path) -> None:
    import model_signing

    key = ensure_key(private_key)
    (directory / PUBLIC_KEY).write_bytes(public_key_pem(key))
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=key)
    config.set_hashing_config(_hashing()).sign(directory, directory / SIGNATURE)


def verify_release(directory: Path, public_key: Path | None = None) -> int:
    """The number of files checked; raises AlambicError naming what failed."""
    import model_signing

    directory = directory.resolve()
    if not (directory / "manifest.json").is_file():
        raise AlambicError(f"{directory}: not a release folder (no manifest.json)")
    if not (directory / SIGNATURE).is_file():
        raise AlambicError(f"{directory}: the release is not signed (no {SIGNATURE})")
    key = public_key or directory / PUBLIC_KEY
    if not key.is_file():
        raise AlambicError(f"{key}: public key not found")
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key)
    try:
        config.set_hashing_config(_hashing()).verify(directory, directory / SIGNATURE)
    except ValueError as exc:
        raise AlambicError(f"{directory}: verification failed: {str(exc).splitlines()[0][:300]}") from exc
    except Exception as exc:  # model-signing raises its own and sigstore's errors on a bad or foreign signature
        raise AlambicError(f"{directory}: the signature does not verify ({type(exc).__name__})") from exc
    return sum(1 for path in directory.rglob("*") if path.is_file() and path.name not in UNSIGNED)
