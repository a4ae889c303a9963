"""A synthetic testbed with planted structure: task kinds, pool/test generator, base model, check.

See benchmarks/TESTBED.md for the design and why it is built this way.
"""
