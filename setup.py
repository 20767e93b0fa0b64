# Two compiled parts: the C core, built by cffi (API mode) from
# _cffi_build/build_core.py, and the scheduler, a CPython extension written
# in Cython (iocploop/_scheduler.pyx; _cffi_build/build_scheduler.py has the
# same options for the in-place and cross builds).
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

sys.path.insert(0, "_cffi_build")
from build_scheduler import DIRECTIVES  # noqa: E402

setup(
    cffi_modules=["_cffi_build/build_core.py:ffibuilder"],
    ext_modules=cythonize([Extension("iocploop._scheduler", ["iocploop/_scheduler.pyx"],
                                     include_dirs=["csrc"])],
                          compiler_directives=DIRECTIVES),
)
