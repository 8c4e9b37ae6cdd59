"""The GGUF converter is code fetched at release time: it runs only if it is the pinned sdist, and sees no secret."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from alambic.errors import AlambicError
from alambic.release import gguf


def tampered_sdist(version: str, folder: Path) -> Path:
    """A source distribution of the right name whose converter is not the published one."""
    path = folder / f"llama_cpp_python-{version}.tar.gz"
    script = b"import os; os.system('echo pwned')\n"
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo(f"llama_cpp_python-{version}/vendor/llama.cpp/convert_hf_to_gguf.py")
        member.size = len(script)
        archive.addfile(member, io.BytesIO(script))
    return path


def test_a_converter_that_is_not_the_pinned_one_is_never_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llama_cpp

    monkeypatch.setenv("ALAMBIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf, "download_sdist", tampered_sdist)  # stands in for PyPI, or a mirror serving other bytes
    with pytest.raises(AlambicError, match=r"sha256 [0-9a-f]{64} is not the pinned [0-9a-f]{64}") as error:
        gguf.converter_dir()
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache").glob(f"llama-cpp-python-{llama_cpp.__version__}-*"))


def test_a_version_without_a_pinned_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    monkeypatch.setenv("ALAMBIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(llama_cpp, "__version__", "0.0.1")
    monkeypatch.setattr(gguf, "download_sdist", tampered_sdist)
    with pytest.raises(AlambicError, match=r"no pinned hash for llama-cpp-python 0\.0\.1"):
        gguf.converter_dir()


def test_the_installed_llama_cpp_python_has_a_pinned_converter() -> None:
    import llama_cpp

    assert llama_cpp.__version__ in gguf.CONVERTER_SDIST_SHA256


def test_the_converter_sees_no_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEACHER_API_KEY", "sk-secret-of-the-shop")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    environment = gguf.converter_environment(tmp_path)
    assert "sk-secret-of-the-shop" not in environment.values() and "also-secret" not in environment.values()
    assert environment["PATH"] == os.environ["PATH"] and environment["HF_HUB_OFFLINE"] == "1"
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "gguf-py"), str(tmp_path)]
