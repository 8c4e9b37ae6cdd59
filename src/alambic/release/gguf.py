"""GGUF export with the converter vendored in llama-cpp-python's source distribution.

The converter must run with that distribution's own gguf-py (the PyPI `gguf` lags behind it), so
the sdist matching the installed llama-cpp-python is fetched once with pip and unpacked into the cache.
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
from alambic.models.embedded import cache_dir
from alambic.models.llamacpp import native_stderr_captured

QUANT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter_dir() -> Path:
    import llama_cpp

    target = cache_dir() / f"llama-cpp-python-{llama_cpp.__version__}-converter"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={llama_cpp.__version__}",
            "-d",
            download,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        sdists = list(Path(download).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise AlambicError(
                f"could not fetch llama-cpp-python {llama_cpp.__version__}'s source distribution for the GGUF "
                f"converter: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no sdist'}"
            )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdists[0]) as archive:
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


def convert_to_gguf(model_dir: Path, out_file: Path, outtype: str = "f16") -> None:
    converter = converter_dir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(converter / "gguf-py"), str(converter)]),
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        sys.executable,
        str(converter / "convert_hf_to_gguf.py"),
        str(model_dir),
        "--outfile",
        str(out_file),
        "--outtype",
        outtype,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
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
