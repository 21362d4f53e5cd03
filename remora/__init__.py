"""Remora: run shell commands and scripts on fleets of servers, through a durable priority queue."""

__version__ = "0.1.0"
