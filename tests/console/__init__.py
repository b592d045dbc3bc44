"""Tests of the operator console (`notifier.console`)."""
