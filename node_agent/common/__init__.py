"""Shared by every part of the agent: errors and exit codes, the log, secrets kept
out of output, safe file writes, retrying. Imports nothing else of node_agent.
"""
