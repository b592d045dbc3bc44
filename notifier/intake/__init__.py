"""Intake: what comes in from outside. The integrator's event contract, applying each
accepted event in its subject's turn, and clients' SMS replies."""
