"""Never on a node: the simulated Batch node and pool, and the stand-in services they
and the tests talk to.
"""
