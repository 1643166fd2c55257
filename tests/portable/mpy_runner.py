"""Runs portable test modules on MicroPython: micropython mpy_runner.py test_modbus [...].

Every module-level function named test_* is called with no arguments. Prints one line per
failure and, last, "N passed, M failed"; exits 1 if anything failed."""

import gc
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _here)
sys.path.insert(0, _here + "/../..")


def _run(module_name):
    passed = 0
    failed = 0
    mod = __import__(module_name)
    for name in sorted(dir(mod)):
        if not name.startswith("test_"):
            continue
        fn = getattr(mod, name)
        if not callable(fn):
            continue
        gc.collect()  # each test starts from a clean heap, as a board's task would
        try:
            fn()
            passed += 1
        except Exception as e:  # report every failure, keep going
            failed += 1
            print("FAIL %s.%s: %s: %s" % (module_name, name, type(e).__name__, e))
            sys.print_exception(e)
    return passed, failed


def main():
    total_p = 0
    total_f = 0
    for arg in sys.argv[1:]:
        name = arg.rsplit("/", 1)[-1]
        if name.endswith(".py"):
            name = name[:-3]
        p, f = _run(name)
        total_p += p
        total_f += f
    print("%d passed, %d failed" % (total_p, total_f))
    sys.exit(1 if total_f else 0)


main()
