"""Build the compiled scheduler, iocploop._scheduler (Cython -> C -> module).

The kernel interface is the cffi core (build_core.py); the scheduler is a
CPython extension written in Cython (iocploop/_scheduler.pyx): handles, the
ready queue, the timer heap and one iteration of the loop.

    python _cffi_build/build_scheduler.py                  # in place, for tests
    python _cffi_build/build_scheduler.py --sanitize DIR   # AddressSanitizer build into DIR
    python _cffi_build/build_scheduler.py --emit-c OUT.c   # the C source (Windows cross-build)

setup.py builds the same extension for `pip install .`.
"""
from __future__ import annotations

import glob
import os
import shutil
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYX = os.path.join(ROOT, "iocploop", "_scheduler.pyx")
MODULE = "iocploop._scheduler"
# Compiler directives for every build (they also sit at the top of the .pyx).
DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
              "cdivision": True}
SANITIZE_COMPILE = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
SANITIZE_LINK = ["-fsanitize=address"]


def emit_c(out: str) -> str:
    """Write the C source Cython generates for the scheduler to out."""
    from Cython.Compiler import Options
    from Cython.Compiler.Main import CompilationOptions, compile_single, default_options

    Options.docstrings = True
    options = CompilationOptions(default_options, output_file=out,
                                 compiler_directives=DIRECTIVES)
    result = compile_single(PYX, options, full_module_name=MODULE)
    if result.num_errors:
        raise SystemExit(f"cython: {result.num_errors} error(s) in {PYX}")
    return out


def build_in_place(package_dir: str = os.path.join(ROOT, "iocploop"),
                   sanitize: bool = False) -> str:
    """Compile the module for this interpreter into package_dir."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    with tempfile.TemporaryDirectory(prefix="iocploop-sched-") as tmp:
        c_file = emit_c(os.path.join(tmp, "_scheduler.c"))
        ext = Extension(MODULE, [c_file], include_dirs=[os.path.join(ROOT, "csrc")],
                        extra_compile_args=SANITIZE_COMPILE if sanitize else ["-O2"],
                        extra_link_args=SANITIZE_LINK if sanitize else [])
        dist = Distribution({"name": "iocploop-scheduler", "ext_modules": [ext]})
        cmd = build_ext(dist)
        cmd.build_lib = os.path.join(tmp, "lib")
        cmd.build_temp = os.path.join(tmp, "temp")
        cmd.ensure_finalized()
        cmd.run()
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = os.path.join(cmd.build_lib, "iocploop", "_scheduler" + suffix)
        for stale in glob.glob(os.path.join(package_dir, "_scheduler.*.so")) + \
                glob.glob(os.path.join(package_dir, "_scheduler.*.pyd")):
            os.remove(stale)
        target = os.path.join(package_dir, os.path.basename(built))
        shutil.copy2(built, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sanitize":
        print(build_in_place(sys.argv[2], sanitize=True))
    elif len(sys.argv) == 3 and sys.argv[1] == "--emit-c":
        print(emit_c(sys.argv[2]))
    else:
        print(build_in_place())
