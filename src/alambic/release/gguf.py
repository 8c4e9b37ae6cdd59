"""GGUF export with the converter vendored in llama-cpp-python's source distribution.

The converter must run with that distribution's own gguf-py (the PyPI `gguf` lags behind it), so
the sdist matching the installed llama-cpp-python is fetched once with pip, checked against its pinned sha256,
and unpacked into the cache.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from alambic.errors import AlambicError
from alambic.hashing import file_sha256
from alambic.models.embedded import cache_dir
from alambic.models.llamacpp import native_stderr_captured

QUANT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


# The source distributions whose converter alambic runs, by llama-cpp-python version: code fetched at release
# time runs only if it is byte for byte the one pinned here.
CONVERTER_SDIST_SHA256 = {"0.3.36": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"}
# What the converter may see of the environment: never the teacher's API key or any other secret.
CONVERTER_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")


def converter_dir() -> Path:
    import llama_cpp

    version = llama_cpp.__version__
    expected = CONVERTER_SDIST_SHA256.get(version)
    if expected is None:
        pinned = ", ".join(CONVERTER_SDIST_SHA256)
        raise AlambicError(
            f"GGUF export: no pinned hash for llama-cpp-python {version}'s converter; install llama-cpp-python "
            f"{pinned}, the version alambic pins"
        )
    # Named by the hash: a copy unpacked before the hash was checked is never used.
    target = cache_dir() / f"llama-cpp-python-{version}-{expected[:16]}-converter"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        sdist = download_sdist(version, Path(download))
        actual = file_sha256(sdist)
        if actual != expected:
            raise AlambicError(
                f"{sdist.name}: sha256 {actual} is not the pinned {expected}; the GGUF converter was not run"
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            prefix = f"{archive.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith(prefix) and m.name[len(prefix) :].startswith(CONVERTER_PARTS)
            ]
            for member in members:
                member.name = member.name[len(prefix) :]
            archive.extractall(partial, members=members, filter="data")
        os.replace(partial, target)
    return target


def download_sdist(version: str, folder: Path) -> Path:
    """llama-cpp-python's source distribution of this version, fetched by pip into ``folder``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"llama-cpp-python=={version}",
        "-d",
        str(folder),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    sdists = list(folder.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not sdists:
        raise AlambicError(
            f"could not fetch llama-cpp-python {version}'s source distribution for the GGUF "
            f"converter: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no sdist'}"
        )
    return sdists[0]


def converter_environment(converter: Path) -> dict[str, str]:
    """The converter's environment: the few variables a Python program needs, and its own import path."""
    passed = {name: os.environ[name] for name in CONVERTER_ENVIRONMENT if name in os.environ}
    search_path = os.pathsep.join([str(converter / "gguf-py"), str(converter)])
    return {**passed, "PYTHONPATH": search_path, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}


def convert_to_gguf(model_dir: Path, out_file: Path, outtype: str = "f16") -> None:
    converter = converter_dir()
    command = [
        sys.executable,
        str(converter / "convert_hf_to_gguf.py"),
        str(model_dir),
        "--outfile",
        str(out_file),
        "--outtype",
        outtype,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=converter_environment(converter))
    if done.returncode != 0 or not out_file.is_file():
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
        raise AlambicError(f"{model_dir}: GGUF conversion failed: {last}")


def quantize(source: Path, target: Path, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant])
    params.nthread = os.cpu_count() or 1
    with native_stderr_captured() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.is_file():
        last = log[-1] if log else f"status {status}"
        raise AlambicError(f"{source}: quantisation to {quant} failed: {last}")
