"""What the Batch node gives the agent: its environment, its application packages,
where things live on it, the worker's generation.
"""
