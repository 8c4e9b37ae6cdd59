"""Releases are signed with model-signing and a local key; a changed byte, a missing signature or a foreign key
fails verification with a one-line error."""

from pathlib import Path

import pytest

from alambic.errors import AlambicError
from alambic.release.signing import sign_release, verify_release

from ..conftest import run_cli


def release_folder(root: Path) -> Path:
    (root / "gguf").mkdir(parents=True)
    (root / "gguf" / "model.gguf").write_bytes(bytes(range(256)) * 64)
    (root / "manifest.json").write_text('{"name": "shop"}', encoding="utf-8")
    (root / "README.md").write_text("# شاي وقهوة\n", encoding="utf-8")
    return root


def test_a_signed_release_verifies_and_a_changed_byte_fails(tmp_path: Path) -> None:
    folder = release_folder(tmp_path / "release")
    key = tmp_path / "keys" / "signing-key.pem"
    sign_release(folder, key)
    assert key.stat().st_mode & 0o777 == 0o600
    assert verify_release(folder) == 3
    done = run_cli("verify", folder)
    assert "verified 3 files" in done.stdout
    model = folder / "gguf" / "model.gguf"
    data = bytearray(model.read_bytes())
    data[1000] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(AlambicError, match="verification failed"):
        verify_release(folder)
    failed = run_cli("verify", folder, check=False)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert "verification failed" in failed.stderr


def test_an_added_file_a_foreign_key_and_no_signature_fail(tmp_path: Path) -> None:
    folder = release_folder(tmp_path / "release")
    sign_release(folder, tmp_path / "key.pem")
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(AlambicError, match="verification failed"):
        verify_release(folder)
    (folder / "extra.bin").unlink()
    other = release_folder(tmp_path / "other")
    sign_release(other, tmp_path / "other-key.pem")
    with pytest.raises(AlambicError, match=r"does not verify|verification failed"):
        verify_release(folder, other / "signing-key.pub")
    (folder / "model.sig").unlink()
    with pytest.raises(AlambicError, match="the release is not signed"):
        verify_release(folder)
    with pytest.raises(AlambicError, match="not a release folder"):
        verify_release(tmp_path)
