"""Notifier: the notification and reminder worker of a medication-management practice."""

__version__ = "0.1.0"
