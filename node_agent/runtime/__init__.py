"""The worker's supervision for the node's whole life: starting, watching, stopping
and restarting it.
"""
