"""Build hook for the optional compiled core (``banyanstore._native``).

Everything else is in pyproject.toml.  The extension is ``optional``: where no C
compiler or no Python headers exist, ``pip install`` still succeeds and the engine
runs on its pure-Python implementation (see ``banyanstore.accel``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "banyanstore._native",
            sources=["src/banyanstore/_native.c", "src/banyanstore/native/logframe.c",
                     "src/banyanstore/native/memtable.c", "src/banyanstore/native/blockcache.c",
                     "src/banyanstore/native/lz4block.c", "src/banyanstore/native/tablebuild.c",
                     "src/banyanstore/native/putpath.c", "src/banyanstore/native/blockview.c",
                     "src/banyanstore/native/mergebuild.c"],
            depends=["src/banyanstore/native/logframe.h", "src/banyanstore/native/walrecord.h",
                     "src/banyanstore/native/memtable.h", "src/banyanstore/native/blockcache.h",
                     "src/banyanstore/native/lz4block.h", "src/banyanstore/native/byteorder.h",
                     "src/banyanstore/native/tablebuild.h", "src/banyanstore/native/putpath.h", "src/banyanstore/native/blockview.h",
                     "src/banyanstore/native/corruption.h", "src/banyanstore/native/mergebuild.h"],
            include_dirs=["src/banyanstore/native"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        ),
    ],
)
