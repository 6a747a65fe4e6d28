"""Build script: the pure-Python package plus the compiled extension ``sdkd._C``.

The extension is torch-free (pybind11 over raw pointers, sizes, strides and a CUDA stream handle),
so it builds under normal build isolation and does not depend on the installed torch version.

- CPU part (``csrc/*.cpp``, ``csrc/cpu/*.cpp``, OpenMP where the compiler has it): GCC, clang, Apple clang
  (OpenMP from Homebrew's libomp when present) and MSVC.
- CUDA part (``csrc/cuda/*.cu``, Linux): built whenever nvcc is found, for the architectures of
  ``SDKD_CUDA_ARCHS`` (``"80;90"``: PTX of the newest too), else ``TORCH_CUDA_ARCH_LIST`` (PyTorch's
  spelling, ``"8.0;9.0+PTX"``), else ``80;90`` + PTX, with the CUDA runtime linked statically; the C++ side
  then sees ``SDKD_WITH_CUDA``. No GPU is needed to build.

Environment switches: ``SDKD_NO_EXT=1`` skips the extension (a pure-Python install, the reference backends
only), ``SDKD_NO_CUDA=1`` skips the CUDA part, ``SDKD_BUILD_JOBS`` (else ``MAX_JOBS``) caps parallel compile
jobs, ``CUDA_HOME`` picks the toolkit. A build that fails (or finds no C++ compiler) fails the install with a
message naming ``SDKD_NO_EXT=1``: never a silent fall-back to pure Python.
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
    "sdkd.ops.capped_simplex",
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


def _parse_archs(raw: str, var: str) -> list[tuple[str, bool]]:
    """``"80;90"`` / ``"8.0 8.6+PTX"`` -> ``[("80", False), ("86", True)]`` (arch, with PTX)."""
    out = []
    for item in (a.strip() for a in re.split(r"[;, ]+", raw)):
        if not item:
            continue
        arch, ptx = (item[:-4], True) if item.upper().endswith("+PTX") else (item, False)
        arch = arch.replace(".", "")
        if not re.fullmatch(r"\d+[a-z]?", arch):
            raise ValueError(
                f'{var} must look like "80;90" or "8.0;9.0+PTX" (named archs are not supported), got {raw!r}'
            )
        out.append((arch, ptx))
    if not out:
        raise ValueError(f"{var} is set but names no architecture: {raw!r}")
    return out


def cuda_arch_targets(env=os.environ) -> tuple[list[str], list[str]]:
    """``(archs compiled to machine code, archs also embedded as PTX)``: ``SDKD_CUDA_ARCHS`` (PTX of the newest),
    else PyTorch's ``TORCH_CUDA_ARCH_LIST`` (PTX where it says ``+PTX``), else 80 and 90 with PTX of 90."""
    if env.get("SDKD_CUDA_ARCHS"):
        archs = [a for a, _ in _parse_archs(env["SDKD_CUDA_ARCHS"], "SDKD_CUDA_ARCHS")]
        return archs, archs[-1:]
    if env.get("TORCH_CUDA_ARCH_LIST"):
        parsed = _parse_archs(env["TORCH_CUDA_ARCH_LIST"], "TORCH_CUDA_ARCH_LIST")
        return [a for a, _ in parsed], [a for a, ptx in parsed if ptx]
    return ["80", "90"], ["90"]


def build_jobs(env=os.environ) -> int:
    """Parallel compile jobs: ``SDKD_BUILD_JOBS``, else ``MAX_JOBS`` (PyTorch's name), else 0 = every core."""
    for var in ("SDKD_BUILD_JOBS", "MAX_JOBS"):
        if env.get(var):
            try:
                return max(0, int(env[var]))
            except ValueError:
                raise ValueError(f"{var} must be a whole number of jobs, got {env[var]!r}") from None
    return 0


def compiler_flags(compiler_type: str, platform: str, openmp: bool = True) -> tuple[list[str], list[str]]:
    """``(compile args, link args)`` for a compiler family: MSVC (``/O2 /openmp``), Apple clang (OpenMP through
    ``-Xpreprocessor`` and Homebrew's libomp, when present), GCC/clang (``-O3 -fopenmp``)."""
    if compiler_type == "msvc":
        return (["/O2", "/openmp"] if openmp else ["/O2"]), []
    if not openmp:
        return ["-O3"], []
    if platform == "darwin":
        for root in ("/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"):
            if os.path.isfile(os.path.join(root, "include", "omp.h")):
                inc, lib = os.path.join(root, "include"), os.path.join(root, "lib")
                return ["-O3", "-Xpreprocessor", "-fopenmp", f"-I{inc}"], [f"-L{lib}", "-lomp"]
        return ["-O3"], []  # Apple clang has no OpenMP runtime of its own (brew install libomp adds one)
    return ["-O3", "-fopenmp"], ["-fopenmp"]


