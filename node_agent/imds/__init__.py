"""The Azure Instance Metadata Service: the VM's Scheduled Events, read and watched.
Azure only: knows nothing of Flamenco.
"""
