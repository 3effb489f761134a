"""node-agent: turns an Azure Batch compute node into a supervised Flamenco worker."""

__version__ = "0.1.0"
