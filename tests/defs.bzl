"""Bazel macros for Postern's integration tests."""

def postern_py_test(name, src, data = [], args = [], size = "medium", **kwargs):
    """An integration test written in Python and run by /usr/bin/python3.

    `src` is the test script; `data` holds the binaries it drives. Pass their
    paths with `args` ("$(location //engine:postern)"). The shared peers in
    tests/peers/ are importable.
    """
    native.sh_test(
        name = name,
        srcs = ["//tests:run_py.sh"],
        args = ["$(location %s)" % src] + args,
        data = [src, "//tests:peers"] + data,
        size = size,
        **kwargs
    )
