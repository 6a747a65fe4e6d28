"""Build script: the pure-Python package plus the optional compiled extension ``sdkd._C``.

The extension is torch-free (pybind11 over raw pointers, sizes, strides and a CUDA stream handle),
so it builds under normal build isolation and does not depend on the installed torch version.

- CPU part (``csrc/*.cpp``, ``csrc/cpu/*.cpp``, OpenMP): always built when a C++ compiler exists.
- CUDA part (``csrc/cuda/*.cu``): built whenever nvcc is found, for the architectures in
  ``SDKD_CUDA_ARCHS`` (default ``"80;90"``, plus PTX of the newest), with the CUDA runtime linked
  statically; the C++ side then sees ``SDKD_WITH_CUDA``. No GPU is needed to build.

Environment switches: ``SDKD_NO_EXT=1`` skips the extension, ``SDKD_NO_CUDA=1`` skips the CUDA part,
``SDKD_CUDA_ARCHS="80;90"`` picks the GPU architectures, ``CUDA_HOME`` picks the toolkit.
Without a working compiler the install still succeeds as pure Python, and says so.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

packages = [
    "sdkd",
    "sdkd.data",
    "sdkd.models",
    "sdkd.losses",
    "sdkd.distill",
    "sdkd.ops",
    "sdkd.ops.spectral_loss",
    "sdkd.ops.attention",
    "sdkd.train",
    "sdkd.kernels",
    "sdkd.configs",
]
package_dir = {"sdkd.kernels": "kernels", "sdkd.configs": "configs"}


def _log(msg: str) -> None:
    print(f"sdkd: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------- CUDA toolkit
def _is_toolkit(root: str | None) -> bool:
    return (
        bool(root)
        and os.path.isfile(os.path.join(root, "bin", "nvcc"))
        and os.path.isdir(os.path.join(root, "include"))
    )


def find_cuda_home() -> str | None:
    """Toolkit root: ``CUDA_HOME``/``CUDA_PATH``, then /usr/local/cuda, then nvcc's real location.

    nvcc on PATH may be a wrapper script, so its folder is not trusted blindly: symlinks are
    resolved, and nvcc's own ``--dryrun`` output (``TOP=...``) names the toolkit it runs from.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if _is_toolkit(root):
            return os.path.realpath(root)
        if root:
            _log(f"{var}={root} has no bin/nvcc + include/; looking elsewhere")
    if _is_toolkit("/usr/local/cuda"):
        return os.path.realpath("/usr/local/cuda")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if _is_toolkit(root):
        return root
    try:  # a wrapper script: ask nvcc where it lives
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
        if m and _is_toolkit(os.path.realpath(m.group(1))):
            return os.path.realpath(m.group(1))
    except Exception as exc:  # pragma: no cover - depends on the machine
        _log(f"could not query {nvcc}: {exc!r}")
    return None


def cuda_archs() -> list[str]:
    raw = os.environ.get("SDKD_CUDA_ARCHS", "80;90")
    archs = [a.strip().replace(".", "") for a in re.split(r"[;, ]+", raw) if a.strip()]
    bad = [a for a in archs if not re.fullmatch(r"\d+[a-z]?", a)]
    if bad or not archs:
        raise ValueError(f'SDKD_CUDA_ARCHS must look like "80;90", got {raw!r}')
    return archs


def _cuda_lib_dir(root: str) -> str:
    for sub in (
        "lib64",
        "lib",
        os.path.join("targets", "x86_64-linux", "lib"),
        os.path.join("targets", "sbsa-linux", "lib"),
    ):
        if os.path.isfile(os.path.join(root, sub, "libcudart_static.a")):
            return os.path.join(root, sub)
    raise FileNotFoundError(f"libcudart_static.a not found under {root}")


# ----------------------------------------------------------------------------- extension
def _extensions():
    if os.environ.get("SDKD_NO_EXT") == "1":
        _log("SDKD_NO_EXT=1, building the pure-Python package only")
        return [], {}
    try:
        from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
    except ImportError:
        _log("pybind11 not available, building the pure-Python package only")
        return [], {}
    ParallelCompile("SDKD_BUILD_JOBS", default=0).install()  # C++ sources in parallel (0: every core)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}

    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    cuda_home = None
    if os.environ.get("SDKD_NO_CUDA") == "1":
        _log("SDKD_NO_CUDA=1, skipping the CUDA part")
    elif cuda_sources:
        cuda_home = find_cuda_home()
        _log(f"CUDA toolkit: {cuda_home}" if cuda_home else "nvcc not found, building the CPU part only")

    ext = Pybind11Extension(
        "sdkd._C",
        sources,
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )
    if cuda_home:
        ext.define_macros.append(("SDKD_WITH_CUDA", "1"))
        ext.include_dirs.append(os.path.join(cuda_home, "include"))
        ext.library_dirs.append(_cuda_lib_dir(cuda_home))
        ext.libraries += ["cudart_static", "rt", "dl", "pthread"]
        ext.cuda_sources = cuda_sources
        ext.cuda_home = cuda_home

    class BuildExt(build_ext):
        """pybind11's build_ext, plus: .cu files compiled by nvcc into objects linked into the module,
        and a pure-Python fallback when the C++ build fails."""

        def build_extension(self, ext):
            cu = getattr(ext, "cuda_sources", None)
            if cu:
                ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(ext, cu)
            try:
                super().build_extension(ext)
            except Exception as exc:
                if cu or os.environ.get("SDKD_REQUIRE_EXT") == "1":
                    raise  # a CUDA compile/link error must fail the build (CI checks it)
                _log(f"building {ext.name} failed ({exc!r}); installing the pure-Python package only")

        def _compile_cuda(self, ext, cu_sources):
            nvcc = os.path.join(ext.cuda_home, "bin", "nvcc")
            out_dir = os.path.join(self.build_temp, "cuda")
            os.makedirs(out_dir, exist_ok=True)
            archs = cuda_archs()
            flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo"]
            flags += ["-DSDKD_WITH_CUDA=1", "-Icsrc"]
            for a in archs:
                flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
            flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
            objects, commands = [], []
            for src in cu_sources:
                obj = os.path.join(out_dir, os.path.basename(src) + ".o")
                deps = [src, *glob.glob("csrc/**/*.h", recursive=True), *glob.glob("csrc/**/*.cuh", recursive=True)]
                if (
                    self.force
                    or not os.path.exists(obj)
                    or any(os.path.getmtime(d) > os.path.getmtime(obj) for d in deps)
                ):
                    commands.append([nvcc, *flags, "-c", src, "-o", obj])
                objects.append(obj)
            for cmd in commands:
                _log(" ".join(cmd))
            # one nvcc per source in parallel: the CUDA compile dominates the build time
            with concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, min(len(commands), os.cpu_count() or 1))
            ) as pool:
                for _ in pool.map(subprocess.check_call, commands):
                    pass
            return objects

    return [ext], {"build_ext": BuildExt}


ext_modules, cmdclass = _extensions()

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"sdkd.configs": ["*.yaml", "*/*.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
