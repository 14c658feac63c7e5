"""Builds the CUDA backend's source for the host emulation (tests only).

cuda/lattice_cuda.cu is compiled by g++ as C++ against the stand-in CUDA
runtime and CUB of this folder, with its kernel launch brackets stripped:
kernels run one after another on the CPU, each grid-stride loop over its
whole range in order. This runs the CUDA backend's own code (build, filter,
mean field, bindings, the Python dispatch in densecrf/cuda.py) on machines
without a GPU; it cannot find races or device-only faults.

The module is cached under build/cuda_emu/<hash of the sources>.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCES = [
    os.path.join(ROOT, "cuda", "lattice_cuda.cu"),
    os.path.join(ROOT, "cuda", "lattice_cuda.h"),
    os.path.join(ROOT, "cuda", "fast_div.h"),
    os.path.join(ROOT, "csrc", "bindings_cuda.cpp"),
    os.path.join(ROOT, "csrc", "lattice.h"),
    os.path.join(ROOT, "csrc", "lattice_math.h"),
    os.path.join(HERE, "cuda_runtime.h"),
    os.path.join(HERE, "emu_module.cpp"),
    os.path.join(HERE, "cub", "device", "device_scan.cuh"),
    os.path.join(HERE, "cub", "device", "device_radix_sort.cuh"),
]


def build(verbose: bool = False, order: str = "forward"):
    """Returns the emulated module, compiling it first if needed; raises RuntimeError when it cannot.

    order: 'forward' runs every grid-stride loop in increasing index order
    (threads in launch order); 'reverse' in decreasing order, so that any
    result depending on which thread wins a race (atomicCAS, atomicMin)
    would come out differently.
    """
    if order not in ("forward", "reverse"):
        raise ValueError(f"order must be 'forward' or 'reverse', got {order!r}")
    name = "_C_cuda_emu" if order == "forward" else "_C_cuda_emu_rev"
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler found")
    try:
        import pybind11
    except ImportError as exc:
        raise RuntimeError("pybind11 is not installed") from exc
    absent = [p for p in SOURCES if not os.path.exists(p)]
    if absent:  # tests run outside a source checkout (tools/check_wheels.sh)
        raise RuntimeError(f"CUDA sources not found (a source checkout is needed): {', '.join(absent)}")
    h = hashlib.sha256()
    for path in SOURCES:
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(sys.version.encode())
    h.update(order.encode())
    # DCRF_EMU_SANITIZE=1: AddressSanitizer + UBSan, to catch out-of-bounds
    # indexing in the kernels (run Python with LD_PRELOAD=$(gcc
    # -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0).
    sanitize = os.environ.get("DCRF_EMU_SANITIZE", "") == "1"
    h.update(b"asan" if sanitize else b"")
    out_dir = os.path.join(ROOT, "build", "cuda_emu", h.hexdigest()[:16])
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = os.path.join(out_dir, name + suffix)
    if not os.path.exists(target):
        os.makedirs(out_dir, exist_ok=True)
        with open(SOURCES[0]) as f:
            src = f.read()
        # kernel<<<grid, block, shmem, stream>>>(args) -> kernel(args)
        src = re.sub(r"<<<[^;]*?>>>", "", src)
        cu_cpp = os.path.join(out_dir, "lattice_cuda_emu.cpp")
        with open(cu_cpp, "w") as f:
            f.write(f'#line 1 "{SOURCES[0]}"\n' + src)
        cmd = [
            cxx,
            "-O1",
            "-g",
            "-std=c++17",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Wno-unused-parameter",
            "-Wno-unused-variable",
            # A namespace of its own, so that this module's types never clash
            # with densecrf._C's in pybind11's registry.
            f"-Ddcrf={name.lstrip('_')}",
            f"-DDCRF_EMU_MODULE={name}",
            f"-I{HERE}",
            f"-I{os.path.join(ROOT, 'cuda')}",
            f"-I{os.path.join(ROOT, 'csrc')}",
            f"-I{pybind11.get_include()}",
            f"-I{sysconfig.get_paths()['include']}",
            *(["-DDCRF_GRID_STRIDE(i,n)=for (int64_t i = (n) - 1; i >= 0; --i)"] if order == "reverse" else []),
            *(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if sanitize else []),
            cu_cpp,
            os.path.join(ROOT, "csrc", "bindings_cuda.cpp"),
            os.path.join(HERE, "emu_module.cpp"),
            "-o",
            target + ".tmp",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("emulated CUDA build failed:\n" + res.stderr[-4000:])
        if verbose:
            print(res.stderr)
        os.replace(target + ".tmp", target)
    spec = importlib.util.spec_from_file_location(name, target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    m = build(verbose=True)
    print(m, m.cuda_device_count())
