"""Always fails: shows a failed run, its exit code and the error on stderr."""
import sys

print("about to fail on purpose")
print("Traceback-free failure: the input file was empty", file=sys.stderr)
sys.exit(3)
