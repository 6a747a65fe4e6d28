"""Build script: the pure-Python package plus the optional compiled extension ``sdkd._C``.

The extension is torch-free (pybind11 over raw pointers), so it builds under normal build
isolation. Environment switches: ``SDKD_NO_EXT=1`` skips the extension entirely.
"""

from __future__ import annotations

import glob
import os

from setuptools import setup

packages = [
    "sdkd",
    "sdkd.data",
    "sdkd.models",
    "sdkd.losses",
    "sdkd.distill",
    "sdkd.ops",
    "sdkd.train",
    "sdkd.kernels",
]
package_dir = {"sdkd.kernels": "kernels"}


def _extensions():
    if os.environ.get("SDKD_NO_EXT") == "1":
        print("sdkd: SDKD_NO_EXT=1, building the pure-Python package only")
        return [], {}
    try:
        from pybind11.setup_helpers import Pybind11Extension, build_ext
    except ImportError:
        print("sdkd: pybind11 not available, building the pure-Python package only")
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not sources:
        return [], {}
    ext = Pybind11Extension(
        "sdkd._C",
        sources,
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions()

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"sdkd": ["configs/*.yaml"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
