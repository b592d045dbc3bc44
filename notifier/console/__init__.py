"""The operator console under `/console` (issue 15): its access layer.

- `operators`: who may sign in, from a TOML file of argon2id hashes;
- `sessions`: signed session cookies with an idle timeout, and CSRF tokens;
- `audit`: a record per page viewed and action taken, in the Redis stream `n:audit`;
- `routes`: the FastAPI router (sign in, sign out, the first page).
"""
