"""The worker side: dramatiq actors, the clock that claims due notifications and fires
cron jobs, and the provider digests those jobs plan."""
