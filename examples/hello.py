"""The smallest pyward run: print a greeting and the interpreter's version."""
import platform
import sys

print("hello from pyward")
print(f"Python {platform.python_version()} on {platform.machine()}")
sys.stdout.flush()
