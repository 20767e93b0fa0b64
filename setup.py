# The C core is built by cffi (API mode) from _cffi_build/build_core.py.
from setuptools import setup

setup(cffi_modules=["_cffi_build/build_core.py:ffibuilder"])