def announce(msg: str) -> None:
    """A line the user sees even though pip hides the build's output: stderr, and the terminal when there is one."""
    _log(msg)
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(f"\nsdkd: {msg}\n")
    except OSError:
        pass  # no terminal (CI, Windows): stderr only


NO_EXT_HINT = "or install without it: SDKD_NO_EXT=1 pip install . (pure Python, the slower reference backends only)"


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
        raise RuntimeError(
            f"sdkd: building the extension needs pybind11 (pip install pybind11), {NO_EXT_HINT}"
        ) from None
    jobs = build_jobs()
    ParallelCompile(default=jobs).install()  # C++ sources in parallel (0: every core)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}

    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    cuda_home = None
    if os.environ.get("SDKD_NO_CUDA") == "1":
        _log("SDKD_NO_CUDA=1, skipping the CUDA part")
    elif cuda_sources and sys.platform == "win32":
        _log("the CUDA part builds on Linux only; building the CPU part (SDKD_NO_CUDA=1 silences this)")
    elif cuda_sources:
        cuda_home = find_cuda_home()
        _log(f"CUDA toolkit: {cuda_home}" if cuda_home else "nvcc not found, building the CPU part only")

    ext = Pybind11Extension("sdkd._C", sources, include_dirs=["csrc"], cxx_std=17)
    if cuda_home:
        ext.define_macros.append(("SDKD_WITH_CUDA", "1"))
        ext.include_dirs.append(os.path.join(cuda_home, "include"))
        ext.library_dirs.append(_cuda_lib_dir(cuda_home))
        ext.libraries += ["cudart_static", "rt", "dl", "pthread"]
        ext.cuda_sources = cuda_sources
        ext.cuda_home = cuda_home

    class BuildExt(build_ext):
        """pybind11's build_ext, plus: flags for the compiler found (GCC/clang/Apple clang/MSVC), a retry without
        OpenMP when the compiler cannot link it, .cu files compiled by nvcc into objects linked into the module,
        and a failed build failing the install with what to do (never a silent pure-Python install)."""

        def build_extension(self, ext):
            kind = self.compiler.compiler_type
            parts = "the C++/OpenMP part" + (" and the CUDA part (nvcc)" if getattr(ext, "cuda_sources", None) else "")
            announce(f"compiling the extension sdkd._C ({parts}); this takes several minutes")
            cu = getattr(ext, "cuda_sources", None)
            if cu:
                ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(ext, cu)
            base_compile, base_link = list(ext.extra_compile_args), list(ext.extra_link_args)
            attempts = [True, False]  # with OpenMP, then (single-threaded kernels) without
            for openmp in attempts:
                compile_args, link_args = compiler_flags(kind, sys.platform, openmp)
                ext.extra_compile_args, ext.extra_link_args = base_compile + compile_args, base_link + link_args
                try:
                    super().build_extension(ext)
                    if not openmp:
                        announce(
                            "built sdkd._C without OpenMP (this compiler cannot link it): CPU kernels single-threaded"
                        )
                    return
                except Exception as exc:
                    if openmp and "openmp" in " ".join(compile_args).lower():
                        _log(f"building with OpenMP failed ({exc!r}); retrying without OpenMP")
                        continue
                    cxx = getattr(self.compiler, "compiler_so_cxx", None) or getattr(self.compiler, "compiler_so", None)
                    compiler = (cxx or [kind])[0]
                    found = shutil.which(compiler) if compiler != "msvc" else compiler
                    what = f"the C++ compiler {compiler!r} was not found" if not found else f"{compiler} failed"
                    raise RuntimeError(
                        f"sdkd: building the extension sdkd._C failed: {what} ({exc}). Install a C++17 compiler "
                        f"(Linux: g++ or clang++; macOS: xcode-select --install; Windows: MSVC Build Tools), "
                        f"{NO_EXT_HINT}"
                    ) from exc

        def _compile_cuda(self, ext, cu_sources):
            nvcc = os.path.join(ext.cuda_home, "bin", "nvcc")
            out_dir = os.path.join(self.build_temp, "cuda")
            os.makedirs(out_dir, exist_ok=True)
            archs, ptx = cuda_arch_targets()
            flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo"]
            flags += ["-DSDKD_WITH_CUDA=1", "-Icsrc"]
            for a in archs:
                flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
            for a in ptx:  # PTX, compiled by the driver for newer GPUs
                flags += ["-gencode", f"arch=compute_{a},code=compute_{a}"]
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
            # one nvcc per source in parallel (at most SDKD_BUILD_JOBS / MAX_JOBS): the CUDA compile dominates
            workers = max(1, min(len(commands), jobs or os.cpu_count() or 1))
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(subprocess.check_call, commands):
                    pass
            return objects

    return [ext], {"build_ext": BuildExt}


if __name__ == "__main__":  # pip and `python setup.py` run it so; tests import the helpers above without building
    ext_modules, cmdclass = _extensions()
    setup(
        packages=packages,
        package_dir=package_dir,
        package_data={"sdkd": ["py.typed"], "sdkd.configs": ["*.yaml", "*/*.yaml"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
    )
