"""``make bench``: condpay transfers per second and latency through gRPC, against a plain gRPC
echo baseline.

The entry point is :mod:`tests.bench.transfers`; the other modules each do one thing for it. None
is named ``test_*.py``: pytest does not collect them.
"""
