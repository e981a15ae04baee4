"""Sums the integers read from stdin (whitespace-separated) and prints the total.

    pyward run examples/stdin_sum.py --stdin numbers.txt
"""
import sys

total = 0
for lineno, line in enumerate(sys.stdin, start=1):
    for word in line.split():
        try:
            total += int(word)
        except ValueError:
            print(f"line {lineno}: not an integer: {word!r}", file=sys.stderr)
            sys.exit(1)
print(total)
