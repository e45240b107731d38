"""statefulrt's benchmarks: ``python -m benchmarks`` (see README.md here).

Each figure is measured side by side with the official runtime client in one
run, against a minimal Runtime API server on loopback, because the machines
these run on are shared and noisy.
"""
